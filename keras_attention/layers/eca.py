"""Efficient Channel Attention (ECA)."""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from keras_attention.layers._common import (check_image_shape, check_positive, spatial_mean,
                                            sublayer_kwargs)
from keras_attention.layers.factory import register_attention

REDUCTION_ARGUMENTS = ("reduction_ratio", "reduction_channels", "reduction_divisor")


def adaptive_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's kernel size for ``channels``: ``t = int(|(log2(C) + b) / gamma|)``, then odd.

    ``k = t`` if t is odd else ``t + 1`` (paper Eq. 12 and the Python code of its
    Fig. 3). Unlike timm (``max(k, 3)``) there is no lower bound: C = 1 or 2 gives k = 1.
    Examples with gamma = 2, b = 1: C = 64 -> 3, 256 -> 5, 512 -> 5, 1024 -> 5, 2048 -> 7.
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@register_attention("eca")
class ECA(keras.layers.Layer):
    """Efficient Channel Attention: a 1D convolution across the pooled channel descriptor.

    ``z = mean_{hw} x`` (shape ``(N, C)``), ``s = sigmoid(conv1d_k(z))`` with one
    convolution kernel of size k shared by all channels, sliding along the channel axis
    with zero padding ``(k - 1) / 2`` and no bias; output ``x * s`` broadcast over H and W
    (paper Sec. 3.2-3.3, Eq. 9-12; official ``eca_layer``). k parameters in all.

    k is ``kernel_size`` if given, else ``adaptive_kernel_size(C, gamma, b)``. The official
    ``eca_layer`` takes k explicitly; the released ImageNet models set it per ResNet stage:
    ECA-Net50 ``k3557`` (k = 3, 5, 5, 7 for C = 256, 512, 1024, 2048: 80 parameters in
    all, the README's "80 vs. 24.37M"), ECA-Net18 ``k3577`` and ECA-Net34/101/152
    ``k3357``. The adaptive rule gives 5, 5, 5, 7 for ResNet-50's widths, so
    builders that load the released weights must pass ``kernel_size`` per stage.

    ECA has no bottleneck: it takes no ``reduction_*`` arguments (a backbone must not pass
    them; doing so raises ``TypeError``).

    Args:
        kernel_size: odd k > 0, or None (default) for the adaptive size.
        gamma: γ > 0 of the adaptive rule (2).
        b: b of the adaptive rule (1).
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor, any H and W. Output: same shape and dtype (the
    layer's compute dtype).

    Maps (``call_with_maps``): ``"gate"`` ``(N, C)``, the channel gate ``s`` in (0, 1).

    Raises:
        ValueError: ``kernel_size`` not a positive odd integer; ``gamma`` not positive;
            input not 4D or with unknown channels. TypeError: arguments of a wrong type;
            ``reduction_ratio``/``reduction_channels``/``reduction_divisor`` given.

    Reference:
        Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep
        Convolutional Neural Networks", CVPR 2020, Sec. 3 and Fig. 3; official code
        github.com/BangguWu/ECANet, models/eca_module.py and README.md (released models).
    """

    MAPS = {"gate": "(N, C) channel gate in (0, 1)"}

    def __init__(self, kernel_size: int | None = None, gamma: float = 2, b: float = 1, **kwargs):
        for key in REDUCTION_ARGUMENTS:
            if key in kwargs:
                raise TypeError(f"ECA has no bottleneck and takes no `{key}`; received {key}="
                                f"{kwargs[key]!r}. Its only width setting is `kernel_size` "
                                "(or the adaptive rule's `gamma` and `b`).")
        super().__init__(**kwargs)
        if kernel_size is not None:
            kernel_size = check_positive("kernel_size", kernel_size, integer=True)
            if kernel_size % 2 == 0:
                raise ValueError(f"`kernel_size` must be odd (a centred convolution), "
                                 f"received {kernel_size}.")
        self.kernel_size = kernel_size
        self.gamma = check_positive("gamma", gamma)
        if isinstance(b, bool) or not isinstance(b, numbers.Real):
            raise TypeError(f"`b` must be a number, received {b!r} of type {type(b).__name__}.")
        self.b = b

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        self.kernel_size_ = self.kernel_size or adaptive_kernel_size(channels, self.gamma, self.b)
        self.conv = keras.layers.Conv1D(1, self.kernel_size_, padding="same", use_bias=False,
                                        **sublayer_kwargs(self, "conv"))
        self.conv.build((None, channels, 1))
        self.built = True


    def call(self, inputs):
        return self.call_with_maps(inputs)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"gate": (N, C)})``; see :mod:`keras_attention.layers._common`."""
        descriptor = spatial_mean(inputs)[:, :, None]  # (N, C, 1): channels as the length axis
        gate = ops.sigmoid(self.conv(descriptor))[:, :, 0]
        return inputs * gate[:, None, None, :], {"gate": gate}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "gamma": self.gamma,
                "b": self.b}
