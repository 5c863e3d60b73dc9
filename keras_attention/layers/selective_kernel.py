"""Selective Kernel (SK) convolution: parallel dilated 3x3 paths fused by a softmax attention."""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (batch_norm_sublayer, check_activation, check_image_shape,
                                            check_positive, check_reduction, he_fan_out, make_divisible,
                                            spatial_mean, sublayer_kwargs)
from keras_attention.layers.factory import register_attention


def _check_dilations(dilations) -> tuple[int, ...]:
    if isinstance(dilations, (str, bytes)) or not hasattr(dilations, "__len__"):
        raise TypeError(f"`dilations` must be a sequence of positive integers, received {dilations!r}.")
    dilations = tuple(check_positive("dilations", d, integer=True) for d in dilations)
    if len(dilations) < 2:
        raise ValueError(f"`dilations` needs at least two paths to select between, received {dilations}.")
    return dilations


@register_attention("sk")
class SelectiveKernel(keras.layers.Layer):
    """Selective Kernel convolution: M conv-BN-activation paths, softly selected per channel.

    split: path m is a 3x3 convolution with dilation ``d_m`` (``dilations``; (1, 2) gives
    the paper's 3x3 and 5x5 receptive fields, its 5x5 being a dilated 3x3), stride
    ``strides``, ``groups`` groups, no bias, then BatchNorm (ε 1e-5) and ``activation``:
    ``U_m = act(BN(conv_m(x_m)))``, each ``(N, H', W', F)``. With ``split_input`` path m
    sees only the m-th of M equal slices of the input channels (timm's variant for the SK
    ResNet-18/34, which keeps the parameter count down); otherwise every path sees all of them.
    fuse: ``s = mean_{hw} sum_m U_m`` (``(N, F)``), ``z = relu(BN(W_r s))`` with ``W_r: F -> d``
    (no bias): the paper's "fuse".
    select: ``a = softmax_m(W_s z)`` with ``W_s: d -> M F`` (no bias; the paper's A and B),
    reshaped to ``(N, M, F)``; output ``V = sum_m a_m * U_m``.

    Unlike the attention layers that sit in a residual block's attention slot (after the
    last BN, before the addition), SK *replaces* the block's 3x3 conv-BN-activation:
    :func:`keras_attention.models.resnet.build_resnet` takes it as ``spatial_conv="sk"``.
    Called with defaults it keeps the input's shape, so it also works as an attention
    (``attention="sk"``).

    Strided dilated paths: Keras convolutions cannot combine a stride > 1 with a dilation
    > 1, so such a path is computed at stride 1 and subsampled (``[::s, ::s]``); with the
    symmetric zero padding ``d`` this gives exactly PyTorch's strided dilated convolution.

    Initialisation as timm's ResNet: He-normal (fan-out) kernels, BN gamma 1, beta 0.

    Args:
        filters: output channels F (default: the input's channels).
        strides: stride s of every path (1 or 2 in the SK ResNets).
        groups: groups of each path's convolution (32 in SKNet-50; timm caps it at F).
        dilations: one dilation per path (default (1, 2)).
        split_input: split the input channels between the paths (timm's ``split_input``;
            True for ``sk_resnet18/34``, False for ``sk_resnext50_32x4d``, the paper's SKNet-50).
        reduction_ratio: r > 0, the fuse width is ``d = F / r`` rounded by timm's rule
            (``make_divisible(F / r, reduction_divisor)``: nearest multiple, never below
            the divisor nor 10 % below ``F / r``). The paper's ``d = max(C/r, L)`` with
            r = 16, L = 32 is ``reduction_ratio=16, reduction_divisor=32`` for power-of-two F.
        reduction_channels: absolute fuse width d; overrides ``reduction_ratio``.
        reduction_divisor: the rounding multiple (timm's default 8).
        activation: activation of the paths (a Keras activation name; the fuse bottleneck
            always uses ReLU, as timm's ``SelectiveKernelAttn``).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor. Output: ``(N, ceil(H/s), ceil(W/s), F)`` in the
    layer's compute dtype (the softmax over paths is computed in float32).

    Maps (``call_with_maps``): ``"path_weights"`` ``(N, M, F)``, the selection weights ``a``
    (softmax over the M paths, per channel; path m is ``dilations[m]``).

    Raises:
        ValueError: non-positive ``filters``/``strides``/``groups``/dilations or reduction
            arguments; fewer than two paths; with ``split_input`` C not divisible by the
            number of paths; a path's input or output channels not divisible by ``groups``;
            input not 4D or with unknown channels. TypeError: arguments of a wrong type.

    Reference:
        Li, Wang, Hu, Yang. "Selective Kernel Networks", CVPR 2019, Sec. 3.1 (split, fuse,
        select) and the SKNet-50 architecture table; official code github.com/implus/SKNet; structure and names as
        timm's ``timm/layers/selective_kernel.py`` (``SelectiveKernel``, ``SelectiveKernelAttn``).
    """

    MAPS = {"path_weights": "(N, M, F) softmax over the M paths"}

    def __init__(self, filters: int | None = None, strides: int = 1, groups: int = 1,
                 dilations=(1, 2), split_input: bool = True, reduction_ratio: float = 16,
                 reduction_channels: int | None = None, reduction_divisor: int = 8,
                 activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive("filters", filters, integer=True, allow_none=True)
        self.strides = check_positive("strides", strides, integer=True)
        self.groups = check_positive("groups", groups, integer=True)
        self.dilations = _check_dilations(dilations)
        if not isinstance(split_input, bool):
            raise TypeError(f"`split_input` must be a bool, received {split_input!r}.")
        self.split_input = split_input
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        self.activation = check_activation(activation)

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        filters = self.filters or channels
        paths = len(self.dilations)
        if self.split_input and channels % paths:
            raise ValueError(f"SelectiveKernel with split_input=True needs input channels divisible by the "
                             f"{paths} paths, received {channels} channels.")
        path_in = channels // paths if self.split_input else channels
        groups = min(filters, self.groups)
        if path_in % groups or filters % groups:
            raise ValueError(f"SelectiveKernel: groups={groups} must divide each path's input ({path_in}) "
                             f"and output ({filters}) channels.")
        n, h, w, _ = input_shape
        self.convs, self.bns = [], []
        for i, d in enumerate(self.dilations):
            conv = keras.layers.Conv2D(filters, 3, strides=self.strides if d == 1 else 1, dilation_rate=d,
                                       padding="valid", groups=groups, use_bias=False,
                                       kernel_initializer=he_fan_out(), **sublayer_kwargs(self, f"path{i}_conv"))
            conv.build((n, None if h is None else h + 2 * d, None if w is None else w + 2 * d, path_in))
            bn = batch_norm_sublayer(self, f"path{i}_bn")
            bn.build((None, None, None, filters))
            self.convs.append(conv)
            self.bns.append(bn)
        width = self.reduction_channels or make_divisible(filters / self.reduction_ratio, self.reduction_divisor)
        self.fc_reduce = keras.layers.Dense(width, use_bias=False, kernel_initializer=he_fan_out(),
                                            **sublayer_kwargs(self, "fc_reduce"))
        self.fc_reduce.build((None, filters))
        self.attn_bn = batch_norm_sublayer(self, "attn_bn")
        self.attn_bn.build((None, width))
        self.fc_select = keras.layers.Dense(filters * paths, use_bias=False, kernel_initializer=he_fan_out(),
                                            **sublayer_kwargs(self, "fc_select"))
        self.fc_select.build((None, width))
        self.filters_ = filters
        self.built = True

    def _branch(self, i, x, training):
        d = self.dilations[i]
        x = ops.pad(x, [[0, 0], [d, d], [d, d], [0, 0]])
        y = self.convs[i](x)
        if d > 1 and self.strides > 1:
            y = y[:, ::self.strides, ::self.strides, :]
        return keras.activations.get(self.activation)(self.bns[i](y, training=training))

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"path_weights": (N, M, F)})``; see :mod:`keras_attention.layers._common`."""
        paths = len(self.dilations)
        parts = ops.split(inputs, paths, axis=-1) if self.split_input else [inputs] * paths
        branches = ops.stack([self._branch(i, x, training) for i, x in enumerate(parts)], axis=1)  # (N, M, H, W, F)
        squeezed = spatial_mean(ops.sum(branches, axis=1))  # (N, F)
        z = ops.relu(self.attn_bn(self.fc_reduce(squeezed), training=training))
        logits = ops.reshape(self.fc_select(z), (-1, paths, self.filters_))  # timm: channel m * F + f
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=1), branches.dtype)
        return ops.sum(branches * weights[:, :, None, None, :], axis=1), {"path_weights": weights}

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        ceil = lambda d: None if d is None else -(-d // self.strides)  # noqa: E731
        return (n, ceil(h), ceil(w), self.filters or c)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides, "groups": self.groups,
                "dilations": list(self.dilations), "split_input": self.split_input,
                "reduction_ratio": self.reduction_ratio, "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor, "activation": self.activation}
