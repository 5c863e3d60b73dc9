"""Model builders; importing this module registers every architecture."""

from keras_attention.models import resnet  # noqa: F401
