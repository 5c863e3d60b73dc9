"""SAGAN self-attention (Zhang, Goodfellow, Metaxas, Odena; ICML 2019) and spectral normalisation.

Memory: the attention matrix is ``(N, H*W, H'*W')``, O((HW)^2); see
:mod:`keras_attention.layers.non_local` for numbers. ``subsample=2`` (the official
release's pooled keys/values) divides it by 4.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (check_image_shape, check_positive, check_queries,
                                            check_reduction, query_rows, reduced_channels,
                                            serializable, sublayer_kwargs)
from keras_attention.layers.factory import register_attention
from keras_attention.layers.non_local import (check_subsample, flatten_positions, pooled_size,
                                              softmax_float32, spatial_dims)


@serializable
class SpectralConv2D(keras.layers.Conv2D):
    """``Conv2D`` whose kernel is divided by its largest singular value (spectral norm).

    ``W_bar = W / sigma(W)`` with ``sigma`` estimated by power iteration on the kernel
    reshaped to ``(kh*kw*C_in, C_out)``: ``v = l2n(u W^T)``, ``u = l2n(v W)``,
    ``sigma = v W u^T``, ``u`` being a persistent non-trainable vector (shape
    ``(1, C_out)``, truncated-normal initialised). As in the official SAGAN code
    (``ops.spectral_normed_weight``) the gradient also flows through the power
    iteration; unlike it, ``u`` is updated only in training (``training=True``), so
    inference is deterministic. The estimate is computed in float32 under mixed precision.

    Args:
        power_iterations: power-iteration steps per call (1 in SAGAN).
        **kwargs: ``keras.layers.Conv2D`` arguments.

    Reference:
        Miyato et al., "Spectral Normalization for GANs", ICLR 2018, Sec. 2.1 and
        Algorithm 1; github.com/brain-research/self-attention-gan (ops.py).
    """

    def __init__(self, *args, power_iterations: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.power_iterations = check_positive("power_iterations", power_iterations, integer=True)

    def build(self, input_shape):
        super().build(input_shape)
        self.u = self.add_weight(shape=(1, self.filters), name="u", trainable=False,
                                 initializer=keras.initializers.TruncatedNormal(stddev=1.0),
                                 dtype="float32", autocast=False)

    def normalized_kernel(self, training=False):
        kernel = ops.cast(self.kernel, "float32")
        w = ops.reshape(kernel, (-1, self.filters))
        # A copy: u is assigned below, and an alias would be modified in place while the
        # autograd graph (PyTorch backend) still needs it.
        u = ops.copy(ops.cast(self.u, "float32"))
        for _ in range(self.power_iterations):
            v = _l2_normalize(ops.matmul(u, ops.transpose(w)))
            u = _l2_normalize(ops.matmul(v, w))
        sigma = ops.sum(ops.matmul(v, w) * u)
        if training:
            self.u.assign(ops.stop_gradient(u))
        return kernel / sigma

    def call(self, inputs, training=None):
        kernel = ops.cast(self.normalized_kernel(bool(training)), self.compute_dtype)
        outputs = self.convolution_op(inputs, kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)

    # Conv2D saves only kernel and bias; u must round-trip too (it is part of the state).
    def save_own_variables(self, store):
        if not self.built:
            return
        variables = [self.kernel] + ([self.bias] if self.use_bias else []) + [self.u]
        for i, variable in enumerate(variables):
            store[str(i)] = variable

    def load_own_variables(self, store):
        if not self.built:
            return
        variables = [self._kernel] + ([self.bias] if self.use_bias else []) + [self.u]
        if len(store.keys()) != len(variables):
            raise ValueError(f"Layer {self.name!r} expected {len(variables)} variables, "
                             f"received {len(store.keys())} during loading.")
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])

    def get_config(self):
        return {**super().get_config(), "power_iterations": self.power_iterations}


def _l2_normalize(v, eps=1e-12):
    return v / (ops.sqrt(ops.sum(ops.square(v))) + eps)


@register_attention("sagan", "self_attention")
class SelfAttention2D(keras.layers.Layer):
    """SAGAN self-attention: ``y = x + gamma * o`` with ``o`` attention over all positions.

    ``s_ij = f(x_i)^T g(x_j)``, ``beta_ij = softmax_j(s_ij)``,
    ``o_i = v(sum_j beta_ij h(x_j))``, ``y_i = x_i + gamma o_i`` (paper Sec. 3, Eq. 1-3)
    with ``f`` (query) and ``g`` (key) 1x1 convolutions C -> C/8, ``h`` (value) a 1x1
    convolution C -> C_v and ``v`` a 1x1 convolution C_v -> C; ``gamma`` is a learned
    scalar initialised to 0, so the layer is the identity at initialisation.

    Variants:

    * paper (default): ``C_v = C/8`` (``value_ratio=8``), no sub-sampling;
    * official release (``sn_non_local_block_sim``): ``SelfAttention2D(value_ratio=2,
      subsample=2, spectral_norm=True)``: value width C/2, keys and values max-pooled 2x2
      after their convolutions, spectrally normalised convolutions without biases;
    * the widespread PyTorch form (value C -> C, no ``v``): ``value_ratio=1,
      output_conv=False`` (also what DANet's position attention is, with biases;
      see :class:`~keras_attention.layers.DANetPositionAttention`).

    Convolutions have no bias by default (official code); Glorot-uniform initialisation
    (the official ``xavier_initializer``).

    Memory: the attention matrix ``(N, H*W, H*W/s^2)`` is O((HW)^2).

    Args:
        reduction_ratio: query/key width ``C / r`` (8 in the paper).
        reduction_channels: absolute query/key width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: ``C // r``).
        value_ratio: value width ``C_v = C / value_ratio`` (8 paper, 2 official, 1 PyTorch).
        value_channels: absolute value width; overrides ``value_ratio``.
        output_conv: apply ``v`` (C_v -> C). ``False`` requires ``C_v == C``.
        subsample: max-pool factor for keys and values (1 paper, 2 official).
        spectral_norm: spectrally normalise every convolution (:class:`SpectralConv2D`).
        use_bias: biases in the 1x1 convolutions.
        return_attention: if True, ``call`` returns ``(outputs, attention)`` with the
            float32 attention ``beta`` of shape ``(N, H*W, H'*W')`` (row-major positions).
        **kwargs: standard layer arguments.

    Input: ``(N, H, W, C)`` with ``C >= reduction_ratio``. Output: same shape, in the
    compute dtype; logits and softmax are computed in float32.

    Maps (``call_with_maps``): ``"attention"``, float32 ``beta``: for the query positions
    ``queries`` (``(y, x)`` fractions) ``(N, Q, H', W')`` over the (sub-sampled) key grid,
    without queries the whole ``(N, H*W, H'*W')`` matrix; rows sum to 1.

    Raises:
        ValueError: non-positive widths/ratios/``subsample``, ``output_conv=False`` with
            ``C_v != C``, input not 4D, unknown channels, H or W < ``subsample``.

    Reference:
        Zhang, Goodfellow, Metaxas, Odena. "Self-Attention Generative Adversarial
        Networks", ICML 2019, Sec. 3, Fig. 2; official code
        github.com/brain-research/self-attention-gan (``non_local.py``).
    """

    MAPS = {"attention": "float32 (N, Q, H', W') for Q query positions, else (N, H*W, H'*W')"}

    def __init__(self, reduction_ratio: float = 8, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, value_ratio: float = 8, value_channels: int | None = None,
                 output_conv: bool = True, subsample: int = 1, spectral_norm: bool = False,
                 use_bias: bool = False, return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        self.value_ratio = check_positive("value_ratio", value_ratio)
        self.value_channels = check_positive("value_channels", value_channels, integer=True,
                                             allow_none=True)
        self.output_conv = bool(output_conv)
        self.subsample = check_positive("subsample", subsample, integer=True)
        self.spectral_norm = bool(spectral_norm)
        self.use_bias = bool(use_bias)
        self.return_attention = bool(return_attention)

    def _conv(self, name, filters):
        cls = SpectralConv2D if self.spectral_norm else keras.layers.Conv2D
        return cls(filters, 1, use_bias=self.use_bias, **sublayer_kwargs(self, name))

    def build(self, input_shape):
        layer_name = type(self).__name__
        channels = check_image_shape(layer_name, input_shape)
        check_subsample(layer_name, self.subsample, input_shape)
        key_width = reduced_channels(channels, self.reduction_ratio, self.reduction_channels,
                                     self.reduction_divisor)
        value_width = reduced_channels(channels, self.value_ratio, self.value_channels, 1)
        if not self.output_conv and value_width != channels:
            raise ValueError(f"{layer_name} with output_conv=False needs the value width to equal "
                             f"the input channels ({channels}), received value width {value_width} "
                             f"(value_ratio={self.value_ratio}, value_channels={self.value_channels}).")
        self.key_channels, self.value_width = key_width, value_width
        self.query = self._conv("query", key_width)
        self.key = self._conv("key", key_width)
        self.value = self._conv("value", value_width)
        for conv in (self.query, self.key, self.value):
            conv.build(input_shape)
        if self.subsample > 1:
            self.pool = keras.layers.MaxPooling2D(self.subsample, **sublayer_kwargs(self, "pool"))
        if self.output_conv:
            self.out = self._conv("out", channels)
            self.out.build((*input_shape[:3], value_width))
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")

    def _sub(self, conv, x, training):
        return conv(x, training=training) if self.spectral_norm else conv(x)

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"attention": ...})``; see :mod:`keras_attention.layers._common`."""
        queries = check_queries(queries)
        query = flatten_positions(self._sub(self.query, inputs, training))
        key = self._sub(self.key, inputs, training)
        value = self._sub(self.value, inputs, training)
        if self.subsample > 1:
            key, value = self.pool(key), self.pool(value)
        key_grid = spatial_dims(key)
        key, value = flatten_positions(key), flatten_positions(value)
        logits = ops.matmul(ops.cast(query, "float32"), ops.transpose(ops.cast(key, "float32"), (0, 2, 1)))
        attention = softmax_float32(logits)  # (N, HW, H'W'), rows sum to 1
        o = ops.matmul(attention, ops.cast(value, "float32"))
        shape = ops.shape(inputs)
        o = ops.reshape(ops.cast(o, self.compute_dtype), (shape[0], shape[1], shape[2], self.value_width))
        if self.output_conv:
            o = self._sub(self.out, o, training)
        outputs = inputs + ops.cast(self.gamma, self.compute_dtype) * o
        maps = {"attention": query_rows(attention, queries, *spatial_dims(inputs), *key_grid)}
        return ((outputs, attention) if self.return_attention else outputs), maps

    def compute_output_shape(self, input_shape):
        if not self.return_attention:
            return tuple(input_shape)
        n, h, w, _ = input_shape
        ph, pw = pooled_size(h, self.subsample), pooled_size(w, self.subsample)
        return tuple(input_shape), (n, None if h is None or w is None else h * w,
                                    None if ph is None or pw is None else ph * pw)

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor, "value_ratio": self.value_ratio,
                "value_channels": self.value_channels, "output_conv": self.output_conv,
                "subsample": self.subsample, "spectral_norm": self.spectral_norm,
                "use_bias": self.use_bias, "return_attention": self.return_attention}
