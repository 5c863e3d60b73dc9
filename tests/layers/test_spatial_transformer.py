import keras
import numpy as np
import pytest

from keras_attention.layers import SpatialTransformer
from keras_attention.layers.spatial_transformer import affine_grid, bilinear_sample
from tests.helpers import check_fresh_process_reload, random_images, run_layer_test

SHAPES = [(2, 8, 8, 3), (1, 12, 10, 4)]


def test_contract(tmp_path):
    run_layer_test(SpatialTransformer, {}, SHAPES, tmp_path=tmp_path, identity_at_init=True)


@pytest.mark.parametrize("transform", ["attention", "translation"])
def test_contract_other_transforms(transform, tmp_path):
    run_layer_test(SpatialTransformer, {"transform": transform}, SHAPES[:1], tmp_path=tmp_path,
                   identity_at_init=True, fresh_process=False)


def test_contract_fixed_output_size(tmp_path):
    run_layer_test(SpatialTransformer, {"output_size": (5, 6)}, SHAPES, tmp_path=tmp_path,
                   expected_output_shape=lambda s: (s[0], 5, 6, s[3]), fresh_process=False)


def _numpy_bilinear(img, xs, ys):
    """Paper Eq. 5 evaluated literally: sum over all pixels of the triangle kernels."""
    h, w, _ = img.shape
    px = (xs + 1) * (w - 1) / 2
    py = (ys + 1) * (h - 1) / 2
    kx = np.maximum(0, 1 - np.abs(px[:, None] - np.arange(w)[None]))  # (P, W)
    ky = np.maximum(0, 1 - np.abs(py[:, None] - np.arange(h)[None]))  # (P, H)
    return np.einsum("ph,pw,hwc->pc", ky, kx, img)


def test_sampler_matches_paper_equation():
    images = random_images((2, 5, 7, 3), seed=1)
    theta = np.stack([[[0.8, 0.3, 0.1], [-0.2, 1.1, -0.3]], [[1.3, 0.0, 0.5], [0.1, 0.7, 0.2]]]).astype("float32")
    coords = keras.ops.convert_to_numpy(affine_grid(theta, 4, 6))
    out = keras.ops.convert_to_numpy(bilinear_sample(images, coords, 4, 6))
    for n in range(2):
        expected = _numpy_bilinear(images[n], coords[n, :, 0], coords[n, :, 1]).reshape(4, 6, 3)
        np.testing.assert_allclose(out[n], expected, rtol=1e-5, atol=1e-5)
    # Target grid: linspace(-1, 1) in x then y, transformed by theta.
    ys, xs = np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 6), indexing="ij")
    target = np.stack([xs.ravel(), ys.ravel(), np.ones(24)])
    np.testing.assert_allclose(coords[0], (theta[0] @ target).T, rtol=1e-5, atol=1e-6)


def test_translation_by_one_pixel_and_zero_outside():
    layer = SpatialTransformer(transform="translation", return_attention=True)
    x = random_images((1, 6, 5, 2), seed=3)
    layer.build(x.shape)
    layer.regressor.bias.assign(np.array([2 / 4, 0.0], "float32"))  # one pixel right in x
    y, theta = layer(x)
    y = keras.ops.convert_to_numpy(y)
    np.testing.assert_allclose(y[:, :, :-1], x[:, :, 1:], atol=1e-5)
    np.testing.assert_allclose(y[:, :, -1], 0.0, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(theta)[0], [[1, 0, 0.5], [0, 1, 0]], atol=1e-7)


def test_attention_transform_zooms():
    layer = SpatialTransformer(transform="attention", output_size=(3, 3))
    x = random_images((1, 5, 5, 1), seed=4)
    layer.build(x.shape)
    layer.regressor.bias.assign(np.array([0.5, 0.0, 0.0], "float32"))  # central half
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x))[0], x[0, 1:4, 1:4], atol=1e-5)


def test_identity_theta_at_init_and_regressor_zero():
    layer = SpatialTransformer(return_attention=True)
    _, theta = layer(random_images((3, 8, 8, 3)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(theta), np.tile([[1, 0, 0], [0, 1, 0]], (3, 1, 1)), atol=0)
    assert not keras.ops.convert_to_numpy(layer.regressor.kernel).any()


def test_custom_localization_network(tmp_path):
    loc = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8, activation="tanh")])
    layer = SpatialTransformer(localization=loc, output_size=(4, 4))
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    x = random_images((2, 9, 7, 3))
    assert tuple(model(x).shape) == (2, 4, 4, 3)  # any input size with this localisation net
    assert layer.regressor.kernel.shape == (8, 6)
    check_fresh_process_reload(model, x, tmp_path)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"transform": "projective"}, ValueError, "affine"),
    ({"output_size": (0, 4)}, ValueError, "must be"),
    ({"output_size": (4,)}, ValueError, "height, width"),
    ({"localization_filters": (8,)}, ValueError, "two conv widths"),
    ({"localization": "cnn"}, TypeError, "keras Layer"),
])
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SpatialTransformer(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="4D input"):
        SpatialTransformer()(np.zeros((2, 16), "float32"))
    with pytest.raises(ValueError, match="known and >= 4"):
        SpatialTransformer()(keras.Input((None, None, 3)))
