"""AttentionCrop (RA-CNN): box geometry, the boxcar mask and its derivative, gradients to the box, config."""

import keras
import numpy as np
import pytest

from keras_attention.layers.attention_crop import (AttentionCrop, attention_crop, boxcar_mask, boxes_from_units,
                                                   constrain_boxes, logistic_step, units_from_boxes)
from tests.helpers import gradient


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def bright_square_image():
    """32 x 32 image, zero except a bright 8 x 8 square at rows 4-11 (y), columns 20-27 (x)."""
    image = np.zeros((1, 32, 32, 3), "float32")
    image[0, 4:12, 20:28] = 1.0
    return image


def test_a_box_on_a_bright_square_crops_that_square():
    layer = AttentionCrop((16, 16), k=10.0, min_half_side=0.1)
    image = bright_square_image()
    # (t_x, t_y, t_l): x is the width axis (columns 20-27), y the height axis (rows 4-11)
    crop, box = layer(image, np.array([[24.0, 8.0, 4.0]], "float32"))
    crop = numpy(crop)[0, ..., 0]
    np.testing.assert_allclose(numpy(box), [[24.0, 8.0, 4.0]])
    np.testing.assert_allclose(crop[1:-1, 1:-1], 1.0, atol=0.02)  # the inside is the square (mask ~0.99)
    assert crop.min() > 0.5  # the border rows/columns interpolate half a pixel into the dark
    # x and y swapped: the box lies on the dark part
    swapped, _ = layer(image, np.array([[8.0, 24.0, 4.0]], "float32"))
    assert numpy(swapped).max() < 0.01


def test_crop_is_a_zoom_of_the_box():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(1, 16, 16, 2)).astype("float32")
    # a box covering pixels 4..11 zoomed to 8 pixels: exactly those pixels (mask ~1 inside)
    crop = numpy(attention_crop(image, np.array([[8.0, 8.0, 4.0]], "float32"), (8, 8), k=50.0))
    np.testing.assert_allclose(crop[0], image[0, 4:12, 4:12], atol=1e-4)
    # the whole image at its own size is the identity
    crop = numpy(attention_crop(image, np.array([[8.0, 8.0, 8.0]], "float32"), (16, 16), k=50.0))
    np.testing.assert_allclose(crop, image, atol=1e-4)


@pytest.mark.parametrize("box", [[0.0, 0.0, 1.0], [31.0, 2.0, 30.0], [16.0, 16.0, 0.0], [-5.0, 40.0, 6.0]])
def test_boxes_are_kept_inside_the_image_with_a_lower_bound_on_the_half_side(box):
    out = numpy(constrain_boxes(np.array([box], "float32"), 32.0, 0.125))[0]
    cx, cy, half = out
    assert 4.0 - 1e-6 <= half <= 16.0 + 1e-6  # [min_half_side * side, side / 2]
    assert cx - half >= -1e-6 and cx + half <= 32.0 + 1e-6
    assert cy - half >= -1e-6 and cy + half <= 32.0 + 1e-6
    if box == [16.0, 16.0, 0.0]:
        np.testing.assert_allclose(out, [16.0, 16.0, 4.0])


def test_boxes_from_units_stay_in_range_and_keep_their_gradient():
    # corners and centre of the unit cube: every box inside the image, t_l in [4, 16] (32 px, 1/8)
    units = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0.5, 0.5, 0.5], [0.999, 0.001, 0.3]], "float32")
    boxes = numpy(boxes_from_units(units, 32.0, 0.125))
    np.testing.assert_allclose(numpy(constrain_boxes(boxes, 32.0, 0.125)), boxes, atol=1e-5)
    np.testing.assert_allclose(boxes[3], [16.0, 16.0, 32.0 * (0.125 + 0.375 / 2)])
    np.testing.assert_allclose(boxes[0], [4.0, 4.0, 4.0]) and np.testing.assert_allclose(boxes[1], [16, 16, 16])
    np.testing.assert_allclose(numpy(units_from_boxes(boxes[2:], 32.0, 0.125)), units[2:], atol=1e-5)
    # where a clip of the raw box would pass nothing (a half side beyond the bounds), this passes
    # a gradient to every unit
    weights = keras.ops.convert_to_tensor([1.0, 2.0, 3.0])
    g = gradient(lambda u: keras.ops.sum(keras.ops.multiply(boxes_from_units(u, 32.0, 0.125), weights)),
                 np.array([[0.9, 0.1, 0.999], [0.2, 0.7, 0.001]], "float32"))
    assert np.all(np.abs(g) > 1e-3)


