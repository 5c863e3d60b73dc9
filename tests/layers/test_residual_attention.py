import keras
import numpy as np
import pytest

from keras_attention.layers import PreActBottleneck, ResidualAttentionModule
from keras_attention.layers.residual_attention import caffe_max_pool, resize_align_corners
from tests.helpers import random_images, run_layer_test


def test_contract_module(tmp_path):
    run_layer_test(ResidualAttentionModule, {"num_pools": 2}, [(2, 8, 8, 16), (1, 8, 12, 16), (2, 5, 7, 16)],
                   tmp_path=tmp_path)


def test_contract_module_three_pools_with_attention(tmp_path):
    run_layer_test(ResidualAttentionModule, {"num_pools": 3, "return_attention": True}, [(2, 16, 16, 16)],
                   tmp_path=tmp_path, fresh_process=False)


def test_contract_unit(tmp_path):
    run_layer_test(PreActBottleneck, {"filters": 32, "stride": 2}, [(2, 8, 8, 16), (1, 7, 5, 16)],
                   tmp_path=tmp_path, expected_output_shape=lambda s: (s[0], -(-s[1] // 2), -(-s[2] // 2), 32),
                   fresh_process=False)


# Trainable parameters of one attention module in the official prototxts (sum of conv
# weights and BN scale/shift of the AttentionA_1 / AttentionB_1 / AttentionC_1 layers of
# Attention-56-deploy.prototxt, with the BN that pre-activates the module's first unit).
@pytest.mark.parametrize("pools,channels,expected", [(3, 256, 976_896), (2, 512, 3_046_912),
                                                     (1, 1024, 8_804_352)])
def test_module_parameter_count_matches_official(pools, channels, expected):
    module = ResidualAttentionModule(num_pools=pools)
    module.build((None, 8, 8, channels))
    assert sum(int(np.prod(w.shape)) for w in module.trainable_weights) == expected
    # p + t + post + (pools + 1) down + 2 (pools - 1) skip/up units, 3 convs each, + 2 mask convs.
    convs = [w for w in module.trainable_weights if w.name == "kernel"]
    assert len(convs) == 3 * (4 + pools + 1 + 2 * (pools - 1)) + 2


def _numpy_caffe_pool(x):
    n, h, w, c = x.shape
    oh, ow = int(np.ceil((h - 3) / 2)) + 1, int(np.ceil((w - 3) / 2)) + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, 2 * i:min(2 * i + 3, h), 2 * j:min(2 * j + 3, w)].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("h,w", [(8, 8), (7, 7), (6, 5), (2, 3)])
def test_caffe_ceil_mode_max_pool(h, w):
    x = random_images((2, h, w, 3), seed=h * w)
    y = keras.ops.convert_to_numpy(caffe_max_pool(x))
    assert y.shape == (2, h // 2, w // 2, 3)
    np.testing.assert_array_equal(y, _numpy_caffe_pool(x))


def _numpy_interp(x, oh, ow):
    """caffe_cpu_interp2 (buptwangfei/caffe src/caffe/util/interp.cpp), transcribed."""
    n, h, w, c = x.shape
    rh = (h - 1) / (oh - 1) if oh > 1 else 0.0
    rw = (w - 1) / (ow - 1) if ow > 1 else 0.0
    out = np.zeros((n, oh, ow, c), np.float64)
    for i in range(oh):
        h1r = rh * i
        h1 = int(h1r)
        hp = 1 if h1 < h - 1 else 0
        l1 = h1r - h1
        for j in range(ow):
            w1r = rw * j
            w1 = int(w1r)
            wp = 1 if w1 < w - 1 else 0
            m1 = w1r - w1
            out[:, i, j] = ((1 - l1) * ((1 - m1) * x[:, h1, w1] + m1 * x[:, h1, w1 + wp])
                            + l1 * ((1 - m1) * x[:, h1 + hp, w1] + m1 * x[:, h1 + hp, w1 + wp]))
    return out


@pytest.mark.parametrize("src,dst", [((7, 7), (14, 14)), ((2, 3), (4, 6)), ((4, 4), (7, 9)), ((3, 3), (3, 3))])
def test_align_corners_resize_matches_caffe_interp(src, dst):
    x = random_images((2, *src, 3), seed=1)
    y = keras.ops.convert_to_numpy(resize_align_corners(x, *dst))
    np.testing.assert_allclose(y, _numpy_interp(x, *dst), rtol=1e-5, atol=1e-5)


def test_attention_residual_learning():
    module = ResidualAttentionModule(num_pools=2, return_attention=True)
    x = random_images((2, 8, 8, 16), seed=9)
    y, mask = module(x, training=False)
    mask = keras.ops.convert_to_numpy(mask)
    assert mask.shape == x.shape and mask.min() >= 0 and mask.max() <= 1
    trunk = x
    for unit in module.pre + module.trunk:
        trunk = unit(trunk, training=False)
    fused = keras.ops.convert_to_numpy(trunk) * (1 + mask)  # (1 + M(x)) * T(x), paper Eq. 3
    for unit in module.post:
        fused = unit(fused, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(fused), rtol=1e-5, atol=1e-5)


def test_unit_projection_only_when_shape_changes():
    same = PreActBottleneck(16)
    same.build((None, 4, 4, 16))
    assert same.projection is None and same.conv1.filters == 4
    proj = PreActBottleneck(32, stride=2)
    proj.build((None, 4, 4, 16))
    assert proj.projection.strides == (2, 2)
    x = random_images((1, 4, 4, 16))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(same(x)) - x,
                               keras.ops.convert_to_numpy(same.conv3(np.maximum(keras.ops.convert_to_numpy(same.bn3(same.conv2(np.maximum(
                                   keras.ops.convert_to_numpy(same.bn2(same.conv1(np.maximum(keras.ops.convert_to_numpy(same.bn1(x)), 0)))), 0)))), 0))),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"num_pools": 0}, {"trunk_units": 0}, {"mask_units": -1}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="must be"):
        ResidualAttentionModule(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=">= 8"):
        ResidualAttentionModule(num_pools=3)(np.zeros((1, 4, 8, 8), "float32"))
    with pytest.raises(ValueError, match="4D input"):
        ResidualAttentionModule()(np.zeros((2, 16), "float32"))
