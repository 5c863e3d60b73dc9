"""``tf.data`` pipelines for training and evaluation: the TensorFlow path.

The same recipes as :mod:`keras_attention.data.loader` (NumPy/Pillow/grain, every backend),
with ``tf.image`` ops (:mod:`keras_attention.data.tf_augment`); needs TensorFlow
(``pip install keras-attention[tf]``). Batches are float32 NHWC, consumable by any backend.
"""

from __future__ import annotations

import tensorflow as tf

from keras_attention._errors import InvalidInputError
from keras_attention.data import tf_augment as augment
from keras_attention.data.loader import check_epochs
from keras_attention.data.preprocessing import Preprocessing
from keras_attention.data.source import ImageSource

# In-memory caching limits: decoded images (uint8) or encoded files.
_CACHE_DECODED_MAX = 2 * 1024**3
_CACHE_ENCODED_MAX = 4 * 1024**3


def _decode_fn(source: ImageSource):
    shape = source.image_shape

    def decode(encoded, label):
        image = augment.decode_image(encoded)
        if shape is not None:
            image.set_shape(shape[:2] + (3,))
        return image, label
    return decode


def _cached_examples(source: ImageSource, cache: str | bool):
    """``(records, decode or None, cache mode)``: ``decode`` is ``None`` when the records
    are already decoded (mode ``"decoded"``); the caller caches them."""
    if source.tf_records is None:
        raise InvalidInputError(f"{source.describe()} has no tf.data records; use the grain "
                                f"pipeline (pipeline='grain').")
    records = source.tf_records()
    if source.tf_records_decoded:
        return records, None, "decoded" if cache in ("auto", True, "decoded", "encoded") else "none"
    decode = _decode_fn(source)
    mode = cache
    if cache in ("auto", True):
        decoded_bytes = (source.num_examples * source.image_shape[0] * source.image_shape[1] * 3
                         if source.image_shape else None)
        if decoded_bytes is not None and decoded_bytes <= _CACHE_DECODED_MAX:
            mode = "decoded"
        elif (source.encoded_bytes or _CACHE_ENCODED_MAX + 1) <= _CACHE_ENCODED_MAX:
            mode = "encoded"
        else:
            mode = "none"
    if mode == "decoded":
        ds = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        return ds, None, mode
    if mode == "encoded":
        return records, decode, mode
    if mode in ("none", False):
        return records, decode, "none"
    raise InvalidInputError(f"cache must be 'auto', 'decoded', 'encoded' or 'none'; received {cache!r}.")


def _options(deterministic: bool = True):
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    # Sharding by data, not files: TFDS splits are often a single file.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _seed_base(seed: int) -> int:
    """First element of every stateless seed of run ``seed`` (a Python int)."""
    return (int(seed) * 1_000_003 + 17) % (2**62)


