"""Residual attention module (Wang et al., "Residual Attention Network", CVPR 2017).

Structure as in the official Caffe release (github.com/fwang91/residual-attention-network,
``imagenet_model/Attention-56-deploy.prototxt`` and ``Attention-92-deploy.prototxt``):

* every unit is a pre-activation bottleneck (He et al. 2016b): BN-ReLU -> 1x1 (C/4) ->
  BN-ReLU -> 3x3 (C/4, stride) -> BN-ReLU -> 1x1 (C), no biases, added to the raw input
  (or to a 1x1 projection of the pre-activated input when the shape changes);
* module: ``p`` pre-processing units; trunk ``T``: ``t`` units; soft mask ``M``: ``s``
  levels of [3x3/2 max pool (Caffe ceil mode) -> ``r`` units] with ``r`` more units at
  the lowest level and one skip unit per level above it, then bottom-up
  [bilinear upsampling (align-corners, Caffe ``Interp``) to the level above + skip ->
  ``r`` units], a last upsampling to the trunk size, BN-ReLU-1x1-BN-ReLU-1x1 and a
  sigmoid; output ``p`` post-processing units applied to ``(1 + M) * T``
  (attention residual learning, paper Eq. 3). The official networks use p=1, t=2, r=1
  and s = 3, 2, 1 pooling levels in stages 1, 2, 3.

Image-restoration attention as configurations of existing layers: the mask branch of
RNAN-style "residual attention" restoration blocks is this module's mask; RCAN's channel
attention is :class:`~keras_attention.layers.SqueezeExcite` (see
:mod:`keras_attention.layers.attention_dropout` for the full note).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import check_image_shape, check_positive, serializable, sublayer_kwargs


def caffe_max_pool(x):
    """3x3 stride-2 max pooling with Caffe's ceil rounding and no padding: ``H -> floor(H/2)``.

    Caffe's output size is ``ceil((H - 3) / 2) + 1``; for even H that needs one extra
    row/column at the end, which we pad with -inf (never selected).
    """
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        raise ValueError("The residual attention mask branch needs static H and W, "
                         f"received a tensor of shape {tuple(x.shape)}.")
    pad_h, pad_w = 1 - h % 2, 1 - w % 2
    if pad_h or pad_w:
        x = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], constant_values=float("-inf"))
    return ops.max_pool(x, 3, strides=2, padding="valid")


def _interpolation_matrix(out_size: int, in_size: int, dtype):
    """``(out, in)`` matrix of align-corners bilinear interpolation (Caffe ``Interp``)."""
    if out_size > 1:
        pos = ops.arange(out_size, dtype="float32") * ((in_size - 1) / (out_size - 1))
    else:
        pos = ops.zeros((out_size,), "float32")
    low = ops.minimum(ops.floor(pos), in_size - 1)
    frac = pos - low
    high = ops.minimum(low + 1, in_size - 1)
    matrix = (ops.one_hot(ops.cast(low, "int32"), in_size) * (1.0 - frac)[:, None]
              + ops.one_hot(ops.cast(high, "int32"), in_size) * frac[:, None])
    return ops.cast(matrix, dtype)


def resize_align_corners(x, height: int, width: int):
    """Bilinear resize of NHWC ``x`` to ``(height, width)`` with corners aligned.

    Source coordinate of output pixel ``i``: ``i * (in - 1) / (out - 1)``, as Caffe's
    ``Interp`` layer (``caffe_cpu_interp2``) used by the official release. Static sizes.
    """
    in_h, in_w = x.shape[1], x.shape[2]
    if in_h == height and in_w == width:
        return x
    rows = _interpolation_matrix(height, in_h, x.dtype)
    cols = _interpolation_matrix(width, in_w, x.dtype)
    # Two batched matrix products with the batch axis kept first (the einsums
    # "oh,nhwc->nowc" and "pw,nowc->nopc"; LiteRT's conversion of those einsums gave a model
    # its interpreter could not load).
    x = ops.matmul(ops.transpose(x, (0, 2, 3, 1)), ops.transpose(rows))  # (n, w, c, out_h)
    x = ops.matmul(ops.transpose(x, (0, 3, 2, 1)), ops.transpose(cols))  # (n, out_h, c, out_w)
    return ops.transpose(x, (0, 1, 3, 2))


@serializable
class CaffeMaxPool2D(keras.layers.Layer):
    """3x3 stride-2 max pooling in Caffe's ceil mode (no padding): ``(H, W) -> (H//2, W//2)``.

    See :func:`caffe_max_pool`. Needs static H and W (>= 2).
    """

    def call(self, inputs):
        return caffe_max_pool(inputs)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else h // 2, None if w is None else w // 2, c)


@serializable
class PreActBottleneck(keras.layers.Layer):
    """Pre-activation bottleneck residual unit (He et al., ECCV 2016), as in the official RAN.

    ``y = s(x) + conv1x1(BNReLU(conv3x3_stride(BNReLU(conv1x1(a)))))`` with
    ``a = BNReLU(x)``; ``s(x) = x`` if the shape is kept, else ``conv1x1_stride(a)``.
    Convolutions have no bias (He-normal initialisation, Caffe's "msra" filler); the 3x3
    is padded 1 on every side (Caffe ``pad: 1``).

    Args:
        filters: output channels (the bottleneck has ``filters / bottleneck_ratio``).
        stride: stride of the 3x3 convolution and of the projection.
        bottleneck_ratio: ``filters / width`` of the bottleneck (4).
        **kwargs: standard layer arguments.

    Input ``(N, H, W, C)`` raw (not yet normalised); output ``(N, ceil(H/s), ceil(W/s), filters)``.
    """

    def __init__(self, filters: int, stride: int = 1, bottleneck_ratio: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive("filters", filters, integer=True)
        self.stride = check_positive("stride", stride, integer=True)
        self.bottleneck_ratio = check_positive("bottleneck_ratio", bottleneck_ratio, integer=True)

    def _bn(self, name, shape):
        bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, **sublayer_kwargs(self, name))
        bn.build(shape)
        return bn

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        width = max(1, self.filters // self.bottleneck_ratio)
        n, h, w, _ = input_shape
        out_h = None if h is None else -(-h // self.stride)
        out_w = None if w is None else -(-w // self.stride)
        conv = lambda name, f, k, s=1: keras.layers.Conv2D(  # noqa: E731
            f, k, strides=s, padding="valid" if (k > 1 and s > 1) else "same", use_bias=False,
            kernel_initializer="he_normal", **sublayer_kwargs(self, name))
        self.bn1 = self._bn("bn1", input_shape)
        self.conv1 = conv("conv1", width, 1)
        self.conv1.build(input_shape)
        self.bn2 = self._bn("bn2", (n, h, w, width))
        self.conv2 = conv("conv2", width, 3, self.stride)
        self.conv2.build((n, h, w, width))
        self.bn3 = self._bn("bn3", (n, out_h, out_w, width))
        self.conv3 = conv("conv3", self.filters, 1)
        self.conv3.build((n, out_h, out_w, width))
        self.projection = None
        if self.stride != 1 or channels != self.filters:
            self.projection = conv("projection", self.filters, 1, self.stride)
            self.projection.build(input_shape)

    def call(self, inputs, training=None):
        act = ops.relu(self.bn1(inputs, training=training))
        y = self.conv1(act)
        y = ops.relu(self.bn2(y, training=training))
        if self.stride > 1:  # symmetric padding 1, as Caffe/PyTorch (Keras "same" is asymmetric)
            y = ops.pad(y, [[0, 0], [1, 1], [1, 1], [0, 0]])
        y = self.conv2(y)
        y = self.conv3(ops.relu(self.bn3(y, training=training)))
        shortcut = inputs if self.projection is None else self.projection(act)
        return shortcut + y

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        ceil = lambda d: None if d is None else -(-d // self.stride)  # noqa: E731
        return (n, ceil(h), ceil(w), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "bottleneck_ratio": self.bottleneck_ratio}


@serializable
class ResidualAttentionModule(keras.layers.Layer):
    """Attention module of the Residual Attention Network: ``(1 + M(x)) * T(x)``.

    Trunk ``T``: ``trunk_units`` pre-activation bottlenecks. Soft mask ``M``: a
    bottom-up/top-down hourglass with ``num_pools`` max-pool levels, skip connections
    and bilinear upsampling, ending in BN-ReLU-1x1-BN-ReLU-1x1-sigmoid (one mask value
    per position and channel, "mixed attention"); ``pre_units`` units before the split
    and ``post_units`` after the fusion. See the module docstring for the exact wiring,
    which follows the official Caffe prototxts. Channels are preserved (every unit is
    C -> C with a C/4 bottleneck).

    Args:
        num_pools: mask levels ``s`` (3, 2, 1 for the 56x56, 28x28, 14x14 stages of the
            ImageNet networks). Each pool maps ``H -> floor(H/2)`` (Caffe ceil mode), so
            H and W must be >= ``2**num_pools``.
        pre_units: ``p`` (1). trunk_units: ``t`` (2). mask_units: ``r`` (1).
        return_attention: if True, ``call`` returns ``(outputs, mask)`` with the soft mask
            ``M`` ``(N, H, W, C)`` in [0, 1] (compute dtype).
        **kwargs: standard layer arguments.

    Input ``(N, H, W, C)`` (raw, pre-activation features; static H, W); output: same shape.

    Maps (``call_with_maps``): ``"mask"`` ``(N, H, W, C)``, the soft mask ``M`` in (0, 1).

    Memory: O(HWC) per unit (no pairwise terms); the mask branch adds about 2x the trunk's
    activations.

    Raises:
        ValueError: non-positive arguments, input not 4D, unknown channels, unknown H/W or
            H/W < ``2**num_pools``.

    Reference:
        Wang et al., "Residual Attention Network for Image Classification", CVPR 2017,
        Sec. 3, Fig. 2-3, Table 2; github.com/fwang91/residual-attention-network.
    """

    MAPS = {"mask": "(N, H, W, C) soft mask in (0, 1)"}

    def __init__(self, num_pools: int = 1, pre_units: int = 1, trunk_units: int = 2, mask_units: int = 1,
                 return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_pools = check_positive("num_pools", num_pools, integer=True)
        self.pre_units = check_positive("pre_units", pre_units, integer=True)
        self.trunk_units = check_positive("trunk_units", trunk_units, integer=True)
        self.mask_units = check_positive("mask_units", mask_units, integer=True)
        self.return_attention = bool(return_attention)

    def _units(self, name, count, shape):
        units = []
        for i in range(count):
            unit = PreActBottleneck(shape[-1], **sublayer_kwargs(self, f"{name}{i}"))
            unit.build(shape)
            units.append(unit)
        return units

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        n, h, w, _ = input_shape
        need = 2 ** self.num_pools
        if h is None or w is None or h < need or w < need:
            raise ValueError(f"ResidualAttentionModule with num_pools={self.num_pools} needs static H and W "
                             f">= {need}, received input shape {tuple(input_shape)}.")
        shape = tuple(input_shape)
        self.pre = self._units("pre", self.pre_units, shape)
        self.trunk = self._units("trunk", self.trunk_units, shape)
        self.post = self._units("post", self.pre_units, shape)
        self.down, self.skips, self.up = [], [], []
        sizes = []
        for level in range(1, self.num_pools + 1):
            h, w = h // 2, w // 2
            sizes.append((h, w))
            level_shape = (n, h, w, channels)
            extra = self.mask_units if level == self.num_pools else 0
            self.down.append(self._units(f"down{level}_", self.mask_units + extra, level_shape))
            if level < self.num_pools:
                self.skips.append(self._units(f"skip{level}_", 1, level_shape)[0])
                self.up.append(self._units(f"up{level}_", self.mask_units, level_shape))
        bn = lambda name: keras.layers.BatchNormalization(  # noqa: E731
            epsilon=1e-5, momentum=0.9, **sublayer_kwargs(self, name))
        conv = lambda name: keras.layers.Conv2D(channels, 1, use_bias=False, kernel_initializer="he_normal",  # noqa: E731
                                                **sublayer_kwargs(self, name))
        self.mask_bn1, self.mask_conv1, self.mask_bn2, self.mask_conv2 = (
            bn("mask_bn1"), conv("mask_conv1"), bn("mask_bn2"), conv("mask_conv2"))
        for layer in (self.mask_bn1, self.mask_conv1, self.mask_bn2, self.mask_conv2):
            layer.build(shape)

    @staticmethod
    def _run(units, x, training):
        for unit in units:
            x = unit(x, training=training)
        return x

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"mask": (N, H, W, C)})``; see :mod:`keras_attention.layers._common`."""
        x = self._run(self.pre, inputs, training)
        trunk = self._run(self.trunk, x, training)
        levels, skips = [], []
        m = x
        for level in range(self.num_pools):
            m = self._run(self.down[level], caffe_max_pool(m), training)
            levels.append(m)
            if level < self.num_pools - 1:
                skips.append(self.skips[level](m, training=training))
        for level in reversed(range(self.num_pools - 1)):
            target = levels[level]
            m = resize_align_corners(m, target.shape[1], target.shape[2]) + skips[level]
            m = self._run(self.up[level], m, training)
        m = resize_align_corners(m, trunk.shape[1], trunk.shape[2])
        m = self.mask_conv1(ops.relu(self.mask_bn1(m, training=training)))
        m = self.mask_conv2(ops.relu(self.mask_bn2(m, training=training)))
        mask = ops.sigmoid(m)
        outputs = self._run(self.post, trunk + trunk * mask, training)
        return ((outputs, mask) if self.return_attention else outputs), {"mask": mask}

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape), tuple(input_shape)) if self.return_attention else tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "num_pools": self.num_pools, "pre_units": self.pre_units,
                "trunk_units": self.trunk_units, "mask_units": self.mask_units,
                "return_attention": self.return_attention}
