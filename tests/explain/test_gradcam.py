"""Grad-CAM: on a model whose answer is known it highlights the right quadrant; on a ResNet's
last stage it equals CAM (Grad-CAM paper, Sec. 3.1: global average pooling then a linear
layer make ``alpha_k^c = w_k^c / Z``). Backend-agnostic (TensorFlow, JAX, PyTorch)."""

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention import explain
from tests.helpers import random_images

np_ = keras.ops.convert_to_numpy


def quadrant_model(size=16):
    """Class 0 sees only the top-left quadrant, class 1 only the bottom-right one.

    ``features`` (4 channels): channels 0-1 a ReLU convolution of the top-left-masked image,
    channels 2-3 of the bottom-right-masked image; global average pooling; the classifier
    reads channels 0-1 for class 0 and 2-3 for class 1.
    """
    half = size // 2
    top_left = np.zeros((1, size, size, 1), "float32")
    top_left[:, :half, :half] = 1
    bottom_right = np.zeros_like(top_left)
    bottom_right[:, half:, half:] = 1
    inputs = keras.Input((size, size, 1), name="images")
    a = keras.layers.Conv2D(2, 1, activation="relu", kernel_initializer="ones", bias_initializer="zeros",
                            name="conv_a")(keras.layers.Lambda(lambda t: t * top_left, name="mask_a")(inputs))
    b = keras.layers.Conv2D(2, 1, activation="relu", kernel_initializer="ones", bias_initializer="zeros",
                            name="conv_b")(keras.layers.Lambda(lambda t: t * bottom_right, name="mask_b")(inputs))
    features = keras.layers.Concatenate(name="features")([a, b])
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    head = keras.layers.Dense(2, use_bias=False, name="head_fc")
    outputs = head(pooled)
    head.kernel.assign(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32"))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("cls,quadrant", [(0, (slice(0, 8), slice(0, 8))), (1, (slice(8, 16), slice(8, 16)))])
def test_highlights_the_quadrant_the_class_looks_at(cls, quadrant):
    model = quadrant_model()
    images = random_images((3, 16, 16, 1), seed=cls, low=0.1, high=1.0)  # content everywhere
    result = explain.grad_cam(model, images, class_index=cls)
    assert result.layer == "features"  # the last 4D output
    assert result.heatmaps.shape == (3, 16, 16) and result.cams.shape == (3, 16, 16)
    assert list(result.class_indices) == [cls] * 3
    inside = np.zeros((16, 16), bool)
    inside[quadrant] = True
    for cam in result.cams:
        assert cam[inside].min() > 0 and cam[~inside].max() == 0
    for heat in result.heatmaps:
        assert heat.max() == pytest.approx(1.0)
        assert heat[inside].sum() / heat.sum() > 0.97  # bilinear resize leaks a little at the border
        top = np.unravel_index(np.argmax(heat), heat.shape)
        assert inside[top]


def test_default_class_is_the_prediction_and_scores_are_its_logits():
    model = quadrant_model()
    images = random_images((4, 16, 16, 1), seed=3, low=0, high=1)
    images[:2, 8:, 8:] *= 3  # the bottom-right quadrant dominates: class 1
    result = explain.grad_cam(model, images, batch_size=3)
    logits = np_(model(images))
    np.testing.assert_array_equal(result.class_indices, logits.argmax(-1))
    assert list(result.class_indices[:2]) == [1, 1]
    np.testing.assert_allclose(result.scores, logits[np.arange(4), result.class_indices], rtol=1e-5)
    np.testing.assert_allclose(result.outputs, logits, rtol=1e-5)


def test_resnet_last_stage_grad_cam_is_cam():
    keras.utils.set_random_seed(0)
    model = ka.create_model("se_resnet20")
    x = random_images((2, 32, 32, 3), seed=4)
    result = explain.grad_cam(model, x, class_index=[3, 7])
    assert result.layer == explain.default_layer(model) == "stage3_block2_out"
    features = np_(keras.Model(model.input, model.get_layer("stage3_block2_out").output)(x))
    w = np_(model.get_layer("head_fc").kernel)
    cam = np.stack([np.maximum(features[i] @ w[:, c], 0) / 64 for i, c in enumerate((3, 7))])
    np.testing.assert_allclose(result.cams, cam, rtol=1e-4, atol=1e-6)


def test_named_layer_inside_the_network_and_errors():
    keras.utils.set_random_seed(0)
    model = ka.create_model("cbam_resnet20")
    x = random_images((2, 32, 32, 3), seed=5)
    result = explain.grad_cam(model, x, layer="stage2_block0_out")
    assert result.cams.shape == (2, 16, 16) and result.heatmaps.shape == (2, 32, 32)
    assert np.all(result.heatmaps >= 0) and np.all(result.heatmaps <= 1)
    with pytest.raises(ValueError, match="no layer 'stage2_block0_ot'.*stage2_block0_out"):
        explain.grad_cam(model, x, layer="stage2_block0_ot")
    with pytest.raises(ValueError, match="class_index"):
        explain.grad_cam(model, x, class_index=10)
