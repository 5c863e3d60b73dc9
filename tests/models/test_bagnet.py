"""BagNets: parameter counts, receptive fields, heads, layer names, width multiplier, reload."""

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.models.bagnet import BAGNETS, build_bagnet, receptive_field
from tests.helpers import (check_fresh_process_reload, count_trainable_params, gradient, random_images,
                           randomize_batch_norms)

# Trainable parameters at 1000 classes, counted from the official structures:
# - bagnet9/17/33: github.com/wielandbrendel/bag-of-local-features-models, bagnets/pytorchnet.py
#   (BagNet(Bottleneck, [3, 4, 6, 3], strides=[2, 2, 2, 1], kernel3=...), fc 2048 -> 1000);
# - saccader_bagnet77: github.com/google-research/google-research, saccader/feedforward/bagnet_model.py
#   with saccader/visual_attention/saccader_config.py (kernel3 [2, 2, 2, 2], final_bottleneck, logits2d).
# official_count() below re-derives them from those files' layer lists, independently of our builder.
PARAMS = {"bagnet9": 15_688_744, "bagnet17": 16_213_032, "bagnet33": 18_310_184,
          "saccader_bagnet77": 20_573_736}
RECEPTIVE_FIELDS = {"bagnet9": 9, "bagnet17": 17, "bagnet33": 33, "saccader_bagnet77": 77}


def official_count(kernel3, *, saccader=False, classes=1000):
    """Parameters of the official networks, layer by layer (BN: gamma and beta)."""
    count = 9 * 3 * 64 + 2 * 64 if saccader else 3 * 64 + 9 * 64 * 64 + 2 * 64  # stem
    inplanes = 64
    for depth, planes, k3, stride in zip((3, 4, 6, 3), (64, 128, 256, 512), kernel3, (2, 2, 2, 1)):
        for i in range(depth):
            k = 3 if i < k3 else 1
            count += inplanes * planes + k * k * planes * planes + planes * 4 * planes + 2 * (planes + planes + 4 * planes)
            if i == 0 and (stride != 1 or inplanes != 4 * planes):
                count += inplanes * 4 * planes + 2 * 4 * planes  # downsample conv + BN
            inplanes = 4 * planes
    if saccader:
        count += 2048 * 512 + 2 * 512  # final bottleneck conv + BN
        inplanes = 512
    return count + inplanes * classes + classes


def patch_footprints(model, size, positions):
    """Rows and columns of the input that each of ``positions`` of the patch-logit map depends
    on (gradient non-zero), with random BN statistics and inference-mode BN (an affine map, so
    the examples of a batch are independent: example b measures position b, one gradient for all)."""
    randomize_batch_norms(model, seed=1)
    x = random_images((len(positions), size, size, 3), seed=2)
    weights = keras.ops.convert_to_tensor(np.random.default_rng(3).standard_normal(model.output.shape[-1]),
                                          dtype="float32")
    select = np.zeros((len(positions), *model.output.shape[1:3], 1), "float32")
    for b, (i, j) in enumerate(positions):
        select[b, i, j] = 1.0
    select = keras.ops.convert_to_tensor(select)

    def fn(t):
        return keras.ops.sum(model(t, training=False) * select * weights)

    g = np.abs(gradient(fn, x)) > 0
    return [(np.flatnonzero(g[b].any(axis=(1, 2))), np.flatnonzero(g[b].any(axis=(0, 2))))
            for b in range(len(positions))]


