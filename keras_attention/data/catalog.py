"""Datasets by name or path, and the choice of input pipeline.

``dataset`` may be a prepared-dataset folder (``keras-attention data prepare``; read with
NumPy, no TensorFlow), a class folder (``<split>/<class>/<images>``; read with Pillow or
``tf.io``), or a TFDS name (needs TensorFlow and tensorflow-datasets).
"""

from __future__ import annotations

import importlib.util
import os

from keras_attention._errors import InvalidInputError
from keras_attention.data import loader
from keras_attention.data.folder import load_folder
from keras_attention.data.prepared import is_prepared, open_prepared
from keras_attention.data.source import ImageSource, check_label_names
from keras_attention.data.tfds import load_tfds

PIPELINES = ("auto", "grain", "tf")


def load_source(dataset: str, split: str, *, data_dir: str | None = None,
                label_names: list[str] | None = None, skip_corrupt: bool = False,
                verify: str = "header", download: bool = True) -> ImageSource:
    """One split of a prepared dataset, a class folder or a TFDS dataset.

    ``dataset`` is a folder when it exists as one or starts with ``/``, ``.`` or ``~``:
    prepared if it holds a ``dataset.json`` of that format, else a class folder. Anything
    else is a TFDS name (``"cifar10"``, ``"imagewoof/160px-v2"``).

    Args:
        split: split name with an optional TFDS-style slice (``"train[:5000]"``).
        data_dir: TFDS data directory (default ``$TFDS_DATA_DIR``).
        label_names: the model's classes; a class folder is mapped onto them, other
            datasets must have exactly them.
        skip_corrupt, verify: class folders (see :func:`keras_attention.data.load_folder`).
        download: let TFDS download a dataset that is not prepared.

    Raises:
        InvalidInputError: unknown dataset or split (the ones found are listed), mismatched
            classes, corrupt files (named), or a TFDS name without TensorFlow installed (the
            message says how to prepare the dataset elsewhere).
    """
    expanded = os.path.expanduser(str(dataset))
    if os.path.isdir(expanded) or str(dataset).startswith((".", "~", "/")):
        if is_prepared(expanded):
            return check_label_names(open_prepared(expanded, split), label_names)
        return load_folder(expanded, split, label_names=label_names, skip_corrupt=skip_corrupt,
                           verify=verify)
    if importlib.util.find_spec("tensorflow_datasets") is None or \
            importlib.util.find_spec("tensorflow") is None:
        raise InvalidInputError(
            f"{dataset!r} is neither a folder nor readable here: TFDS datasets need TensorFlow and "
            f"tensorflow-datasets (pip install 'keras-attention[tf]'). Without them, prepare it "
            f"once where they are installed (keras-attention data prepare {dataset} --output DIR) "
            f"and pass --dataset DIR.")
    return check_label_names(load_tfds(dataset, split, data_dir=data_dir, download=download),
                             label_names)


def resolve_pipeline(pipeline: str = "auto") -> str:
    """``"grain"`` or ``"tf"`` for ``pipeline``; ``"auto"`` is grain on every backend.

    ``"tf"`` (``tf.data``) needs TensorFlow. Measured on 2 CPU cores (docs/benchmarks.md),
    grain is as fast as tf.data end to end on the TensorFlow backend, so the default is one
    pipeline everywhere.
    """
    if pipeline not in PIPELINES:
        raise InvalidInputError(f"pipeline must be one of {PIPELINES}; received {pipeline!r}.")
    if pipeline == "tf" and importlib.util.find_spec("tensorflow") is None:
        raise InvalidInputError("pipeline 'tf' needs TensorFlow (pip install 'keras-attention[tf]').")
    return "grain" if pipeline == "auto" else pipeline


def pipeline_module(pipeline: str = "auto"):
    """The module with ``train_dataset`` / ``eval_dataset`` of ``pipeline``."""
    if resolve_pipeline(pipeline) == "tf":
        from keras_attention.data import tf_pipeline  # imports TensorFlow: only when asked for
        return tf_pipeline
    return loader
