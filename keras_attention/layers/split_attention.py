"""Split attention (ResNeSt): a grouped convolution of R splits, fused by a softmax over splits."""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (batch_norm_sublayer, check_activation, check_image_shape,
                                            check_positive, check_reduction, he_fan_out, make_divisible,
                                            spatial_mean, sublayer_kwargs)
from keras_attention.layers.factory import register_attention

#: The attention bottleneck is never narrower than this (official ``max(..., 32)``).
MIN_ATTENTION_CHANNELS = 32


@register_attention("splat")
class SplitAttention(keras.layers.Layer):
    """Split-attention convolution (ResNeSt's "Splat"): R splits of a grouped convolution, one softmax.

    split: one convolution ``kernel_size`` x ``kernel_size`` (zero padding ``k // 2``, stride
    ``strides``, no bias) with ``groups * radix`` groups gives ``R = radix`` splits of F
    channels each (channel ``r F + f``), then BatchNorm (ε 1e-5) and ``activation``:
    ``U = act(BN(conv(x)))``, ``U_r`` of shape ``(N, H', W', F)``.
    gather: ``s = mean_{hw} sum_r U_r`` (``(N, F)``).
    attend: ``z = act(BN(W_1 s + b_1))`` (1x1 convolution ``F -> d`` with ``groups`` groups and
    bias), ``W_2 z + b_2`` (``d -> R F``, same groups) gives per cardinal group g and split r
    the logits ``l_{g,r}``; ``a = softmax_r(l)`` for R > 1, ``a = sigmoid(l)`` for R = 1
    (the paper's r-Softmax). Output ``V = sum_r a_r * U_r``, shape ``(N, H', W', F)``.

    Unlike the attention layers that sit in a residual block's attention slot (after the
    last BN, before the addition), Split attention *replaces* the block's 3x3
    conv-BN-activation: :func:`keras_attention.models.resnet.build_resnet` takes it as
    ``spatial_conv="splat"``. Called with defaults it keeps the input's shape, so it also
    works as an attention (``attention="splat"``).

    Weight layout as timm's ``SplitAttn`` (and the official ``SplAtConv2d``): the logits of
    ``W_2`` are ordered (group, split, channel within the group), the splits of the
    convolution (split, channel). Initialisation: He-normal (fan-out) kernels, zero biases
    (timm's ResNet keeps PyTorch's default uniform biases in ``fc1``/``fc2``).

    Args:
        filters: F, output channels of each split and of the layer (default: the input's).
        kernel_size: k of the split convolution (3).
        strides: its stride (ResNeSt's blocks use 1 and downsample with an average pool).
        groups: cardinality K (1 in ResNeSt-14d/26d/50d).
        radix: R >= 1, the number of splits (2 in ResNeSt).
        reduction_ratio: r > 0; the attention width is ``d = make_divisible(C R / r,
            reduction_divisor)``, at least 32, with C the input channels (4 in ResNeSt:
            the official ``max(C R // 4, 32)``).
        reduction_channels: absolute attention width d; overrides ``reduction_ratio``.
        reduction_divisor: the rounding multiple of d (8).
        activation: activation after both BatchNorms (a Keras activation name).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor. Output: ``(N, ceil(H/s), ceil(W/s), F)`` in the
    layer's compute dtype (the softmax over splits is computed in float32).

    Maps (``call_with_maps``): ``"split_weights"`` ``(N, R, F)``, the weights ``a`` of each
    split per output channel (softmax over the R splits; for R = 1 the sigmoid gate).

    Raises:
        ValueError: non-positive arguments; C not divisible by ``groups * radix``, or F or
            d not divisible by ``groups``; input not 4D or with unknown channels.
            TypeError: arguments of a wrong type.

    Reference:
        Zhang, Wu, Zhang, Zhu, Lin, Zhang, Sun, He, Mueller, Manmatha, Li, Smola. "ResNeSt:
        Split-Attention Networks", arXiv:2004.08955 (2020), Sec. 3 (Split-Attention block);
        official code github.com/zhanghang1989/ResNeSt (``resnest/torch/models/splat.py``);
        names and layout as timm's ``timm/layers/split_attn.py``.
    """

    MAPS = {"split_weights": "(N, R, F) softmax over the R splits (sigmoid gate for R = 1)"}

    def __init__(self, filters: int | None = None, kernel_size: int = 3, strides: int = 1, groups: int = 1,
                 radix: int = 2, reduction_ratio: float = 4, reduction_channels: int | None = None,
                 reduction_divisor: int = 8, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive("filters", filters, integer=True, allow_none=True)
        self.kernel_size = check_positive("kernel_size", kernel_size, integer=True)
        self.strides = check_positive("strides", strides, integer=True)
        self.groups = check_positive("groups", groups, integer=True)
        self.radix = check_positive("radix", radix, integer=True)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        self.activation = check_activation(activation)

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        filters = self.filters or channels
        width = self.reduction_channels or make_divisible(channels * self.radix / self.reduction_ratio,
                                                          self.reduction_divisor, min_value=MIN_ATTENTION_CHANNELS)
        if channels % (self.groups * self.radix) or filters % self.groups or width % self.groups:
            raise ValueError(f"SplitAttention: groups * radix = {self.groups * self.radix} must divide the input "
                             f"channels ({channels}), and groups = {self.groups} the filters ({filters}) and "
                             f"the attention width ({width}).")
        n, h, w, _ = input_shape
        pad = self.kernel_size // 2
        self.conv = keras.layers.Conv2D(filters * self.radix, self.kernel_size, strides=self.strides,
                                        padding="valid", groups=self.groups * self.radix, use_bias=False,
                                        kernel_initializer=he_fan_out(), **sublayer_kwargs(self, "conv"))
        self.conv.build((n, None if h is None else h + 2 * pad, None if w is None else w + 2 * pad, channels))
        self.bn0 = batch_norm_sublayer(self, "bn0")
        self.bn0.build((None, None, None, filters * self.radix))
        self.fc1 = keras.layers.Conv2D(width, 1, groups=self.groups, kernel_initializer=he_fan_out(),
                                       **sublayer_kwargs(self, "fc1"))
        self.fc1.build((None, 1, 1, filters))
        self.bn1 = batch_norm_sublayer(self, "bn1")
        self.bn1.build((None, 1, 1, width))
        self.fc2 = keras.layers.Conv2D(filters * self.radix, 1, groups=self.groups, kernel_initializer=he_fan_out(),
                                       **sublayer_kwargs(self, "fc2"))
        self.fc2.build((None, 1, 1, width))
        self.filters_ = filters
        self.built = True

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"split_weights": (N, R, F)})``; see :mod:`keras_attention.layers._common`."""
        act = keras.activations.get(self.activation)
        pad = self.kernel_size // 2
        x = self.conv(ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]]))
        x = act(self.bn0(x, training=training))  # (N, H', W', R F), channel r F + f
        f, r, k = self.filters_, self.radix, self.groups
        if r > 1:
            shape = ops.shape(x)
            splits = ops.reshape(x, (shape[0], shape[1], shape[2], r, f))
            gap = spatial_mean(ops.sum(splits, axis=3), keepdims=True)  # (N, 1, 1, F)
        else:
            gap = spatial_mean(x, keepdims=True)
        z = act(self.bn1(self.fc1(gap), training=training))
        logits = ops.cast(self.fc2(z), "float32")  # (N, 1, 1, R F), ordered (group, split, channel)
        if r == 1:
            gate = ops.cast(ops.sigmoid(logits), x.dtype)  # (N, 1, 1, F)
            return x * gate, {"split_weights": gate[:, 0]}
        logits = ops.reshape(logits, (-1, k, r, f // k))
        weights = ops.transpose(ops.softmax(logits, axis=2), (0, 2, 1, 3))  # (N, R, K, F/K)
        weights = ops.cast(ops.reshape(weights, (-1, r, f)), x.dtype)
        return ops.sum(splits * weights[:, None, None], axis=3), {"split_weights": weights}

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        ceil = lambda d: None if d is None else -(-d // self.strides)  # noqa: E731
        return (n, ceil(h), ceil(w), self.filters or c)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "groups": self.groups, "radix": self.radix,
                "reduction_ratio": self.reduction_ratio, "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor, "activation": self.activation}
