"""Differentiable RGB -> colour-space conversions (HSV, CIE L*a*b*, YUV, YCbCr, YIQ, HED).

Every conversion is written with ``keras.ops`` only, works on channels-last tensors of
any rank (``(..., 3)``) and follows the conventions of scikit-image's ``skimage.color``
(``rgb2hsv``, ``rgb2lab``, ``rgb2yuv``, ``rgb2ycbcr``, ``rgb2yiq``, ``rgb2hed``): the same
matrices, thresholds and constants, so outputs agree with scikit-image to float32
precision. The functions can be used directly (e.g. in a ``tf.data`` map) and the layer
:class:`ColorSpaceConversion` wraps them for use inside a model (ColorNet).

Input convention (all functions and the layer): sRGB in ``[0, 1]`` as a float tensor.
``uint8`` input is rescaled by ``1 / 255`` first (scikit-image's ``img_as_float``
convention); other integer or boolean dtypes raise ``TypeError``. Float input is *not*
range-checked (a data-dependent check would cost a reduction per call and cannot raise
inside a compiled graph): float input in ``[0, 255]`` gives wrong results, rescale it first.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_attention.layers._common import check_choice, check_image_shape, serializable

# --------------------------------------------------------------------------------------
# Constants (the values scikit-image 0.26 uses; see skimage/color/colorconv.py)
# --------------------------------------------------------------------------------------

#: sRGB (linear, D65) -> CIE XYZ, IEC 61966-2-1 (row i gives output channel i).
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
#: CIE XYZ of the reference white, illuminant D65, 2-degree observer.
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
#: RGB -> YUV (analogue PAL/BT.601: Y in [0, 1], U in +-0.436, V in +-0.615).
YUV_FROM_RGB = np.array([[0.299, 0.587, 0.114],
                         [-0.14714119, -0.28886916, 0.43601035],
                         [0.61497538, -0.51496512, -0.10001026]])
#: RGB -> YIQ (NTSC 1953 FCC).
YIQ_FROM_RGB = np.array([[0.299, 0.587, 0.114],
                         [0.59590059, -0.27455667, -0.32134392],
                         [0.21153661, -0.52273617, 0.31119955]])
#: RGB in [0, 1] -> YCbCr (ITU-R BT.601, "studio swing", 8-bit scale), plus YCBCR_OFFSET.
YCBCR_FROM_RGB = np.array([[65.481, 128.553, 24.966],
                           [-37.797, -74.203, 112.0],
                           [112.0, -93.786, -18.214]])
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
#: Stain vectors of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001, as in
#: scikit-image: rows are the stains' optical densities in R, G, B, not row-normalised).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                         [0.07, 0.99, 0.11],
                         [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
#: Smallest intensity used in the Beer-Lambert logarithm of the HED conversion.
HED_EPSILON = 1e-6

#: The colour spaces :class:`ColorSpaceConversion` knows, in ColorNet's order.
COLOR_SPACES = ("rgb", "hsv", "lab", "yuv", "ycbcr", "yiq", "hed")

#: Per-space channel ranges of the raw conversion for sRGB input in [0, 1] (exact: the
#: extremes are reached at corners of the RGB cube; for HED the column sums of the
#: positive entries of HED_FROM_RGB, reached where the optical density saturates).
#: ``normalize=True`` maps each range affinely onto [-1, 1].
CHANNEL_RANGES = {
    "rgb": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    "hsv": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    "lab": ((0.0, 100.0), (-86.183, 98.233), (-107.857, 94.478)),
    "yuv": ((0.0, 1.0), (-0.43601035, 0.43601035), (-0.61497538, 0.61497538)),
    "ycbcr": ((16.0, 235.0), (16.0, 240.0), (16.0, 240.0)),
    "yiq": ((0.0, 1.0), (-0.59590059, 0.59590059), (-0.52273617, 0.52273617)),
    "hed": tuple((0.0, float(round(v, 4))) for v in np.clip(HED_FROM_RGB, 0, None).sum(0)),
}


def _const(value):
    return ops.convert_to_tensor(np.asarray(value, dtype="float32"))


def _apply_matrix(rgb, matrix):
    """``out[..., i] = sum_j matrix[i, j] * rgb[..., j]`` (matrix rows = output channels)."""
    return ops.tensordot(rgb, _const(np.asarray(matrix).T), axes=1)


def to_unit_float(images):
    """Returns ``images`` as float32 in [0, 1]: uint8 is divided by 255, floats are cast.

    Raises:
        TypeError: integer dtypes other than uint8, or booleans.
    """
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype == "uint8":
        return ops.cast(images, "float32") / 255.0
    if "float" not in dtype:
        raise TypeError(f"Colour conversions take float images in [0, 1] or uint8 images in "
                        f"[0, 255], received dtype {dtype}.")
    return ops.cast(images, "float32")


# --------------------------------------------------------------------------------------
# Conversions: float32 RGB in [0, 1], shape (..., 3) -> float32 (..., 3)
# --------------------------------------------------------------------------------------

def rgb_to_hsv(rgb):
    """RGB -> HSV; H, S, V all in [0, 1] (H in [0, 1), a fraction of a full turn).

    ``V = max(R, G, B)``, ``S = (V - min) / V`` (0 where ``V = min``), ``H = (h' / 6) mod 1``
    with ``h' = (G - B) / d``, ``2 + (B - R) / d`` or ``4 + (R - G) / d`` where R, G or B is
    the maximum (B takes precedence over G over R on ties, as in scikit-image), ``d = V - min``.
    Grey pixels (``d = 0``) get ``H = 0`` and ``S = 0``.

    Gradients: divisions use a safe denominator, so grey and black pixels give finite
    (zero) gradients for H and S instead of NaN. Hue is discontinuous where it wraps from
    1 back to 0 (reds with ``B > G``) and undefined at grey pixels; the gradient there is
    the one-sided derivative of the branch selected (mod 1 has derivative 1).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = ops.max(rgb, axis=-1)
    delta = value - ops.min(rgb, axis=-1)
    grey = ops.equal(delta, 0.0)
    safe_delta = ops.where(grey, ops.ones_like(delta), delta)
    safe_value = ops.where(ops.equal(value, 0.0), ops.ones_like(value), value)
    saturation = ops.where(grey, ops.zeros_like(delta), delta / safe_value)
    hue_r = (g - b) / safe_delta
    hue_g = 2.0 + (b - r) / safe_delta
    hue_b = 4.0 + (r - g) / safe_delta
    hue = ops.where(ops.equal(b, value), hue_b, ops.where(ops.equal(g, value), hue_g, hue_r))
    hue = ops.mod(hue / 6.0, 1.0)
    # (h / 6) mod 1 rounds to exactly 1.0 for tiny negative h; keep H in [0, 1).
    hue = ops.where(ops.logical_or(grey, hue >= 1.0), ops.zeros_like(hue), hue)
    return ops.stack([hue, saturation, value], axis=-1)


def _srgb_to_linear(rgb):
    """sRGB gamma decoding (IEC 61966-2-1): ``c / 12.92`` for ``c <= 0.04045``, else
    ``((c + 0.055) / 1.055) ** 2.4``."""
    threshold = 0.04045
    safe = ops.maximum(rgb, threshold)  # keeps the power's base positive (finite gradients)
    return ops.where(rgb > threshold, ops.power((safe + 0.055) / 1.055, 2.4), rgb / 12.92)


def rgb_to_xyz(rgb):
    """sRGB (gamma-encoded, [0, 1]) -> CIE XYZ (D65), Y in [0, 1]: gamma decoding, then
    the sRGB matrix :data:`XYZ_FROM_RGB`."""
    return _apply_matrix(_srgb_to_linear(rgb), XYZ_FROM_RGB)


_LAB_THRESHOLD = 0.008856  # (6/29)**3 rounded, as in scikit-image
_LAB_SLOPE = 7.787  # (29/6)**2 / 3 rounded, as in scikit-image


def _lab_f(t):
    safe = ops.maximum(t, _LAB_THRESHOLD)  # the cube root's gradient is infinite at 0
    return ops.where(t > _LAB_THRESHOLD, ops.power(safe, 1.0 / 3.0),
                     _LAB_SLOPE * t + 16.0 / 116.0)


def _lab_f_difference(t1, t2, f1, f2, t_difference):
    """``f(t1) - f(t2)`` without cancellation: with both in the cube-root branch,
    ``(t1 - t2) / (f1^2 + f1 f2 + f2^2)``; with both in the linear branch,
    ``7.787 (t1 - t2)``; else the plain difference. ``t_difference`` is ``t1 - t2``
    computed directly from linear RGB, so a and b keep float32's *relative* accuracy
    (the plain difference of two cube roots near 1 loses ~1e-4 absolute after the x500)."""
    cube1, cube2 = t1 > _LAB_THRESHOLD, t2 > _LAB_THRESHOLD
    denominator = ops.maximum(f1 * f1 + f1 * f2 + f2 * f2, 1e-6)
    return ops.where(ops.logical_and(cube1, cube2), t_difference / denominator,
                     ops.where(ops.logical_or(cube1, cube2), f1 - f2,
                               _LAB_SLOPE * t_difference))


def rgb_to_lab(rgb):
    """sRGB -> CIE L*a*b* (D65 white, 2-degree observer), as ``skimage.color.rgb2lab``.

    ``t = XYZ / white``; ``f(t) = t ** (1/3)`` for ``t > 0.008856``, else
    ``7.787 t + 16 / 116``; ``L = 116 f(t_Y) - 16`` in [0, 100],
    ``a = 500 (f(t_X) - f(t_Y))`` in about [-86.2, 98.2], ``b = 200 (f(t_Y) - f(t_Z))`` in
    about [-107.9, 94.5] (the extremes of the sRGB gamut). The differences are evaluated
    without cancellation (see ``_lab_f_difference``), which keeps the result within
    4e-5 of scikit-image's float64 values over all 2^24 8-bit colours (1e-4 without).
    """
    linear = _srgb_to_linear(rgb)
    t_matrix = XYZ_FROM_RGB / D65_WHITE[:, None]  # rows: X / Xw, Y / Yw, Z / Zw
    t = _apply_matrix(linear, t_matrix)
    differences = _apply_matrix(linear, np.stack([t_matrix[0] - t_matrix[1],
                                                  t_matrix[1] - t_matrix[2]]))
    f = _lab_f(t)
    tx, ty, tz = t[..., 0], t[..., 1], t[..., 2]
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    a = 500.0 * _lab_f_difference(tx, ty, fx, fy, differences[..., 0])
    b = 200.0 * _lab_f_difference(ty, tz, fy, fz, differences[..., 1])
    return ops.stack([116.0 * fy - 16.0, a, b], axis=-1)


def rgb_to_yuv(rgb):
    """RGB -> YUV: Y in [0, 1], U in [-0.436, 0.436], V in [-0.615, 0.615] (linear map)."""
    return _apply_matrix(rgb, YUV_FROM_RGB)


def rgb_to_yiq(rgb):
    """RGB -> YIQ (NTSC): Y in [0, 1], I in [-0.596, 0.596], Q in [-0.523, 0.523]."""
    return _apply_matrix(rgb, YIQ_FROM_RGB)


def rgb_to_ycbcr(rgb):
    """RGB -> YCbCr (ITU-R BT.601, 8-bit studio swing): Y in [16, 235], Cb, Cr in [16, 240]."""
    return _apply_matrix(rgb, YCBCR_FROM_RGB) + _const(YCBCR_OFFSET)


def rgb_to_hed(rgb):
    """RGB -> haematoxylin-eosin-DAB stain densities (Ruifrok & Johnston colour deconvolution).

    Optical density ``od = log(max(c, 1e-6)) / log(1e-6)`` (in [0, 1]; 1e-6 avoids
    ``log(0)`` on black pixels), stains ``max(od @ HED_FROM_RGB, 0)``; channel ranges
    [0, 1.878], [0, 1.135], [0, 1.574]. Natural images mostly give small values (``od``
    of a mid-grey is 0.05).
    """
    od = ops.log(ops.maximum(rgb, HED_EPSILON)) / float(np.log(HED_EPSILON))
    return ops.maximum(ops.tensordot(od, _const(HED_FROM_RGB), axes=1), 0.0)


CONVERTERS = {
    "rgb": lambda rgb: rgb,
    "hsv": rgb_to_hsv,
    "lab": rgb_to_lab,
    "yuv": rgb_to_yuv,
    "ycbcr": rgb_to_ycbcr,
    "yiq": rgb_to_yiq,
    "hed": rgb_to_hed,
}


def normalize_color(converted, space: str):
    """Maps each channel of ``space``'s raw output from its range (:data:`CHANNEL_RANGES`)
    onto [-1, 1]: ``2 (x - low) / (high - low) - 1``."""
    check_choice("space", space, COLOR_SPACES)
    low, high = np.asarray(CHANNEL_RANGES[space], dtype="float64").T
    scale = 2.0 / (high - low)
    return converted * _const(scale) + _const(-low * scale - 1.0)


def convert_color(images, space: str, normalize: bool = False):
    """Converts RGB ``images`` (float in [0, 1] or uint8, shape ``(..., 3)``) to ``space``.

    Returns float32. With ``normalize=True`` each channel is mapped onto [-1, 1] with the
    fixed constants of :data:`CHANNEL_RANGES`.

    Raises:
        ValueError: unknown ``space``. TypeError: unsupported dtype.
    """
    check_choice("space", space, COLOR_SPACES)
    converted = CONVERTERS[space](to_unit_float(images))
    return normalize_color(converted, space) if normalize else converted


@serializable
class ColorSpaceConversion(keras.layers.Layer):
    """Converts RGB images to one colour space (RGB, HSV, L*a*b*, YUV, YCbCr, YIQ, HED).

    One layer with a ``space`` argument (rather than one class per space) so that a model
    builder can loop over :data:`COLOR_SPACES` and a saved model's config names the space.
    The conversions reproduce ``skimage.color`` (``rgb2hsv``, ``rgb2lab`` with D65 / 2°,
    ``rgb2yuv``, ``rgb2ycbcr``, ``rgb2yiq``, ``rgb2hed``) to float32 precision; the equations
    are in the docstrings of :func:`rgb_to_hsv`, :func:`rgb_to_lab`, ... of this module.

    Raw output ranges for input in [0, 1] (``normalize=False``, the default):

    ======  =================  ======================  ======================
    space   channel 0          channel 1               channel 2
    ======  =================  ======================  ======================
    rgb     R [0, 1]           G [0, 1]                B [0, 1]
    hsv     H [0, 1)           S [0, 1]                V [0, 1]
    lab     L [0, 100]         a [-86.183, 98.233]     b [-107.857, 94.478]
    yuv     Y [0, 1]           U [-0.436, 0.436]       V [-0.615, 0.615]
    ycbcr   Y [16, 235]        Cb [16, 240]            Cr [16, 240]
    yiq     Y [0, 1]           I [-0.596, 0.596]       Q [-0.523, 0.523]
    hed     H [0, 1.878]       E [0, 1.135]            D [0, 1.574]
    ======  =================  ======================  ======================

    ``normalize=True`` maps each of these ranges affinely onto [-1, 1] with these fixed,
    data-independent constants (:data:`CHANNEL_RANGES`); ColorNet uses it so that every
    branch sees inputs of the same scale. (HED values of natural images cluster near the
    low end of their range.)

    The conversion is computed in float32 whatever the dtype policy (the L*a*b* power
    laws and the HED logarithm lose accuracy in float16) and cast to the compute dtype.
    The layer has no weights.

    Args:
        space: one of ``"rgb", "hsv", "lab", "yuv", "ycbcr", "yiq", "hed"``.
        normalize: map each output channel's range onto [-1, 1] (default ``False``: the raw
            conversion, equal to scikit-image's).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, 3)`` sRGB, float in [0, 1] (not range-checked: float input in
    [0, 255] must be rescaled first) or uint8 in [0, 255] (divided by 255, as
    scikit-image's ``img_as_float``). Output: ``(N, H, W, 3)`` in the compute dtype.

    Gradients are finite everywhere (safe denominators and clamped arguments for the
    power laws and logarithm); the hue channel is discontinuous at its 0/1 wrap-around and
    undefined at grey pixels (its gradient there is zero), see :func:`rgb_to_hsv`.

    Raises:
        ValueError: unknown ``space``; input not 4D or without 3 channels.
        TypeError: ``normalize`` not a bool; integer input other than uint8.

    Reference:
        Gowda & Yuan, "ColorNet: Investigating the importance of color spaces for image
        classification", ACCV 2018 (arXiv:1902.00267), Sec. 3 (the seven spaces).
        scikit-image ``skimage/color/colorconv.py`` (conventions and constants);
        IEC 61966-2-1 (sRGB); ITU-R BT.601 (YCbCr); Ruifrok & Johnston, "Quantification of
        histochemical staining by color deconvolution", Anal. Quant. Cytol. Histol. 2001 (HED).
    """

    def __init__(self, space: str = "rgb", normalize: bool = False, **kwargs):
        # No autocast: float32 input stays float32 under mixed precision (the conversion
        # runs in float32 anyway; only the output is cast to the compute dtype).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.space = check_choice("space", space, COLOR_SPACES)
        if not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be a bool, received {normalize!r}.")
        self.normalize = normalize

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        if channels != 3:
            raise ValueError(f"{type(self).__name__} expects RGB input with 3 channels, "
                             f"received input shape {tuple(input_shape)}.")

    def call(self, inputs):
        return ops.cast(convert_color(inputs, self.space, self.normalize), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "space": self.space, "normalize": self.normalize}
