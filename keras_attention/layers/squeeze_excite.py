"""Squeeze-and-Excitation (SE) channel attention."""

from __future__ import annotations

import keras

from keras_attention.layers._common import (check_image_shape, check_reduction, reduced_channels,
                                            spatial_mean, sublayer_kwargs)
from keras_attention.layers.factory import register_attention


@register_attention("se")
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-Excitation block: recalibrates channels by a learned gate.

    squeeze: ``z = mean_{h,w} x`` (global average pooling, shape ``(N, C)``);
    excitation: ``s = sigmoid(W2 relu(W1 z + b1) + b2)`` with ``W1: C -> C/r`` and
    ``W2: C/r -> C`` (fully connected, with biases); output ``x * s`` broadcast over
    H and W (paper Eq. 2-4).

    Args:
        reduction_ratio: r > 0, the bottleneck width is ``C // r`` (16 in the paper).
        reduction_channels: absolute bottleneck width; overrides ``reduction_ratio``.
        reduction_divisor: round ``C / r`` to a multiple of this (1: plain ``C // r``,
            as in the paper; timm uses 8).
        activation: activation of the bottleneck (a Keras activation name).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor, any H and W. Output: same shape and dtype
    (the layer's compute dtype).

    Maps (``call_with_maps``): ``"gate"`` ``(N, C)``, the excitation ``s`` in (0, 1).

    Raises:
        ValueError: ``reduction_ratio``/``reduction_channels``/``reduction_divisor`` not
            positive; input not 4D or with unknown channels.

    Reference:
        Hu, Shen, Albanie, Sun, Wu. "Squeeze-and-Excitation Networks", CVPR 2018 /
        TPAMI 2019, Sec. 3 and Fig. 3; official code github.com/hujie-frank/SENet.
    """

    MAPS = {"gate": "(N, C) excitation in (0, 1)"}

    def __init__(self, reduction_ratio: float = 16, reduction_channels: int | None = None,
                 reduction_divisor: int = 1, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.reduction_ratio, self.reduction_channels, self.reduction_divisor = \
            check_reduction(reduction_ratio, reduction_channels, reduction_divisor)
        self.activation = activation
        keras.activations.get(activation)  # validates the name early

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        hidden = reduced_channels(channels, self.reduction_ratio, self.reduction_channels,
                                  self.reduction_divisor)
        self.fc1 = keras.layers.Dense(hidden, activation=self.activation, **sublayer_kwargs(self, "fc1"))
        self.fc2 = keras.layers.Dense(channels, activation="sigmoid", **sublayer_kwargs(self, "fc2"))
        self.fc1.build((input_shape[0], channels))
        self.fc2.build((input_shape[0], hidden))


    def call(self, inputs):
        return self.call_with_maps(inputs)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"gate": (N, C)})``; see :mod:`keras_attention.layers._common`."""
        squeezed = spatial_mean(inputs)
        gate = self.fc2(self.fc1(squeezed))
        return inputs * gate[:, None, None, :], {"gate": gate}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "reduction_channels": self.reduction_channels,
                "reduction_divisor": self.reduction_divisor, "activation": self.activation}
