"""ColorNet: branches, combiner, registered names, parameter counts, end-to-end training, reload."""

import keras
import numpy as np
import pytest

from keras_attention.layers import COLOR_SPACES, ColorSpaceConversion
from keras_attention.models.colornet import colornet
from keras_attention.complexity import count_macs
from keras_attention.registry import create_model, get_model_entry, list_models
from tests.helpers import (TFDS_DIR, check_fresh_process_reload, count_trainable_params, needs_cifar,
                           random_images)

# Branch counts established in tests/models/test_densenet.py (official DenseNet structure).
DENSENET_BC_40_12 = 176_122
DENSENET_BC_40_48 = 2_733_130
COMBINER = 7 * 10 * 10 + 10  # concat of 7 x 10 logits -> 10, with bias


def tiny(**kwargs):
    """A small ColorNet (depth 10 = one bottleneck layer per block, k = 4) on 8x8 inputs."""
    return colornet(**{"depth": 10, "growth_rate": 4, "num_classes": 3, "input_shape": (8, 8, 3),
                       **kwargs})


def test_registered_names():
    expected = {f"colornet40_{k}{suffix}" for k in (12, 48)
                for suffix in ["", *(f"_{s}" for s in COLOR_SPACES)]}
    assert set(list_models("colornet*")) == expected
    assert "seven colour spaces" in get_model_entry("colornet40_12").summary
    assert "HSV" in get_model_entry("colornet40_48_hsv").summary


def test_colornet40_12_structure_and_parameter_count():
    model = create_model("colornet40_12")
    assert model.name == "colornet40_12"
    # seven DenseNet-BC-40-12 branches plus the combiner
    assert count_trainable_params(model) == 7 * DENSENET_BC_40_12 + COMBINER == 1_233_564
    for space in COLOR_SPACES:
        convert = model.get_layer(f"{space}_convert")
        assert isinstance(convert, ColorSpaceConversion)
        assert convert.space == space and convert.normalize
        assert model.get_layer(f"{space}_block1_layer1_conv1").filters == 48
        assert tuple(model.get_layer(f"{space}_final_relu").output.shape) == (None, 8, 8, 132)
        assert model.get_layer(f"{space}_head_fc").units == 10
    assert tuple(model.get_layer("branch_logits").output.shape) == (None, 70)
    assert model.get_layer("head_fc").dtype_policy.name == "float32"
    # multiply-accumulates: seven branches (densenet_bc_40_12: 72,371,840) plus the combiner
    assert count_macs(model) == 7 * count_macs(create_model("densenet_bc_40_12")) + 700


@pytest.mark.slow
def test_colornet40_48_parameter_count():
    assert count_trainable_params(create_model("colornet40_48")) == 7 * DENSENET_BC_40_48 + COMBINER


@pytest.mark.parametrize("name, branch", [("colornet40_12_lab", DENSENET_BC_40_12),
                                          ("colornet40_48_hed", DENSENET_BC_40_48)])
def test_single_space_models_are_one_plain_branch(name, branch):
    model = create_model(name)
    assert count_trainable_params(model) == branch  # no combiner
    assert model.output.name.startswith(f"{name.rsplit('_', 1)[1]}_head_fc") or \
        model.layers[-1].name == f"{name.rsplit('_', 1)[1]}_head_fc"
    assert len([l for l in model.layers if isinstance(l, ColorSpaceConversion)]) == 1


def test_rgb_single_space_equals_densenet_on_scaled_input():
    ours = create_model("colornet40_12_rgb", input_shape=(16, 16, 3))
    reference = create_model("densenet_bc_40_12", input_shape=(16, 16, 3))
    mine = [l for l in ours.layers if l.weights]
    theirs = [l for l in reference.layers if l.weights]
    assert [l.name for l in mine] == [f"rgb_{l.name}" for l in theirs]
    for a, b in zip(mine, theirs):
        b.set_weights(a.get_weights())
    x = random_images((2, 16, 16, 3), seed=3, low=0, high=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)),
                               keras.ops.convert_to_numpy(reference(2 * x - 1)), atol=1e-4, rtol=1e-4)


def test_combiner_is_a_dense_layer_on_the_concatenated_branch_logits():
    model = tiny(spaces=("rgb", "lab", "hed"))
    x = random_images((2, 8, 8, 3), seed=5, low=0, high=1)
    branch = keras.Model(model.input, [model.get_layer(f"{s}_head_fc").output
                                       for s in ("rgb", "lab", "hed")])
    logits = np.concatenate([keras.ops.convert_to_numpy(y) for y in branch(x)], axis=-1)
    kernel, bias = model.get_layer("head_fc").get_weights()
    assert kernel.shape == (9, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), logits @ kernel + bias,
                               atol=1e-5, rtol=1e-5)


