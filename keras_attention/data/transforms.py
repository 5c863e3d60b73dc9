"""Image transforms with NumPy and Pillow: decoding, training augmentation, evaluation views.

The backend-agnostic counterpart of :mod:`keras_attention.data.tf_augment` (the
``tf.data`` path), with the same recipes and the same evaluation tensors:

* decoding with Pillow (JPEG with libjpeg's accurate integer DCT, as the ``tf.data`` path
  decodes it, so both give identical pixels);
* resizing with Pillow's antialiased filters in float32 (``"F"`` images, one channel at a
  time), the same triangle / Keys-cubic kernels, support scaling and edge normalisation as
  ``tf.image.resize(..., antialias=True)``: the two agree to about 0.004 grey levels;
* training recipes: ``"cifar"`` (He et al. 2016, sec. 4.2: pad 4 zeros, random crop, flip
  with probability 0.5), ``"imagenet"`` (Szegedy et al. 2015: random-resized crop with area
  fraction uniform in ``scale`` and aspect ratio log-uniform in ``ratio``, 10 attempts, the
  whole image as fallback, as torchvision and timm sample it; then horizontal flip), ``"none"``;
* evaluation: shorter side to ``floor(size / crop_pct)`` (timm's rule), central crop;
  ``crop_pct = 1`` on an image already of ``size`` leaves it untouched;
* normalisation ``(x / 255 - mean) / std`` in float32.

Random transforms draw from a ``numpy.random.Generator`` that the caller seeds, so a
pipeline is a function of (run seed, epoch, step).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_attention._errors import InvalidInputError

RECIPES = ("cifar", "imagenet", "none")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "area": Image.Resampling.BOX}


# --------------------------------------------------------------------------- decoding
def decode_image(data: bytes | str | os.PathLike, *, name: str | None = None) -> np.ndarray:
    """Encoded image bytes (or a file path) -> uint8 ``(H, W, 3)`` RGB.

    Grayscale, palette and CMYK images are converted to RGB; an animation gives its first
    frame. JPEGs are decoded with libjpeg's accurate integer DCT (Pillow's default), the
    method the ``tf.data`` path asks for, so both decode to identical pixels.

    Raises:
        InvalidInputError: the data is not a readable image (the message names ``name``, or
            the file, and Pillow's reason).
    """
    what = name or (os.fspath(data) if not isinstance(data, bytes) else "image data")
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(source) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InvalidInputError(f"Image {what!r} cannot be decoded ({type(err).__name__}: "
                                f"{err}).") from None


def encode_png(image: np.ndarray) -> bytes:
    """uint8 ``(H, W, 3)`` -> PNG bytes (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- resizing
def _check_interpolation(interpolation: str):
    if interpolation not in _FILTERS:
        raise InvalidInputError(f"interpolation must be one of {INTERPOLATIONS}; received "
                                f"{interpolation!r}.")
    return _FILTERS[interpolation]


def resize(image: np.ndarray, size, interpolation: str = "bilinear", box=None) -> np.ndarray:
    """Antialiased resize of ``image`` (or of its region ``box``) to ``size`` = (H, W).

    Args:
        image: ``(H, W, 3)`` uint8 or float32 in [0, 255].
        size: output ``(height, width)``.
        interpolation: ``"bilinear"``, ``"bicubic"``, ``"nearest"`` or ``"area"``.
        box: ``(left, top, right, bottom)`` in input pixels (floats allowed): the region
            mapped onto the output; pixels around it still enter the filter, as when the
            whole image is resized and then cropped.

    Returns:
        float32 ``(size[0], size[1], 3)`` clipped to [0, 255].
    """
    resample = _check_interpolation(interpolation)
    h, w = int(size[0]), int(size[1])
    image = np.asarray(image, np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                           .resize((w, h), resample, box=box)) for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 255.0)


def scale_size(size, crop_pct: float) -> int:
    """Shorter-side size before the centre crop: ``floor(max(size) / crop_pct)`` (timm's rule)."""
    return int(math.floor(max(size) / crop_pct))


def _shorter_side_shape(h: int, w: int, target: int) -> tuple[int, int]:
    scale = target / min(h, w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def eval_view(image: np.ndarray, size, crop_pct: float = 1.0,
              interpolation: str = "bilinear") -> np.ndarray:
    """Evaluation view: shorter side to ``floor(size / crop_pct)``, central ``size`` crop.

    Done as one resize of the cropped region (the same pixels as resizing the whole image
    and cropping). Returns float32 in [0, 255]; an image already of ``size`` with
    ``crop_pct = 1`` is returned unchanged (no resampling).
    """
    size = (int(size[0]), int(size[1]))
    if crop_pct == 1.0 and tuple(image.shape[:2]) == size:
        return np.asarray(image, np.float32)
    return resize(image, size, interpolation, box=eval_view_box(image.shape[:2], size, crop_pct))


def eval_view_box(image_shape, size, crop_pct: float = 1.0) -> tuple[float, float, float, float]:
    """The region of an ``image_shape`` = (H, W) image that :func:`eval_view` shows.

    Returns:
        ``(left, top, right, bottom)`` in the image's pixels (floats): the view's pixel
        ``(y, x)`` is the image's ``(top + y * (bottom - top) / size[0], left + x * (right -
        left) / size[1])``.

    Raises:
        InvalidInputError: the resized image is smaller than ``size``.
    """
    size = (int(size[0]), int(size[1]))
    h, w = int(image_shape[0]), int(image_shape[1])
    if crop_pct == 1.0 and (h, w) == size:
        return (0.0, 0.0, float(w), float(h))
    nh, nw = _shorter_side_shape(h, w, scale_size(size, crop_pct))
    if nh < size[0] or nw < size[1]:
        raise InvalidInputError(f"Cannot take a {size} centre crop of an image resized to "
                                f"{(nh, nw)}.")
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    sy, sx = h / nh, w / nw
    return (left * sx, top * sy, (left + size[1]) * sx, (top + size[0]) * sy)


def five_crops(image: np.ndarray, size, crop_pct: float = 1.0, interpolation: str = "bilinear",
               pad: int = 0) -> np.ndarray:
    """Four corner crops and the centre crop, ``(5, H, W, 3)`` float32.

    From the evaluation-scale image (shorter side ``size / crop_pct``); with ``pad > 0``
    (the CIFAR recipe) from the image (resized to ``size`` if needed) padded by ``pad``
    zeros on each side instead, i.e. the extreme crops of the training augmentation.
    """
    size = (int(size[0]), int(size[1]))
    if pad:
        image = (np.asarray(image, np.float32) if image.shape[:2] == size
                 else resize(image, size, interpolation))
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    else:
        h, w = image.shape[:2]
        nh, nw = _shorter_side_shape(h, w, scale_size(size, crop_pct))
        image = resize(image, (nh, nw), interpolation)
    h, w = image.shape[:2]
    ch, cw = size
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    return np.stack([image[t:t + ch, l:l + cw] for t, l in corners])


# --------------------------------------------------------------------------- training
def cifar_batch(images: np.ndarray, rng: np.random.Generator, pad: int = 4,
                flip: bool = True) -> np.ndarray:
    """Pad ``pad`` zeros, random crop back to the input size, random horizontal flip.

    Args:
        images: uint8 ``(B, H, W, 3)``, all of the model's input size.
        rng: the batch's generator (offsets, then flips).

    Returns:
        float32 ``(B, H, W, 3)`` in [0, 255].
    """
    b, h, w = images.shape[:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top = rng.integers(0, 2 * pad + 1, size=b)
    left = rng.integers(0, 2 * pad + 1, size=b)
    rows = (top[:, None] + np.arange(h))[:, :, None]
    cols = (left[:, None] + np.arange(w))[:, None, :]
    out = padded[np.arange(b)[:, None, None], rows, cols]
    if flip:
        mirrored = rng.random(b) < 0.5
        out[mirrored] = out[mirrored, :, ::-1]
    return out.astype(np.float32)


def random_resized_crop_box(h: int, w: int, rng: np.random.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3), attempts: int = 10) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random crop with area fraction uniform in ``scale``
    and aspect ratio (width / height) log-uniform in ``ratio``; after ``attempts`` misses, the
    whole image. Szegedy et al. 2015, as torchvision's and timm's ``RandomResizedCrop`` draw
    it (without their centre-crop fallback)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    return 0, 0, h, w


def imagenet_train_view(image: np.ndarray, size, rng: np.random.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), flip: bool = True,
                        interpolation: str = "bilinear") -> np.ndarray:
    """Random-resized crop to ``size``, random horizontal flip; float32 in [0, 255]."""
    top, left, ch, cw = random_resized_crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
    resample = _check_interpolation(interpolation)
    # Training views are resized in 8 bits (Pillow's fast path; within one grey level of the
    # float resize), evaluation views in float32 (see resize()).
    out = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize(
        (int(size[1]), int(size[0])), resample, box=(left, top, left + cw, top + ch)), np.float32)
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """``(x / 255 - mean) / std`` in float32 (``x`` in [0, 255]); any leading shape."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return ((np.asarray(images, np.float32) / 255.0 - mean) / std).astype(np.float32)
