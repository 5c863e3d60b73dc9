import keras
import numpy as np
import pytest

from keras_attention.layers import BilinearAttentionTransform, create_attention, list_attention
from tests.helpers import count_trainable_params, import_or_skip, random_images, run_layer_test, timm_module_error


def test_contract(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(BilinearAttentionTransform, {"block_size": 2}, [(2, 8, 8, 16), (1, 4, 6, 16), (2, 2, 2, 16)],
                   tmp_path=tmp_path)


@pytest.mark.timm
@pytest.mark.parametrize("block_size, shape", [(4, (2, 8, 12, 32)), (8, (1, 8, 8, 64)), (2, (2, 6, 4, 32))])
def test_matches_timm(block_size, shape):
    import_or_skip("timm", "timm (test-only reference) is not installed")
    from timm.layers import BatNonLocalAttn

    error = timm_module_error(BilinearAttentionTransform(block_size=block_size),
                              BatNonLocalAttn(shape[-1], block_size=block_size), random_images(shape, seed=1))
    assert error < 1e-5


def _numpy_transform(u, p, q, b):
    """(P kron I) u_c (Q kron I) per channel, with one (P, Q) per group, as timm's resize_mat."""
    n, h, w, d = u.shape
    g = p.shape[1]
    out = np.empty_like(u)
    for i in range(n):
        for c in range(d):
            gi = c // (d // g)
            left = np.kron(p[i, gi], np.eye(h // b))
            right = np.kron(q[i, gi], np.eye(w // b))
            out[i, :, :, c] = left @ u[i, :, :, c] @ right
    return out


def test_transform_is_a_kronecker_product():
    rng = np.random.default_rng(0)
    layer = BilinearAttentionTransform(block_size=2, groups=2, reduction_channels=4)
    x = random_images((2, 4, 6, 8), seed=4)
    layer.build(x.shape)
    u = rng.standard_normal((2, 4, 6, 4)).astype("float32")
    a = keras.ops.convert_to_numpy(keras.ops.relu(layer.ba_bn1(layer.ba_conv1(u))))
    rows = a.reshape(2, 2, 2, 6, 2).max(axis=(2, 3))[:, :, None, :]
    cols = a.reshape(2, 4, 2, 3, 2).max(axis=(1, 3))[:, None, :, :]
    p = 1 / (1 + np.exp(-keras.ops.convert_to_numpy(layer.conv_p(rows)).reshape(2, 2, 2, 2)))
    q = 1 / (1 + np.exp(-keras.ops.convert_to_numpy(layer.conv_q(cols)).reshape(2, 2, 2, 2)))
    p, q = p / p.sum(3, keepdims=True), q / q.sum(2, keepdims=True)
    expected = _numpy_transform(u, p, q, 2)
    expected = keras.ops.convert_to_numpy(keras.ops.relu(layer.ba_bn2(layer.ba_conv2(expected))))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer._transform(u, False)), expected,
                               rtol=1e-4, atol=1e-5)


def test_parameter_count():
    layer = BilinearAttentionTransform(block_size=8)  # bat_resnext26ts stage 1: C = 64, d = 16
    inputs = keras.Input((16, 16, 64))
    model = keras.Model(inputs, layer(inputs))
    b, g, d, c = 8, 2, 16, 64
    expected = (c * d + 2 * d) + (d * g + 2 * g) + 2 * (b * g * g * b * b + g * b * b) + (d * d + 2 * d) + (d * c + 2 * c)
    assert count_trainable_params(model) == expected


def test_factory():
    assert "bat" in list_attention()
    assert create_attention("bat", block_size=4).block_size == 4


@pytest.mark.parametrize("kwargs, match", [({"block_size": 0}, "block_size"), ({"groups": 0}, "groups"),
                                           ({"dropout_rate": 1.0}, "dropout_rate"),
                                           ({"reduction_divisor": 0}, "reduction_divisor")])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BilinearAttentionTransform(**kwargs)


def test_spatial_size_must_be_a_multiple_of_the_block_size():
    with pytest.raises(ValueError, match="height to be a multiple of block_size=8"):
        BilinearAttentionTransform(block_size=8).build((None, 12, 16, 32))
    with pytest.raises(ValueError, match="divisible by groups=3"):
        BilinearAttentionTransform(groups=3).build((None, 7, 7, 32))
