"""Attention-guided dropout (ADCM) and a note on the attention layers of image-restoration code.

ADCM ("ADCM: attention dropout convolutional module", Neurocomputing 2020) joins two
sub-modules: CAD (channel attention dropout) and PAD (position attention dropout). Each
computes an attention map and, during training, drops whole channels (CAD) or positions
(PAD) with probabilities guided by that map: units the attention ranks low are dropped
more often than those it ranks high. At inference the dropout is the identity. We found
no public official implementation; the structure follows the paper's description of CAD
and PAD (see :class:`ADCM` for which detail comes from where), the drop rule is ours and
is stated exactly.

* :class:`AttentionDropout` is the parameter-free dropout itself: it takes a feature
  map and an attention map and drops channels or positions with probabilities derived
  from the map; each kept unit is rescaled by its own keep probability, so the expected
  training output equals the inference output unit by unit.
* :class:`ADCM` is the self-contained module: CAD then PAD, each followed by attention
  dropout guided by its own map.

Attention layers of image-restoration networks, as configurations of existing layers
(not copies):

* RCAN's channel attention (Zhang et al., ECCV 2018, ``CALayer``: global average pool ->
  1x1 conv C -> C/r with bias -> ReLU -> 1x1 conv C/r -> C with bias -> sigmoid -> scale,
  r = 16) is exactly :class:`~keras_attention.layers.SqueezeExcite` with
  ``reduction_ratio=16``: a 1x1 convolution on a 1x1 pooled map is a dense layer on the
  pooled vector (same weights, reshaped ``(1, 1, C, C/r)`` <-> ``(C, C/r)``; same 2C^2/r + C/r + C
  parameters). Tested in ``tests/layers/test_attention_dropout.py``.
* The simple spatial attention of restoration code (channel max and mean -> k x k conv
  with bias -> sigmoid -> scale) is CBAM's :class:`~keras_attention.layers.SpatialAttention`
  (``kernel_size=k``): at inference its BatchNorm is an affine map that plays the conv
  bias (moving mean ``-b``, moving variance ``1 - eps``, gamma 1, beta 0 reproduce a
  bias ``b``; tested). In training the BatchNorm normalises, which the restoration
  layers do not; a ``use_bn`` switch on ``SpatialAttention`` would make it exact there too.
* RNAN's residual attention blocks (Zhang et al., ICLR 2019) are trunk/mask residual
  attention, see :class:`~keras_attention.layers.ResidualAttentionModule`, and its
  non-local blocks are :class:`~keras_attention.layers.NonLocalBlock`.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (check_choice, check_image_shape, check_positive,
                                            check_reduction, reduced_channels, serializable,
                                            spatial_mean, sublayer_kwargs)
from keras_attention.layers.factory import register_attention

DROP_MODES = ("low", "high", "uniform")

#: Largest drop probability of one unit. A kept unit is scaled by ``1 / (1 - d)``, so the
#: clip bounds that scale by 10 (no division by zero, no float16 overflow from the scale)
#: and is also the largest accepted ``rate``.
MAX_DROP_PROBABILITY = 0.9


def _check_rate(name, rate):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= MAX_DROP_PROBABILITY:
        raise ValueError(f"`{name}` must be a number in [0, {MAX_DROP_PROBABILITY}], received {rate!r}.")
    return float(rate)


def drop_probabilities(attention, rate: float, drop: str, axes):
    """Per-unit drop probabilities ``d = clip(rate * w / mean_axes(w), 0, MAX_DROP_PROBABILITY)``.

    ``w = 1 - a`` (``drop="low"``: low attention is dropped more; ADCM), ``w = a``
    (``"high"``: the most attended units are dropped more, as in attention-based dropout
    for localisation) or ``w = 1`` (``"uniform"``: ordinary dropout of the same units).
    The mean of ``d`` over ``axes`` is ``rate`` unless the clip is active (then it is
    lower). Computed in float32; returns ``d`` in ``[0, MAX_DROP_PROBABILITY]``.
    """
    a = ops.cast(attention, "float32")
    if drop == "uniform":
        return ops.full_like(a, rate)
    w = 1.0 - a if drop == "low" else a
    w = w / (ops.mean(w, axis=axes, keepdims=True) + 1e-12)
    return ops.clip(rate * w, 0.0, MAX_DROP_PROBABILITY)


@serializable
class AttentionDropout(keras.layers.Layer):
    """Drops channels or positions with probabilities guided by an attention map (training only).

    Given features ``x`` ``(N, H, W, C)`` and attention ``a`` in [0, 1] of shape
    ``(N, 1, 1, C)`` (channel attention: whole channels are dropped) or ``(N, H, W, 1)``
    (spatial attention: positions are dropped across all channels): each unit ``u`` is
    dropped with probability ``d_u = clip(rate * w_u / mean(w), 0, 0.9)``, ``w = 1 - a`` for
    ``drop="low"`` (ADCM), ``a`` for ``"high"`` or 1 for ``"uniform"``; the mean runs over
    the units of each sample, so on average a fraction ``rate`` is dropped (less where the
    clip at :data:`MAX_DROP_PROBABILITY` = 0.9 binds). A kept unit is scaled by its own
    ``1 / (1 - d_u)`` (per-unit inverted dropout), so ``E[output_u] = x_u`` for every unit:
    training and inference see the same expected activations. (One common ``1 / (1 - rate)``
    would give low-attention units ``(1 - d_u) / (1 - rate)`` < 1 of their inference value
    and high-attention units more.) With ``training`` false (inference) the layer returns
    ``x`` unchanged. The attention is treated as a constant (no gradient through the mask).

    Args:
        rate: target fraction of dropped units, in [0, 0.9].
        drop: ``"low"``, ``"high"`` or ``"uniform"`` (see above).
        seed: seed of the layer's random generator (``None``: random).
        **kwargs: standard layer arguments.

    Call: ``layer([x, attention], training=...)``; returns ``x``'s shape and dtype.

    Raises:
        ValueError: ``rate`` outside [0, 0.9], unknown ``drop`` (valid ones listed), inputs
            not a pair of 4D tensors, or an attention shape that is neither
            ``(N, 1, 1, C)`` nor ``(N, H, W, 1)``.
    """

    def __init__(self, rate: float = 0.1, drop: str = "low", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate("rate", rate)
        self.drop = check_choice("drop", drop, DROP_MODES)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 \
                or not isinstance(input_shape[0], (list, tuple)):
            raise ValueError("AttentionDropout expects two inputs [features, attention], "
                             f"received input shape {input_shape}.")
        x_shape, a_shape = (tuple(s) for s in input_shape)
        check_image_shape("AttentionDropout", x_shape)
        if len(a_shape) != 4 or not ((a_shape[1] == 1 and a_shape[2] == 1 and a_shape[3] == x_shape[3])
                                     or a_shape[3] == 1):
            raise ValueError("AttentionDropout needs a channel attention (N, 1, 1, C) or a spatial "
                             f"attention (N, H, W, 1); received {a_shape} for features {x_shape}.")

    @staticmethod
    def _axes(attention):
        """Units of one sample: the positions of a spatial map, the channels of a channel map."""
        return (1, 2, 3) if attention.shape[-1] == 1 else (3,)

    def call(self, inputs, training=None):
        x, attention = inputs
        if not training or self.rate == 0:
            return x
        attention = ops.stop_gradient(attention)
        probs = drop_probabilities(attention, self.rate, self.drop, self._axes(attention))
        keep = keras.random.uniform(ops.shape(probs), seed=self.seed_generator) >= probs  # P = 1 - d
        scale = ops.where(keep, 1.0 / (1.0 - probs), 0.0)  # float32, at most 1 / (1 - 0.9)
        return x * ops.cast(scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "drop": self.drop, "seed": self.seed}


def global_stochastic_pool(x, training=False, seed=None):
    """Global stochastic pooling (Zeiler & Fergus, ICLR 2013) of an NHWC map -> ``(N, C)``.

    Over the H x W positions of each channel, with ``a = relu(x)`` and ``p = a / sum(a)``:
    in training one position is sampled with probability ``p`` and its ``a`` returned (the
    gradient reaches that position); at inference the probability-weighted mean
    ``sum(p * a) = sum(a^2) / sum(a)`` (the paper's test-time rule, the expectation of the
    training sample). A channel with no positive activation gives 0. Computed in float32,
    returned in ``x``'s dtype.

    Args:
        x: ``(N, H, W, C)`` features.
        training: sample (True) or take the expectation (False).
        seed: ``keras.random.SeedGenerator`` (or int/None) used for the sample.
    """
    a = ops.relu(ops.cast(x, "float32"))
    a = ops.reshape(a, (ops.shape(a)[0], -1, ops.shape(a)[-1]))  # (N, HW, C)
    if not training:
        return ops.cast(ops.sum(a * a, axis=1) / ops.maximum(ops.sum(a, axis=1), 1e-12), x.dtype)
    cumulative = ops.cumsum(a, axis=1)
    previous = ops.concatenate([ops.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], axis=1)
    # Inverse-CDF sampling: the position k with cumulative[k-1] <= u < cumulative[k], u ~ U[0, total).
    u = keras.random.uniform(ops.shape(cumulative[:, :1]), seed=seed) * cumulative[:, -1:]
    chosen = ops.logical_and(previous <= u, u < cumulative)
    return ops.cast(ops.sum(a * ops.cast(chosen, "float32"), axis=1), x.dtype)


@register_attention("adcm", "attention_dropout")
class ADCM(keras.layers.Layer):
    """ADCM: channel attention dropout (CAD) then position attention dropout (PAD).

    CAD: ``Mc = sigmoid(MLP(maxpool(x)) + MLP(avgpool(x)) + MLP(stochasticpool(x)))``
    (``(N, 1, 1, C)``; global pools over H x W; ``MLP(z) = W2 relu(W1 z + b1) + b2``,
    ``C -> C/r -> C``, shared by the three descriptors), ``x' = x * Mc``, then in training
    channels of ``x'`` are dropped guided by ``Mc``.
    PAD: ``Ms = sigmoid(conv_kxk(conv_1x1(x')))`` (``(N, H, W, 1)``; the 1x1 convolution
    reduces C to ``position_channels`` = 3, the k x k (3 x 3) one to 1), ``y = x' * Ms``,
    then in training positions of ``y`` are dropped guided by ``Ms``. Dropout is
    :class:`AttentionDropout` (rates ``channel_rate``/``position_rate``, mode ``drop``,
    per-unit inverted scaling); at inference it is the identity and ``y = x * Mc * Ms``.

    Where each choice comes from. We could not read the paper's full text (no open copy or
    official code); its method, as described in a reading note of the paper
    (e-com-net.com/article/1279505999429910528.htm, "ADCM: attention dropout convolutional
    module"), gives the items marked *paper*; the section and equation numbers could not be
    checked, so none are quoted. Items marked *ours* are unstated there.

    * *paper* (CAD): three global poolings per channel -- max, average and stochastic --
      then fully connected layers to a C-vector, the channel attention; a dropout mask that
      keeps high-attention channels and drops low-attention ones. (CBAM pools average and
      max only.)
    * *paper* (PAD): a 1x1 (pointwise) convolution reducing the channels to 3, then a 3x3
      convolution and a sigmoid give the position attention, which guides dropping
      positions. (CBAM instead pools the channels to [max, mean] and uses a 7x7
      convolution with BatchNorm.)
    * *paper*: ADCM is CAD and PAD together. *ours*: their order (CAD first, PAD on its
      output, as CBAM's channel-first order) and that each attention also rescales the
      features (``x * Mc``, ``x' * Ms``): the dropout mask is not differentiable, so without
      the rescaling the attention weights would get no gradient.
    * *ours*: shared MLP with reduction ``r`` = 16 and biases, summed before the sigmoid
      (CBAM's form); convolutions with biases and no activation between them; stochastic
      pooling on ``relu(x)`` sampled in training, expectation at inference
      (:func:`global_stochastic_pool`); Keras default initialisers.
    * *ours*: the drop rule ``d = clip(rate * w / mean(w), 0, 0.9)`` with per-unit
      ``1 / (1 - d)`` scaling (:class:`AttentionDropout`), so the expected training output
      equals the inference output given the maps.

    Args:
        reduction_ratio: CAD MLP hidden width ``C / r`` (16).
        reduction_channels: absolute hidden width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: ``C // r``).
        position_channels: PAD's 1x1-convolution width (3, paper).
        position_kernel_size: odd size of PAD's second convolution (3, paper).
        channel_rate: CAD drop rate in [0, 0.9] (0.1).
        position_rate: PAD drop rate in [0, 0.9] (0.1).
        drop: which units are favoured for dropping: ``"low"`` attention (ADCM),
            ``"high"`` or ``"uniform"``.
        seed: seed of the random generators (stochastic pooling ``seed``, CAD ``seed + 1``,
            PAD ``seed + 2``); ``None``: random.
        return_attention: if True, ``call`` returns ``(outputs, channel_map, position_map)``
            (``(N, 1, 1, C)`` and ``(N, H, W, 1)``, compute dtype).
        **kwargs: standard layer arguments.

    Maps (``call_with_maps``): ``"channel_gate"`` ``(N, C)`` (``Mc``) and ``"position_gate"``
    ``(N, H, W)`` (``Ms``), both in (0, 1).

    Input ``(N, H, W, C)``; output same shape and compute dtype. Weights: ``channel_fc1``
    (``C x C/r`` + bias), ``channel_fc2`` (``C/r x C`` + bias), ``position_reduce``
    (1x1, ``C x 3`` + bias), ``position_conv`` (``k x k x 3 x 1`` + bias).

    Raises:
        ValueError: bad widths, kernel size, rates or ``drop``; input not 4D.

    Reference:
        "ADCM: attention dropout convolutional module", Neurocomputing 2020 (CAD, PAD);
        Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep Convolutional
        Neural Networks", ICLR 2013 (sampling from the multinomial given by the activities in
        training, probabilistic weighting at test time).
    """

    MAPS = {"channel_gate": "(N, C) in (0, 1)", "position_gate": "(N, H, W) in (0, 1)"}

    def __init__(self, reduction_ratio: float = 16, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, position_channels: int = 3, position_kernel_size: int = 3,
                 channel_rate: float = 0.1, position_rate: float = 0.1, drop: str = "low",
                 seed: int | None = None, return_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        self.position_channels = check_positive("position_channels", position_channels, integer=True)
        self.position_kernel_size = check_positive("position_kernel_size", position_kernel_size, integer=True)
        if self.position_kernel_size % 2 == 0:
            raise ValueError("`position_kernel_size` must be odd (a centred 'same' convolution), "
                             f"received {position_kernel_size}.")
        self.channel_rate = _check_rate("channel_rate", channel_rate)
        self.position_rate = _check_rate("position_rate", position_rate)
        self.drop = check_choice("drop", drop, DROP_MODES)
        self.seed = seed
        self.return_attention = bool(return_attention)
        self.pool_seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        shape = tuple(input_shape)
        channels = check_image_shape(type(self).__name__, shape)
        hidden = reduced_channels(channels, self.reduction_ratio, self.reduction_channels,
                                  self.reduction_divisor)
        self.channel_fc1 = keras.layers.Dense(hidden, activation="relu", **sublayer_kwargs(self, "channel_fc1"))
        self.channel_fc2 = keras.layers.Dense(channels, **sublayer_kwargs(self, "channel_fc2"))
        self.position_reduce = keras.layers.Conv2D(self.position_channels, 1,
                                                   **sublayer_kwargs(self, "position_reduce"))
        self.position_conv = keras.layers.Conv2D(1, self.position_kernel_size, padding="same",
                                                 **sublayer_kwargs(self, "position_conv"))
        self.channel_fc1.build((None, channels))
        self.channel_fc2.build((None, hidden))
        self.position_reduce.build(shape)
        self.position_conv.build((*shape[:3], self.position_channels))
        offset = (lambda k: None) if self.seed is None else (lambda k: self.seed + k)
        self.channel_dropout = AttentionDropout(self.channel_rate, self.drop, seed=offset(1),
                                                **sublayer_kwargs(self, "channel_dropout"))
        self.position_dropout = AttentionDropout(self.position_rate, self.drop, seed=offset(2),
                                                 **sublayer_kwargs(self, "position_dropout"))
        self.channel_dropout.build([shape, (shape[0], 1, 1, channels)])
        self.position_dropout.build([shape, (*shape[:3], 1)])
        self.built = True

    def channel_map(self, x, training=None):
        """CAD's attention ``Mc`` ``(N, 1, 1, C)`` (max, average and stochastic pooling)."""
        descriptors = ops.stack([ops.max(x, axis=(1, 2)), spatial_mean(x),
                                 global_stochastic_pool(x, training, self.pool_seed_generator)], axis=1)
        logits = ops.sum(self.channel_fc2(self.channel_fc1(descriptors)), axis=1)  # shared MLP, summed
        return ops.sigmoid(logits)[:, None, None, :]

    def position_map(self, x):
        """PAD's attention ``Ms`` ``(N, H, W, 1)`` (1x1 to 3 channels, k x k to 1, sigmoid)."""
        return ops.sigmoid(self.position_conv(self.position_reduce(x)))

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"channel_gate": (N, C), "position_gate": (N, H, W)})``; see
        :mod:`keras_attention.layers._common`."""
        channel_map = self.channel_map(inputs, training)
        x = self.channel_dropout([inputs * channel_map, channel_map], training=training)
        position_map = self.position_map(x)
        y = self.position_dropout([x * position_map, position_map], training=training)
        maps = {"channel_gate": channel_map[:, 0, 0, :], "position_gate": position_map[..., 0]}
        return ((y, channel_map, position_map) if self.return_attention else y), maps

    def compute_output_shape(self, input_shape):
        if not self.return_attention:
            return tuple(input_shape)
        n, h, w, c = input_shape
        return tuple(input_shape), (n, 1, 1, c), (n, h, w, 1)

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels, "reduction_divisor": self.reduction_divisor,
                "position_channels": self.position_channels, "position_kernel_size": self.position_kernel_size,
                "channel_rate": self.channel_rate, "position_rate": self.position_rate, "drop": self.drop,
                "seed": self.seed, "return_attention": self.return_attention}
