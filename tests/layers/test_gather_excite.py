import keras
import numpy as np
import pytest

from keras_attention.layers import GatherExcite, create_attention
from tests.helpers import count_trainable_params, random_images, run_layer_test

EPS = 1e-5  # BatchNorm epsilon of the gather (official CuDNNBatchNorm default)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def nearest_upsample(gate, height, width):
    """Reference resize: output row i takes row floor(i * h / H) (PyTorch "nearest")."""
    rows = [int(np.floor(i * gate.shape[1] / height)) for i in range(height)]
    cols = [int(np.floor(j * gate.shape[2] / width)) for j in range(width)]
    return gate[:, rows][:, :, cols]


def avg_pool_valid_cells(x, extent):
    """Reference GE-θ⁻ gather: (2e-1)^2 windows centred on i*e, mean over the cells inside x."""
    n, h, w, c = x.shape
    out_h, out_w = -(-h // extent), -(-w // extent)
    out = np.zeros((n, out_h, out_w, c), "float64")
    for i in range(out_h):
        for j in range(out_w):
            r0, r1 = max(i * extent - extent + 1, 0), min(i * extent + extent - 1, h - 1)
            c0, c1 = max(j * extent - extent + 1, 0), min(j * extent + extent - 1, w - 1)
            out[:, i, j] = x[:, r0:r1 + 1, c0:c1 + 1].mean(axis=(1, 2))
    return out


def depthwise_stride2(x, kernel):
    """Reference depthwise 3x3 convolution, stride 2, zero padding 1 on each side."""
    n, h, w, c = x.shape
    xp = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    out_h, out_w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = np.zeros((n, out_h, out_w, c), "float64")
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j] = np.einsum("nabc,abc->nc", xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3], kernel)
    return out


def randomise_batchnorms(layer, rng):
    """Non-trivial BN statistics, so an inference-mode reference checks they are used."""
    for norm in layer.norms:
        c = norm.gamma.shape[0]
        norm.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c),
                          rng.normal(0, 0.3, c), rng.uniform(0.5, 2.0, c)])


def batchnorm_inference(x, norm):
    gamma, beta, mean, var = [keras.ops.convert_to_numpy(w) for w in norm.get_weights()]
    return gamma * (x - mean) / np.sqrt(var + EPS) + beta


@pytest.mark.parametrize("kwargs, fresh_process", [
    ({"variant": "theta-", "extent": 4}, False),
    ({"variant": "theta", "extent": 8}, False),
    ({"variant": "theta+", "extent": "global", "reduction_ratio": 4}, False),
    ({"variant": "theta+", "extent": 4, "reduction_ratio": 4}, True),  # one reload per module
])
def test_contract(tmp_path, kwargs, fresh_process):
    keras.utils.set_random_seed(0)
    # The first shape is used for the gradient check: 16x16 so that extent 8 leaves a 2x2
    # gathered map (with 8x8 and batch 2, the last BatchNorm would normalise 2 values per
    # channel, whose output is +-1 whatever its input, so almost no gradient gets through),
    # and 32 channels so that GE-theta+'s bottleneck has 8 units: its inputs are all >= 0
    # (ReLU after the gather) and its weights N(0, 0.01) as the official init, so a unit is
    # dead for every sample with probability ~1/2, and 2 units are all dead too often.
    # GE-theta+ with a strided stack: the first BN's gamma gets no gradient at init (see
    # test_first_gather_scale_is_invariant_at_init) and, behind the official 0.01-std excite
    # convolutions, too small a one afterwards to move a float32 1.0 in three SGD steps.
    exempt = ("gather_bn1/gamma",) if kwargs["variant"] == "theta+" and kwargs["extent"] == 4 else ()
    run_layer_test(GatherExcite, kwargs, [(2, 16, 16, 32), (1, 5, 7, 32), (2, 1, 1, 32)],
                   tmp_path=tmp_path, fresh_process=fresh_process, no_gradient_weights=exempt)


def test_first_gather_scale_is_invariant_at_init():
    # BN1 -> ReLU -> conv2 -> BN2: with beta1 = 0 (its init), relu(g * xhat) = g * relu(xhat)
    # for g > 0 and BN2 removes the scale, so gamma1 has exactly zero gradient; once beta1
    # moves, it matters. (Why the contract test exempts gather_bn1/gamma for theta+.)
    layer = GatherExcite(variant="theta+", extent=4, reduction_ratio=2)
    x = random_images((2, 16, 16, 4), seed=8)
    layer.build(x.shape)
    gather = lambda: keras.ops.convert_to_numpy(layer._gather(x, training=True))  # noqa: E731
    before = gather()
    layer.norms[0].gamma.assign(np.full(4, 3.0, "float32"))
    np.testing.assert_allclose(gather(), before, rtol=1e-4, atol=1e-5)
    layer.norms[0].beta.assign(np.full(4, 0.5, "float32"))
    shifted = gather()
    layer.norms[0].gamma.assign(np.ones(4, "float32"))
    assert np.abs(gather() - shifted).max() > 0.1


