"""DANet: position and channel self-attention and the dual-attention head (Fu et al., CVPR 2019).

Named ``DANetPositionAttention``/``DANetChannelAttention`` (not ``PositionAttention``/
``ChannelAttention``) so they do not clash with CBAM's ``ChannelAttention`` in the
Keras serialization namespace of the package.

Memory: position attention is O((HW)^2) (an ``(N, H*W, H*W)`` matrix; ``subsample=2``
pools keys and values 2x2 to divide it by 4), channel attention is O(C^2)
(an ``(N, C, C)`` matrix).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (check_image_shape, check_positive, reduced_channels,
                                            serializable, sublayer_kwargs)
from keras_attention.layers.factory import register_attention
from keras_attention.layers.non_local import flatten_positions, softmax_float32
from keras_attention.layers.self_attention import SelfAttention2D


@register_attention("danet_pam", "position_attention")
class DANetPositionAttention(SelfAttention2D):
    """DANet position attention module (PAM): self-attention over positions.

    ``B = Q(x)``, ``C = K(x)`` (1x1 convolutions with bias, C -> C/8), ``D = V(x)``
    (1x1 convolution with bias, C -> C), ``s_ij = softmax_j(B_i . C_j)``,
    ``E_i = gamma sum_j s_ij D_j + x_i`` with ``gamma`` initialised to 0 (paper Sec. 3.2,
    Eq. 1-2; official ``PAM_Module``). It is :class:`SelfAttention2D` with
    ``value_ratio=1, output_conv=False, use_bias=True``.

    Args:
        reduction_ratio: query/key width ``C / r`` (8 in DANet).
        reduction_channels: absolute query/key width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: ``C // r``).
        subsample: max-pool factor for keys and values (1 = official; 2 divides memory by 4).
        return_attention: if True, ``call`` returns ``(outputs, attention)``, attention
            float32 ``(N, H*W, H'*W')`` (row ``i``: weights of every position for ``i``).
        **kwargs: standard layer arguments.

    Input ``(N, H, W, C)``; output same shape and the compute dtype. Memory O((HW)^2).

    Raises:
        ValueError: non-positive arguments, input not 4D, unknown channels.

    Reference:
        Fu, Liu, Tian, Li, Bao, Fang, Lu. "Dual Attention Network for Scene Segmentation",
        CVPR 2019, Sec. 3.2, Fig. 3(A); github.com/junfu1115/DANet
        (``encoding/nn/da_att.py``).
    """

    def __init__(self, reduction_ratio: float = 8, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, subsample: int = 1, return_attention: bool = False,
                 **kwargs):
        super().__init__(reduction_ratio=reduction_ratio, reduction_channels=reduction_channels,
                         reduction_divisor=reduction_divisor, value_ratio=1, output_conv=False,
                         subsample=subsample, spectral_norm=False, use_bias=True,
                         return_attention=return_attention, **kwargs)

    def get_config(self):
        return {**keras.layers.Layer.get_config(self), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor, "subsample": self.subsample,
                "return_attention": self.return_attention}


@register_attention("danet_cam", "channel_self_attention")
class DANetChannelAttention(keras.layers.Layer):
    """DANet channel attention module (CAM): self-attention between channels, no convolutions.

    With ``A`` the input reshaped to ``(C, H*W)``: energy ``e = A A^T`` (``C x C``),
    ``x_ji = softmax_i(max_k e_jk - e_ji)`` (the official code's "max minus energy",
    which the paper's Eq. 3 writes as ``softmax(A_i . A_j)``; we follow the code), and
    ``E_j = gamma sum_i x_ji A_i + A_j`` with ``gamma`` initialised to 0, so the layer is
    the identity at initialisation (paper Sec. 3.3; official ``CAM_Module``).

    Args:
        return_attention: if True, ``call`` returns ``(outputs, attention)``, attention
            float32 ``(N, C, C)`` (row ``j``: weights of every channel for channel ``j``).
        **kwargs: standard layer arguments.

    Input ``(N, H, W, C)``; output same shape and the compute dtype. Memory O(C^2) for the
    attention plus O(HW C) for the products; the energies are computed in float32.

    Maps (``call_with_maps``): ``"attention"`` float32 ``(N, C, C)`` (rows sum to 1; the
    ``queries`` of the spatial layers do not apply).

    Raises:
        ValueError: input not 4D or unknown channels.

    Reference:
        Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, Sec. 3.3,
        Fig. 3(B); github.com/junfu1115/DANet (``encoding/nn/da_att.py``).
    """

    MAPS = {"attention": "float32 (N, C, C), row j: weights of every channel for channel j"}

    def __init__(self, return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.return_attention = bool(return_attention)

    def build(self, input_shape):
        check_image_shape(type(self).__name__, input_shape)
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")

    def call(self, inputs):
        return self.call_with_maps(inputs)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"attention": (N, C, C)})``; see :mod:`keras_attention.layers._common`."""
        flat = ops.cast(flatten_positions(inputs), "float32")  # (N, HW, C)
        energy = ops.matmul(ops.transpose(flat, (0, 2, 1)), flat)  # (N, C, C)
        energy = ops.max(energy, axis=-1, keepdims=True) - energy
        attention = softmax_float32(energy)
        out = ops.matmul(flat, ops.transpose(attention, (0, 2, 1)))  # out[n, p, j] = sum_i x_ji A[p, i]
        out = ops.reshape(ops.cast(out, self.compute_dtype), ops.shape(inputs))
        outputs = inputs + ops.cast(self.gamma, self.compute_dtype) * out
        return ((outputs, attention) if self.return_attention else outputs), {"attention": attention}

    def compute_output_shape(self, input_shape):
        if not self.return_attention:
            return tuple(input_shape)
        return tuple(input_shape), (input_shape[0], input_shape[-1], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "return_attention": self.return_attention}


@serializable
class DualAttentionHead(keras.layers.Layer):
    """DANet's dual-attention head: position and channel attention branches, summed.

    Each branch: 3x3 conv (no bias) -> BN -> ReLU (C -> C/4), the attention module
    (:class:`DANetPositionAttention` or :class:`DANetChannelAttention`), 3x3 conv (no
    bias) -> BN -> ReLU; the two branch outputs are summed (paper Sec. 3.4, Fig. 2;
    official ``DANetHead``). With ``num_classes`` each of the sum and the two branches
    gets the official classifier: channel dropout (``Dropout2d(0.1)``) and a 1x1
    convolution with bias; without it the summed features are returned.

    Args:
        reduction_ratio: inner width ``C / r`` (4 in DANet: 2048 -> 512).
        reduction_channels: absolute inner width; overrides ``reduction_ratio``.
        num_classes: output channels of the 1x1 classifiers, or ``None`` for features.
        dropout_rate: channel-dropout rate before the classifiers (0.1), in [0, 1).
        subsample: key/value sub-sampling of the position attention (1 = official).
        return_branches: also return the two branch outputs (the official auxiliary
            outputs ``sa_output``, ``sc_output``): ``(main, position, channel)``.
        return_attention: also return ``(position_attention, channel_attention)`` maps,
            appended after the other outputs.
        **kwargs: standard layer arguments.

    Input ``(N, H, W, C)``. Output ``(N, H, W, num_classes or C/r)`` in the compute
    dtype (a tuple when ``return_branches``/``return_attention``).

    Maps (``call_with_maps``): ``"position_attention"`` (the position branch's
    ``"attention"``: ``(N, Q, H', W')`` for ``queries``, else ``(N, H*W, H'*W')``) and
    ``"channel_attention"`` ``(N, C/r, C/r)``, float32.

    Raises:
        ValueError: non-positive arguments, ``dropout_rate`` outside [0, 1), input not 4D.

    Reference:
        Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, Sec. 3.4;
        github.com/junfu1115/DANet (``encoding/models/sseg/danet.py``, ``DANetHead``).
    """

    MAPS = {"position_attention": "float32 (N, Q, H', W') for Q query positions, else (N, H*W, H'*W')",
            "channel_attention": "float32 (N, C/r, C/r)"}

    def __init__(self, reduction_ratio: float = 4, reduction_channels: int | None = None,
                 num_classes: int | None = None, dropout_rate: float = 0.1, subsample: int = 1,
                 return_branches: bool = False, return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.reduction_ratio = check_positive("reduction_ratio", reduction_ratio)
        self.reduction_channels = check_positive("reduction_channels", reduction_channels,
                                                 integer=True, allow_none=True)
        self.num_classes = check_positive("num_classes", num_classes, integer=True, allow_none=True)
        if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) \
                or not 0 <= dropout_rate < 1:
            raise ValueError(f"`dropout_rate` must be in [0, 1), received {dropout_rate!r}.")
        self.dropout_rate = float(dropout_rate)
        self.subsample = check_positive("subsample", subsample, integer=True)
        self.return_branches = bool(return_branches)
        self.return_attention = bool(return_attention)

    def _conv_bn_relu(self, name, filters, input_shape):
        conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                   **sublayer_kwargs(self, f"{name}_conv"))
        bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, **sublayer_kwargs(self, f"{name}_bn"))
        conv.build(input_shape)
        bn.build((*input_shape[:3], filters))
        return conv, bn

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        inner = reduced_channels(channels, self.reduction_ratio, self.reduction_channels, 1)
        inner_shape = (*input_shape[:3], inner)
        self.inner_channels = inner
        self.conv5a = self._conv_bn_relu("conv5a", inner, input_shape)
        self.conv5c = self._conv_bn_relu("conv5c", inner, input_shape)
        self.pam = DANetPositionAttention(subsample=self.subsample, return_attention=True,
                                          **sublayer_kwargs(self, "pam"))
        self.cam = DANetChannelAttention(return_attention=True, **sublayer_kwargs(self, "cam"))
        self.pam.build(inner_shape)
        self.cam.build(inner_shape)
        self.conv51 = self._conv_bn_relu("conv51", inner, inner_shape)
        self.conv52 = self._conv_bn_relu("conv52", inner, inner_shape)
        self.classifiers = []
        if self.num_classes is not None:
            self.dropout = keras.layers.SpatialDropout2D(self.dropout_rate, **sublayer_kwargs(self, "dropout"))
            for name in ("conv6", "conv7", "conv8"):  # official names: position, channel, sum
                conv = keras.layers.Conv2D(self.num_classes, 1, **sublayer_kwargs(self, name))
                conv.build(inner_shape)
                self.classifiers.append(conv)

    @staticmethod
    def _apply(block, x, training):
        conv, bn = block
        return ops.relu(bn(conv(x), training=training))

    def _classify(self, index, x, training):
        if not self.classifiers:
            return x
        return self.classifiers[index](self.dropout(x, training=training))

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"position_attention", "channel_attention"})``; see
        :mod:`keras_attention.layers._common`. The branches run through their own
        ``call_with_maps`` (same dtype policy as this layer, so no second cast is needed)."""
        (position, position_map), position_maps = self.pam.call_with_maps(
            self._apply(self.conv5a, inputs, training), training=training, queries=queries)
        position = self._apply(self.conv51, position, training)
        channel, channel_map = self.cam(self._apply(self.conv5c, inputs, training))
        channel = self._apply(self.conv52, channel, training)
        outputs = (self._classify(2, position + channel, training),)
        if self.return_branches:
            outputs += (self._classify(0, position, training), self._classify(1, channel, training))
        if self.return_attention:
            outputs += (position_map, channel_map)
        maps = {"position_attention": position_maps["attention"], "channel_attention": channel_map}
        return (outputs[0] if len(outputs) == 1 else outputs), maps

    def compute_output_shape(self, input_shape):
        channels = self.num_classes if self.num_classes is not None else reduced_channels(
            input_shape[-1], self.reduction_ratio, self.reduction_channels, 1)
        main = (*input_shape[:3], channels)
        shapes = (main,)
        if self.return_branches:
            shapes += (main, main)
        if self.return_attention:
            n, h, w, _ = input_shape
            inner = reduced_channels(input_shape[-1], self.reduction_ratio, self.reduction_channels, 1)
            hw = None if h is None or w is None else h * w
            ph = None if h is None else h // self.subsample
            pw = None if w is None else w // self.subsample
            shapes += ((n, hw, None if ph is None or pw is None else ph * pw), (n, inner, inner))
        return shapes[0] if len(shapes) == 1 else shapes

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels, "num_classes": self.num_classes,
                "dropout_rate": self.dropout_rate, "subsample": self.subsample,
                "return_branches": self.return_branches, "return_attention": self.return_attention}
