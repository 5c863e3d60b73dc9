"""Image transforms for ``tf.data`` (the TensorFlow path; :mod:`keras_attention.data.transforms`
is the NumPy/Pillow counterpart): decoding, training augmentation, evaluation crops.

All random transforms are *stateless* (``tf.image.stateless_*``) and take an explicit
``seed`` of shape ``[2]``, so a pipeline is reproducible from (run seed, epoch,
example index) alone: a resumed run sees exactly the batches an uninterrupted run
would have seen.

Training recipes:

* ``"cifar"`` (He et al. 2016, sec. 4.2): pad 4 pixels on each side with zeros, take a
  random ``size`` crop, flip horizontally with probability 0.5.
* ``"imagenet"`` (Szegedy et al. 2015, as in the reference ResNet/SENet training
  code): random-resized crop (area fraction uniform in ``scale`` = [0.08, 1], aspect ratio
  log-uniform in ``ratio`` = [3/4, 4/3], up to 10 attempts, the whole image as fallback; as
  torchvision and timm sample it, not ``tf.image.sample_distorted_bounding_box``, whose
  uniform height gives smaller crops), resize to ``size``, horizontal flip.
* ``"none"``: evaluation transform only.

Evaluation: resize the shorter side to ``size / crop_pct`` and take the central
``size`` crop (``crop_pct = 1`` and an image already of ``size``: unchanged).
Normalisation: ``(x / 255 - mean) / std`` in float32.
"""

from __future__ import annotations

import math

import tensorflow as tf
from keras_attention._errors import InvalidInputError

