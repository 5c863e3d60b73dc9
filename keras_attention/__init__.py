"""keras-attention: a Keras 3 model zoo of attention CNNs with pretrained weights."""

__version__ = "0.1.0"

from keras_attention import layers  # noqa: E402  (registers the serializable layers)
