import keras
import numpy as np
import pytest

from keras_attention.layers import SelectiveKernel, create_attention, list_attention
from tests.helpers import count_trainable_params, import_or_skip, random_images, run_layer_test, timm_module_error


def test_contract_keeps_shape_as_an_attention(tmp_path):
    keras.utils.set_random_seed(0)
    run_layer_test(SelectiveKernel, {"reduction_ratio": 4}, [(2, 8, 8, 16), (1, 5, 7, 16), (2, 1, 1, 16)],
                   tmp_path=tmp_path)


def test_contract_strided_grouped_conv(tmp_path):
    keras.utils.set_random_seed(0)

    def out_shape(s):
        return (s[0], -(-s[1] // 2), -(-s[2] // 2), 24)

    run_layer_test(SelectiveKernel, {"filters": 24, "strides": 2, "groups": 4, "split_input": False,
                                     "dilations": (1, 2, 3), "reduction_channels": 8, "activation": "silu"},
                   [(2, 8, 8, 16), (1, 5, 7, 16)], tmp_path=tmp_path, expected_output_shape=out_shape,
                   fresh_process=False)


@pytest.mark.timm
@pytest.mark.parametrize("kwargs, shape", [
    ({"filters": 24, "strides": 2, "reduction_ratio": 8, "reduction_divisor": 16}, (2, 9, 10, 16)),  # SK-ResNet-18
    ({"filters": 32, "groups": 8, "split_input": False, "reduction_ratio": 16, "reduction_divisor": 32},
     (2, 7, 6, 16)),  # SKNet-50
])
def test_matches_timm(kwargs, shape):
    import_or_skip("timm", "timm (test-only reference) is not installed")
    from timm.layers import SelectiveKernel as TimmSelectiveKernel

    module = TimmSelectiveKernel(shape[-1], kwargs["filters"], stride=kwargs.get("strides", 1),
                                 groups=kwargs.get("groups", 1), rd_ratio=1 / kwargs["reduction_ratio"],
                                 rd_divisor=kwargs["reduction_divisor"], split_input=kwargs.get("split_input", True))
    assert timm_module_error(SelectiveKernel(**kwargs), module, random_images(shape, seed=1)) < 1e-5


def test_selection_is_a_convex_combination_of_the_paths():
    # The output is sum_m a_m U_m with a softmax over paths: between the paths' min and max.
    layer = SelectiveKernel(8, reduction_channels=4)
    x = random_images((2, 6, 6, 8), seed=2)
    out = keras.ops.convert_to_numpy(layer(x))
    halves = np.split(x, 2, axis=-1)
    paths = np.stack([keras.ops.convert_to_numpy(layer._branch(i, h, False)) for i, h in enumerate(halves)])
    assert np.all(out >= paths.min(0) - 1e-5) and np.all(out <= paths.max(0) + 1e-5)


def test_parameter_count_and_widths():
    layer = SelectiveKernel(64, reduction_ratio=8, reduction_divisor=16)  # sk_resnet18 stage 1
    inputs = keras.Input((8, 8, 64))
    model = keras.Model(inputs, layer(inputs))
    # 2 paths of 3x3 (32 -> 64) + BN gamma/beta; fc_reduce 64 -> 16, its BN, fc_select 16 -> 128.
    assert layer.fc_reduce.units == 16 and layer.fc_select.units == 128
    assert count_trainable_params(model) == 2 * (9 * 32 * 64 + 128) + 64 * 16 + 32 + 16 * 128


def test_factory_and_strided_dilated_path():
    assert "sk" in list_attention()
    layer = create_attention("sk", filters=8, strides=2)
    assert isinstance(layer, SelectiveKernel)
    # The dilated path is computed at stride 1 and subsampled: same size as the strided one.
    assert tuple(layer(random_images((1, 7, 9, 8))).shape) == (1, 4, 5, 8)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"filters": 0}, ValueError, "filters"),
    ({"strides": 0}, ValueError, "strides"),
    ({"dilations": (1,)}, ValueError, "two paths"),
    ({"dilations": 2}, TypeError, "dilations"),
    ({"split_input": 1}, TypeError, "split_input"),
    ({"reduction_ratio": 0}, ValueError, "reduction_ratio"),
    ({"activation": "no_such_activation"}, ValueError, "activation"),
    ({"activation": None}, TypeError, "activation"),
])
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SelectiveKernel(**kwargs)


def test_invalid_input_channels():
    with pytest.raises(ValueError, match="divisible by the 2 paths"):
        SelectiveKernel().build((None, 8, 8, 7))
    with pytest.raises(ValueError, match="groups=3"):
        SelectiveKernel(filters=9, groups=3).build((None, 8, 8, 8))
    with pytest.raises(ValueError, match="4D input"):
        SelectiveKernel().build((None, 8, 8))
