"""Shared paths and skips for the data-pipeline tests (real data from ../shared/data)."""

import pytest

from tests.helpers import SHARED_DATA

TFDS_DIR = SHARED_DATA / "tensorflow_datasets"
IMAGENETTE = SHARED_DATA / "imagenette-160"

needs_cifar = pytest.mark.skipif(not (TFDS_DIR / "cifar10").is_dir(),
                                 reason="prepared CIFAR-10 not found in ../shared/data")
needs_imagenette = pytest.mark.skipif(not IMAGENETTE.is_dir(),
                                      reason="Imagenette not found in ../shared/data")