def train_dataset(source: ImageSource, pre: Preprocessing, batch_size: int, *, epochs: int,
                  initial_epoch: int = 0, seed: int = 0, one_hot: bool = True,
                  cache: str = "auto", shuffle_buffer: int = 10_000,
                  drop_remainder: bool = True) -> tuple[tf.data.Dataset, int]:
    """Augmented, shuffled, batched training data for epochs ``initial_epoch .. epochs-1``.

    When the split is cached in memory (the usual case: CIFAR, Imagewoof, a user's
    folder), epoch ``e`` is a pure function of ``(seed, e)``: its order is a stateless
    permutation seeded by ``(seed, e)`` and every random crop/flip is seeded by
    ``(seed, e, position)``, so a run resumed at epoch ``e`` gets exactly the batches
    an uninterrupted run would have. Splits too large to cache are streamed through
    a ``shuffle_buffer``-sized shuffle seeded by ``(seed, initial_epoch)``: a resumed
    run then sees a different (equally random) order. Use with ``model.fit(...,
    steps_per_epoch=steps, initial_epoch=initial_epoch, epochs=epochs)``.

    Args:
        source: training split.
        pre: preprocessing (recipe, size, mean/std).
        batch_size: global batch size.
        epochs, initial_epoch: the epoch range to produce.
        seed: run seed.
        one_hot: labels as float32 one-hot vectors (for label smoothing) instead of int.
        cache: ``"auto"`` (decoded images in memory if they fit in 2 GiB, else the
            encoded files if they fit in 4 GiB, else no cache), ``"decoded"``,
            ``"encoded"``, ``"none"``.
        shuffle_buffer: shuffle buffer of an uncached split.
        drop_remainder: drop the last partial batch of each epoch (keeps shapes
            static and the number of steps per epoch exact).

    Returns:
        ``(dataset, steps_per_epoch)``.
    """
    check_epochs(batch_size, epochs, initial_epoch)
    n = source.num_examples
    steps = n // batch_size if drop_remainder else -(-n // batch_size)
    if steps == 0:
        raise InvalidInputError(f"{source.describe()} is smaller than one batch of {batch_size}.")
    per_epoch = steps * batch_size if drop_remainder else n
    base, decode, mode = _cached_examples(source, cache)
    num_classes = source.num_classes
    size = pre.size
    seed0 = _seed_base(seed)

    def augment_fn(epoch, index, image, label):
        if decode is not None:
            image, label = decode(image, label)
        elem_seed = tf.stack([tf.constant(seed0, tf.int64) + epoch, index])
        if pre.recipe == "cifar":
            image = augment.cifar_train_transform(image, elem_seed, size, pad=pre.pad,
                                                  flip=pre.hflip, interpolation=pre.interpolation)
        elif pre.recipe == "imagenet":
            image = augment.imagenet_train_transform(image, elem_seed, size, scale=pre.scale,
                                                     ratio=pre.ratio, flip=pre.hflip,
                                                     interpolation=pre.interpolation)
        else:
            image = augment.eval_transform(image, size, pre.crop_pct, pre.interpolation)
        image = augment.normalize(image, pre.mean, pre.std)
        image.set_shape([size[0], size[1], 3])
        if one_hot:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, label

    if mode != "none":
        whole = base.batch(n).cache()  # one element: the whole split, in memory

        def one_epoch(epoch):
            perm = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed0, tf.int64), epoch]))
            perm = perm[:per_epoch]
            ds = whole.map(lambda x, y: (tf.gather(x, perm), tf.gather(y, perm))).unbatch()
            return ds.enumerate().map(lambda i, ex: (epoch, i, ex[0], ex[1]))

        ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    else:
        ds = base.shuffle(max(1, min(shuffle_buffer, n)), seed=seed0 % (2**31) + initial_epoch,
                          reshuffle_each_iteration=True)
        ds = ds.take(per_epoch).repeat(epochs - initial_epoch).enumerate()
        ds = ds.map(lambda i, ex: (initial_epoch + i // per_epoch, i % per_epoch, ex[0], ex[1]))
    ds = ds.map(augment_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options()), steps


def eval_dataset(source: ImageSource, pre: Preprocessing, batch_size: int, *,
                 tta: str | None = None, one_hot: bool = False, cache: str = "none",
                 with_index: bool = False) -> tf.data.Dataset:
    """Evaluation batches in dataset order: resize + centre crop, normalised.

    Args:
        tta: ``None``; ``"flip"`` (images ``(B, 2, H, W, 3)``: original and mirrored);
            ``"five_crop"`` (``(B, 5, H, W, 3)``: corners and centre, see
            :func:`augment.five_crops`); ``"five_crop_flip"`` (``(B, 10, H, W, 3)``).
        one_hot: float one-hot labels (for ``model.fit`` validation) instead of int.
        cache: as in :func:`train_dataset` (``"none"`` by default: one pass).
    """
    if tta not in (None, "none", "flip", "five_crop", "five_crop_flip"):
        raise InvalidInputError(f"tta must be None, 'flip', 'five_crop' or 'five_crop_flip'; received "
                         f"{tta!r}.")
    base, decode, mode = _cached_examples(source, cache)
    if mode != "none":
        base = base.cache()
    size = pre.size
    num_classes = source.num_classes

    def fn(image, label):
        if decode is not None:
            image, label = decode(image, label)
        if tta in (None, "none"):
            views = augment.eval_transform(image, size, pre.crop_pct, pre.interpolation)
        else:
            if tta.startswith("five_crop"):
                views = augment.five_crops(image, size, pre.crop_pct, pre.interpolation,
                                           pad=pre.pad if pre.recipe == "cifar" else 0)
            else:
                views = augment.eval_transform(image, size, pre.crop_pct, pre.interpolation)[None]
            if tta.endswith("flip"):
                views = tf.concat([views, tf.reverse(views, axis=[2])], axis=0)
        views = augment.normalize(views, pre.mean, pre.std)
        if one_hot:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return views, label

    ds = base.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
