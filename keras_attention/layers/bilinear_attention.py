"""Bilinear Attentional Transform (BAT): a grouped, block-wise non-local block."""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (batch_norm_sublayer, check_image_shape, check_positive,
                                            check_reduction, he_fan_out, make_divisible, sublayer_kwargs)
from keras_attention.layers.factory import register_attention


@register_attention("bat")
class BilinearAttentionTransform(keras.layers.Layer):
    """Bilinear Attentional Transform block: ``y = x + f(P (x W_1) Q)``, a non-local block made cheap.

    A non-local block mixes every position with every other one through an ``(HW) x (HW)``
    affinity; BAT factorises the mixing into a left (rows) and a right (columns) transform
    that act on blocks of the feature map, ``Y = P X Q`` per channel:

    1. ``u = relu(BN(conv_1x1(x)))`` reduces C to ``d`` channels (no bias).
    2. ``a = relu(BN(conv_1x1(u)))`` gives G maps (``groups``); their maxima over the rows
       of each of b x 1 horizontal bands and over the columns of each of 1 x b vertical
       bands (``b = block_size``; timm's ``adaptive_max_pool2d``) pass through a ``(b, 1)``
       and a ``(1, b)`` convolution with bias to ``G b^2`` logits each:
       ``P = sigmoid(.)`` normalised to rows summing to 1, ``Q = sigmoid(.)`` normalised to
       columns summing to 1, both ``(N, G, b, b)``.
    3. With ``H = b t_H`` and ``W = b t_W``, channel c of ``u`` (in group ``c // (d / G)``) is
       transformed as ``(P ⊗ I_{t_H}) u_c (Q ⊗ I_{t_W})``: position ``(i t_H + α, k t_W + β)``
       of the output is ``sum_{j,l} P_ij u_c(j t_H + α, l t_W + β) Q_lk`` (timm's
       ``resize_mat`` expansion, computed here as two einsums).
    4. ``relu(BN(conv_1x1))`` (d -> d), ``relu(BN(conv_1x1))`` (d -> C), 2D (channel)
       dropout with rate ``dropout_rate`` while training, and the residual addition.

    In timm's ``bat_resnext26ts`` it sits in the attention slot of ByobNet's bottleneck, after
    the 3x3 conv-BN-activation (``attention_position="middle"`` of our builder), with
    ``block_size=8``.

    Initialisation: He-normal (fan-out) kernels, zero biases, BN gamma 1 and beta 0 (timm's
    ByobNet init; timm's module does not zero its last BN, so the block does not start as
    the identity).

    Args:
        block_size: b > 0; H and W must be multiples of b (timm: 7 by default, 8 in
            ``bat_resnext26ts``, whose 256 px input gives 64, 32, 16, 8 px stages).
        groups: G > 0, the number of (P, Q) pairs; d must be divisible by G (2).
        reduction_ratio: r > 0; ``d = make_divisible(C / r, reduction_divisor)`` as timm
            rounds it (4).
        reduction_channels: absolute d; overrides ``reduction_ratio``.
        reduction_divisor: rounding multiple of d (8).
        dropout_rate: channel dropout before the addition, in [0, 1) (0.2, timm's default).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor with H and W multiples of ``block_size``. Output:
    same shape, in the layer's compute dtype.

    Maps (``call_with_maps``): ``"row_transform"`` ``P`` and ``"column_transform"`` ``Q``,
    each ``(N, G, b, b)``: ``P[n, g, i, j]`` is the weight of block row j in output block
    row i (rows sum to 1), ``Q[n, g, l, k]`` the weight of block column l in output block
    column k (columns sum to 1).

    Raises:
        ValueError: non-positive ``block_size``/``groups``/reduction arguments, ``dropout_rate``
            outside [0, 1), d not divisible by ``groups``, a known H or W that is not a
            multiple of ``block_size``, input not 4D or with unknown channels (an unknown H
            or W that is not a multiple fails when the layer is called).

    Reference:
        Chi, Yuan, Wu, Zhang, Li. "Non-Local Neural Networks With Grouped Bilinear Attentional
        Transforms", CVPR 2020; official code
        github.com/BA-Transform/BAT-Image-Classification; structure and names as timm's
        ``timm/layers/non_local_attn.py`` (``BatNonLocalAttn``, ``BilinearAttnTransform``).
    """

    MAPS = {"row_transform": "(N, G, b, b) P, rows sum to 1",
            "column_transform": "(N, G, b, b) Q, columns sum to 1"}

    def __init__(self, block_size: int = 7, groups: int = 2, reduction_ratio: float = 4,
                 reduction_channels: int | None = None, reduction_divisor: int = 8, dropout_rate: float = 0.2,
                 **kwargs):
        super().__init__(**kwargs)
        self.block_size = check_positive("block_size", block_size, integer=True)
        self.groups = check_positive("groups", groups, integer=True)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) \
                or not 0 <= dropout_rate < 1:
            raise ValueError(f"`dropout_rate` must be in [0, 1), received {dropout_rate!r}.")
        self.dropout_rate = dropout_rate

    def _conv_bn(self, name, filters, in_channels):
        conv = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=he_fan_out(),
                                   **sublayer_kwargs(self, f"{name}_conv"))
        conv.build((None, None, None, in_channels))
        bn = batch_norm_sublayer(self, f"{name}_bn")
        bn.build((None, None, None, filters))
        return conv, bn

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        for axis, size in (("height", input_shape[1]), ("width", input_shape[2])):
            if size is not None and size % self.block_size:
                raise ValueError(f"BilinearAttentionTransform needs the {axis} to be a multiple of "
                                 f"block_size={self.block_size}, received input shape {tuple(input_shape)}.")
        width = self.reduction_channels or make_divisible(channels / self.reduction_ratio, self.reduction_divisor)
        if width % self.groups:
            raise ValueError(f"BilinearAttentionTransform: the reduced width {width} must be divisible by "
                             f"groups={self.groups}.")
        b, g = self.block_size, self.groups
        self.conv1, self.bn1 = self._conv_bn("conv1", width, channels)
        self.ba_conv1, self.ba_bn1 = self._conv_bn("ba_conv1", g, width)
        self.conv_p = keras.layers.Conv2D(g * b * b, (b, 1), kernel_initializer=he_fan_out(),
                                          **sublayer_kwargs(self, "conv_p"))
        self.conv_p.build((None, b, 1, g))
        self.conv_q = keras.layers.Conv2D(g * b * b, (1, b), kernel_initializer=he_fan_out(),
                                          **sublayer_kwargs(self, "conv_q"))
        self.conv_q.build((None, 1, b, g))
        self.ba_conv2, self.ba_bn2 = self._conv_bn("ba_conv2", width, width)
        self.conv2, self.bn2 = self._conv_bn("conv2", channels, width)
        self.dropout = keras.layers.SpatialDropout2D(self.dropout_rate, **sublayer_kwargs(self, "dropout"))
        self.width_ = width
        self.built = True

    def _transform(self, u, training):
        """The bilinear transform of ``u`` (N, H, W, d) -> same shape (timm's ``BilinearAttnTransform``)."""
        return self._transform_with_maps(u, training)[0]

    def _transform_with_maps(self, u, training):
        """:meth:`_transform`'s output and the P and Q it used, ``(N, G, b, b)`` each."""
        b, g, d = self.block_size, self.groups, self.width_
        shape = ops.shape(u)
        n, h, w = shape[0], shape[1], shape[2]
        a = ops.relu(self.ba_bn1(self.ba_conv1(u), training=training))  # (N, H, W, G)
        rows = ops.max(ops.reshape(a, (n, b, h // b, w, g)), axis=(2, 3))[:, :, None, :]  # (N, b, 1, G)
        cols = ops.max(ops.reshape(a, (n, h, b, w // b, g)), axis=(1, 3))[:, None, :, :]  # (N, 1, b, G)
        p = ops.sigmoid(ops.reshape(self.conv_p(rows), (n, g, b, b)))  # logit g b^2 + i b + j
        q = ops.sigmoid(ops.reshape(self.conv_q(cols), (n, g, b, b)))
        p = p / ops.sum(p, axis=3, keepdims=True)  # rows of P sum to 1
        q = q / ops.sum(q, axis=2, keepdims=True)  # columns of Q sum to 1
        blocks = ops.reshape(u, (n, b, h // b, b, w // b, g, d // g))  # (n, j, α, l, β, g, c)
        y = ops.einsum("ngij,njalbgc->nialbgc", p, blocks)
        y = ops.einsum("nialbgc,nglk->niakbgc", y, q)
        y = ops.reshape(y, (n, h, w, d))
        return ops.relu(self.ba_bn2(self.ba_conv2(y), training=training)), p, q

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"row_transform": P, "column_transform": Q})``, both ``(N, G, b, b)``;
        see :mod:`keras_attention.layers._common`."""
        u = ops.relu(self.bn1(self.conv1(inputs), training=training))
        y, p, q = self._transform_with_maps(u, training)
        y = ops.relu(self.bn2(self.conv2(y), training=training))
        return inputs + self.dropout(y, training=training), {"row_transform": p, "column_transform": q}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size, "groups": self.groups,
                "reduction_ratio": self.reduction_ratio, "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor, "dropout_rate": self.dropout_rate}
