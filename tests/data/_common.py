"""Shared paths and skips for the data-pipeline tests (real data from ../shared/data)."""

from tests.helpers import IMAGEWOOF, TFDS_DIR, needs_cifar, needs_imagewoof  # noqa: F401 (re-exported)

import pytest  # noqa: E402

from keras_attention.data import loader  # noqa: E402

#: Both input pipelines; the tf.data one only where TensorFlow is installed.
PIPELINES = ["grain", pytest.param("tf", marks=pytest.mark.tf)]


def pipeline(name: str):
    """The module of pipeline ``name`` (``loader`` or ``tf_pipeline``)."""
    if name == "tf":
        from keras_attention.data import tf_pipeline
        return tf_pipeline
    return loader


def batches(dataset) -> list:
    """Every batch of a grain or tf.data dataset, as numpy ``(images, labels)``."""
    if hasattr(dataset, "as_numpy_iterator"):
        return list(dataset.as_numpy_iterator())
    return list(dataset)
