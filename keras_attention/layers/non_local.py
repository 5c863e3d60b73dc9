"""Non-local neural networks (Wang, Girshick, Gupta, He; CVPR 2018), 2D (image) form.

Also holds the small helpers shared by the pairwise ("self-attention") layers of this
package (:mod:`.self_attention`, :mod:`.danet`): flattening the positions of an NHWC
map and a softmax computed in float32.

Memory: every pairwise layer materialises an ``(N, H*W, H'*W')`` affinity matrix, i.e.
O((HW)^2) memory and time per image (``H'*W' = H*W / s^2`` with sub-sampling by ``s``).
In float32, a 56x56 map at batch 8 needs 8 * 3136^2 * 4 B = 315 MB per copy of the
matrix without sub-sampling and 79 MB with 2x2 sub-sampling (``subsample=2``); the
softmax and its gradient hold a few such copies. Measured growth of the peak resident
memory for one pass over an ``(8, 56, 56, 64)`` input (TensorFlow backend, CPU, float32):

=========================  ===========  ==================  ===========  ==================
layer                      subsample=2  subsample=2, +grad  subsample=1  subsample=1, +grad
=========================  ===========  ==================  ===========  ==================
NonLocalBlock              189 MB       532 MB              656 MB       2.0 GB
SelfAttention2D            181 MB       423 MB              653 MB       1.6 GB
DANetPositionAttention     180 MB       438 MB              658 MB       1.6 GB
=========================  ===========  ==================  ===========  ==================
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_attention.layers._common import (check_choice, check_image_shape, check_positive,
                                            check_queries, check_reduction, query_rows,
                                            reduced_channels, sublayer_kwargs)
from keras_attention.layers.factory import register_attention

PAIRWISE_FUNCTIONS = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")


def flatten_positions(x):
    """``(N, H, W, C)`` -> ``(N, H*W, C)`` (works with a dynamic batch size)."""
    return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[-1]))


def softmax_float32(logits):
    """Softmax over the last axis, computed in float32 (a float16 sum over H*W overflows)."""
    return ops.softmax(ops.cast(logits, "float32"), axis=-1)


def pooled_size(size, pool: int):
    """Spatial size after a ``pool`` x ``pool`` max pool with stride ``pool`` ("valid")."""
    return None if size is None else size // pool


def spatial_dims(x):
    """``(H, W)`` of an NHWC tensor: static ints where known, else dynamic."""
    dynamic = ops.shape(x)
    return tuple(x.shape[i] if x.shape[i] is not None else dynamic[i] for i in (1, 2))


def check_subsample(layer_name: str, subsample: int, input_shape):
    """Raises ``ValueError`` if a known H or W is smaller than the sub-sampling factor."""
    for dim in input_shape[1:3]:
        if dim is not None and dim < subsample:
            raise ValueError(f"{layer_name} with subsample={subsample} needs H and W >= {subsample}, "
                             f"received input shape {tuple(input_shape)}.")


@register_attention("nonlocal", "non_local", "nl")
class NonLocalBlock(keras.layers.Layer):
    """Non-local block: every position attends to every (sub-sampled) position.

    ``y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j)`` and ``z_i = BN(W_z y_i) + x_i`` (paper
    Eq. 1 and 6), with ``theta``, ``phi``, ``g`` 1x1 convolutions (with bias) from C to
    the inner width ``d`` (C/2 by default) and ``W_z`` a 1x1 convolution back to C.
    Pairwise function ``f`` (paper Sec. 3.2):

    * ``"embedded_gaussian"`` (default): ``softmax_j(theta_i . phi_j)``;
    * ``"gaussian"``: ``softmax_j(x_i . x_j)`` on the raw input (no theta/phi);
    * ``"dot_product"``: ``theta_i . phi_j / N`` (N = number of positions j);
    * ``"concatenation"``: ``ReLU(w_f . [theta_i, phi_j]) / N`` (``w_f``: 2d -> 1, no bias).

    The BatchNorm after ``W_z`` starts with gamma = 0, so the block is the identity at
    initialisation (paper Sec. 4.1). With ``subsample=s`` the input of ``phi`` and ``g``
    is max-pooled s x s first (paper Sec. 3.3 "sub-sampling"; the official release pools
    before the ``phi``/``g`` convolutions, which we follow). ``scale=True`` divides the
    dot products by ``sqrt(d)`` before the softmax, as the official release does
    (``NONLOCAL.USE_SCALE = True``); the paper does not mention it. Convolutions are
    initialised from N(0, 0.01^2) with zero biases, as in the official release.

    Memory: the affinity matrix is ``(N, H*W, H*W/s^2)``, O((HW)^2); see the module
    docstring for numbers. Use ``subsample=2`` (default) or larger for big maps.

    Args:
        mode: pairwise function, one of ``"embedded_gaussian"``, ``"gaussian"``,
            ``"dot_product"``, ``"concatenation"``.
        reduction_ratio: inner width ``d = C / r`` (2 in the paper).
        reduction_channels: absolute inner width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: ``C // r``).
        subsample: max-pool factor for ``phi`` and ``g`` (1: no sub-sampling; 2 in the
            official release). H and W must be >= ``subsample``.
        scale: divide by ``sqrt(d)`` before the softmax (softmax modes only).
        use_bn: BatchNorm (gamma initialised to 0) after ``W_z``. With ``False``, ``W_z``
            is zero-initialised instead (official option ``USE_ZERO_INIT_CONV``), so the
            block still starts as the identity.
        return_attention: if True, ``call`` returns ``(outputs, attention)`` with the
            float32 attention ``(N, H*W, H'*W')``: row ``i`` holds ``f(x_i, .)/C(x)``
            over the (sub-sampled) positions in row-major order.
        **kwargs: standard layer arguments.

    Input: ``(N, H, W, C)``. Output: same shape, in the layer's compute dtype (the
    affinities and their normalisation are computed in float32).

    Maps (``call_with_maps``): ``"attention"``, float32 ``f(x_i, x_j)/C(x)``: for the query
    positions ``queries`` (``(y, x)`` fractions) ``(N, Q, H', W')`` over the (sub-sampled)
    key grid, without queries the whole ``(N, H*W, H'*W')`` matrix (rows sum to 1 in the
    softmax modes).

    Raises:
        ValueError: unknown ``mode`` (the valid ones are listed), non-positive widths
            or ``subsample``, input not 4D, unknown channels, H or W < ``subsample``.

    Reference:
        Wang, Girshick, Gupta, He. "Non-local Neural Networks", CVPR 2018, Sec. 3-4,
        Fig. 2; official code github.com/facebookresearch/video-nonlocal-net
        (``lib/models/nonlocal_helper.py``, ``lib/core/config.py``).
    """

    MAPS = {"attention": "float32 (N, Q, H', W') for Q query positions, else (N, H*W, H'*W')"}

    def __init__(self, mode: str = "embedded_gaussian", reduction_ratio: float = 2,
                 reduction_channels: int | None = None, reduction_divisor: int = 1,
                 subsample: int = 2, scale: bool = True, use_bn: bool = True,
                 return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, PAIRWISE_FUNCTIONS)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        self.subsample = check_positive("subsample", subsample, integer=True)
        self.scale = bool(scale)
        self.use_bn = bool(use_bn)
        self.return_attention = bool(return_attention)

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        check_subsample(type(self).__name__, self.subsample, input_shape)
        inner = reduced_channels(channels, self.reduction_ratio, self.reduction_channels,
                                 self.reduction_divisor)
        self.inner_channels = inner
        # A new initializer per convolution: one shared (seeded) instance would start theta
        # and phi (same shape) from identical kernels.
        conv = lambda name, filters, **kw: keras.layers.Conv2D(  # noqa: E731
            filters, 1, kernel_initializer=kw.pop("kernel_initializer", None)
            or keras.initializers.RandomNormal(stddev=0.01), **kw, **sublayer_kwargs(self, name))
        n, h, w, _ = input_shape
        pooled = (n, pooled_size(h, self.subsample), pooled_size(w, self.subsample), channels)
        if self.subsample > 1:
            self.pool = keras.layers.MaxPooling2D(self.subsample, **sublayer_kwargs(self, "pool"))
        embedded = self.mode != "gaussian"
        if embedded:
            self.theta = conv("theta", inner)
            self.phi = conv("phi", inner)
            self.theta.build(input_shape)
            self.phi.build(pooled)
        if self.mode == "concatenation":
            self.concat_project = keras.layers.Dense(1, use_bias=False,
                                                     kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                                     **sublayer_kwargs(self, "concat_project"))
            self.concat_project.build((None, 2 * inner))
        self.g = conv("g", inner)
        self.g.build(pooled)
        self.out_conv = conv("out", channels,
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.01) if self.use_bn else "zeros")
        self.out_conv.build((n, h, w, inner))
        if self.use_bn:
            self.bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, gamma_initializer="zeros",
                                                      **sublayer_kwargs(self, "bn"))
            self.bn.build((n, h, w, channels))

    def _affinity(self, x, pooled):
        """Normalised pairwise weights ``f(x_i, x_j)/C(x)``, float32, ``(N, HW, H'W')``."""
        if self.mode == "gaussian":
            query, key = flatten_positions(x), flatten_positions(pooled)
        else:
            query, key = flatten_positions(self.theta(x)), flatten_positions(self.phi(pooled))
        query, key = ops.cast(query, "float32"), ops.cast(key, "float32")
        if self.mode == "concatenation":
            w = ops.cast(self.concat_project.kernel, "float32")  # (2d, 1)
            d = self.inner_channels
            left = ops.matmul(query, w[:d])  # (N, HW, 1)
            right = ops.matmul(key, w[d:])  # (N, H'W', 1)
            pairwise = ops.relu(left + ops.transpose(right, (0, 2, 1)))
            return pairwise / ops.cast(ops.shape(key)[1], "float32")
        logits = ops.matmul(query, ops.transpose(key, (0, 2, 1)))
        if self.mode == "dot_product":
            return logits / ops.cast(ops.shape(key)[1], "float32")
        if self.scale:
            logits = logits / math.sqrt(query.shape[-1])
        return softmax_float32(logits)

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"attention": ...})``; see :mod:`keras_attention.layers._common`."""
        queries = check_queries(queries)
        pooled = self.pool(inputs) if self.subsample > 1 else inputs
        attention = self._affinity(inputs, pooled)
        values = ops.cast(flatten_positions(self.g(pooled)), "float32")
        y = ops.matmul(attention, values)  # (N, HW, d)
        y = ops.reshape(ops.cast(y, self.compute_dtype),
                        (ops.shape(inputs)[0], ops.shape(inputs)[1], ops.shape(inputs)[2],
                         self.inner_channels))
        z = self.out_conv(y)
        if self.use_bn:
            z = self.bn(z, training=training)
        outputs = inputs + z
        maps = {"attention": query_rows(attention, queries, *spatial_dims(inputs), *spatial_dims(pooled))}
        return ((outputs, attention) if self.return_attention else outputs), maps

    def compute_output_shape(self, input_shape):
        if not self.return_attention:
            return tuple(input_shape)
        n, h, w, _ = input_shape
        hw = None if h is None or w is None else h * w
        ph, pw = pooled_size(h, self.subsample), pooled_size(w, self.subsample)
        return tuple(input_shape), (n, hw, None if ph is None or pw is None else ph * pw)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor, "subsample": self.subsample,
                "scale": self.scale, "use_bn": self.use_bn, "return_attention": self.return_attention}