def test_save_and_load_global_depthwise_gather(tmp_path):
    inputs = keras.Input((5, 6, 4))
    model = keras.Model(inputs, GatherExcite(variant="theta", extent="global")(inputs))
    x = random_images((2, 5, 6, 4), seed=9)
    model.save(tmp_path / "ge.keras")
    restored = keras.saving.load_model(tmp_path / "ge.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", ["theta-", "theta", "theta+"])
@pytest.mark.parametrize("extent", [2, 4, 8, "global"])
def test_every_variant_and_extent_runs_on_odd_sizes(variant, extent):
    for shape in [(2, 9, 11, 8), (1, 1, 1, 8), (1, 3, 17, 8)]:
        layer = GatherExcite(variant=variant, extent=extent, reduction_ratio=2)
        x = random_images(shape, seed=1)
        y = keras.ops.convert_to_numpy(layer(x, training=False))
        assert y.shape == shape and np.all(np.isfinite(y))


def test_any_size_with_unknown_height_and_width():
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, GatherExcite(variant="theta+", extent=4, reduction_ratio=2)(inputs))
    for shape in [(2, 9, 11, 8), (1, 4, 4, 8)]:
        assert model.predict(random_images(shape), verbose=0).shape == shape


@pytest.mark.parametrize("extent", [2, 4, 8])
def test_theta_minus_matches_numpy_reference(extent):
    layer = GatherExcite(variant="theta-", extent=extent)
    x = random_images((2, 9, 13, 3), seed=2)
    gate = sigmoid(nearest_upsample(avg_pool_valid_cells(x.astype("float64"), extent), 9, 13))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x * gate, rtol=1e-5, atol=1e-6)
    assert layer.count_params() == 0


def test_theta_minus_global_is_sigmoid_of_mean():
    x = random_images((2, 5, 6, 4), seed=3)
    y = keras.ops.convert_to_numpy(GatherExcite(variant="theta-", extent="global")(x))
    np.testing.assert_allclose(y, x * sigmoid(x.mean(axis=(1, 2), keepdims=True)), rtol=1e-5, atol=1e-6)


def test_upsampling_rule_for_size_not_divisible_by_extent():
    # H = 9, extent 4 -> 3 gathered rows; output row i takes gathered row floor(i * 3 / 9).
    # A ramp input makes each gathered row's mean distinct, so a wrong mapping shows.
    x = np.broadcast_to(np.arange(9, dtype="float32")[None, :, None, None], (1, 9, 1, 1)).copy()
    y = keras.ops.convert_to_numpy(GatherExcite(variant="theta-", extent=4)(x))[0, :, 0, 0] / x[0, :, 0, 0].clip(1e-9)
    ramp = x[0, :, 0, 0]
    gathered = sigmoid(np.array([ramp[0:4].mean(), ramp[1:8].mean(), ramp[5:9].mean()]))
    np.testing.assert_allclose(y[1:], gathered[[0, 0, 1, 1, 1, 2, 2, 2]], rtol=1e-5)


def test_theta_extent_4_matches_numpy_reference():
    rng = np.random.default_rng(4)
    layer = GatherExcite(variant="theta", extent=4)
    x = random_images((2, 7, 10, 3), seed=4)
    layer.build(x.shape)
    randomise_batchnorms(layer, rng)
    g = x.astype("float64")
    for i, (conv, norm) in enumerate(zip(layer.convs, layer.norms)):
        g = batchnorm_inference(depthwise_stride2(g, keras.ops.convert_to_numpy(conv.kernel)[:, :, :, 0]), norm)
        if i == 0:
            g = np.maximum(g, 0)  # ReLU between the strided convolutions, not after the last
    assert g.shape == (2, 2, 3, 3)  # ceil(7 / 4), ceil(10 / 4)
    expected = x * sigmoid(nearest_upsample(g, 7, 10))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), expected, rtol=1e-4, atol=1e-5)


