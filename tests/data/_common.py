"""Shared paths and skips for the data-pipeline tests (real data from ../shared/data)."""

import pytest

from tests.helpers import IMAGENETTE, TFDS_DIR, needs_cifar  # noqa: F401 (re-exported)

needs_imagenette = pytest.mark.skipif(not IMAGENETTE.is_dir(),
                                      reason="Imagenette not found in ../shared/data")
