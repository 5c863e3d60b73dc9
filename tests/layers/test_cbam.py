import keras
import numpy as np
import pytest

from keras_attention.layers import CBAM, ChannelAttention, SpatialAttention, create_attention
from tests.helpers import count_trainable_params, random_images, run_layer_test

SHAPES = [(2, 8, 8, 16), (1, 5, 7, 16), (2, 1, 1, 16)]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_contract_cbam(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(CBAM, {"reduction_ratio": 4}, SHAPES, tmp_path=tmp_path)


def test_contract_channel_attention(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(ChannelAttention, {"reduction_channels": 3}, SHAPES, tmp_path=tmp_path,
                   fresh_process=False)


def test_contract_spatial_attention(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(SpatialAttention, {"kernel_size": 3, "zero_init_gamma": False}, SHAPES,
                   tmp_path=tmp_path, fresh_process=False)


def channel_reference(x, layer):
    w1, b1, w2, b2 = [keras.ops.convert_to_numpy(w) for w in (layer.fc1.kernel, layer.fc1.bias,
                                              layer.fc2.kernel, layer.fc2.bias)]
    mlp = lambda z: np.maximum(z @ w1 + b1, 0) @ w2 + b2  # noqa: E731
    return x * sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))[:, None, None, :]


def spatial_reference(x, layer):
    pooled = np.concatenate([x.max(-1, keepdims=True), x.mean(-1, keepdims=True)], axis=-1)  # max first
    k = layer.kernel_size
    kernel = keras.ops.convert_to_numpy(layer.conv.kernel)  # (k, k, 2, 1)
    padded = np.pad(pooled, [(0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)])
    n, h, w, _ = x.shape
    conv = np.zeros((n, h, w), "float64")
    for i in range(h):
        for j in range(w):
            conv[:, i, j] = np.einsum("nabc,abc->n", padded[:, i:i + k, j:j + k], kernel[..., 0])
    gamma, beta, mean, var = [keras.ops.convert_to_numpy(v) for v in layer.norm.get_weights()]
    bn = gamma * (conv[..., None] - mean) / np.sqrt(var + 1e-5) + beta
    return x * sigmoid(bn)


def _randomise_spatial(layer, rng):
    layer.conv.kernel.assign(rng.normal(0, 0.3, layer.conv.kernel.shape).astype("float32"))
    layer.norm.set_weights([np.array([1.3]), np.array([0.2]), np.array([0.1]), np.array([0.8])])


def test_channel_attention_matches_numpy_reference():
    layer = ChannelAttention(reduction_ratio=2)
    x = random_images((2, 4, 5, 8), seed=1)
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    layer.fc1.bias.assign(rng.normal(0, 0.5, 4).astype("float32"))  # biases start at zero
    layer.fc2.bias.assign(rng.normal(0, 0.5, 8).astype("float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), channel_reference(x, layer), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_spatial_attention_matches_numpy_reference(kernel_size):
    layer = SpatialAttention(kernel_size=kernel_size)
    x = random_images((2, 6, 5, 8), seed=2)
    layer.build(x.shape)
    _randomise_spatial(layer, np.random.default_rng(2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), spatial_reference(x, layer),
                               rtol=1e-4, atol=1e-5)


def test_spatial_pooling_order_is_max_then_mean():
    # A 1x1 kernel reading only the first pooled channel must see the channel-wise max.
    layer = SpatialAttention(kernel_size=1, zero_init_gamma=False)
    x = random_images((1, 3, 3, 5), seed=3)
    layer.build(x.shape)
    layer.conv.kernel.assign(np.array([1.0, 0.0], "float32").reshape(1, 1, 2, 1))
    layer.norm.set_weights([np.ones(1), np.zeros(1), np.zeros(1), np.ones(1)])
    expected = x * sigmoid(x.max(-1, keepdims=True) / np.sqrt(1 + 1e-5))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), expected, rtol=1e-5, atol=1e-6)


def test_cbam_is_channel_then_spatial():
    layer = CBAM(reduction_ratio=2, spatial_kernel_size=3)
    x = random_images((2, 4, 4, 8), seed=4)
    layer.build(x.shape)
    _randomise_spatial(layer.spatial, np.random.default_rng(4))
    expected = spatial_reference(channel_reference(x, layer.channel), layer.spatial)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), expected, rtol=1e-4, atol=1e-5)


