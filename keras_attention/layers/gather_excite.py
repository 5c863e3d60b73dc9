"""Gather-Excite (GE) attention: GE-theta-minus, GE-theta and GE-theta-plus."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_attention.layers._common import (check_choice, check_image_shape, check_reduction,
                                            reduced_channels, spatial_mean, sublayer_kwargs)
from keras_attention.layers.factory import register_attention

VARIANTS = ("theta-", "theta", "theta+")
EXTENTS = (2, 4, 8, "global")

# BatchNorm of the gather: epsilon as the official CuDNNBatchNorm (1e-5); moving-average
# momentum 0.9 like the package's other (PyTorch-style) BatchNorms. The official Caffe
# models use a moving-average momentum of 0.95 in every BN, a training detail only.
_BN_KWARGS = {"epsilon": 1e-5, "momentum": 0.9}


def _nearest_indices(out_size, in_size):
    """Source rows of a nearest-neighbour resize ``in_size -> out_size``: ``floor(i * in / out)``.

    Same rule as PyTorch's ``F.interpolate(mode="nearest")`` (what timm uses), computed in
    exact integer arithmetic; works with static (Python int) and dynamic (tensor) sizes.
    """
    if isinstance(out_size, int) and isinstance(in_size, int):
        return np.arange(out_size, dtype="int32") * in_size // out_size
    rows = ops.arange(out_size, dtype="int32")
    return ops.floor_divide(rows * ops.cast(in_size, "int32"), ops.cast(out_size, "int32"))


def _caffe_msra(fan_in: int) -> keras.initializers.Initializer:
    """Caffe's "msra" filler: N(0, 2 / fan_in), fan_in of one depthwise filter = kh * kw."""
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / fan_in))


