"""Attention-guided dropout (ADCM) and a note on the attention layers of image-restoration code.

ADCM ("attention dropout convolutional module", Liu et al.) reuses channel and spatial
attention maps of the CBAM form (Woo et al., ECCV 2018) as the probabilities that guide
dropping whole channels (channel attention dropout) and positions (position attention
dropout) during training: units the attention ranks low are dropped more often than
those it ranks high. At inference the dropout is the identity. We found no public
official implementation of ADCM; the drop rule below is ours and is stated exactly.

* :class:`AttentionDropout` is the parameter-free dropout itself: it takes a feature
  map and an attention map (e.g. the maps a CBAM layer returns) and drops channels or
  positions with probabilities derived from the map.
* :class:`ADCM` is the self-contained module: CBAM channel then spatial attention (this
  package's :class:`~keras_attention.layers.ChannelAttention` and
  :class:`~keras_attention.layers.SpatialAttention` as sub-layers), each followed by
  attention dropout guided by its own map.

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

from keras_attention.layers._common import (check_choice, check_image_shape,
                                            serializable, spatial_mean, sublayer_kwargs)
from keras_attention.layers.cbam import CBAM
from keras_attention.layers.factory import register_attention

DROP_MODES = ("low", "high", "uniform")


def _check_rate(name, rate):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1), received {rate!r}.")
    return float(rate)


def drop_probabilities(attention, rate: float, drop: str, axes):
    """Per-unit drop probabilities ``d = clip(rate * w / mean_axes(w), 0, 1)``.

    ``w = 1 - a`` (``drop="low"``: low attention is dropped more; ADCM), ``w = a``
    (``"high"``: the most attended units are dropped more, as in attention-based dropout
    for localisation) or ``w = 1`` (``"uniform"``: ordinary dropout of the same units).
    The mean of ``d`` over ``axes`` is ``rate`` unless clipping is active.
    """
    a = ops.cast(attention, "float32")
    if drop == "uniform":
        return ops.full_like(a, rate)
    w = 1.0 - a if drop == "low" else a
    w = w / (ops.mean(w, axis=axes, keepdims=True) + 1e-12)
    return ops.clip(rate * w, 0.0, 1.0)


@serializable
class AttentionDropout(keras.layers.Layer):
    """Drops channels or positions with probabilities guided by an attention map (training only).

    Given features ``x`` ``(N, H, W, C)`` and attention ``a`` in [0, 1] of shape
    ``(N, 1, 1, C)`` (channel attention: whole channels are dropped) or ``(N, H, W, 1)``
    (spatial attention: positions are dropped across all channels): each unit ``u`` is
    kept with probability ``1 - d_u`` where ``d_u = clip(rate * w_u / mean(w), 0, 1)``,
    ``w = 1 - a`` for ``drop="low"`` (ADCM), ``a`` for ``"high"`` or 1 for
    ``"uniform"``; the mean runs over the units of each sample, so on average a fraction
    ``rate`` is dropped. Kept units are scaled by ``1 / (1 - rate)`` (inverted dropout).
    With ``training`` false (inference) the layer returns ``x`` unchanged.

    Args:
        rate: target fraction of dropped units, in [0, 1).
        drop: ``"low"``, ``"high"`` or ``"uniform"`` (see above).
        seed: seed of the layer's random generator (``None``: random).
        **kwargs: standard layer arguments.

    Call: ``layer([x, attention], training=...)``; returns ``x``'s shape and dtype.

    Raises:
        ValueError: ``rate`` outside [0, 1), unknown ``drop`` (valid ones listed), inputs
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
        keep = keras.random.uniform(ops.shape(probs), seed=self.seed_generator) >= probs
        scale = ops.cast(keep, x.dtype) / ops.cast(1.0 - self.rate, x.dtype)
        return x * scale

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "drop": self.drop, "seed": self.seed}


