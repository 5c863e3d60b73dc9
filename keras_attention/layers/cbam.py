"""Convolutional Block Attention Module (CBAM): channel attention, then spatial attention."""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import (check_image_shape, check_positive, check_reduction,
                                            reduced_channels, spatial_mean, sublayer_kwargs)
from keras_attention.layers.factory import register_attention


def _check_odd_kernel(kernel_size):
    kernel_size = check_positive("kernel_size", kernel_size, integer=True)
    if kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be odd (a centred 'same' convolution), "
                         f"received {kernel_size}.")
    return kernel_size


@register_attention("cbam_channel")
class ChannelAttention(keras.layers.Layer):
    """CBAM channel attention: a shared MLP on the average- and max-pooled descriptors.

    ``s = sigmoid(MLP(mean_{hw} x) + MLP(max_{hw} x))`` with
    ``MLP(z) = W2 relu(W1 z + b1) + b2`` (``W1: C -> C/r``, ``W2: C/r -> C``, with biases,
    shared by both descriptors); output ``x * s`` broadcast over H and W (paper Eq. 2).

    The official code (``ChannelGate`` with ``pool_types=['avg', 'max']``) has biases in
    both linear layers and initialises them to zero; timm's ``ChannelAttn`` has no biases
    by default. We follow the official code.

    Args:
        reduction_ratio: r > 0, the MLP's hidden width is ``C // r`` (16 in the paper).
        reduction_channels: absolute hidden width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: plain ``C // r``, as
            the official ``gate_channels // reduction_ratio``).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor, any H and W. Output: same shape and dtype (the
    layer's compute dtype).

    Maps (``call_with_maps``): ``"gate"`` ``(N, C)``, the channel gate ``s`` in (0, 1).

    Raises:
        ValueError: reduction arguments not positive; input not 4D or with unknown channels.

    Reference:
        Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018,
        Sec. 3 (channel attention module) and Fig. 2; official code
        github.com/Jongchan/attention-module, MODELS/cbam.py (``ChannelGate``).
    """

    MAPS = {"gate": "(N, C) channel gate in (0, 1)"}

    def __init__(self, reduction_ratio: float = 16, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        hidden = reduced_channels(channels, self.reduction_ratio, self.reduction_channels,
                                  self.reduction_divisor)
        self.fc1 = keras.layers.Dense(hidden, activation="relu", **sublayer_kwargs(self, "fc1"))
        self.fc2 = keras.layers.Dense(channels, **sublayer_kwargs(self, "fc2"))
        self.fc1.build((None, channels))
        self.fc2.build((None, hidden))
        self.built = True

    def call(self, inputs):
        return self.call_with_maps(inputs)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"gate": (N, C)})``; see :mod:`keras_attention.layers._common`."""
        descriptors = ops.stack([spatial_mean(inputs), ops.max(inputs, axis=(1, 2))], axis=1)
        logits = ops.sum(self.fc2(self.fc1(descriptors)), axis=1)  # shared MLP, summed
        gate = ops.sigmoid(logits)
        return inputs * gate[:, None, None, :], {"gate": gate}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor}


@register_attention("cbam_spatial")
class SpatialAttention(keras.layers.Layer):
    """CBAM spatial attention: a k x k convolution over the channel-wise max and mean maps.

    ``s = sigmoid(BN(conv_kxk([max_c x ; mean_c x])))``, output ``x * s`` broadcast over
    the channels (paper Eq. 3). The convolution maps the 2 pooled maps to 1, has no bias and
    zero ("same") padding of ``(k - 1) / 2``; BatchNorm has ε = 1e-5 and moving-average
    momentum 0.99 (PyTorch's ``momentum=0.01`` of the official ``BasicConv``).

    Where this follows the official code rather than the paper or timm:

    * channel order: ``[max, mean]`` (the official ``ChannelPool``); the paper writes
      ``[AvgPool(F); MaxPool(F)]`` and timm concatenates mean first. The order only permutes
      the convolution's input channels, which matters when loading weights.
    * BatchNorm after the convolution (the paper's equation omits it; timm has it too).
    * the BatchNorm scale γ starts at 0 (``zero_init_gamma=True``): the official ResNet
      initialisation sets every ``SpatialGate`` BN weight to 0, so the gate starts at
      sigmoid(0) = 1/2 everywhere. timm leaves γ = 1.

    Args:
        kernel_size: odd k > 0, the convolution's size (7 in the paper; 3 in its ablation).
        zero_init_gamma: initialise the BatchNorm scale to 0 as the official code (True) or
            to 1 (False).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor, any H and W. Output: same shape and dtype (the
    layer's compute dtype).

    Maps (``call_with_maps``): ``"gate"`` ``(N, H, W)``, the spatial gate ``s`` in (0, 1).

    Raises:
        ValueError: ``kernel_size`` not a positive odd integer; input not 4D or with unknown
            channels.

    Reference:
        Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018,
        Sec. 3 (spatial attention module) and Fig. 3; official code
        github.com/Jongchan/attention-module, MODELS/cbam.py (``SpatialGate``,
        ``ChannelPool``, ``BasicConv``) and MODELS/model_resnet.py (initialisation).
    """

    MAPS = {"gate": "(N, H, W) spatial gate in (0, 1)"}

    def __init__(self, kernel_size: int = 7, zero_init_gamma: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = _check_odd_kernel(kernel_size)
        if not isinstance(zero_init_gamma, bool):
            raise TypeError(f"`zero_init_gamma` must be a bool, received {zero_init_gamma!r}.")
        self.zero_init_gamma = zero_init_gamma

    def build(self, input_shape):
        check_image_shape(type(self).__name__, input_shape)
        self.conv = keras.layers.Conv2D(1, self.kernel_size, padding="same", use_bias=False,
                                        **sublayer_kwargs(self, "conv"))
        self.norm = keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.99,
            gamma_initializer="zeros" if self.zero_init_gamma else "ones",
            **sublayer_kwargs(self, "bn"))
        pooled = (*tuple(input_shape)[:3], 2)
        self.conv.build(pooled)
        self.norm.build((*tuple(input_shape)[:3], 1))
        self.built = True

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"gate": (N, H, W)})``; see :mod:`keras_attention.layers._common`."""
        channel_max = ops.max(inputs, axis=-1, keepdims=True)
        channel_mean = ops.cast(ops.mean(ops.cast(inputs, "float32"), axis=-1, keepdims=True),
                                inputs.dtype)
        pooled = ops.concatenate([channel_max, channel_mean], axis=-1)
        gate = ops.sigmoid(self.norm(self.conv(pooled), training=training))
        return inputs * gate, {"gate": gate[..., 0]}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "zero_init_gamma": self.zero_init_gamma}


@register_attention("cbam")
class CBAM(keras.layers.Layer):
    """CBAM: channel attention followed by spatial attention (sequential, channel first).

    ``y = SpatialAttention(ChannelAttention(x))`` (paper Eq. 1 and Sec. 3, "arrangement of
    attention modules": channel-first sequential is the best arrangement). See
    :class:`ChannelAttention` and :class:`SpatialAttention` for each part and for where the
    official code is followed over the paper and timm.

    Args:
        reduction_ratio: r > 0, the channel MLP's hidden width is ``C // r`` (16).
        reduction_channels: absolute hidden width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: plain ``C // r``).
        spatial_kernel_size: odd size of the spatial attention's convolution (7).
        zero_init_gamma: spatial BatchNorm scale starts at 0 as the official code (True).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor, any H and W. Output: same shape and dtype (the
    layer's compute dtype).

    Maps (``call_with_maps``): ``"channel_gate"`` ``(N, C)`` and ``"spatial_gate"``
    ``(N, H, W)``, both in (0, 1) (the spatial gate is computed on the channel-gated map).

    Raises:
        ValueError: reduction arguments not positive; ``spatial_kernel_size`` not a
            positive odd integer; input not 4D or with unknown channels.

    Reference:
        Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018;
        official code github.com/Jongchan/attention-module, MODELS/cbam.py (``CBAM``).
    """

    MAPS = {"channel_gate": "(N, C) in (0, 1)", "spatial_gate": "(N, H, W) in (0, 1)"}

    def __init__(self, reduction_ratio: float = 16, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, spatial_kernel_size: int = 7,
                 zero_init_gamma: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        try:
            self.spatial_kernel_size = _check_odd_kernel(spatial_kernel_size)
        except ValueError as error:
            raise ValueError(str(error).replace("`kernel_size`", "`spatial_kernel_size`")) from None
        if not isinstance(zero_init_gamma, bool):
            raise TypeError(f"`zero_init_gamma` must be a bool, received {zero_init_gamma!r}.")
        self.zero_init_gamma = zero_init_gamma

    def build(self, input_shape):
        check_image_shape(type(self).__name__, input_shape)
        self.channel = ChannelAttention(self.reduction_ratio, self.reduction_channels,
                                        self.reduction_divisor, **sublayer_kwargs(self, "channel"))
        self.spatial = SpatialAttention(self.spatial_kernel_size, self.zero_init_gamma,
                                        **sublayer_kwargs(self, "spatial"))
        self.channel.build(input_shape)
        self.spatial.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"channel_gate": (N, C), "spatial_gate": (N, H, W)})``; see
        :mod:`keras_attention.layers._common`.

        The two sub-layers run through ``call_with_maps`` (not their ``__call__``), so their
        inputs are not cast again: they share this layer's dtype policy, and ``__call__``
        has already cast ``inputs`` to it.
        """
        channel_out, channel_maps = self.channel.call_with_maps(inputs)
        outputs, spatial_maps = self.spatial.call_with_maps(channel_out, training=training)
        return outputs, {"channel_gate": channel_maps["gate"], "spatial_gate": spatial_maps["gate"]}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor,
                "spatial_kernel_size": self.spatial_kernel_size,
                "zero_init_gamma": self.zero_init_gamma}
