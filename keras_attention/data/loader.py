"""Input pipelines for every backend: NumPy/Pillow transforms scheduled by grain.

``model.fit`` takes the returned ``grain`` datasets natively on TensorFlow, JAX and
PyTorch, so training and evaluation need no TensorFlow. Each element is one whole batch,
built by one call that reads, decodes and augments it; grain runs several such calls in
parallel threads (Pillow and NumPy release the GIL while decoding and resizing) and keeps
a few batches ready ahead of the model.

Determinism: batch ``s`` of epoch ``e`` holds the examples at positions
``[s*B, (s+1)*B)`` of a permutation drawn from ``(seed, e)``, augmented with a generator
seeded by ``(seed, e, s)``. It is therefore a pure function of (seed, epoch, step), however
the threads are scheduled, and a run resumed at epoch ``e`` gets exactly the batches an
uninterrupted run would have had.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from keras_attention._errors import InvalidInputError
from keras_attention.data import transforms
from keras_attention.data.preprocessing import Preprocessing
from keras_attention.data.source import ImageSource

TTA_MODES = ("none", "flip", "five_crop", "five_crop_flip")


def default_threads() -> int:
    """Reader threads: the number of CPU cores, at least 2, at most 16."""
    return max(2, min(16, os.cpu_count() or 2))


def _seed_base(seed: int) -> int:
    return (int(seed) * 1_000_003 + 17) % (2**62)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` of run ``seed`` visits ``n`` examples."""
    return _cached_permutation(n, _seed_base(seed), int(epoch))


@functools.lru_cache(maxsize=4)
def _cached_permutation(n: int, seed0: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed0, epoch]).permutation(n)


def _grain():
    try:
        import grain
    except ImportError as err:  # pragma: no cover - grain is a dependency
        raise InvalidInputError(f"The input pipeline needs grain (pip install grain): {err}") from None
    return grain


def check_epochs(batch_size: int, epochs: int, initial_epoch: int) -> None:
    """The checks both pipelines make on a training range (errors say what was received)."""
    if batch_size <= 0:
        raise InvalidInputError(f"batch_size must be positive; received {batch_size}.")
    if not 0 <= initial_epoch <= epochs:
        raise InvalidInputError(f"initial_epoch must be in [0, epochs={epochs}]; received "
                                f"{initial_epoch}.")


def augment_batch(images, rng: np.random.Generator, pre: Preprocessing) -> np.ndarray:
    """Training views of one batch by ``pre.recipe``, normalised: float32 ``(B, H, W, 3)``.

    Args:
        images: uint8 ``(B, h, w, 3)`` array or list of ``(h_i, w_i, 3)`` arrays.
        rng: the batch's generator.
    """
    size = pre.size
    if pre.recipe == "cifar":
        if isinstance(images, list) or images.shape[1:3] != size:
            images = np.stack([np.round(transforms.eval_view(im, size, 1.0, pre.interpolation))
                               .astype(np.uint8) if im.shape[:2] != size else im for im in images])
        views = transforms.cifar_batch(images, rng, pad=pre.pad, flip=pre.hflip)
    elif pre.recipe == "imagenet":
        views = np.stack([transforms.imagenet_train_view(im, size, rng, pre.scale, pre.ratio, pre.hflip,
                                                         pre.interpolation) for im in images])
    else:
        views = np.stack([transforms.eval_view(im, size, pre.crop_pct, pre.interpolation)
                          for im in images])
    return transforms.normalize(views, pre.mean, pre.std)


