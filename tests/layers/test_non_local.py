import keras
import numpy as np
import pytest

from keras_attention.layers import NonLocalBlock, create_attention
from tests.helpers import random_images, run_layer_test

SHAPES = [(2, 8, 8, 16), (1, 6, 10, 16), (2, 7, 5, 16)]


def test_contract(tmp_path):
    run_layer_test(NonLocalBlock, {"subsample": 2}, SHAPES, tmp_path=tmp_path, identity_at_init=True)


@pytest.mark.parametrize("mode", ["gaussian", "dot_product", "concatenation"])
def test_contract_other_modes(mode, tmp_path):
    # Behind the zero-initialised BN gamma, theta/phi first move in step 2 by amounts that
    # can round away in float32 next to their N(0, 0.01) values: allow a few more steps.
    run_layer_test(NonLocalBlock, {"mode": mode, "subsample": 1}, SHAPES[:2], tmp_path=tmp_path,
                   identity_at_init=True, fresh_process=False, train_steps=6)


def test_identity_at_init_without_bn(tmp_path):
    # Official option USE_BN=False: W_z is zero-initialised instead.
    run_layer_test(NonLocalBlock, {"use_bn": False}, SHAPES[:1], tmp_path=tmp_path,
                   identity_at_init=True, fresh_process=False, mixed_precision=False)


def _maxpool(x, s):
    n, h, w, c = x.shape
    h2, w2 = h // s, w // s
    return x[:, :h2 * s, :w2 * s].reshape(n, h2, s, w2, s, c).max(axis=(2, 4))


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_non_local(layer, x):
    """Reference from the paper's equations, with BN in inference mode."""
    def conv(sub, t):
        return t @ keras.ops.convert_to_numpy(sub.kernel)[0, 0] + keras.ops.convert_to_numpy(sub.bias)

    n, h, w, c = x.shape
    s = layer.subsample
    pooled = _maxpool(x, s) if s > 1 else x
    flat, flat_pooled = x.reshape(n, h * w, c), pooled.reshape(n, -1, c)
    if layer.mode == "gaussian":
        q, k = flat, flat_pooled
    else:
        q, k = conv(layer.theta, flat), conv(layer.phi, flat_pooled)
    if layer.mode == "concatenation":
        wf = keras.ops.convert_to_numpy(layer.concat_project.kernel)[:, 0]
        d = q.shape[-1]
        f = np.maximum(q @ wf[:d][:, None] + (k @ wf[d:][:, None]).transpose(0, 2, 1), 0)
        att = f / k.shape[1]
    else:
        logits = q @ k.transpose(0, 2, 1)
        if layer.mode == "dot_product":
            att = logits / k.shape[1]
        else:
            att = _softmax(logits / np.sqrt(q.shape[-1]) if layer.scale else logits)
    y = att @ conv(layer.g, flat_pooled)
    z = conv(layer.out_conv, y)
    bn = layer.bn
    z = (z - keras.ops.convert_to_numpy(bn.moving_mean)) / np.sqrt(keras.ops.convert_to_numpy(bn.moving_variance) + bn.epsilon) \
        * keras.ops.convert_to_numpy(bn.gamma) + keras.ops.convert_to_numpy(bn.beta)
    return (flat + z).reshape(x.shape), att


@pytest.mark.parametrize("mode,subsample,scale", [("embedded_gaussian", 2, True),
                                                  ("embedded_gaussian", 1, False),
                                                  ("gaussian", 2, True), ("dot_product", 2, True),
                                                  ("concatenation", 1, True)])
def test_matches_numpy_reference(mode, subsample, scale):
    layer = NonLocalBlock(mode=mode, subsample=subsample, scale=scale, return_attention=True)
    x = random_images((2, 6, 4, 8), seed=1)
    layer.build(x.shape)
    rng = np.random.default_rng(0)
    layer.bn.gamma.assign(rng.uniform(0.5, 1.5, 8).astype("float32"))  # leave the identity
    if mode == "concatenation":  # make the ReLU active for some pairs
        layer.concat_project.kernel.assign(rng.standard_normal((8, 1)).astype("float32"))
    y, att = layer(x, training=False)
    expected_y, expected_att = _numpy_non_local(layer, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(att), expected_att, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), expected_y, rtol=1e-4, atol=1e-5)
    assert not np.allclose(keras.ops.convert_to_numpy(y), x)


def test_attention_shapes_and_normalisation():
    layer = NonLocalBlock(subsample=2, return_attention=True)
    _, att = layer(random_images((2, 8, 6, 16)))
    assert tuple(att.shape) == (2, 48, 12)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(att).sum(-1), 1.0, rtol=1e-5)
    _, att = NonLocalBlock(mode="dot_product", subsample=1, return_attention=True)(random_images((1, 4, 4, 8)))
    assert tuple(att.shape) == (1, 16, 16)


def test_parameter_count_and_inner_width():
    layer = create_attention("nonlocal")
    layer.build((None, 14, 14, 1024))
    assert layer.inner_channels == 512
    # theta, phi, g: C*d + d each; W_z: d*C + C; BN gamma/beta: 2C (trainable).
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == \
        3 * (1024 * 512 + 512) + 512 * 1024 + 1024 + 2 * 1024
    concat = NonLocalBlock(mode="concatenation", reduction_channels=8)
    concat.build((None, 4, 4, 16))
    gauss = NonLocalBlock(mode="gaussian", reduction_channels=8)
    gauss.build((None, 4, 4, 16))
    assert concat.count_params() - 2 * 16 == 3 * (16 * 8 + 8) + 8 * 16 + 16 + 16 + 2 * 16  # + w_f
    assert gauss.count_params() - 2 * 16 == (16 * 8 + 8) + 8 * 16 + 16 + 2 * 16  # g and W_z only


def test_subsampled_56x56_batch8_runs():
    # Issue 6: with sub-sampling a 56x56 map at batch 8 must fit (affinity 8 x 3136 x 784).
    layer = NonLocalBlock(subsample=2, return_attention=True)
    y, att = layer(np.zeros((8, 56, 56, 64), "float32"))
    assert tuple(y.shape) == (8, 56, 56, 64) and tuple(att.shape) == (8, 3136, 784)


@pytest.mark.parametrize("kwargs,match", [({"mode": "softmax"}, "embedded_gaussian"),
                                          ({"reduction_ratio": 0}, "must be"),
                                          ({"subsample": 0}, "must be"),
                                          ({"subsample": 1.5}, "integer")])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonLocalBlock(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="4D input"):
        NonLocalBlock()(np.zeros((2, 16), "float32"))
    with pytest.raises(ValueError, match="H and W >= 4"):
        NonLocalBlock(subsample=4)(np.zeros((1, 3, 8, 8), "float32"))


def test_theta_and_phi_start_from_different_kernels():
    layer = NonLocalBlock()
    layer.build((None, 6, 6, 8))
    assert not np.allclose(keras.ops.convert_to_numpy(layer.theta.kernel), keras.ops.convert_to_numpy(layer.phi.kernel))