def test_official_initialisation():
    # Spatial gate BN gamma = 0 (official model_resnet.py), so it starts at sigmoid(beta = 0) = 1/2.
    x = random_images((2, 5, 5, 8), seed=5)
    layer = SpatialAttention()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), 0.5 * x, rtol=1e-6)
    assert np.all(keras.ops.convert_to_numpy(layer.norm.gamma) == 0)
    ones = SpatialAttention(zero_init_gamma=False)
    ones.build(x.shape)
    assert np.all(keras.ops.convert_to_numpy(ones.norm.gamma) == 1)
    # The channel MLP's biases start at zero as in the official initialisation.
    channel = ChannelAttention()
    channel.build((None, 4, 4, 32))
    assert not np.any(keras.ops.convert_to_numpy(channel.fc1.bias)) and not np.any(keras.ops.convert_to_numpy(channel.fc2.bias))
    # BatchNorm settings of the official BasicConv: eps 1e-5, PyTorch momentum 0.01.
    assert layer.norm.epsilon == 1e-5 and layer.norm.momentum == 0.99


def test_parameter_counts():
    c = 64
    inputs = keras.Input((7, 7, c))
    counts = {cls: count_trainable_params(keras.Model(inputs, cls()(inputs)))
              for cls in (ChannelAttention, SpatialAttention, CBAM)}
    h = c // 16
    # Channel MLP with biases: C h + h + h C + C = 580 for C = 64.
    assert counts[ChannelAttention] == 2 * c * h + h + c == 580
    # Spatial: 7x7 conv 2 -> 1 without bias (98) + BN gamma and beta (2).
    assert counts[SpatialAttention] == 2 * 7 * 7 + 2 == 100
    assert counts[CBAM] == 680
    # CBAM-ResNet-50: 16 bottlenecks, SE-sized MLPs (2,530,992 as SE-ResNet-50) + 16 x 100
    # -> 25,557,032 + 2,532,592 = 28,089,624 (paper Table 4: 28.09M).
    total = 0
    for channels, blocks in [(256, 3), (512, 4), (1024, 6), (2048, 3)]:
        layer = CBAM()
        layer.build((None, 7, 7, channels))
        total += blocks * sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert total == 2_532_592


def test_factory_names():
    assert isinstance(create_attention("cbam", reduction_ratio=8), CBAM)
    assert isinstance(create_attention("cbam_channel", reduction_ratio=8), ChannelAttention)
    assert isinstance(create_attention("cbam_spatial", kernel_size=3), SpatialAttention)


@pytest.mark.parametrize("cls, kwargs, match", [
    (CBAM, {"reduction_ratio": 0}, "reduction_ratio"),
    (CBAM, {"reduction_ratio": -1}, "reduction_ratio"),
    (CBAM, {"reduction_channels": 0}, "reduction_channels"),
    (CBAM, {"reduction_divisor": 0}, "reduction_divisor"),
    (CBAM, {"spatial_kernel_size": 4}, "spatial_kernel_size"),
    (CBAM, {"spatial_kernel_size": 0}, "spatial_kernel_size"),
    (ChannelAttention, {"reduction_ratio": 0}, "reduction_ratio"),
    (SpatialAttention, {"kernel_size": 6}, "odd"),
    (SpatialAttention, {"kernel_size": -7}, "kernel_size"),
])
def test_invalid_hyperparameters(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_invalid_types():
    with pytest.raises(TypeError, match="zero_init_gamma"):
        SpatialAttention(zero_init_gamma="yes")
    with pytest.raises(TypeError, match="kernel_size"):
        SpatialAttention(kernel_size="7")


@pytest.mark.parametrize("cls", [CBAM, ChannelAttention, SpatialAttention])
def test_wrong_rank(cls):
    with pytest.raises(ValueError, match="4D input"):
        cls()(np.zeros((2, 7, 16), "float32"))
