import keras
import numpy as np
import pytest

from keras_attention.layers import SelfAttention2D, SpectralConv2D, create_attention
from tests.helpers import random_images, run_layer_test

SHAPES = [(2, 8, 8, 16), (1, 6, 10, 16), (2, 4, 5, 16)]
OFFICIAL = {"value_ratio": 2, "subsample": 2, "spectral_norm": True}


def test_contract_paper(tmp_path):
    run_layer_test(SelfAttention2D, {}, SHAPES, tmp_path=tmp_path, identity_at_init=True)


def test_contract_official_variant(tmp_path):
    # u of the spectral norm is a non-trainable weight, gamma et al. must all train.
    run_layer_test(SelfAttention2D, OFFICIAL, SHAPES[:2], tmp_path=tmp_path, identity_at_init=True)


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _maxpool2(x):
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _sn(kernel, u):
    w = kernel.reshape(-1, kernel.shape[-1])
    v = u @ w.T
    v = v / (np.sqrt((v ** 2).sum()) + 1e-12)
    u = v @ w
    u = u / (np.sqrt((u ** 2).sum()) + 1e-12)
    return kernel / (v @ w @ u.T).item()


def _numpy_sagan(layer, x, sn):
    def conv(sub, t):
        k = keras.ops.convert_to_numpy(sub.kernel)
        if sn:
            k = _sn(k, keras.ops.convert_to_numpy(sub.u))
        y = t @ k[0, 0]
        return y + keras.ops.convert_to_numpy(sub.bias) if sub.use_bias else y

    q, k, v = conv(layer.query, x), conv(layer.key, x), conv(layer.value, x)
    if layer.subsample == 2:
        k, v = _maxpool2(k), _maxpool2(v)
    n, h, w, _ = x.shape
    beta = _softmax(q.reshape(n, h * w, -1) @ k.reshape(n, -1, k.shape[-1]).transpose(0, 2, 1))
    o = (beta @ v.reshape(n, -1, v.shape[-1])).reshape(n, h, w, -1)
    if layer.output_conv:
        o = conv(layer.out, o)
    return x + float(keras.ops.convert_to_numpy(layer.gamma)) * o, beta


@pytest.mark.parametrize("kwargs,sn", [({}, False), (OFFICIAL, True),
                                       ({"value_ratio": 1, "output_conv": False, "use_bias": True}, False)])
def test_matches_numpy_reference(kwargs, sn):
    layer = SelfAttention2D(**kwargs, return_attention=True)
    x = random_images((2, 6, 4, 16), seed=2)
    layer.build(x.shape)
    layer.gamma.assign(0.7)
    y, beta = layer(x, training=False)
    expected_y, expected_beta = _numpy_sagan(layer, x, sn)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(beta), expected_beta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), expected_y, rtol=1e-4, atol=1e-5)
    assert tuple(beta.shape) == ((2, 24, 6) if kwargs.get("subsample") == 2 else (2, 24, 24))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(beta).sum(-1), 1.0, rtol=1e-5)


def test_spectral_norm_converges_to_unit_spectral_norm():
    conv = SpectralConv2D(6, 1)
    conv.build((None, 4, 4, 10))
    x = random_images((1, 4, 4, 10))
    u0 = keras.ops.convert_to_numpy(conv.u).copy()
    conv(x, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(conv.u), u0)  # inference leaves u alone
    for _ in range(30):
        conv(x, training=True)
    w = keras.ops.convert_to_numpy(conv.normalized_kernel()).reshape(-1, 6)
    assert np.linalg.svd(w, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
    assert not np.array_equal(keras.ops.convert_to_numpy(conv.u), u0)


def test_parameter_counts():
    paper = create_attention("sagan")
    paper.build((None, 8, 8, 64))
    # f, g, h: 64 x 8 each; v: 8 x 64; gamma.
    assert paper.count_params() == 4 * 64 * 8 + 1
    official = SelfAttention2D(**OFFICIAL)
    official.build((None, 8, 8, 64))
    # theta, phi: 64 x 8; g: 64 x 32; attn conv: 32 x 64; sigma_ratio (gamma) -- as in
    # sn_non_local_block_sim (no biases); plus the non-trainable u vectors (8+8+32+64).
    trainable = sum(int(np.prod(w.shape)) for w in official.trainable_weights)
    assert trainable == 2 * 64 * 8 + 64 * 32 + 32 * 64 + 1
    assert official.count_params() - trainable == 8 + 8 + 32 + 64


def test_subsampled_56x56_batch8_runs():
    layer = SelfAttention2D(subsample=2, return_attention=True)
    y, att = layer(np.zeros((8, 56, 56, 64), "float32"))
    assert tuple(y.shape) == (8, 56, 56, 64) and tuple(att.shape) == (8, 3136, 784)


@pytest.mark.parametrize("kwargs,match", [({"reduction_ratio": 0}, "must be"), ({"value_ratio": -1}, "must be"),
                                          ({"subsample": 0}, "must be")])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelfAttention2D(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="output_conv=False"):
        SelfAttention2D(output_conv=False)(np.zeros((1, 4, 4, 16), "float32"))
    with pytest.raises(ValueError, match="4D input"):
        SelfAttention2D()(np.zeros((2, 16), "float32"))
    with pytest.raises(ValueError, match="H and W >= 2"):
        SelfAttention2D(subsample=2)(np.zeros((1, 1, 8, 16), "float32"))
