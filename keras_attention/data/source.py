"""The :class:`ImageSource` record shared by the TFDS and class-folder loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import tensorflow as tf


@dataclass
class ImageSource:
    """One split of an image-classification dataset, not yet decoded.

    Attributes:
        name: dataset name (``"cifar10"``) or folder path.
        split: split name as given (``"train"``, ``"test[:1000]"``, ``"val"``).
        records: unbatched ``tf.data.Dataset`` of ``(encoded_image: tf.string,
            label: tf.int64)``; images are encoded files (JPEG/PNG/...), decoded by
            the pipeline in parallel.
        num_examples: number of records.
        label_names: class names in label order.
        image_shape: ``(H, W, C)`` when every image has this shape (TFDS features
            with a static shape, e.g. CIFAR), else ``None``.
        encoded_bytes: approximate total size of the encoded images, for the
            in-memory caching decision; ``None`` if unknown.
        files: for folder datasets, the image paths in record order (used to name a
            file that fails to decode).
        on_decode_error: called with the ``tf.errors.InvalidArgumentError`` raised
            by decoding; raises a clearer error (e.g. naming the file) or returns.
    """

    name: str
    split: str
    records: tf.data.Dataset
    num_examples: int
    label_names: list[str]
    image_shape: tuple[int, int, int] | None = None
    encoded_bytes: int | None = None
    files: list[str] | None = None
    skipped_files: list[str] = field(default_factory=list)
    on_decode_error: Callable[[Exception], None] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def describe(self) -> str:
        return f"{self.name} [{self.split}]: {self.num_examples} images, {self.num_classes} classes"
