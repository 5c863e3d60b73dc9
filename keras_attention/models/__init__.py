"""Model builders; importing this module registers every architecture."""

from keras_attention.models import resnet  # noqa: F401
from keras_attention.models import densenet  # noqa: F401
from keras_attention.models import colornet  # noqa: F401
from keras_attention.models import non_local  # noqa: F401
from keras_attention.models import residual_attention  # noqa: F401
from keras_attention.models import bagnet  # noqa: F401
from keras_attention.models import saccader  # noqa: F401
from keras_attention.models import racnn  # noqa: F401
from keras_attention.models import tnet  # noqa: F401
from keras_attention.models import granularity  # noqa: F401
