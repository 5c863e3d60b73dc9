import keras
import numpy as np
import pytest

from keras_attention.layers import SqueezeExcite, create_attention
from tests.helpers import random_images, run_layer_test


def test_contract(tmp_path):
    run_layer_test(SqueezeExcite, {"reduction_ratio": 4}, [(2, 8, 8, 16), (1, 5, 7, 16), (2, 1, 1, 16)],
                   tmp_path=tmp_path)


def test_bottleneck_width_and_parameter_count():
    layer = SqueezeExcite()  # r = 16
    layer.build((None, 7, 7, 256))
    assert layer.fc1.units == 16
    # 2 C^2 / r weights + C / r + C biases (SENet TPAMI Sec. 4 counts the FC weights).
    assert layer.count_params() == 2 * 256 * 256 // 16 + 16 + 256
    custom = create_attention("se", reduction_channels=24)
    custom.build((None, 7, 7, 64))
    assert custom.fc1.units == 24


def test_matches_numpy_reference():
    layer = SqueezeExcite(reduction_ratio=2)
    x = random_images((2, 4, 5, 8), seed=3)
    y = keras.ops.convert_to_numpy(layer(x))
    w1, b1, w2, b2 = [keras.ops.convert_to_numpy(w) for w in (layer.fc1.kernel, layer.fc1.bias, layer.fc2.kernel, layer.fc2.bias)]
    z = x.mean(axis=(1, 2))
    s = 1 / (1 + np.exp(-(np.maximum(z @ w1 + b1, 0) @ w2 + b2)))
    np.testing.assert_allclose(y, x * s[:, None, None, :], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"reduction_ratio": 0}, {"reduction_ratio": -2},
                                    {"reduction_channels": 0}, {"reduction_divisor": 0}])
def test_invalid_hyperparameters(kwargs):
    with pytest.raises(ValueError, match="must be"):
        SqueezeExcite(**kwargs)


def test_wrong_rank():
    with pytest.raises(ValueError, match="4D input"):
        SqueezeExcite()(np.zeros((2, 16), "float32"))
