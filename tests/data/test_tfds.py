"""TFDS loading: the real prepared CIFAR-10, and the errors for what is missing."""

import numpy as np
import pytest

pytestmark = pytest.mark.tf

from keras_attention.data import load_source
from keras_attention.data.tfds import load_tfds
from keras_attention.data.tf_augment import decode_image
from tests.data._common import TFDS_DIR, needs_cifar


@needs_cifar
def test_cifar10_test_split_metadata_and_records():
    src = load_tfds("cifar10", "test", data_dir=TFDS_DIR, download=False)
    assert src.num_examples == 10_000
    assert src.label_names[:3] == ["airplane", "automobile", "bird"] and src.num_classes == 10
    assert src.image_shape == (32, 32, 3)
    encoded, label = next(iter(src.tf_records()))
    assert encoded.numpy()[:4] == b"\x89PNG"  # not decoded yet: decoding is the pipeline's job
    image = decode_image(encoded).numpy()
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and 0 <= int(label) < 10


@needs_cifar
def test_split_slices_and_tfds_data_dir_env(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(TFDS_DIR))
    src = load_source("cifar10", "train[:300]", download=False)  # found through the env var
    assert src.num_examples == 300
    assert sum(1 for _ in src.tf_records()) == 300 and len(src.labels) == 300


@needs_cifar
def test_unknown_split_lists_the_splits_found():
    with pytest.raises(ValueError, match=r"no split 'validation'.*'train'.*'test'"):
        load_tfds("cifar10", "validation", data_dir=TFDS_DIR, download=False)


def test_missing_dataset_says_how_to_point_tfds_data_dir(tmp_path):
    with pytest.raises(ValueError, match=r"not prepared in .*TFDS_DATA_DIR"):
        load_tfds("cifar100", "test", data_dir=tmp_path, download=False)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"Unknown TFDS dataset 'cifar_10'"):
        load_tfds("cifar_10", "test", download=False)


@needs_cifar
def test_label_names_must_match_the_model():
    with pytest.raises(ValueError, match="label names differ"):
        load_source("cifar10", "test[:10]", data_dir=str(TFDS_DIR), download=False,
                    label_names=[f"c{i}" for i in range(10)])