def test_mask_is_the_product_of_logistic_steps():
    box = np.array([[10.0, 6.0, 3.0]], "float32")
    mask = numpy(boxcar_mask(box, 12, 16, k=2.0))[0]
    h = lambda t: 1 / (1 + np.exp(-2.0 * t))  # noqa: E731
    ys, xs = np.arange(12)[:, None] + 0.5, np.arange(16)[None, :] + 0.5
    expected = (h(xs - 7.0) - h(xs - 13.0)) * (h(ys - 3.0) - h(ys - 9.0))
    np.testing.assert_allclose(mask, expected, atol=1e-6)
    assert mask.shape == (12, 16)  # rows follow y (height), columns x (width)
    np.testing.assert_allclose(numpy(logistic_step(np.array([0.0]), 5.0)), [0.5])


@pytest.mark.parametrize("k", [0.7, 3.0])
def test_mask_derivative_matches_finite_differences(k):
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((2, 10, 12)).astype("float32")
    boxes = np.array([[5.3, 4.1, 2.7], [6.6, 5.2, 3.4]], "float32")

    def f(b):
        return keras.ops.sum(keras.ops.multiply(boxcar_mask(b, 10, 12, k), weights))

    analytic = gradient(f, boxes)
    numeric = np.zeros_like(boxes, dtype="float64")
    eps = 1e-2
    for i in range(2):
        for j in range(3):
            plus, minus = boxes.astype("float64"), boxes.astype("float64")
            plus[i, j] += eps
            minus[i, j] -= eps
            numeric[i, j] = (float(numpy(f(plus.astype("float32")))) - float(numpy(f(minus.astype("float32"))))) / (
                2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-3)
    assert np.all(np.abs(analytic) > 1e-3)  # every coordinate moves the mask


def test_gradient_reaches_every_box_coordinate_through_the_crop():
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(2, 24, 24, 3)).astype("float32")
    weights = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    layer = AttentionCrop((8, 8), k=10.0, min_half_side=0.1)
    boxes = np.array([[10.3, 12.7, 6.2], [13.1, 9.4, 5.5]], "float32")
    g = gradient(lambda b: keras.ops.sum(keras.ops.multiply(layer(image, b)[0], weights)), boxes)
    assert g.shape == (2, 3) and np.all(np.isfinite(g)) and np.all(np.abs(g) > 1e-4)


def test_layer_contract():
    layer = AttentionCrop((6, 5), k=4.0, min_half_side=0.25, name="crop")
    config = layer.get_config()
    assert config["output_size"] == [6, 5] and config["k"] == 4.0 and config["min_half_side"] == 0.25
    assert AttentionCrop.from_config(config).get_config() == config
    crops, boxes = layer(np.ones((3, 20, 20, 2), "float32"), np.full((3, 3), 10.0, "float32"))
    assert tuple(crops.shape) == (3, 6, 5, 2) and tuple(boxes.shape) == (3, 3)
    assert layer.compute_output_shape((None, 20, 20, 2)) == ((None, 6, 5, 2), (None, 3))


@pytest.mark.parametrize("kwargs", [{"k": 0.0}, {"min_half_side": 0.0}, {"min_half_side": 0.6},
                                    {"output_size": (4,)}, {"output_size": (0, 4)}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        AttentionCrop(**kwargs)


def test_non_square_images_are_rejected():
    with pytest.raises(ValueError, match="square"):
        AttentionCrop((4, 4))(np.ones((1, 8, 10, 3), "float32"), np.ones((1, 3), "float32"))
