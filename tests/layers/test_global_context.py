import keras
import numpy as np
import pytest

from keras_attention.layers import GlobalContext, create_attention
from tests.helpers import count_trainable_params, import_or_skip, random_images, run_layer_test, timm_module_error

SHAPES = [(2, 8, 8, 16), (1, 5, 7, 16), (2, 1, 1, 16)]


@pytest.mark.parametrize("context_modeling", ["attention", "avg"])
def test_contract_add_fusion_is_identity_at_init(tmp_path, context_modeling):
    keras.utils.set_random_seed(0)
    # Official init: the transform's last 1x1 conv is zero (weights and bias), so
    # x + transform(x) == x.
    run_layer_test(GlobalContext, {"reduction_ratio": 4, "context_modeling": context_modeling},
                   SHAPES, tmp_path=tmp_path, identity_at_init=True,
                   fresh_process=context_modeling == "attention",
                   # softmax is shift-invariant: the attention conv's bias (present in the
                   # official code and counted in its parameters) never gets a gradient.
                   no_gradient_weights=("conv_mask/bias",))


def test_contract_mul_fusion(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(GlobalContext, {"reduction_ratio": 4, "fusion": "mul"}, SHAPES, tmp_path=tmp_path,
                   fresh_process=False, no_gradient_weights=("conv_mask/bias",))


def test_attention_bias_has_no_effect_by_design():
    # Why conv_mask/bias is exempt from the gradient check: shifting every logit by the
    # same bias leaves the softmax, hence the output, unchanged.
    layer = GlobalContext(reduction_ratio=2)
    x = random_images((2, 4, 4, 8), seed=5)
    layer.build(x.shape)
    layer.fc2.kernel.assign(np.ones((4, 8), "float32"))
    before = keras.ops.convert_to_numpy(layer(x))
    layer.conv_mask.bias.assign(np.array([3.0], "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), before, rtol=1e-5, atol=1e-6)


def test_mul_fusion_starts_at_half():
    # Official init zeroes the last conv of the mul branch too: sigmoid(0) = 1/2.
    x = random_images((2, 5, 6, 16), seed=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(GlobalContext(fusion="mul")(x)), 0.5 * x, rtol=1e-6)


def _randomise(layer, rng):
    for w in layer.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))


def _layer_norm(t, gamma, beta, eps=1e-5):
    mean, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
    return gamma * (t - mean) / np.sqrt(var + eps) + beta


@pytest.mark.parametrize("context_modeling, fusion", [("attention", "add"), ("attention", "mul"),
                                                      ("avg", "add"), ("avg", "mul")])
def test_matches_numpy_reference(context_modeling, fusion):
    rng = np.random.default_rng(2)
    layer = GlobalContext(reduction_ratio=4, context_modeling=context_modeling, fusion=fusion)
    x = random_images((2, 4, 5, 8), seed=2)
    layer.build(x.shape)
    _randomise(layer, rng)  # the zero-initialised fc2 would hide most of the maths
    if context_modeling == "attention":
        logits = (np.einsum("nhwc,co->nhwo", x, keras.ops.convert_to_numpy(layer.conv_mask.kernel))
                  + keras.ops.convert_to_numpy(layer.conv_mask.bias))
        logits = logits.reshape(2, -1)
        a = np.exp(logits - logits.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)  # softmax over the H*W positions
        z = np.einsum("nk,nkc->nc", a, x.reshape(2, -1, 8))
    else:
        z = x.mean(axis=(1, 2))
    h = z @ keras.ops.convert_to_numpy(layer.fc1.kernel) + keras.ops.convert_to_numpy(layer.fc1.bias)
    h = np.maximum(_layer_norm(h, keras.ops.convert_to_numpy(layer.norm.gamma), keras.ops.convert_to_numpy(layer.norm.beta)), 0)
    t = (h @ keras.ops.convert_to_numpy(layer.fc2.kernel) + keras.ops.convert_to_numpy(layer.fc2.bias))[:, None, None, :]
    expected = x + t if fusion == "add" else x / (1 + np.exp(-t))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-5)