def test_subsets_names_and_feature_outputs():
    model = create_model("colornet40_12", spaces=["hsv", "yiq"], input_shape=(16, 16, 3))
    assert model.name == "colornet40_12_hsv_yiq"
    assert [l.space for l in model.layers if isinstance(l, ColorSpaceConversion)] == ["hsv", "yiq"]
    assert count_trainable_params(model) == 2 * DENSENET_BC_40_12 + 2 * 10 * 10 + 10
    features = tiny(include_top=False)
    assert tuple(features.output.shape) == (None, 2, 2, 7 * features.get_layer("rgb_final_relu").output.shape[-1])
    pooled = tiny(include_top=False, pooling="avg", spaces=("lab", "yuv"))
    assert tuple(pooled.output.shape) == (None, 2 * pooled.get_layer("lab_final_relu").output.shape[-1])
    raw = tiny(normalize=False, spaces=("ycbcr",))
    assert not raw.get_layer("ycbcr_convert").normalize


def test_end_to_end_training_updates_every_branch():
    model = tiny(dropout_rate=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)  # tracing the 7-branch train step takes ~30 s on 2 cores
    before = {w.path: keras.ops.convert_to_numpy(w) for w in model.trainable_weights}
    x = random_images((6, 8, 8, 3), seed=2, low=0, high=1)
    for _ in range(2):
        loss = model.train_on_batch(x, np.arange(6) % 3)
    assert np.isfinite(loss)
    unchanged = [w.path for w in model.trainable_weights
                 if np.array_equal(before[w.path], keras.ops.convert_to_numpy(w))]
    assert not unchanged, f"no gradient reached {unchanged}"
    assert {w.path.split("_", 1)[0] for w in model.trainable_weights} >= set(COLOR_SPACES)


def test_mixed_precision():
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = tiny(spaces=("lab", "hsv"))
        y = model(random_images((2, 8, 8, 3), seed=1, low=0, high=1))
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(y)))
        assert model.get_layer("lab_stem_conv").compute_dtype == "float16"
    finally:
        keras.config.set_dtype_policy(previous)


def test_fresh_process_reload(tmp_path):
    # three branches keep it fast; every conversion's reload is tested in test_color.py
    model = tiny(spaces=("hsv", "lab", "hed"))
    check_fresh_process_reload(model, random_images((2, 8, 8, 3), seed=4, low=0, high=1), tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"spaces": ("rgb", "xyz")}, "Unknown colour space 'xyz'"),
    ({"spaces": ("rgb", "lav")}, "Did you mean 'lab'"),
    ({"spaces": ("rgb", "rgb")}, "must not repeat"),
    ({"spaces": ()}, "non-empty"),
    ({"depth": 41}, "depth = 6 n \\+ 4"),
    ({"growth_rate": 0}, "growth_rate"),
    ({"pooling": "sum", "include_top": False}, "pooling"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_single_space_names_do_not_take_spaces():
    with pytest.raises(ValueError, match="single-space"):
        create_model("colornet40_12_rgb", spaces=("lab",))


# Measured on test[:500] with `keras-attention evaluate NAME --split "test[:500]"` (TF and JAX
# agree); the tolerance allows two images to flip between backends/BLAS builds.
SHIPPED_SLICE_TOP1 = {"colornet40_12.cifar10": 64.2, "colornet40_12_yuv.cifar10": 67.6}


@pytest.mark.parametrize("name", sorted(SHIPPED_SLICE_TOP1))
def test_shipped_cifar10_weights_load_offline_and_classify_real_images(name, cifar10_prepared):
    import keras_attention
    from keras_attention.data import load_source
    from keras_attention.evaluation import evaluate_model, load_for_inference
    cfg = keras_attention.get_pretrained_cfg(name)
    assert cfg["source"]["recipe"] == "_recipes/cifar10_colornet_short.yaml"
    loaded = load_for_inference(name)
    source = load_source(str(cifar10_prepared), "test[:500]")
    result = evaluate_model(loaded.model, source, loaded.preprocessing, progress=False)
    assert abs(result["top1"] - SHIPPED_SLICE_TOP1[name]) <= 0.4, result
