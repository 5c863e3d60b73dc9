"""Building blocks shared by the model builders: conv/BN in PyTorch-compatible form, heads."""

from __future__ import annotations

import keras
from keras import ops

from keras_attention.layers._common import check_positive, he_fan_out, serializable  # noqa: F401 (he_fan_out: re-exported)
from keras_attention.losses import class_indices

def batch_norm(name: str, zero_init: bool = False, momentum: float = 0.9) -> keras.layers.BatchNormalization:
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9).

    ``zero_init`` starts gamma at 0, so a residual branch ending in it starts as zero.
    ``momentum`` is Keras's (the moving statistics keep ``momentum`` of their value per
    step): PyTorch's ``momentum=m`` is Keras's ``1 - m``; TensorFlow's is the same as Keras's.
    """
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=momentum, name=name,
                                           gamma_initializer="zeros" if zero_init else "ones")


def conv2d(x, filters: int, kernel_size: int, stride: int = 1, *, name: str, groups: int = 1,
           use_bias: bool = False, kernel_initializer=None):
    """Convolution padded like PyTorch's ``padding=kernel_size // 2``.

    Keras's ``"same"`` padding pads strided convolutions asymmetrically (more at the
    bottom/right), which would shift every feature map relative to the PyTorch
    reference models; strided convolutions therefore get an explicit symmetric
    ``ZeroPadding2D`` (named ``{name}_pad``) and ``"valid"`` padding.
    """
    pad = kernel_size // 2
    if stride > 1 and pad > 0:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, groups=groups,
                               use_bias=use_bias, kernel_initializer=kernel_initializer or he_fan_out(),
                               name=name)(x)


def classifier_head(x, *, num_classes: int, include_top: bool, pooling: str | None,
                    classifier_activation=None, dropout_rate: float = 0.0):
    """Global pooling + dense classifier (float32 output), or pooled / raw features.

    With ``include_top=True`` returns ``(N, num_classes)`` float32 logits (or
    probabilities if ``classifier_activation="softmax"``). With ``include_top=False``
    returns the 4D feature map (``pooling=None``) or ``(N, C)`` features
    (``pooling="avg"``/``"max"``).
    """
    if include_top:
        pooling = pooling or "avg"
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="head_pool")(x)
    elif pooling is not None:
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', received {pooling!r}.")
    if not include_top:
        return x
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
    return keras.layers.Dense(num_classes, activation=classifier_activation, dtype="float32",
                              name="head_fc")(x)


def compiled_classification_loss(model: keras.Model, y, logits, sample_weight=None):
    """The loss ``model`` was compiled with, of ``(N, K)`` ``logits`` against ``y`` (class indices or
    one-hot), as a float32 scalar; softmax cross-entropy from logits where it was compiled without
    one. For the custom ``compute_loss`` of hard- and region-attention models, whose terms are
    cross-entropies of several logits (scales, glimpses, patches)."""
    if model._compile_loss is None:
        return ops.mean(keras.losses.sparse_categorical_crossentropy(class_indices(y, model.num_classes), logits,
                                                                     from_logits=True))
    return ops.cast(model._compile_loss(y, logits, sample_weight), "float32")


def model_io_shape(model: keras.Model) -> tuple[tuple, int]:
    """``((H, W, C), num_classes)`` of a classifier: a functional model's input and output
    shapes, or a subclassed one's ``image_shape`` and ``num_classes`` (Saccader and the other
    hard- and region-attention models store both)."""
    try:
        return tuple(model.input_shape[1:]), int(model.output_shape[-1])
    except AttributeError:
        if not hasattr(model, "image_shape") or not hasattr(model, "num_classes"):
            raise TypeError(f"{model.name!r} ({type(model).__name__}) is neither a functional model nor "
                            f"one with `image_shape` and `num_classes` attributes.") from None
        return tuple(model.image_shape), int(model.num_classes)


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether ``model``'s output is a softmax (probabilities); else it gives logits."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    if act is None and type(last).__name__ == "Softmax":
        return True
    return act is keras.activations.softmax or getattr(act, "__name__", "") == "softmax"


def check_model_args(num_classes, input_shape, include_top):
    """Validates the arguments every builder shares; returns ``input_shape`` as a tuple."""
    if include_top and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                        or num_classes < 1):
        raise ValueError(f"`num_classes` must be a positive integer when include_top=True, "
                         f"received {num_classes!r}.")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels), received {input_shape}.")
    return input_shape


@serializable
class ChannelPadShortcut(keras.layers.Layer):
    """Parameter-free shortcut "option A" of He et al. (2016), Sec. 4.2.

    Subsamples the input by ``stride`` (keeping every ``stride``-th pixel, starting at
    the first) and zero-pads the channels equally on both sides up to
    ``out_channels``, as in the CIFAR ResNets of the paper.

    Input ``(N, H, W, C)``; output ``(N, ceil(H/stride), ceil(W/stride), out_channels)``.
    """

    def __init__(self, out_channels: int, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def build(self, input_shape):
        extra = self.out_channels - int(input_shape[-1])
        if extra < 0:
            raise ValueError(f"ChannelPadShortcut cannot reduce channels: input has "
                             f"{input_shape[-1]}, out_channels={self.out_channels}.")
        self._pad = (extra // 2, extra - extra // 2)

    def call(self, x):
        x = x[:, ::self.stride, ::self.stride, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], list(self._pad)])

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        ceil = lambda d: None if d is None else -(-d // self.stride)  # noqa: E731
        return (n, ceil(h), ceil(w), self.out_channels)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "stride": self.stride}


@serializable
class PaddedMaxPooling2D(keras.layers.Layer):
    """Max pooling padded with -inf on every side, as PyTorch's ``nn.MaxPool2d(padding=p)``.

    Zero padding is only right after a ReLU (every value is >= 0); after SiLU or any
    activation with negative values a zero could win a window that holds only negative
    values. Keras's ``padding="same"`` pads even sizes on the bottom/right only.

    Input ``(N, H, W, C)``; output ``(N, (H + 2p - k) // s + 1, (W + 2p - k) // s + 1, C)``, same
    dtype.

    Raises:
        ValueError: ``pool_size``/``strides`` not positive integers, ``padding`` negative or not
            smaller than ``pool_size`` (a window of padding only).
    """

    def __init__(self, pool_size: int = 3, strides: int = 2, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = check_positive("pool_size", pool_size, integer=True)
        self.strides = check_positive("strides", strides, integer=True)
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding < self.pool_size:
            raise ValueError(f"`padding` must be an integer in [0, pool_size), received {padding!r}.")
        self.padding = padding
        self._pool = keras.layers.MaxPooling2D(self.pool_size, strides=self.strides, dtype=self.dtype_policy)

    def call(self, x):
        p = self.padding
        x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf"))
        return self._pool(x)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        size = lambda d: None if d is None else (d + 2 * self.padding - self.pool_size) // self.strides + 1  # noqa: E731
        return (n, size(h), size(w), c)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}