@register_attention("adcm", "attention_dropout")
class ADCM(CBAM):
    """ADCM: CBAM attention whose maps also guide channel and position dropout in training.

    ``Mc = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` (``(N, 1, 1, C)``), ``x' = x * Mc``;
    ``Ms = sigmoid(BN(conv7x7([max_c x', mean_c x'])))`` (``(N, H, W, 1)``), ``y = x' * Ms``:
    CBAM, computed by this layer's own :class:`~keras_attention.layers.ChannelAttention`
    and :class:`~keras_attention.layers.SpatialAttention` sub-layers (``channel``,
    ``spatial``; same weights, initialisation and official-code details as CBAM). During
    training, channels of ``x'`` are dropped guided by ``Mc`` and positions of ``y`` guided
    by ``Ms`` (:class:`AttentionDropout`, rates ``channel_rate``/``position_rate``, mode
    ``drop``); at inference the dropout is the identity and the layer computes CBAM exactly.

    Args:
        reduction_ratio: channel-MLP hidden width ``C / r`` (16).
        reduction_channels: absolute hidden width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: ``C // r``).
        spatial_kernel_size: odd size of the spatial-attention convolution (7).
        zero_init_gamma: spatial BN scale starts at 0, as CBAM's official code (True).
        channel_rate: channel-dropout rate in [0, 1) (0.1).
        position_rate: position-dropout rate in [0, 1) (0.1).
        drop: which units are favoured for dropping: ``"low"`` attention (ADCM),
            ``"high"`` or ``"uniform"``.
        seed: seed of the dropout generators.
        return_attention: if True, ``call`` returns ``(outputs, channel_map, spatial_map)``
            (``(N, 1, 1, C)`` and ``(N, H, W, 1)``, compute dtype).
        **kwargs: standard layer arguments.

    Input ``(N, H, W, C)``; output same shape and compute dtype.

    Raises:
        ValueError: bad widths, kernel size, rates or ``drop``; input not 4D.

    Reference:
        Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018,
        Sec. 3 (github.com/Jongchan/attention-module); ADCM: "attention dropout
        convolutional module" (Liu et al., Neurocomputing 2020) for the attention-guided
        channel/position dropout; the drop rule is ours (see :class:`AttentionDropout`).
    """

    def __init__(self, reduction_ratio: float = 16, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, spatial_kernel_size: int = 7, zero_init_gamma: bool = True,
                 channel_rate: float = 0.1, position_rate: float = 0.1, drop: str = "low",
                 seed: int | None = None, return_attention: bool = False, **kwargs):
        super().__init__(reduction_ratio, reduction_channels, reduction_divisor, spatial_kernel_size,
                         zero_init_gamma, **kwargs)
        self.channel_rate = _check_rate("channel_rate", channel_rate)
        self.position_rate = _check_rate("position_rate", position_rate)
        self.drop = check_choice("drop", drop, DROP_MODES)
        self.seed = seed
        self.return_attention = bool(return_attention)

    def build(self, input_shape):
        super().build(input_shape)  # CBAM's checks and its channel/spatial sub-layers
        shape = tuple(input_shape)
        channels = shape[-1]
        self.channel_dropout = AttentionDropout(self.channel_rate, self.drop, seed=self.seed,
                                                **sublayer_kwargs(self, "channel_dropout"))
        self.position_dropout = AttentionDropout(self.position_rate, self.drop,
                                                 seed=None if self.seed is None else self.seed + 1,
                                                 **sublayer_kwargs(self, "position_dropout"))
        self.channel_dropout.build([shape, (shape[0], 1, 1, channels)])
        self.position_dropout.build([shape, (*shape[:3], 1)])

    # The two maps, computed with the CBAM sub-layers' own weights exactly as their ``call``
    # does (CBAM's layers return the attended features, not the maps).
    def _channel_map(self, x):
        descriptors = ops.stack([spatial_mean(x), ops.max(x, axis=(1, 2))], axis=1)
        logits = ops.sum(self.channel.fc2(self.channel.fc1(descriptors)), axis=1)
        return ops.sigmoid(logits)[:, None, None, :]

    def _spatial_map(self, x, training):
        channel_mean = ops.cast(ops.mean(ops.cast(x, "float32"), axis=-1, keepdims=True), x.dtype)
        pooled = ops.concatenate([ops.max(x, axis=-1, keepdims=True), channel_mean], axis=-1)
        return ops.sigmoid(self.spatial.norm(self.spatial.conv(pooled), training=training))

    def call(self, inputs, training=None):
        channel_map = self._channel_map(inputs)
        x = self.channel_dropout([inputs * channel_map, channel_map], training=training)
        spatial_map = self._spatial_map(x, training)
        y = self.position_dropout([x * spatial_map, spatial_map], training=training)
        return (y, channel_map, spatial_map) if self.return_attention else y

    def compute_output_shape(self, input_shape):
        if not self.return_attention:
            return tuple(input_shape)
        n, h, w, c = input_shape
        return tuple(input_shape), (n, 1, 1, c), (n, h, w, 1)

    def get_config(self):
        return {**super().get_config(), "channel_rate": self.channel_rate, "position_rate": self.position_rate,
                "drop": self.drop, "seed": self.seed, "return_attention": self.return_attention}