from keras_attention.data.transforms import INTERPOLATIONS, RECIPES  # noqa: F401 (one list)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 ``(H, W, 3)`` (grayscale repeated).

    JPEGs are decoded with libjpeg's accurate integer DCT (``dct_method="INTEGER_ACCURATE"``,
    not TensorFlow's default fast one), as Pillow decodes them: the ``tf.data`` and
    NumPy/grain pipelines then see identical pixels (the fast DCT differs by up to 5 grey
    levels, 1 on average, on Imagewoof).
    """
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def _resize(image, size, interpolation):
    if interpolation not in INTERPOLATIONS:
        raise InvalidInputError(f"interpolation must be one of {INTERPOLATIONS}; received "
                         f"{interpolation!r}.")
    out = tf.image.resize(tf.cast(image, tf.float32), size, method=interpolation,
                          antialias=interpolation != "nearest")
    return tf.clip_by_value(out, 0.0, 255.0)


def resize_shorter_side(image, target, interpolation="bilinear"):
    """Resizes so the shorter side equals ``target`` (keeps the aspect ratio); float32 out."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(target, tf.float32) / tf.minimum(h, w)
    new_h = tf.maximum(1, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.maximum(1, tf.cast(tf.round(w * scale), tf.int32))
    return _resize(image, tf.stack([new_h, new_w]), interpolation)


def scale_size(size, crop_pct: float) -> int:
    """Shorter-side size before the centre crop: ``floor(max(size) / crop_pct)`` (timm's rule)."""
    return int(math.floor(max(size) / crop_pct))


def center_crop(image, size):
    """Central ``size`` crop (the image must be at least ``size``)."""
    shape = tf.shape(image)
    top = (shape[0] - size[0]) // 2
    left = (shape[1] - size[1]) // 2
    return image[top:top + size[0], left:left + size[1], :]


def eval_transform(image, size, crop_pct=1.0, interpolation="bilinear"):
    """Evaluation view: shorter side to ``size / crop_pct``, centre crop ``size``.

    Returns float32 in [0, 255]; an image already of ``size`` with ``crop_pct = 1`` is
    returned unchanged (no resampling).
    """
    size = tuple(int(s) for s in size)
    target = scale_size(size, crop_pct)
    shape = tf.shape(image)
    image = tf.cond(
        tf.logical_and(tf.equal(shape[0], size[0]), tf.equal(shape[1], size[1]))
        if crop_pct == 1.0 else tf.constant(False),
        lambda: tf.cast(image, tf.float32),
        lambda: resize_shorter_side(image, target, interpolation))
    image = center_crop(image, size)
    image.set_shape([size[0], size[1], 3])
    return image


def five_crops(image, size, crop_pct=1.0, interpolation="bilinear", pad=0):
    """Four corner crops and the centre crop, ``(5, H, W, 3)`` float32.

    The crops are taken from the evaluation-scale image (shorter side
    ``size / crop_pct``); with ``pad > 0`` (the CIFAR recipe) from the image padded
    by ``pad`` zeros on each side instead, i.e. the extreme crops the training
    augmentation produces.
    """
    size = tuple(int(s) for s in size)
    if pad:
        image = tf.cast(image, tf.float32)
        shape = tf.shape(image)
        image = tf.cond(tf.logical_and(tf.equal(shape[0], size[0]), tf.equal(shape[1], size[1])),
                        lambda: image, lambda: _resize(image, size, interpolation))
        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    else:
        image = resize_shorter_side(image, scale_size(size, crop_pct), interpolation)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    ch, cw = size
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    crops = tf.stack([image[t:t + ch, l:l + cw, :] for t, l in corners])
    crops.set_shape([5, ch, cw, 3])
    return crops


def cifar_train_transform(image, seed, size=(32, 32), pad=4, flip=True, interpolation="bilinear"):
    """Pad ``pad`` zeros, random ``size`` crop, random horizontal flip; float32 [0, 255]."""
    size = tuple(int(s) for s in size)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    image = tf.cond(tf.logical_and(tf.equal(shape[0], size[0]), tf.equal(shape[1], size[1])),
                    lambda: image, lambda: _resize(image, size, interpolation))
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, [size[0], size[1], 3], seed=crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def random_resized_crop_box(shape, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10):
    """``(top, left, height, width)`` int32 of a random crop, as
    :func:`keras_attention.data.transforms.random_resized_crop_box` draws it (area fraction
    uniform in ``scale``, aspect ratio log-uniform in ``ratio``, the first of ``attempts``
    candidates that fits, else the whole image; Szegedy et al. 2015 as torchvision and timm
    sample it), so both pipelines crop with the same distribution. Stateless in ``seed``."""
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area_seed, ratio_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    area = h * w * tf.random.stateless_uniform([attempts], area_seed, scale[0], scale[1])
    aspect = tf.exp(tf.random.stateless_uniform([attempts], ratio_seed, math.log(ratio[0]),
                                                math.log(ratio[1])))
    cw = tf.round(tf.sqrt(area * aspect))
    ch = tf.round(tf.sqrt(area / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = tf.argmax(tf.cast(fits, tf.int32))
    ok = tf.reduce_any(fits)
    ch = tf.cast(tf.where(ok, ch[first], h), tf.int32)
    cw = tf.cast(tf.where(ok, cw[first], w), tf.int32)
    top = tf.random.stateless_uniform([], top_seed, 0, tf.cast(shape[0], tf.int32) - ch + 1, tf.int32)
    left = tf.random.stateless_uniform([], left_seed, 0, tf.cast(shape[1], tf.int32) - cw + 1, tf.int32)
    return top, left, ch, cw


def imagenet_train_transform(image, seed, size=(224, 224), scale=(0.08, 1.0),
                             ratio=(3 / 4, 4 / 3), flip=True, interpolation="bilinear"):
    """Random-resized crop to ``size``, random horizontal flip; float32 [0, 255]."""
    size = tuple(int(s) for s in size)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    top, left, ch, cw = random_resized_crop_box(tf.shape(image), crop_seed, scale, ratio)
    image = image[top:top + ch, left:left + cw]
    image = _resize(image, size, interpolation)
    image.set_shape([size[0], size[1], 3])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def normalize(image, mean, std):
    """``(x / 255 - mean) / std`` in float32 (``x`` in [0, 255])."""
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (tf.cast(image, tf.float32) / 255.0 - mean) / std