def test_attention_softmax_is_over_positions():
    # With a constant attention logit the context is the spatial mean, like "avg".
    x = random_images((2, 3, 4, 8), seed=3)
    att = GlobalContext(reduction_ratio=2)
    avg = GlobalContext(reduction_ratio=2, context_modeling="avg")
    att.build(x.shape)
    avg.build(x.shape)
    att.conv_mask.kernel.assign(np.zeros((8, 1), "float32"))
    for a, b in zip([att.fc1, att.norm, att.fc2], [avg.fc1, avg.norm, avg.fc2]):
        b.set_weights([w + 0.1 for w in a.get_weights()])
        a.set_weights(b.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(att(x)), keras.ops.convert_to_numpy(avg(x)), rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_for_large_logits():
    # Logits in the hundreds overflow exp() unless the maximum is subtracted first; the
    # softmax then puts all its weight on the largest logit.
    x = np.zeros((1, 3, 3, 4), "float32")
    x[0, 1, 2] = [200.0, 0.0, 0.0, 0.0]
    x[0, 0, 0] = [100.0, 0.0, 0.0, 0.0]
    layer = GlobalContext(reduction_channels=2)
    layer.build(x.shape)
    layer.conv_mask.kernel.assign(np.array([[5.0], [0], [0], [0]], "float32"))
    context = keras.ops.convert_to_numpy(layer._context(x))
    np.testing.assert_allclose(context, [[200.0, 0, 0, 0]], rtol=1e-6)
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        try:
            half = GlobalContext(reduction_channels=2)
            half.build(x.shape)
            half.conv_mask.kernel.assign(np.array([[5.0], [0], [0], [0]], "float32"))
            context = keras.ops.convert_to_numpy(half._context(x)).astype("float32")
        finally:
            keras.config.set_dtype_policy("float32")
        np.testing.assert_allclose(context, [[200.0, 0, 0, 0]], rtol=1e-2)


def test_parameter_count():
    c = 64
    layer = GlobalContext()  # r = 16 -> C/r = 4
    inputs = keras.Input((7, 7, c))
    model = keras.Model(inputs, layer(inputs))
    h = c // 16
    # conv_mask C->1 with bias (C + 1); conv C->C/r with bias (C h + h); LayerNorm gamma and
    # beta (2h); conv C/r->C with bias (h C + C): 2 C h + 3 h + 2 C + 1 = 653 for C = 64.
    assert count_trainable_params(model) == 2 * c * h + 3 * h + 2 * c + 1 == 653
    avg = GlobalContext(context_modeling="avg")
    assert count_trainable_params(keras.Model(inputs, avg(inputs))) == 653 - (c + 1)
    assert layer.fc1.units == 4


def test_gc_resnet50_attention_parameter_total():
    # GC blocks (r = 16, attention, add) after the last BN of every bottleneck of stages
    # c3-c5 of ResNet-50 (C = 512 x4, 1024 x6, 2048 x3), as in the GCNet ImageNet setup:
    # 2,521,741 parameters on top of ResNet-50's 25,557,032 -> 28,078,773.
    total = 0
    for c, blocks in [(512, 4), (1024, 6), (2048, 3)]:
        layer = GlobalContext()
        layer.build((None, 7, 7, c))
        total += blocks * sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert total == 2_521_741


def test_factory_name():
    layer = create_attention("gc", reduction_ratio=4, fusion="mul")
    assert isinstance(layer, GlobalContext) and layer.fusion == "mul"


@pytest.mark.parametrize("kwargs, match", [
    ({"reduction_ratio": 0}, "reduction_ratio"),
    ({"reduction_ratio": -16}, "reduction_ratio"),
    ({"reduction_channels": 0}, "reduction_channels"),
    ({"reduction_divisor": 0}, "reduction_divisor"),
    ({"fusion": "channel_add"}, "fusion"),
    ({"fusion": "concat"}, "fusion"),
    ({"context_modeling": "att"}, "context_modeling"),
    ({"context_modeling": "max"}, "context_modeling"),
    ({"epsilon": 0}, "epsilon"),
])
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlobalContext(**kwargs)


def test_wrong_rank():
    with pytest.raises(ValueError, match="4D input"):
        GlobalContext()(np.zeros((2, 5, 16), "float32"))


def test_unknown_channels():
    with pytest.raises(ValueError, match="channel dimension"):
        GlobalContext().build((None, 7, 7, None))


def test_epsilon_reaches_the_layer_norm():
    layer = GlobalContext(epsilon=1e-6)
    layer.build((None, 4, 4, 32))
    assert layer.norm.epsilon == 1e-6 and GlobalContext.from_config(layer.get_config()).epsilon == 1e-6
    assert GlobalContext().get_config()["epsilon"] == 1e-5


@pytest.mark.timm
@pytest.mark.parametrize("fusion, use_attn", [("add", True), ("mul", True), ("add", False)])
def test_matches_timm_global_context(fusion, use_attn):
    # timm's ByobNet "gca" attention is GlobalContext(fuse_add=True, fuse_scale=False), r = 8,
    # LayerNorm eps 1e-6: ours with fusion="add", reduction_ratio=8, epsilon=1e-6.
    import_or_skip("timm", "timm (test-only reference) is not installed")
    from timm.layers import GlobalContext as TimmGlobalContext

    module = TimmGlobalContext(32, use_attn=use_attn, fuse_add=fusion == "add", fuse_scale=fusion == "mul")
    layer = GlobalContext(reduction_ratio=8, epsilon=1e-6, fusion=fusion,
                          context_modeling="attention" if use_attn else "avg")
    assert timm_module_error(layer, module, random_images((2, 5, 6, 32), seed=2)) < 1e-5