def test_theta_plus_global_matches_numpy_reference():
    rng = np.random.default_rng(5)
    layer = GatherExcite(variant="theta+", extent="global", reduction_ratio=2)
    x = random_images((2, 4, 5, 6), seed=5)
    layer.build(x.shape)
    randomise_batchnorms(layer, rng)
    kernel = keras.ops.convert_to_numpy(layer.convs[0].kernel)[:, :, :, 0]  # (H, W, C): covers the whole map
    assert kernel.shape == (4, 5, 6)
    g = batchnorm_inference(np.einsum("nhwc,hwc->nc", x, kernel), layer.norms[0])
    w1, b1, w2, b2 = [keras.ops.convert_to_numpy(w) for w in (layer.fc1.kernel, layer.fc1.bias,
                                              layer.fc2.kernel, layer.fc2.bias)]
    s = sigmoid(np.maximum(np.maximum(g, 0) @ w1 + b1, 0) @ w2 + b2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), x * s[:, None, None, :],
                               rtol=1e-4, atol=1e-5)


def test_parameter_counts():
    c, h, w = 64, 7, 7
    counts = {}
    for variant in ("theta-", "theta", "theta+"):
        for extent in (2, 4, 8, "global"):
            layer = GatherExcite(variant=variant, extent=extent)
            inputs = keras.Input((h, w, c))
            counts[variant, extent] = count_trainable_params(keras.Model(inputs, layer(inputs)))
    # GE-θ⁻: parameter-free.
    assert all(counts["theta-", e] == 0 for e in (2, 4, 8, "global"))
    # GE-θ, extent e: log2(e) x (depthwise 3x3 without bias: 9C, BN gamma + beta: 2C).
    assert counts["theta", 2] == 11 * c
    assert counts["theta", 4] == 2 * 11 * c
    assert counts["theta", 8] == 3 * 11 * c
    # GE-θ, global: depthwise H x W kernel without bias (C H W) + BN (2C); cf. RN50-GEP.prototxt.
    assert counts["theta", "global"] == c * h * w + 2 * c
    # GE-θ⁺ = GE-θ + 1x1 convs with biases C -> C/16 -> C (as SE): 2 C^2/16 + C/16 + C.
    mlp = 2 * c * (c // 16) + c // 16 + c
    for e in (2, 4, 8, "global"):
        assert counts["theta+", e] == counts["theta", e] + mlp


def test_official_resnet50_attention_parameter_totals():
    """Sum over ResNet-50's 16 bottlenecks (C, H = 256/56 x3, 512/28 x4, 1024/14 x6, 2048/7 x3).

    The official prototxts give 25,557,032 (GE-θ⁻, RN50-GEPF), 31,106,600 (GE-θ, RN50-GEP)
    and 33,637,592 (GE-θ⁺, RN50-GEPP) trainable parameters, i.e. ResNet-50's 25,557,032 plus
    5,549,568 and 8,080,560 in the GE blocks.
    """
    stages = [(256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)]
    totals = {}
    for variant in ("theta-", "theta", "theta+"):
        total = 0
        for c, size, blocks in stages:
            layer = GatherExcite(variant=variant, extent="global")
            layer.build((None, size, size, c))
            total += blocks * sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
        totals[variant] = total
    assert totals == {"theta-": 0, "theta": 5_549_568, "theta+": 8_080_560}


def test_factory_name():
    layer = create_attention("ge", variant="theta", extent=2, reduction_ratio=8)
    assert isinstance(layer, GatherExcite) and layer.extent == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"variant": "theta++"}, "variant"),
    ({"variant": "plus"}, "variant"),
    ({"extent": 3}, "extent"),
    ({"extent": 16}, "extent"),
    ({"extent": "local"}, "extent"),
    ({"extent": True}, "extent"),
    ({"reduction_ratio": 0}, "reduction_ratio"),
    ({"reduction_ratio": -4}, "reduction_ratio"),
    ({"reduction_channels": 0}, "reduction_channels"),
    ({"reduction_divisor": 0}, "reduction_divisor"),
])
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GatherExcite(**kwargs)


def test_extent_error_lists_valid_values():
    with pytest.raises(ValueError, match=r"2, 4, 8 or 'global', received 3"):
        GatherExcite(extent=3)


def test_wrong_rank():
    with pytest.raises(ValueError, match="4D input"):
        GatherExcite()(np.zeros((2, 16), "float32"))


@pytest.mark.parametrize("variant", ["theta", "theta+"])
def test_global_depthwise_gather_needs_known_size(variant):
    inputs = keras.Input((None, None, 8))
    with pytest.raises(ValueError, match="height and width"):
        GatherExcite(variant=variant, extent="global")(inputs)


def test_global_depthwise_gather_rejects_another_size():
    layer = GatherExcite(variant="theta", extent="global")
    layer(random_images((1, 6, 6, 4)))
    with pytest.raises(ValueError):
        layer(random_images((1, 7, 6, 4)))
