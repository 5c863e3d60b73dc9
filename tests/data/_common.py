"""Shared paths and skips for the data-pipeline tests (real data from ../shared/data)."""

from tests.helpers import IMAGEWOOF, TFDS_DIR, needs_cifar, needs_imagewoof  # noqa: F401 (re-exported)
