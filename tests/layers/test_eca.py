import keras
import numpy as np
import pytest

from keras_attention.layers import ECA, adaptive_kernel_size, create_attention
from tests.helpers import count_trainable_params, random_images, run_layer_test


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_contract(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(ECA, {}, [(2, 8, 8, 16), (1, 5, 7, 16), (2, 1, 1, 16)], tmp_path=tmp_path)


def test_contract_explicit_kernel(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(ECA, {"kernel_size": 5}, [(2, 4, 4, 8), (1, 3, 5, 8)], tmp_path=tmp_path,
                   fresh_process=False, mixed_precision=False)


@pytest.mark.parametrize("channels, expected", [
    # t = int(|(log2 C + 1) / 2|), +1 if even (paper Fig. 3 code).
    (1, 1), (2, 1), (4, 1), (8, 3), (16, 3), (32, 3), (64, 3), (128, 5), (256, 5),
    (512, 5), (1024, 5), (2048, 7), (4096, 7), (100, 3), (24, 3),  # 100: (6.64 + 1) / 2 = 3.8 -> 3
])
def test_adaptive_kernel_size(channels, expected):
    assert adaptive_kernel_size(channels) == expected
    layer = ECA()
    layer.build((None, 7, 7, channels))
    assert layer.kernel_size_ == expected and layer.conv.kernel.shape == (expected, 1, 1)


def test_adaptive_kernel_size_with_other_constants():
    # gamma = 1, b = 0: int(log2 C) made odd.
    assert adaptive_kernel_size(256, gamma=1, b=0) == 9
    assert adaptive_kernel_size(512, gamma=1, b=0) == 9
    assert adaptive_kernel_size(64, gamma=3, b=3) == 3


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_matches_numpy_reference(kernel_size):
    layer = ECA(kernel_size=kernel_size)
    x = random_images((2, 4, 5, 9), seed=kernel_size)
    layer.build(x.shape)
    w = keras.ops.convert_to_numpy(layer.conv.kernel)[:, 0, 0]
    z = np.pad(x.mean(axis=(1, 2)), [(0, 0), (kernel_size // 2, kernel_size // 2)])  # zero padding
    conv = np.stack([z[:, i:i + kernel_size] @ w for i in range(9)], axis=1)  # cross-correlation
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x * sigmoid(conv)[:, None, None, :],
                               rtol=1e-5, atol=1e-6)


def test_kernel_is_not_flipped():
    # An asymmetric kernel [0, 0, 1] makes channel c's gate read channel c + 1 (PyTorch
    # Conv1d is a cross-correlation; so is Keras Conv1D). The last channel sees padding 0.
    layer = ECA(kernel_size=3)
    x = np.zeros((1, 2, 2, 4), "float32")
    x[..., 1] = 4.0
    layer.build(x.shape)
    layer.conv.kernel.assign(np.array([0.0, 0.0, 1.0], "float32").reshape(3, 1, 1))
    gate = keras.ops.convert_to_numpy(layer(x + 1.0))[0, 0, 0] / (x + 1.0)[0, 0, 0]
    np.testing.assert_allclose(gate, sigmoid(np.array([5.0, 1.0, 1.0, 0.0])), rtol=1e-5)


def test_parameter_counts():
    inputs = keras.Input((7, 7, 256))
    assert count_trainable_params(keras.Model(inputs, ECA()(inputs))) == 5  # k = 5, no bias
    assert count_trainable_params(keras.Model(inputs, ECA(kernel_size=3)(inputs))) == 3
    # Released ECA-Net50 ("k3557"): 3x3 + 4x5 + 6x5 + 3x7 = 80 parameters (README).
    per_stage = [(256, 3, 3), (512, 5, 4), (1024, 5, 6), (2048, 7, 3)]
    total = 0
    for channels, k, blocks in per_stage:
        layer = ECA(kernel_size=k)
        layer.build((None, 7, 7, channels))
        total += blocks * layer.count_params()
    assert total == 80
    # The adaptive rule instead gives 5, 5, 5, 7: 86.
    assert sum(blocks * adaptive_kernel_size(c) for c, _, blocks in per_stage) == 86


def test_factory_name():
    layer = create_attention("eca", kernel_size=3)
    assert isinstance(layer, ECA) and layer.kernel_size == 3


@pytest.mark.parametrize("key", ["reduction_ratio", "reduction_channels", "reduction_divisor"])
def test_rejects_reduction_arguments(key):
    with pytest.raises(TypeError, match="no bottleneck"):
        ECA(**{key: 16})
    with pytest.raises(TypeError, match="no bottleneck"):
        create_attention("eca", **{key: 16})


@pytest.mark.parametrize("kwargs, error, match", [
    ({"kernel_size": 4}, ValueError, "odd"),
    ({"kernel_size": 0}, ValueError, "kernel_size"),
    ({"kernel_size": -3}, ValueError, "kernel_size"),
    ({"kernel_size": 2.5}, ValueError, "kernel_size"),
    ({"kernel_size": "3"}, TypeError, "kernel_size"),
    ({"gamma": 0}, ValueError, "gamma"),
    ({"gamma": -2}, ValueError, "gamma"),
    ({"b": "1"}, TypeError, "`b`"),
])
def test_invalid_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        ECA(**kwargs)


def test_wrong_rank():
    with pytest.raises(ValueError, match="4D input"):
        ECA()(np.zeros((2, 3, 16), "float32"))
