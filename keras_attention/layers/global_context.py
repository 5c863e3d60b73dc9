"""Global Context (GC) block of GCNet."""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (check_choice, check_image_shape, check_positive, check_reduction,
                                            reduced_channels, spatial_mean, sublayer_kwargs)
from keras_attention.layers.factory import register_attention

CONTEXT_MODELING = ("attention", "avg")
FUSIONS = ("add", "mul")


@register_attention("gc")
class GlobalContext(keras.layers.Layer):
    """Global Context block: one query-independent attention map, a bottleneck transform, fusion.

    context modeling: ``"attention"`` (default) ``a = softmax_{hw}(W_k x + b_k)`` with
    ``W_k`` a 1x1 convolution ``C -> 1`` with bias, and ``z = sum_{hw} a_hw x_hw`` (shape
    ``(N, C)``); or ``"avg"``: ``z = mean_{hw} x``.
    transform: ``t = W_v2 relu(LN(W_v1 z + b_v1)) + b_v2`` with 1x1 convolutions with
    biases ``C -> C/r -> C`` and LayerNorm over the ``C/r`` channels (ε = ``epsilon``,
    1e-5 by default, with scale and offset; the official ``nn.LayerNorm([planes, 1, 1])``).
    fusion: ``"add"`` (default, the paper's choice) ``y = x + t``; ``"mul"``
    ``y = x * sigmoid(t)`` (both broadcast over H and W). Paper Eq. 3 / Fig. 4(d).

    Initialisation as the official ``ContextBlock2d.reset_parameters``: the last 1x1
    convolution of the transform has zero weights and zero bias (for either fusion), so
    with ``"add"`` the block starts as the identity, and with ``"mul"`` it starts as
    ``y = x / 2``; the attention convolution is He-normal (fan-in) with zero bias. That
    bias is kept because the official convolution has one (it counts in the parameter
    total), although the softmax is shift-invariant, so it never affects the output and
    never receives a gradient.

    The softmax over H*W and the weighted sum are computed in float32 whatever the
    compute dtype (a float16 softmax over thousands of positions loses most of its mass).

    Differences from timm's ``GlobalContext``: timm defaults to ``"mul"`` fusion with
    r = 8, uses LayerNorm ε = 1e-6, zeroes only the add-branch weights (not its bias) and
    never the mul branch; we follow the official code. timm's ByobNet models (``gcresnet33ts``,
    ``gcresnext26ts``, ... : ``attn_layer='gca'``) are this layer with ``fusion="add"``,
    ``reduction_ratio=8`` and ``epsilon=1e-6`` (their pretrained weights need the ε to match
    timm's logits; the initialisation difference does not matter for them).

    Args:
        reduction_ratio: r > 0, the transform's bottleneck width is ``C // r`` (16 in the
            paper's ImageNet and detection models, i.e. ratio 1/16).
        reduction_channels: absolute bottleneck width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: plain ``C // r``, as
            the official ``int(C * ratio)``).
        context_modeling: ``"attention"`` (the official ``pool='att'``) or ``"avg"``.
        fusion: ``"add"`` (the official ``channel_add``) or ``"mul"`` (``channel_mul``).
        epsilon: ε > 0 of the transform's LayerNorm (1e-5 as the official ``nn.LayerNorm``;
            timm's ``LayerNorm2d`` uses 1e-6).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor, any H and W. Output: same shape and dtype (the
    layer's compute dtype).

    Maps (``call_with_maps``): ``"context_weights"`` ``(N, H, W)``, the softmax attention
    ``a`` (float32, sums to 1 over H*W; only with ``context_modeling="attention"``), and
    ``"transform"`` ``(N, C)``, the fused term ``t`` (added, or gated by ``sigmoid(t)``).

    Raises:
        ValueError: unknown ``context_modeling`` or ``fusion``; reduction arguments or
            ``epsilon`` not positive; input not 4D or with unknown channels.

    Reference:
        Cao, Xu, Lin, Wei, Hu. "GCNet: Non-local Networks Meet Squeeze-Excitation Networks
        and Beyond", ICCV Workshops 2019 / TPAMI 2020, Sec. 4 and Fig. 4(d); official code
        github.com/xvjiarui/GCNet, mmdet/ops/ct/context_block.py (``ContextBlock2d``).
    """

    MAPS = {"context_weights": "(N, H, W) softmax over H*W (context_modeling='attention' only)",
            "transform": "(N, C) the fused term t"}

    def __init__(self, reduction_ratio: float = 16, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, context_modeling: str = "attention",
                 fusion: str = "add", epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        self.context_modeling = check_choice("context_modeling", context_modeling, CONTEXT_MODELING)
        self.fusion = check_choice("fusion", fusion, FUSIONS)
        self.epsilon = check_positive("epsilon", epsilon)

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        hidden = reduced_channels(channels, self.reduction_ratio, self.reduction_channels,
                                  self.reduction_divisor)
        self.conv_mask = None
        if self.context_modeling == "attention":
            # mmcv kaiming_init(mode='fan_in'): N(0, 2 / C), bias 0.
            self.conv_mask = keras.layers.Dense(
                1, kernel_initializer=keras.initializers.VarianceScaling(
                    2.0, "fan_in", "untruncated_normal"),
                **sublayer_kwargs(self, "conv_mask"))
            self.conv_mask.build((None, channels))
        self.fc1 = keras.layers.Dense(hidden, **sublayer_kwargs(self, "fc1"))
        self.norm = keras.layers.LayerNormalization(epsilon=self.epsilon, **sublayer_kwargs(self, "ln"))
        self.fc2 = keras.layers.Dense(channels, kernel_initializer="zeros", bias_initializer="zeros",
                                      **sublayer_kwargs(self, "fc2"))
        self.fc1.build((None, channels))
        self.norm.build((None, hidden))
        self.fc2.build((None, hidden))
        self.built = True

    def _context(self, inputs):
        """The context ``z`` ``(N, C)``."""
        return self._context_and_weights(inputs)[0]

    def _context_and_weights(self, inputs):
        """``(context (N, C), softmax weights (N, H, W, 1) float32 or None)``."""
        if self.conv_mask is None:
            return spatial_mean(inputs), None
        logits = ops.cast(self.conv_mask(inputs), "float32")  # (N, H, W, 1)
        logits = logits - ops.max(logits, axis=(1, 2), keepdims=True)
        weights = ops.exp(logits)
        weights = weights / ops.sum(weights, axis=(1, 2), keepdims=True)  # softmax over H*W
        # sum_hw a_hw x_hw as a product and a sum (LiteRT has no builtin for the einsum)
        context = ops.sum(weights * ops.cast(inputs, "float32"), axis=(1, 2))
        return ops.cast(context, inputs.dtype), weights


    def call(self, inputs):
        return self.call_with_maps(inputs)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"context_weights": (N, H, W), "transform": (N, C)})``; see
        :mod:`keras_attention.layers._common`."""
        context, weights = self._context_and_weights(inputs)
        transform = self.fc2(ops.relu(self.norm(self.fc1(context))))
        maps = {"transform": transform}
        if weights is not None:
            maps["context_weights"] = weights[..., 0]
        transform = transform[:, None, None, :]
        if self.fusion == "add":
            return inputs + transform, maps
        return inputs * ops.sigmoid(transform), maps

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor,
                "context_modeling": self.context_modeling, "fusion": self.fusion,
                "epsilon": self.epsilon}
