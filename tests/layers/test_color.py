"""ColorSpaceConversion and the rgb_to_* functions against scikit-image's skimage.color."""

import keras
import numpy as np
import pytest
from skimage import color as skcolor

from keras_attention.layers import COLOR_SPACES, ColorSpaceConversion, convert_color
from keras_attention.layers.color import CHANNEL_RANGES
from tests.helpers import IMAGEWOOF, check_fresh_process_reload, random_images, run_layer_test, skip_or_fail

SKIMAGE = {
    "rgb": lambda x: x,
    "hsv": skcolor.rgb2hsv,
    "lab": skcolor.rgb2lab,
    "yuv": skcolor.rgb2yuv,
    "ycbcr": skcolor.rgb2ycbcr,
    "yiq": skcolor.rgb2yiq,
    "hed": skcolor.rgb2hed,
}
ATOL = 1e-4  # the bar; measured worst case over all 2^24 8-bit colours: 4e-5 (lab)

# Edge cases: black, white, greys (hue undefined), exact 0/1 primaries and secondaries,
# ties between maxima, near-grey pixels, hue just below the 1 -> 0 wrap, sRGB and Lab
# thresholds, values at exactly 0 and 1 (HED's log(0) is clamped at 1e-6).
EDGE_PIXELS = np.array([
    [0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2], [1e-7, 1e-7, 1e-7],
    [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1],
    [1, 1, 0.5], [0.5, 1, 1], [1, 0.5, 1], [0.3, 0.7, 0.7], [0.7, 0.3, 0.7],
    [0.5, 0.5, 0.5001], [0.5001, 0.5, 0.5], [1, 0.2, 0.2001], [1, 0, 1e-6],
    [0.04045, 0.04045, 0.04045], [0.0404, 0.0405, 0.04], [0.08, 0.09, 0.1],
    [0, 0.5, 1], [1, 0.5, 0], [0.999999, 1e-6, 0.5],
], dtype="float32").reshape(1, 2, 13, 3)


def reference(space, rgb):
    """scikit-image in float64 on the same values the layer sees."""
    rgb = keras.ops.convert_to_numpy(rgb)
    rgb = rgb.astype("float64") / 255.0 if rgb.dtype == np.uint8 else rgb.astype("float64")
    return SKIMAGE[space](rgb)


def assert_matches_skimage(space, rgb, atol=ATOL):
    ours = keras.ops.convert_to_numpy(ColorSpaceConversion(space=space)(rgb))
    expected = reference(space, rgb)
    error = np.abs(ours - expected)
    if space == "hsv":  # hue is an angle: 0.99999 and 0 are 1e-5 apart
        error[..., 0] = np.minimum(error[..., 0], 1.0 - error[..., 0])
    assert error.max() <= atol, (f"{space}: max |ours - skimage| = {error.max():.3g} per channel "
                                 f"{error.reshape(-1, 3).max(0)} at pixel "
                                 f"{keras.ops.convert_to_numpy(rgb).reshape(-1, 3)[error.reshape(-1, 3).max(1).argmax()]}")
    return ours


def real_images():
    """Three Imagewoof validation JPEGs (resized to 160x160), decoded with Pillow, uint8."""
    from PIL import Image
    folder = IMAGEWOOF / "val"
    if not folder.is_dir():
        skip_or_fail(f"real images not found at {folder}")
    files = [sorted(d.glob("*.JPEG"))[0] for d in sorted(folder.iterdir())[:3]]
    return np.stack([keras.ops.convert_to_numpy(Image.open(f).convert("RGB").resize((160, 160))) for f in files])


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_contract(space, tmp_path):
    run_layer_test(ColorSpaceConversion, {"space": space, "normalize": space == "lab"},
                   [(2, 8, 8, 3), (1, 5, 7, 3), (2, 1, 1, 3)], tmp_path=tmp_path,
                   input_range=(0, 1), identity_at_init=space == "rgb", fresh_process=False)


def test_fresh_process_reload_of_every_space(tmp_path):
    inputs = keras.Input((6, 6, 3))
    outputs = [ColorSpaceConversion(space=s, normalize=i % 2 == 0, name=f"to_{s}")(inputs)
               for i, s in enumerate(COLOR_SPACES)]
    model = keras.Model(inputs, keras.layers.Concatenate()(outputs))
    check_fresh_process_reload(model, random_images((2, 6, 6, 3), seed=1, low=0, high=1), tmp_path)


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_matches_skimage_on_random_and_edge_pixels(space):
    assert_matches_skimage(space, random_images((2, 16, 16, 3), seed=3, low=0, high=1))
    assert_matches_skimage(space, EDGE_PIXELS)


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_matches_skimage_on_real_images(space):
    images = real_images()
    ours_uint8 = assert_matches_skimage(space, images)  # uint8 path: divided by 255
    ours_float = assert_matches_skimage(space, images.astype("float32") / 255.0)
    np.testing.assert_allclose(ours_uint8, ours_float, atol=ATOL)  # x / 255 rounds per backend


