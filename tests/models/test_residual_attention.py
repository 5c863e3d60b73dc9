import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.complexity import count_params
from keras_attention.layers import ResidualAttentionModule
from tests.helpers import check_fresh_process_reload, random_images

# Trainable parameters for 1000 classes, counted from the official Caffe prototxts
# (github.com/fwang91/residual-attention-network, imagenet_model/Attention-{56,92}-deploy.prototxt):
# conv weights (no biases) + BN scale/shift + classifier. With the BN moving statistics:
# 31,883,432 and 52,599,976. Paper (Table 4/6): 31.9M and 51.3M; see the module docstring
# of keras_attention.models.residual_attention for the Attention-92 difference.
OFFICIAL_PARAMS = {"attention56": 31_810_728, "attention92": 52_466_344}
OFFICIAL_PARAMS_WITH_BN_STATS = {"attention56": 31_883_432, "attention92": 52_599_976}


@pytest.mark.parametrize("name", ["attention56", "attention92"])
def test_imagenet_parameter_counts_and_forward(name):
    # Parameter counts do not depend on the input size; 64x64 keeps the forward pass fast
    # (stage maps 16/8/4/2, the 3-pool mask reaches 2x2).
    model = ka.create_model(name, input_shape=(64, 64, 3))
    assert count_params(model) == OFFICIAL_PARAMS[name]
    assert count_params(model, trainable_only=False) == OFFICIAL_PARAMS_WITH_BN_STATS[name]
    y = model(random_images((1, 64, 64, 3)), training=False)
    assert tuple(y.shape) == (1, 1000) and keras.backend.standardize_dtype(y.dtype) == "float32"
    modules = [l for l in model.layers if isinstance(l, ResidualAttentionModule)]
    assert [m.num_pools for m in modules] == ([3, 2, 1] if name == "attention56" else [3, 2, 2, 1, 1, 1])


def test_cifar_variants():
    # ImageNet structure with a 3x3/1 stem (3*3*3*64 instead of 7*7*3*64) and 10 classes.
    for name, imagenet in [("attention56_cifar", "attention56")]:
        model = ka.create_model(name)
        expected = OFFICIAL_PARAMS[imagenet] - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - (2048 * 1000 + 1000) + 2048 * 10 + 10
        assert count_params(model) == expected == 29_774_538
        assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
        assert model.get_layer("stage1_attention0").output[1].shape[1:3] == (32, 32)
        assert model.get_layer("stage4_unit2").output.shape[1:3] == (4, 4)
    narrow = ka.create_model("attention92_cifar", base_width=16)
    assert narrow.get_layer("stage3_attention2").output[0].shape[-1] == 256
    assert tuple(narrow(random_images((2, 32, 32, 3))).shape) == (2, 10)


def test_return_attention_and_layer_names():
    model = ka.create_model("attention56", input_shape=(64, 64, 3), base_width=8, return_attention=True)
    logits, *masks = model(random_images((2, 64, 64, 3)))
    assert [tuple(m.shape) for m in masks] == [(2, 16, 16, 32), (2, 8, 8, 64), (2, 4, 4, 128)]
    assert all(0 <= float(np.min(m)) and float(np.max(m)) <= 1 for m in masks)
    names = [l.name for l in model.layers]
    for expected in ("stem_conv_pad", "stem_conv", "stem_bn", "stem_pool", "stage1_unit0", "stage1_attention0",
                     "stage2_unit0", "stage3_attention0", "stage4_unit2", "head_bn", "head_fc"):
        assert expected in names
    assert model.get_layer("stem_pool").output.shape[1:3] == (16, 16)  # 64 -> 32 -> 16 (Caffe ceil mode)


@pytest.mark.slow  # ~30 s on 2 loaded cores: reloading ~700 nested layers
def test_save_and_reload_in_fresh_process(tmp_path):
    model = ka.create_model("attention56", input_shape=(64, 64, 3), base_width=4, num_classes=5)
    check_fresh_process_reload(model, random_images((2, 64, 64, 3)), tmp_path, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [({"stem": "deep"}, "stem"), ({"input_shape": (None, None, 3)}, "static"),
                                          ({"num_classes": 0}, "num_classes"),
                                          ({"input_shape": (16, 16, 3)}, ">= 8")])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ka.create_model("attention56", **kwargs)