@register_attention("ge")
class GatherExcite(keras.layers.Layer):
    """Gather-Excite block: gathers context over a spatial extent, excites every position.

    ``y = x * sigmoid(upsample(gather(x)))`` (paper Sec. 3, Eq. 1-2), where ``gather``
    summarises each channel over a neighbourhood of ``extent x extent`` cells (or the whole
    map) into a map of size ``ceil(H / e) x ceil(W / e)`` (1 x 1 for the global extent),
    and ``upsample`` is nearest-neighbour resizing back to ``H x W``:

    * ``"theta-"`` (GE-θ⁻, no parameters): average pooling. Global extent: the mean over
      H, W. Extent e: windows of ``(2e-1) x (2e-1)``, stride e, zero padding e-1, averaged
      over the valid cells only (as the official figure "Ave Pooling (15x15, stride 8)"
      for e = 8 and timm's ``count_include_pad=False``).
    * ``"theta"`` (GE-θ, depthwise convolution). Global extent: one depthwise convolution
      whose kernel covers the whole H x W map (no bias), then BatchNorm, as in the official
      RN50-GEP.prototxt; H and W must therefore be known when the layer is built. Extent e:
      log2(e) depthwise 3x3 convolutions of stride 2 (padding 1 on each side, no bias), each
      followed by BatchNorm, with ReLU between them (not after the last), as in the
      official GE-θ (E8) diagram (figures/GEP8.jpg) and timm.
    * ``"theta+"`` (GE-θ⁺): the GE-θ gather, ReLU, then an SE-style bottleneck of 1x1
      convolutions with biases ``C -> C/r -> ReLU -> C`` before the sigmoid, as in the
      official RN50-GEPP.prototxt (global extent). For extents 2/4/8, which the official
      release does not include, the same ReLU + bottleneck is applied at every cell of the
      gathered map.

    The excite upsampling takes cell ``floor(i * h / H)`` for output row ``i`` of ``H``
    (``h = ceil(H / e)`` gathered rows; same for columns), the rule of PyTorch's
    ``F.interpolate(mode="nearest")`` used by timm, so any H and W work, including sizes
    not divisible by the extent. The official code for extents 2/4/8 is not released (only
    diagrams with an "Interpolation" box); the paper specifies nearest-neighbour
    interpolation. The sigmoid is applied before the upsampling, which is the same
    function (nearest-neighbour resizing commutes with element-wise maps) and cheaper.

    Differences from timm's ``GatherExcite``: timm adds its MLP to every variant by default
    (``use_mlp=True``) and has no ReLU between the gather's BatchNorm and the MLP; we follow
    the official prototxts (MLP only for GE-θ⁺, with that ReLU).

    Args:
        variant: ``"theta-"`` (parameter-free, default), ``"theta"`` (depthwise-convolution
            gather) or ``"theta+"`` (depthwise gather + bottleneck MLP).
        extent: 2, 4, 8 or ``"global"`` (default): the gather's spatial extent.
        reduction_ratio: r > 0, bottleneck width ``C // r`` for ``"theta+"`` (16 in the
            official models). Accepted but unused by the other variants, so a backbone can
            pass the uniform reduction arguments to every attention layer.
        reduction_channels: absolute bottleneck width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: plain ``C // r``).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor; any H, W (``"theta"``/``"theta+"`` with the global
    extent: the H, W seen at build time only). Output: same shape, the layer's compute
    dtype.

    Maps (``call_with_maps``): ``"gate"``, the excite gate in (0, 1) at the gather's
    extent: ``(N, C)`` for the global extent, ``(N, ceil(H/e), ceil(W/e), C)`` otherwise (before
    its nearest-neighbour upsampling).

    Raises:
        ValueError: unknown ``variant``; ``extent`` not in {2, 4, 8, "global"}; reduction
            arguments not positive; input not 4D or with unknown channels; unknown H or W
            for the global depthwise gather.

    Reference:
        Hu, Shen, Albanie, Sun, Vedaldi. "Gather-Excite: Exploiting Feature Context in
        Convolutional Neural Networks", NeurIPS 2018, Sec. 3-4; official Caffe models
        github.com/hujie-frank/GENet (models/RN50-GEPF.prototxt = GE-θ⁻, RN50-GEP.prototxt =
        GE-θ, RN50-GEPP.prototxt = GE-θ⁺, all global extent; figures/GEPF8.jpg and
        figures/GEP8.jpg for extent 8).
    """

    MAPS = {"gate": "(N, C) for the global extent, else (N, ceil(H/e), ceil(W/e), C); in (0, 1)"}

    def __init__(self, variant: str = "theta-", extent: int | str = "global",
                 reduction_ratio: float = 16, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.variant = check_choice("variant", variant, VARIANTS)
        if isinstance(extent, bool) or extent not in EXTENTS:
            raise ValueError(f"`extent` must be one of 2, 4, 8 or 'global', received {extent!r}.")
        self.extent = extent if extent == "global" else int(extent)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)

    # -- construction -------------------------------------------------------------------
    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        self.convs, self.norms = [], []
        if self.variant != "theta-":
            if self.extent == "global":
                height, width = input_shape[1], input_shape[2]
                if height is None or width is None:
                    raise ValueError(
                        f"GatherExcite(variant={self.variant!r}, extent='global') gathers with a "
                        "depthwise kernel covering the whole feature map, so it needs the height "
                        f"and width when it is built; received input shape {tuple(input_shape)}. "
                        "Give the model a fixed input size, or use variant='theta-' or a finite "
                        "extent (2, 4, 8).")
                kernels, strides = [(int(height), int(width))], [1]
                self.input_spec = keras.InputSpec(ndim=4, axes={1: int(height), 2: int(width),
                                                                -1: channels})
            else:
                steps = int(math.log2(self.extent))
                kernels, strides = [(3, 3)] * steps, [2] * steps
            shape = tuple(input_shape)
            for i, (kernel, stride) in enumerate(zip(kernels, strides)):
                conv = keras.layers.DepthwiseConv2D(
                    kernel, strides=stride, padding="valid", use_bias=False,
                    depthwise_initializer=_caffe_msra(kernel[0] * kernel[1]),
                    **sublayer_kwargs(self, f"gather_conv{i + 1}"))
                norm = keras.layers.BatchNormalization(**_BN_KWARGS,
                                                       **sublayer_kwargs(self, f"gather_bn{i + 1}"))
                if stride > 1:
                    shape = (shape[0], *[None if s is None else s + 2 for s in shape[1:3]], channels)
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
                norm.build(shape)
                self.convs.append(conv)
                self.norms.append(norm)
        self.fc1 = self.fc2 = None
        if self.variant == "theta+":
            hidden = reduced_channels(channels, self.reduction_ratio, self.reduction_channels,
                                      self.reduction_divisor)
            # The official 1x1 convolutions: gaussian(std 0.01) weights, zero biases.
            # (one initializer instance each: a shared seeded instance repeats its values)
            self.fc1 = keras.layers.Dense(hidden, activation="relu",
                                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                          **sublayer_kwargs(self, "fc1"))
            self.fc2 = keras.layers.Dense(channels,
                                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                          **sublayer_kwargs(self, "fc2"))
            self.fc1.build((None, channels))
            self.fc2.build((None, hidden))
        self.built = True

    # -- forward ------------------------------------------------------------------------
    def _gather(self, inputs, training):
        if self.variant == "theta-":
            if self.extent == "global":
                return spatial_mean(inputs, keepdims=True)
            return self._average_over_extent(inputs)
        x = inputs
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if conv.strides[0] > 1:
                x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
            x = norm(conv(x), training=training)
            if i < len(self.convs) - 1:
                x = ops.relu(x)
        return x

    def _average_over_extent(self, inputs):
        """Mean over (2e-1)^2 windows, stride e, padding e-1, counting valid cells only."""
        e = self.extent
        size, pad = 2 * e - 1, [[0, 0], [e - 1, e - 1], [e - 1, e - 1], [0, 0]]
        x = ops.pad(ops.cast(inputs, "float32"), pad)  # float32: sums of up to 225 cells
        valid = ops.pad(ops.ones_like(ops.cast(inputs[..., :1], "float32")), pad)
        # Both pools divide by the window size; their ratio is sum / number of valid cells.
        sums = ops.average_pool(x, size, e, padding="valid")
        counts = ops.average_pool(valid, size, e, padding="valid")
        return ops.cast(sums / counts, inputs.dtype)


    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"gate": ...})``; see :mod:`keras_attention.layers._common`."""
        gathered = self._gather(inputs, training)
        if self.fc1 is not None:
            gathered = self.fc2(self.fc1(ops.relu(gathered)))
        gate = ops.sigmoid(gathered)
        if self.extent == "global":
            return inputs * gate, {"gate": gate[:, 0, 0, :]}  # (N, 1, 1, C) broadcasts over H, W
        return inputs * self._upsample(gate, inputs), {"gate": gate}

    @staticmethod
    def _upsample(gate, inputs):
        static_in, static_out = gate.shape[1:3], inputs.shape[1:3]
        dynamic_in, dynamic_out = ops.shape(gate)[1:3], ops.shape(inputs)[1:3]
        for axis in (1, 2):
            src = static_in[axis - 1] if static_in[axis - 1] is not None else dynamic_in[axis - 1]
            dst = static_out[axis - 1] if static_out[axis - 1] is not None else dynamic_out[axis - 1]
            gate = ops.take(gate, _nearest_indices(dst, src), axis=axis)
        return gate

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "variant": self.variant, "extent": self.extent,
                "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor}