def test_edge_case_values():
    hsv = keras.ops.convert_to_numpy(convert_color(EDGE_PIXELS, "hsv")).reshape(-1, 3)
    rgb = EDGE_PIXELS.reshape(-1, 3)
    grey = rgb.max(1) == rgb.min(1)
    assert grey.sum() == 6
    np.testing.assert_array_equal(hsv[grey, :2], 0.0)  # hue and saturation of greys: 0
    assert np.all((hsv[:, 0] >= 0) & (hsv[:, 0] < 1))  # hue in [0, 1), never exactly 1
    np.testing.assert_allclose(hsv[5:8, 0], [0, 1 / 3, 2 / 3], atol=1e-7)  # R, G, B
    assert hsv[18, 0] > 0.99  # red with B slightly above G: just below the wrap
    hed = keras.ops.convert_to_numpy(convert_color(np.zeros((1, 1, 1, 3), "float32"), "hed"))
    np.testing.assert_allclose(hed.ravel(), [1.2101673, 0.0, 0.8819505], rtol=1e-6)  # black
    lab = keras.ops.convert_to_numpy(convert_color(np.array([[[[0, 0, 0], [1, 1, 1]]]], "float32"), "lab"))
    # black is (0, 0, 0); white is L = 100 with a, b = -0.0025, 0.0047 (not exactly 0:
    # the 6-digit sRGB matrix's row sums differ slightly from the D65 white point)
    np.testing.assert_allclose(lab[0, 0], [[0, 0, 0], [100, -0.0024562, 0.0046572]], atol=2e-5)
    ycbcr = keras.ops.convert_to_numpy(convert_color(np.array([[[[0, 0, 0], [1, 1, 1]]]], "uint8") * 255, "ycbcr"))
    np.testing.assert_allclose(ycbcr[0, 0], [[16, 128, 128], [235, 128, 128]], atol=1e-4)


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_normalisation_maps_documented_ranges_onto_minus_one_one(space):
    corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), "float32").reshape(3, -1).T
    pixels = np.concatenate([corners, EDGE_PIXELS.reshape(-1, 3),
                             random_images((500, 3), seed=5, low=0, high=1)])[None, None]
    raw = keras.ops.convert_to_numpy(convert_color(pixels, space))
    normalized = keras.ops.convert_to_numpy(ColorSpaceConversion(space=space, normalize=True)(pixels))
    low, high = np.array(CHANNEL_RANGES[space]).T
    np.testing.assert_allclose(normalized, 2 * (raw - low) / (high - low) - 1, atol=1e-5)
    assert normalized.min() >= -1 - 1e-4 and normalized.max() <= 1 + 1e-4
    if space != "hsv":  # each documented extreme is reached (hue's 1 is open)
        np.testing.assert_allclose(normalized.reshape(-1, 3).min(0), -1, atol=1e-3)
        np.testing.assert_allclose(normalized.reshape(-1, 3).max(0), 1, atol=1e-3)


def input_gradient(fn, x):
    """d sum(fn(x)) / dx with the active backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(fn(x))
        return tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp
        return keras.ops.convert_to_numpy(jax.grad(lambda v: jnp.sum(fn(v)))(x))
    if backend == "torch":
        import torch
        x = torch.tensor(x, requires_grad=True)
        fn(x).sum().backward()
        return x.grad.numpy()
    pytest.skip(f"no gradient helper for backend {backend}")


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_gradients_are_finite_and_match_skimage_finite_differences(space):
    weights = random_images((3,), seed=11, low=0.5, high=1.5)
    layer = ColorSpaceConversion(space=space)

    def weighted(x):
        return layer(x) * keras.ops.convert_to_tensor(weights)

    # Finite everywhere, including black, white, greys and exact 0 / 1.
    assert np.all(np.isfinite(input_gradient(weighted, EDGE_PIXELS)))
    # Equal to central differences of scikit-image (float64) at generic points.
    x = random_images((1, 3, 4, 3), seed=12, low=0.1, high=0.9)
    ours = input_gradient(weighted, x)
    eps = 1e-6
    expected = np.zeros(x.shape)
    for c in range(3):
        step = np.zeros(x.shape)
        step[..., c] = eps
        plus = (reference(space, x.astype("float64") + step) * weights).sum(-1)
        minus = (reference(space, x.astype("float64") - step) * weights).sum(-1)
        expected[..., c] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_mixed_precision_keeps_float32_accuracy():
    x = random_images((1, 8, 8, 3), seed=4, low=0, high=1)
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        layer = ColorSpaceConversion(space="lab")
        y = layer(x)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    # computed in float32 and rounded once to bfloat16 (8 significant bits)
    expected = reference("lab", x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")), expected,
                               rtol=2 ** -8, atol=0.25)


def test_uint8_inside_a_model():
    inputs = keras.Input((4, 4, 3), dtype="uint8")
    model = keras.Model(inputs, ColorSpaceConversion(space="yuv")(inputs))
    pixels = (random_images((2, 4, 4, 3), seed=2, low=0, high=1) * 255).astype("uint8")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(pixels)),
                               reference("yuv", pixels), atol=1e-6)


@pytest.mark.parametrize("kwargs, error", [({"space": "xyz"}, ValueError), ({"space": "HSV"}, ValueError),
                                           ({"space": 3}, ValueError),
                                           ({"space": "hsv", "normalize": 1}, TypeError)])
def test_invalid_arguments(kwargs, error):
    with pytest.raises(error, match="must be"):
        ColorSpaceConversion(**kwargs)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="3 channels"):
        ColorSpaceConversion(space="lab")(np.zeros((1, 4, 4, 4), "float32"))
    with pytest.raises(ValueError, match="4D input"):
        ColorSpaceConversion(space="lab")(np.zeros((4, 4, 3), "float32"))
    with pytest.raises(TypeError, match="uint8"):
        ColorSpaceConversion(space="lab")(np.zeros((1, 4, 4, 3), "int32"))
