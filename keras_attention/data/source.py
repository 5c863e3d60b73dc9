"""The :class:`ImageSource` record shared by every dataset loader and both pipelines.

A source is one split of an image-classification dataset, random-access and not yet
augmented. Its images are held in one of three ways, whichever the loader has:

* decoded uint8 arrays (a prepared dataset, memory-mapped; a TFDS split with a static
  image shape such as CIFAR, decoded once on first use);
* image files (a class folder), decoded with Pillow when read;
* encoded images in memory (a TFDS split whose images differ in size).

:meth:`ImageSource.read` returns decoded images for any of them (the NumPy/grain path);
``tf_records`` builds the ``tf.data`` records of the TensorFlow path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from keras_attention._errors import InvalidInputError
from keras_attention.data.transforms import decode_image, encode_png

_SLICE = re.compile(r"^(?P<split>[A-Za-z0-9_\-]+)(\[(?P<start>-?\d*%?):(?P<stop>-?\d*%?)\])?$")


def split_base(split: str) -> str:
    """The split's name without a slice: ``"train[:10%]"`` -> ``"train"``.

    Raises:
        InvalidInputError: a malformed split.
    """
    match = _SLICE.match(split.strip())
    if not match:
        raise InvalidInputError(f"Could not parse the split {split!r}; expected e.g. 'train', "
                                f"'test[:1000]' or 'train[:90%]'.")
    return match.group("split")


def parse_split(split: str, sizes: dict[str, int]) -> tuple[str, slice]:
    """``"train[:5000]"`` / ``"val[10%:]"`` -> ``("train", slice(...))`` over ``sizes[name]``.

    The TFDS slice syntax for datasets TFDS does not read (prepared arrays, class folders):
    one split, optional ``[start:stop]`` with example counts or percentages.

    Raises:
        InvalidInputError: a malformed split, or a split not in ``sizes`` (listed).
    """
    name = split_base(split)
    match = _SLICE.match(split.strip())
    if name not in sizes:
        raise InvalidInputError(f"Split {name!r} not found; the dataset has "
                                f"{', '.join(map(repr, sizes)) or 'no splits'}.")
    n = sizes[name]

    def bound(text):
        if not text:
            return None
        if text.endswith("%"):
            return int(round(n * int(text[:-1]) / 100))
        return int(text)

    return name, slice(bound(match.group("start")), bound(match.group("stop")))


@dataclass
class ImageSource:
    """One split of an image-classification dataset.

    Attributes:
        name: dataset name (``"cifar10"``) or folder path.
        split: split name as given (``"train"``, ``"test[:1000]"``, ``"val"``).
        labels: int64 ``(N,)`` class indices.
        label_names: class names in label order.
        image_shape: ``(H, W, 3)`` when every image has this shape, else ``None``.
        files: image paths in record order (class folders), or ``None``.
        skipped_files: unreadable files left out (``skip_corrupt``).
        encoded_bytes: approximate total size of the encoded images (caching decisions).
        tf_records: builds the unbatched ``tf.data.Dataset`` of ``(image, label)`` for the
            TensorFlow path; images are encoded bytes, or decoded uint8 when
            ``tf_records_decoded``.
        on_decode_error: the ``tf.data`` path calls it with a decode error; it raises a
            clearer one (naming the file) or returns.
    """

    name: str
    split: str
    labels: np.ndarray
    label_names: list[str]
    image_shape: tuple[int, int, int] | None = None
    files: list[str] | None = None
    skipped_files: list[str] = field(default_factory=list)
    encoded_bytes: int | None = None
    tf_records: Callable[[], object] | None = None
    tf_records_decoded: bool = False
    on_decode_error: Callable[[Exception], None] | None = None
    _arrays: np.ndarray | Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _encoded: Sequence[bytes] | Callable[[], Sequence[bytes]] | None = field(default=None,
                                                                            repr=False)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, np.int64)
        if sum(x is not None for x in (self._arrays, self.files, self._encoded)) != 1:
            raise ValueError("An ImageSource holds its images in exactly one way: arrays, files "
                             "or encoded bytes.")

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def describe(self) -> str:
        return f"{self.name} [{self.split}]: {self.num_examples} images, {self.num_classes} classes"

    @property
    def arrays(self) -> np.ndarray | None:
        """The decoded uint8 ``(N, H, W, 3)`` images, or ``None`` for files / encoded images."""
        if callable(self._arrays):
            self._arrays = self._arrays()
        return self._arrays

    def _encoded_list(self) -> Sequence[bytes]:
        if callable(self._encoded):
            self._encoded = self._encoded()
        return self._encoded

    def read(self, indices) -> np.ndarray | list[np.ndarray]:
        """Decoded uint8 images at ``indices``: a ``(B, H, W, 3)`` array for array sources,
        else a list of ``(H_i, W_i, 3)`` arrays.

        Raises:
            InvalidInputError: a file or encoded image that cannot be decoded (named).
        """
        indices = np.asarray(indices, np.int64)
        if self._arrays is not None:
            return np.asarray(self.arrays[indices])
        if self.files is not None:
            return [decode_image(self.files[i]) for i in indices]
        encoded = self._encoded_list()
        return [decode_image(encoded[i], name=f"{self.name} [{self.split}] example {i}")
                for i in indices]

    def encoded_image(self, index: int) -> tuple[bytes, str]:
        """``(bytes, extension)`` of one image as a file would hold it (PNG for arrays)."""
        if self.files is not None:
            path = self.files[index]
            with open(path, "rb") as f:
                return f.read(), "." + path.rsplit(".", 1)[-1].lower()
        if self._arrays is not None:
            return encode_png(self.arrays[index]), ".png"
        data = bytes(self._encoded_list()[index])
        return data, ".png" if data[:4] == b"\x89PNG" else ".jpg"


def array_source(name: str, split: str, images, labels, label_names, **kwargs) -> ImageSource:
    """An :class:`ImageSource` over decoded uint8 ``(N, H, W, 3)`` images (or a callable
    returning them, called on first use)."""
    shape = tuple(images.shape[1:]) if isinstance(images, np.ndarray) else kwargs.pop(
        "image_shape", None)
    source = ImageSource(name=name, split=split, labels=labels, label_names=list(label_names),
                         image_shape=shape, _arrays=images, **kwargs)
    if source.tf_records is None:  # the tf.data path reads the same decoded arrays
        def tf_records():
            import tensorflow as tf
            return tf.data.Dataset.from_tensor_slices((np.asarray(source.arrays), source.labels))
        source.tf_records, source.tf_records_decoded = tf_records, True
    return source


def check_label_names(source: ImageSource, label_names) -> ImageSource:
    """``source`` if its classes are ``label_names`` (a model's), else a clear error."""
    if label_names is not None and list(label_names) != source.label_names:
        raise InvalidInputError(
            f"The model's {len(label_names)} label names differ from dataset {source.name!r}'s "
            f"{source.num_classes} ({source.label_names[:5]}...).")
    return source


def explain_decode_error(err: Exception, *sources: ImageSource | None) -> None:
    """Turns a ``tf.data`` decode error into one naming the file (class folders); else returns."""
    if type(err).__name__ not in ("InvalidArgumentError", "UnknownError"):
        return
    for source in sources:
        if source is not None and source.on_decode_error is not None:
            source.on_decode_error(err)
