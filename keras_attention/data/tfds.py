"""TFDS image-classification datasets by name (``cifar10``, ``imagewoof/160px-v2``, ...).

Needs TensorFlow and tensorflow-datasets (``pip install keras-attention[tf]``). Without
them, prepare the dataset once where they are installed (``keras-attention data prepare
cifar10 --output DIR``) and pass the folder as the dataset.
"""

from __future__ import annotations

import os
import re

from keras_attention.data.source import ImageSource
from keras_attention._errors import InvalidInputError

_SPLIT_BASE = re.compile(r"^\s*([A-Za-z0-9_\-]+)")


def _base_splits(split: str) -> list[str]:
    """``"train[:10%]+test"`` -> ``["train", "test"]``."""
    names = []
    for part in split.split("+"):
        match = _SPLIT_BASE.match(part)
        if not match:
            raise InvalidInputError(f"Could not parse the split {split!r}; expected e.g. 'train', "
                             f"'test[:1000]' or 'train[:90%]'.")
        names.append(match.group(1))
    return names


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """``data_dir`` if given, else ``$TFDS_DATA_DIR``, else ``None`` (TFDS's default,
    ``~/tensorflow_datasets``)."""
    if data_dir:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or None


def load_tfds(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
              download: bool = True) -> ImageSource:
    """Opens split ``split`` of the TFDS dataset ``name`` without decoding its images.

    The prepared copy in ``data_dir`` (default ``$TFDS_DATA_DIR``, then TFDS's default
    ``~/tensorflow_datasets``) is used when it exists; otherwise, with ``download=True``,
    TFDS downloads and prepares it there (needs a network connection).

    Args:
        name: TFDS name, optionally with config/version (``"cifar10"``,
            ``"imagenette/160px-v2"``, ``"cifar10:3.0.2"``).
        split: TFDS split string, slices allowed (``"train"``, ``"test[:1000]"``).
        data_dir: TFDS data directory.
        download: allow a download when the dataset is not prepared in ``data_dir``.

    Returns:
        An :class:`ImageSource` of encoded images and integer labels.

    Raises:
        ValueError: unknown dataset name, a split that does not exist (the message
            lists the splits found), a dataset without an image and a class-label
            feature, or a dataset that is not prepared and could not be downloaded
            (the message says how to point ``TFDS_DATA_DIR`` at a prepared copy).
    """
    builder = _builder(name, data_dir, download)
    info = builder.info
    available = list(info.splits.keys())
    for base in _base_splits(split):
        if base not in info.splits:
            raise InvalidInputError(f"Dataset {name!r} has no split {base!r}; it has "
                             f"{', '.join(repr(s) for s in available)}.")
    image_key, label_key = _supervised_keys(info, name)
    label_feature = info.features[label_key]
    if not hasattr(label_feature, "names"):
        raise InvalidInputError(f"Dataset {name!r}: feature {label_key!r} is not a ClassLabel; only "
                         f"image-classification datasets are supported.")
    import tensorflow_datasets as tfds
    shape = tuple(info.features[image_key].shape)
    static = all(d is not None for d in shape)

    def records(decoded: bool = False):
        decoders = None if decoded else {image_key: tfds.decode.SkipDecoding()}
        return builder.as_dataset(split=split, shuffle_files=False, as_supervised=True,
                                  decoders=decoders)

    encoded, labels = tfds.as_numpy(records().batch(1 << 30).get_single_element())
    total = info.splits[split].num_bytes if hasattr(info.splits[split], "num_bytes") else None
    kwargs = dict(name=name, split=split, labels=labels, label_names=list(label_feature.names),
                  encoded_bytes=int(total) if total else None, tf_records=records)
    if static:
        # Decoded once, on first use by the NumPy/grain path (CIFAR-10 train: 150 MB).
        return ImageSource(image_shape=shape, _arrays=lambda: tfds.as_numpy(
            records(decoded=True).batch(1 << 30).get_single_element())[0], **kwargs)
    return ImageSource(_encoded=list(encoded), **kwargs)


def _builder(name: str, data_dir, download: bool):
    import tensorflow_datasets as tfds

    data_dir = resolve_data_dir(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise InvalidInputError(f"Unknown TFDS dataset {name!r}: {err}") from None
    where = data_dir or "the default TFDS data directory (~/tensorflow_datasets)"
    hint = (f"TFDS dataset {name!r} is not prepared in {where}. Point TFDS at a prepared copy "
            f"with `export TFDS_DATA_DIR=/path/to/tensorflow_datasets` (the folder that contains "
            f"'{name.split(':')[0].split('/')[0]}/'), or pass --data-dir; or run once with network "
            f"access so TFDS can download it.")
    if not _is_prepared(builder):
        if not download:
            raise InvalidInputError(hint + " (Downloading was disabled.)")
        try:
            builder.download_and_prepare()
        except Exception as err:  # noqa: BLE001  (network errors come in many types)
            raise InvalidInputError(f"{hint}\nThe download failed with {type(err).__name__}: "
                             f"{str(err)[:500]}") from err
    return builder


def tfds_split_names(name: str, *, data_dir=None, download: bool = True) -> list[str]:
    """The splits of TFDS dataset ``name`` (``["test", "train"]`` for CIFAR-10)."""
    return sorted(_builder(name, data_dir, download).info.splits.keys())


def _is_prepared(builder) -> bool:
    if hasattr(builder, "is_prepared"):
        return bool(builder.is_prepared())
    return builder.data_path.exists() and bool(builder.info.splits)  # older TFDS


def _supervised_keys(info, name):
    keys = info.supervised_keys
    if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    features = info.features
    images = [k for k, f in features.items() if type(f).__name__ == "Image"]
    labels = [k for k, f in features.items() if type(f).__name__ == "ClassLabel"]
    if len(images) == 1 and len(labels) == 1:
        return images[0], labels[0]
    raise InvalidInputError(f"Dataset {name!r} has no (image, label) supervised keys; features are "
                     f"{list(features.keys())}.")