def test_registered_names():
    assert {"bagnet9", "bagnet17", "bagnet33", "saccader_bagnet77"} <= set(ka.list_models("*bagnet*"))
    assert "33x33" in ka.registry.get_model_entry("bagnet33").summary


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_equal_the_official_implementation(name):
    kernel3 = BAGNETS[name][0]
    assert official_count(kernel3, saccader=name.startswith("saccader")) == PARAMS[name]
    model = ka.create_model(name)
    assert count_trainable_params(model) == PARAMS[name]
    assert receptive_field(kernel3) == (RECEPTIVE_FIELDS[name], 8)


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("width_multiplier", [1.0, 0.125])
def test_receptive_field_is_exact(name, width_multiplier):
    rf = RECEPTIVE_FIELDS[name]
    size = rf + 2 * 8  # a 3 x 3 patch-logit map
    model = ka.create_model(name, input_shape=(size, size, 3), num_classes=4, patch_logits=True,
                            width_multiplier=width_multiplier)
    assert tuple(model.output.shape) == (None, 3, 3, 4)
    positions = [(0, 0), (1, 2), (2, 1)]
    for position, (rows, cols) in zip(positions, patch_footprints(model, size, positions)):
        np.testing.assert_array_equal(rows, np.arange(rf) + 8 * position[0])
        np.testing.assert_array_equal(cols, np.arange(rf) + 8 * position[1])


def test_width_multiplier_scales_widths_only():
    small = ka.create_model("bagnet33", input_shape=(41, 41, 3), width_multiplier=0.25, num_classes=3)
    assert small.get_layer("stem_conv1").filters == 16
    assert small.get_layer("stage1_block0_conv3").filters == 64
    assert small.get_layer("stage4_block2_conv3").filters == 512
    assert tuple(small.get_layer("stage4_block2_out").output.shape) == (None, 2, 2, 512)
    with pytest.raises((ValueError, TypeError), match="width_multiplier"):
        ka.create_model("bagnet33", width_multiplier=0)


@pytest.mark.parametrize("name, size", [("bagnet9", 27), ("bagnet17", 26), ("bagnet33", 24),
                                        ("saccader_bagnet77", 19)])
def test_patch_map_size_at_224(name, size):
    # Brendel's heatmaps: 224 -> 24 x 24 patch logits for BagNet-33; the Saccader's 19 x 19 grid.
    model = ka.create_model(name, patch_logits=True, num_classes=2, width_multiplier=0.0625)
    assert tuple(model.output.shape) == (None, size, size, 2)


def test_image_logits_are_the_mean_of_the_patch_logits():
    kwargs = dict(input_shape=(49, 49, 3), num_classes=5, width_multiplier=0.125)
    image = ka.create_model("bagnet17", **kwargs)
    patches = ka.create_model("bagnet17", patch_logits=True, **kwargs)
    randomize_batch_norms(image)
    patches.set_weights(image.get_weights())
    x = random_images((2, 49, 49, 3), seed=4)
    patch_logits = keras.ops.convert_to_numpy(patches(x))
    assert patch_logits.shape == (2, 5, 5, 5)
    np.testing.assert_allclose(patch_logits.mean(axis=(1, 2)), keras.ops.convert_to_numpy(image(x)),
                               atol=1e-4, rtol=1e-4)


def test_brendel_structure_and_names():
    model = ka.create_model("bagnet17", input_shape=(64, 64, 3))
    assert model.get_layer("stem_conv1").kernel_size == (1, 1) and not model.get_layer("stem_conv1").use_bias
    assert model.get_layer("stem_conv2").kernel_size == (3, 3)
    assert model.get_layer("stem_conv2").padding == "valid"
    assert model.get_layer("stem_bn").momentum == pytest.approx(0.999)  # PyTorch momentum=0.001
    kernels = {(s, b): model.get_layer(f"stage{s}_block{b}_conv2").kernel_size[0]
               for s, depth in zip((1, 2, 3, 4), (3, 4, 6, 3)) for b in range(depth)}
    assert [k for (s, b), k in kernels.items() if k == 3] == [3, 3, 3]
    assert {key for key, k in kernels.items() if k == 3} == {(1, 0), (2, 0), (3, 0)}
    assert [model.get_layer(f"stage{s}_block0_conv2").strides[0] for s in (1, 2, 3, 4)] == [2, 2, 2, 1]
    for s in (1, 2, 3, 4):  # every first block projects (64 -> 256 channels in stage 1 too)
        assert model.get_layer(f"stage{s}_block0_downsample_conv").strides[0] == (2 if s < 4 else 1)
    # bottom/right crop of the projected shortcut: 1 pixel after a stride-2 3x3 block
    assert model.get_layer("stage1_block0_crop").cropping == ((0, 1), (0, 1))
    assert model.get_layer("head_fc").dtype_policy.name == "float32"
    assert all(g == 1 for g in keras.ops.convert_to_numpy(model.get_layer("stage1_block0_bn3").gamma))


