import keras
import numpy as np
import pytest

from keras_attention.layers import SplitAttention, create_attention, list_attention
from tests.helpers import count_trainable_params, import_or_skip, random_images, run_layer_test, timm_module_error


def test_contract_keeps_shape_as_an_attention(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(SplitAttention, {}, [(2, 8, 8, 16), (1, 5, 7, 16), (2, 1, 1, 16)], tmp_path=tmp_path)


@pytest.mark.parametrize("kwargs", [{"radix": 1, "groups": 2}, {"radix": 4, "groups": 2, "strides": 2,
                                                                  "filters": 24, "activation": "silu"}])
def test_contract_radix_and_groups(tmp_path, kwargs):
    keras.utils.set_random_seed(0)
    strides, filters = kwargs.get("strides", 1), kwargs.get("filters", 16)
    run_layer_test(SplitAttention, kwargs, [(2, 8, 8, 16), (1, 5, 7, 16)], tmp_path=tmp_path, fresh_process=False,
                   expected_output_shape=lambda s: (s[0], -(-s[1] // strides), -(-s[2] // strides), filters))


@pytest.mark.timm
@pytest.mark.parametrize("radix, groups", [(2, 1), (2, 2), (1, 2), (4, 2)])
def test_matches_timm(radix, groups):
    import_or_skip("timm", "timm (test-only reference) is not installed")
    import torch
    from timm.layers import SplitAttn

    module = SplitAttn(16, 16, 3, stride=1, padding=1, groups=groups, radix=radix, norm_layer=torch.nn.BatchNorm2d)
    error = timm_module_error(SplitAttention(16, groups=groups, radix=radix), module,
                              random_images((2, 7, 6, 16), seed=1))
    assert error < 1e-5


def test_radix_softmax_weights_sum_to_one():
    # Two identical splits (same kernel, same input channels): whatever the attention, the
    # softmax weights sum to 1 over the splits, so the output is the split itself.
    layer = SplitAttention(8, radix=2)
    x = random_images((2, 5, 5, 4), seed=3)
    x = np.concatenate([x, x], axis=-1)  # split r of the 2-group conv sees channels 4r..4r+3
    layer.build(x.shape)
    kernel = keras.ops.convert_to_numpy(layer.conv.kernel)  # (3, 3, 4, 16): two groups of 8 outputs
    layer.conv.kernel.assign(np.concatenate([kernel[..., :8], kernel[..., :8]], axis=-1))
    layer.bn0.set_weights([np.concatenate([w[:8], w[:8]]) for w in layer.bn0.get_weights()])
    splits = keras.ops.relu(layer.bn0(layer.conv(keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))))
    splits = keras.ops.convert_to_numpy(splits)
    np.testing.assert_array_equal(splits[..., :8], splits[..., 8:])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), splits[..., :8], rtol=1e-5, atol=1e-5)


def test_parameter_count_and_width():
    layer = SplitAttention(64, radix=2)  # resnest50d stage 1: d = max(64 * 2 / 4, 32) = 32
    inputs = keras.Input((8, 8, 64))
    model = keras.Model(inputs, layer(inputs))
    assert layer.fc1.filters == 32
    # conv 3x3 (64 -> 128, 2 groups) + BN0; fc1 64 -> 32 + bias, BN1; fc2 32 -> 128 + bias.
    assert count_trainable_params(model) == 9 * 32 * 128 + 256 + 64 * 32 + 32 + 64 + 32 * 128 + 128
    small = SplitAttention(radix=2)
    small.build((None, 4, 4, 8))
    assert small.fc1.filters == 32  # never below 32 (official max(..., 32))


def test_factory():
    assert "splat" in list_attention()
    assert isinstance(create_attention("splat", radix=1), SplitAttention)


@pytest.mark.parametrize("kwargs, match", [({"radix": 0}, "radix"), ({"groups": -1}, "groups"),
                                           ({"kernel_size": 0}, "kernel_size"), ({"filters": 0}, "filters")])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitAttention(**kwargs)


def test_invalid_channels():
    with pytest.raises(ValueError, match="groups \\* radix = 4"):
        SplitAttention(groups=2).build((None, 8, 8, 6))
