"""Attention layers (``keras.ops`` only, NHWC) and the name -> layer factory."""

from keras_attention.layers._common import make_divisible
from keras_attention.layers.factory import (ATTENTION_LAYERS, create_attention, get_attention,
                                            list_attention, register_attention)
from keras_attention.layers.squeeze_excite import SqueezeExcite
from keras_attention.layers.gather_excite import GatherExcite
from keras_attention.layers.global_context import GlobalContext
from keras_attention.layers.cbam import CBAM, ChannelAttention, SpatialAttention
from keras_attention.layers.nam import NAM, NAMSparsity
from keras_attention.layers.eca import ECA, adaptive_kernel_size
