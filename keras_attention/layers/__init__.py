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
from keras_attention.layers.color import COLOR_SPACES, ColorSpaceConversion, convert_color
from keras_attention.layers.non_local import NonLocalBlock
from keras_attention.layers.self_attention import SelfAttention2D, SpectralConv2D
from keras_attention.layers.danet import DANetChannelAttention, DANetPositionAttention, DualAttentionHead
from keras_attention.layers.spatial_transformer import SpatialTransformer
from keras_attention.layers.residual_attention import CaffeMaxPool2D, PreActBottleneck, ResidualAttentionModule
from keras_attention.layers.attention_dropout import ADCM, AttentionDropout
from keras_attention.layers.selective_kernel import SelectiveKernel
from keras_attention.layers.split_attention import SplitAttention
from keras_attention.layers.bilinear_attention import BilinearAttentionTransform
from keras_attention.layers.saccader import SaccaderCell
