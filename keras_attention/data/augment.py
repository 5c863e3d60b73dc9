"""Image transforms for ``tf.data``: decoding, training augmentation, evaluation crops.

All random transforms are *stateless* (``tf.image.stateless_*``) and take an explicit
``seed`` of shape ``[2]``, so a pipeline is reproducible from (run seed, epoch,
example index) alone: a resumed run sees exactly the batches an uninterrupted run
would have seen.

Training recipes:

* ``"cifar"`` (He et al. 2016, sec. 4.2): pad 4 pixels on each side with zeros, take a
  random ``size`` crop, flip horizontally with probability 0.5.
* ``"imagenet"`` (Szegedy et al. 2015, as in the reference ResNet/SENet training
  code): random-resized crop (area fraction in ``scale`` = [0.08, 1], aspect ratio in
  ``ratio`` = [3/4, 4/3], up to 10 attempts, the whole image as fallback), resize to
  ``size``, horizontal flip.
* ``"none"``: evaluation transform only.

Evaluation: resize the shorter side to ``size / crop_pct`` and take the central
``size`` crop (``crop_pct = 1`` and an image already of ``size``: unchanged).
Normalisation: ``(x / 255 - mean) / std`` in float32.
"""

from __future__ import annotations

import math

import tensorflow as tf
from keras_attention._errors import InvalidInputError

RECIPES = ("cifar", "imagenet", "none")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 ``(H, W, 3)`` (grayscale repeated)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
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


def imagenet_train_transform(image, seed, size=(224, 224), scale=(0.08, 1.0),
                             ratio=(3 / 4, 4 / 3), flip=True, interpolation="bilinear"):
    """Random-resized crop to ``size``, random horizontal flip; float32 [0, 255]."""
    size = tuple(int(s) for s in size)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
        min_object_covered=0.0, aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, extent)
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
