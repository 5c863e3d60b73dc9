"""keras-attention: a Keras 3 model zoo of attention CNNs with pretrained weights."""

__version__ = "0.1.0"

from keras_attention import layers  # noqa: E402,F401  (registers the serializable layers)
from keras_attention import models  # noqa: E402,F401  (registers the architectures)
from keras_attention.registry import create_model, list_models  # noqa: E402
from keras_attention.hub import get_pretrained_cfg, list_pretrained, load  # noqa: E402