def test_saccader_variant_structure():
    model = ka.create_model("saccader_bagnet77", input_shape=(93, 93, 3), num_classes=7)
    assert model.get_layer("stem_conv").kernel_size == (3, 3)
    assert [model.get_layer(f"stage{s}_block{b}_conv2").kernel_size[0] for s in (1, 2) for b in range(3)] == \
        [3, 3, 1, 3, 3, 1]
    # centre crop of the shortcut before the projection (residual[:, 1:-1, 1:-1])
    assert model.get_layer("stage1_block0_crop").cropping == ((1, 1), (1, 1))
    assert model.get_layer("stage1_block1_crop").cropping == ((1, 1), (1, 1))
    # last BN of each block starts at zero; the projection's BN normalises the projection
    assert not np.any(keras.ops.convert_to_numpy(model.get_layer("stage3_block4_bn3").gamma))
    downsample_bn = model.get_layer("stage2_block0_downsample_bn")
    assert downsample_bn.input is model.get_layer("stage2_block0_downsample_conv").output
    assert model.get_layer("bottleneck_conv").filters == 512
    assert tuple(model.get_layer("bottleneck_relu").output.shape) == (None, 3, 3, 512)


def test_heads_and_features():
    kwargs = dict(input_shape=(41, 41, 3), width_multiplier=0.125)
    assert tuple(ka.create_model("bagnet33", include_top=False, **kwargs).output.shape) == (None, 2, 2, 256)
    assert tuple(ka.create_model("bagnet33", include_top=False, pooling="avg", **kwargs).output.shape) == \
        (None, 256)
    probs = ka.create_model("bagnet33", classifier_activation="softmax", num_classes=3, patch_logits=True, **kwargs)
    p = keras.ops.convert_to_numpy(probs(random_images((1, 41, 41, 3))))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    model = ka.create_model("bagnet9", attention="se", **kwargs)
    assert model.get_layer("stage3_block5_attention").__class__.__name__ == "SqueezeExcite"


@pytest.mark.parametrize("kwargs, match", [
    ({"patch_logits": True, "include_top": False}, "patch_logits"),
    ({"input_shape": (32, 32, 3)}, "receptive field"),
    ({"variant": "timm"}, "variant"),
    ({"pooling": "sum", "include_top": False}, "pooling"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ka.create_model("bagnet33", **kwargs)
    with pytest.raises(ValueError, match="strides"):
        build_bagnet((1, 1, 1, 1), strides=(2, 2, 3, 1))


def test_any_input_size():
    model = ka.create_model("bagnet9", input_shape=(None, None, 3), width_multiplier=0.125, num_classes=3,
                            patch_logits=True)
    for h, w in [(9, 9), (40, 57)]:
        y = model(random_images((1, h, w, 3)))
        assert tuple(y.shape) == (1, (h - 9) // 8 + 1, (w - 9) // 8 + 1, 3)


def test_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = ka.create_model("saccader_bagnet77", input_shape=(85, 85, 3), width_multiplier=0.125, num_classes=3)
        y = model(random_images((2, 85, 85, 3)))
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(y)))


@pytest.mark.parametrize("name, kwargs", [("bagnet33", {"patch_logits": True}), ("saccader_bagnet77", {})])
def test_save_and_reload_in_a_fresh_process(name, kwargs, tmp_path):
    size = RECEPTIVE_FIELDS[name] + 8
    model = ka.create_model(name, input_shape=(size, size, 3), num_classes=3, width_multiplier=0.125, **kwargs)
    randomize_batch_norms(model)
    check_fresh_process_reload(model, random_images((2, size, size, 3), seed=5), tmp_path, atol=1e-5)