def eval_views(images, pre: Preprocessing, tta: str = "none") -> np.ndarray:
    """Evaluation views of a batch, normalised: ``(B, H, W, 3)``, or ``(B, V, H, W, 3)`` with
    test-time augmentation (``"flip"``: 2 views; ``"five_crop"``: 5, the corners and centre,
    for the CIFAR recipe of the 4-pixel-padded image; ``"five_crop_flip"``: 10)."""
    if tta not in TTA_MODES:
        raise InvalidInputError(f"tta must be one of {TTA_MODES}; received {tta!r}.")
    out = []
    for im in images:
        if tta.startswith("five_crop"):
            views = transforms.five_crops(im, pre.size, pre.crop_pct, pre.interpolation,
                                          pad=pre.pad if pre.recipe == "cifar" else 0)
        else:
            views = transforms.eval_view(im, pre.size, pre.crop_pct, pre.interpolation)[None]
        if tta.endswith("flip"):
            views = np.concatenate([views, views[:, :, ::-1]])
        out.append(views if tta != "none" else views[0])
    return transforms.normalize(np.stack(out), pre.mean, pre.std)


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def train_dataset(source: ImageSource, pre: Preprocessing, batch_size: int, *, epochs: int,
                  initial_epoch: int = 0, seed: int = 0, one_hot: bool = True,
                  num_threads: int | None = None, prefetch: int = 8):
    """Augmented, shuffled batches for epochs ``initial_epoch .. epochs - 1``, as one grain
    dataset to pass to ``model.fit(..., steps_per_epoch=steps, initial_epoch=initial_epoch,
    epochs=epochs)``.

    Each epoch drops its last partial batch (static shapes, an exact number of steps).

    Args:
        source: the training split.
        pre: preprocessing (recipe, size, mean/std).
        batch_size: global batch size.
        epochs, initial_epoch: the epoch range to produce.
        seed: run seed.
        one_hot: labels as float32 one-hot vectors (for label smoothing), else int64.
        num_threads: reader threads (default :func:`default_threads`).
        prefetch: batches kept ready ahead of the model.

    Returns:
        ``(dataset, steps_per_epoch)``: a ``grain.IterDataset`` of ``(images, labels)``
        numpy batches, images float32 ``(B, H, W, 3)``.

    Raises:
        InvalidInputError: a batch size above the split's size or not positive, an epoch
            range out of order; while iterating, an image that cannot be decoded (named).
    """
    check_epochs(batch_size, epochs, initial_epoch)
    n = source.num_examples
    steps = n // batch_size
    if steps == 0:
        raise InvalidInputError(f"{source.describe()} is smaller than one batch of {batch_size}.")
    seed0 = _seed_base(seed)

    def make_batch(index: int):
        epoch, step = initial_epoch + index // steps, index % steps
        rows = epoch_permutation(n, seed, epoch)[step * batch_size:(step + 1) * batch_size]
        images = augment_batch(source.read(rows), np.random.default_rng([seed0, epoch, step]), pre)
        labels = source.labels[rows]
        return images, (_one_hot(labels, source.num_classes) if one_hot else labels)

    grain = _grain()
    batches = grain.MapDataset.range((epochs - initial_epoch) * steps).map(make_batch)
    options = grain.ReadOptions(num_threads=num_threads or default_threads(),
                                prefetch_buffer_size=prefetch)
    return batches.to_iter_dataset(options), steps


def eval_dataset(source: ImageSource, pre: Preprocessing, batch_size: int, *, tta: str = "none",
                 one_hot: bool = False, num_threads: int | None = None, prefetch: int = 4):
    """Evaluation batches in dataset order (the last one may be smaller).

    Returns:
        A ``grain.IterDataset`` of ``(images, labels)``: images from :func:`eval_views`,
        labels int64 (or one-hot float32).
    """
    if batch_size <= 0:
        raise InvalidInputError(f"batch_size must be positive; received {batch_size}.")
    if tta not in TTA_MODES:
        raise InvalidInputError(f"tta must be one of {TTA_MODES}; received {tta!r}.")
    n = source.num_examples

    def make_batch(index: int):
        rows = np.arange(index * batch_size, min(n, (index + 1) * batch_size))
        labels = source.labels[rows]
        return (eval_views(source.read(rows), pre, tta),
                _one_hot(labels, source.num_classes) if one_hot else labels)

    grain = _grain()
    batches = grain.MapDataset.range(-(-n // batch_size)).map(make_batch)
    options = grain.ReadOptions(num_threads=num_threads or default_threads(),
                                prefetch_buffer_size=prefetch)
    return batches.to_iter_dataset(options)
