"""Shared helpers for the attention layers: validation, reduction widths, registration.

Every layer in :mod:`keras_attention.layers` follows the same contract (taken from
Keras's own layers): ``__init__`` stores and validates the configuration, ``build``
creates weights and sub-layers (passing ``dtype=self.dtype_policy`` so mixed
precision reaches them), ``call`` uses ``keras.ops`` only, and ``get_config``
returns exactly the constructor arguments.

Attention maps. Every attention layer also has ``call_with_maps(inputs, training=None,
queries=None) -> (outputs, maps)``: ``outputs`` is exactly what ``call`` returns (``call``
is ``call_with_maps(...)[0]``, so the two cannot drift apart) and ``maps`` a dict of the
float tensors the layer computed on the way (its gates, attention weights, masks, ...;
the keys and shapes are listed in each class's ``MAPS``). ``queries`` (pairwise layers
only) are query positions as ``(y, x)`` fractions of the input map in ``[0, 1]``: the layer
then returns the attention rows of those positions only, ``(N, Q, H', W')``, instead of the
whole ``(N, H*W, H'*W')`` matrix. :mod:`keras_attention.explain` reads them from one
forward pass over a model (:func:`keras_attention.explain.probe_model`).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

PACKAGE = "keras_attention"

#: Decorator registering a class as Keras-serializable under one package name.
serializable = keras.saving.register_keras_serializable(package=PACKAGE)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Rounds ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``).

    The rounded value never drops below ``round_limit * value`` (it is bumped by one
    ``divisor`` if it would). Same rule as the MobileNet/timm reference code.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def he_fan_out() -> keras.initializers.Initializer:
    """He (Kaiming) normal initialisation, fan-out mode, as torchvision/timm initialise convolutions.

    A new instance per layer: a Keras initializer instance carries a fixed seed, so one
    shared instance would give every kernel of the same shape identical values. Its seed
    comes from Python's ``random``, which ``keras.utils.set_random_seed`` seeds.
    """
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def batch_norm_sublayer(layer: keras.layers.Layer, name: str) -> keras.layers.BatchNormalization:
    """A BatchNorm sub-layer with PyTorch's defaults (eps 1e-5, momentum 0.1 == Keras 0.9)."""
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, **sublayer_kwargs(layer, name))


def check_activation(activation) -> str:
    """Validates a Keras activation given by name; returns the name.

    Raises:
        TypeError: not a string. ValueError: not a Keras activation name.
    """
    if not isinstance(activation, str):
        raise TypeError(f"`activation` must be the name of a Keras activation (e.g. 'relu', 'silu'), "
                        f"received {activation!r} of type {type(activation).__name__}.")
    try:
        keras.activations.get(activation)
    except ValueError:
        raise ValueError(f"`activation` must be the name of a Keras activation (e.g. 'relu', 'silu'), "
                         f"received {activation!r}.") from None
    return activation


def reduced_channels(channels: int, reduction_ratio: float, reduction_channels: int | None,
                     reduction_divisor: int) -> int:
    """Width of a bottleneck: ``reduction_channels`` if given, else ``channels / r``.

    ``channels / r`` is rounded to a multiple of ``reduction_divisor`` (1 means plain
    floor division as in the SENet paper, ``C // r``, never less than 1).
    """
    if reduction_channels is not None:
        return int(reduction_channels)
    if reduction_divisor <= 1:
        return max(1, int(channels // reduction_ratio))
    return make_divisible(channels / reduction_ratio, reduction_divisor, round_limit=0.0)


def check_positive(name: str, value, *, integer: bool = False, allow_none: bool = False):
    """Raises ``ValueError``/``TypeError`` unless ``value`` is a positive number."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a {'positive integer' if integer else 'positive number'}, "
                        f"received {value!r} of type {type(value).__name__}.")
    if integer and int(value) != value:
        raise ValueError(f"`{name}` must be a positive integer, received {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be > 0, received {value!r}.")
    return int(value) if integer else value


def check_reduction(reduction_ratio, reduction_channels, reduction_divisor) -> tuple:
    """Validates the uniform bottleneck arguments; returns them (channels/divisor as int).

    Raises:
        ValueError/TypeError: a ratio, width or divisor that is not a positive number
            (the width and divisor must be integers; the width may be ``None``).
    """
    return (check_positive("reduction_ratio", reduction_ratio),
            check_positive("reduction_channels", reduction_channels, integer=True, allow_none=True),
            check_positive("reduction_divisor", reduction_divisor, integer=True))


def check_choice(name: str, value, choices):
    """Raises ``ValueError`` unless ``value`` is one of ``choices`` (listing them)."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(map(str, choices))}, received {value!r}.")
    return value


def check_image_shape(layer_name: str, input_shape) -> int:
    """Checks an NHWC input shape (rank 4, known channels) and returns the channels.

    Raises:
        ValueError: if the rank is not 4 or the channel dimension is unknown.
    """
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ValueError(f"{layer_name} expects a 4D input (batch, height, width, channels), "
                         f"received a {len(shape)}D input of shape {shape}.")
    if shape[-1] is None:
        raise ValueError(f"{layer_name} needs the channel dimension (last axis) to be known, "
                         f"received input shape {shape}.")
    return int(shape[-1])


def spatial_mean(x, keepdims: bool = False):
    """Mean over H and W of an NHWC tensor, accumulated in float32, returned in x's dtype.

    A float16 sum over a large feature map can overflow, so the reduction runs in
    float32 whatever the compute dtype.
    """
    return ops.cast(ops.mean(ops.cast(x, "float32"), axis=(1, 2), keepdims=keepdims), x.dtype)


def sublayer_kwargs(layer: keras.layers.Layer, name: str) -> dict:
    """Keyword arguments for a sub-layer: the parent's dtype policy and a scoped name."""
    return {"dtype": layer.dtype_policy, "name": f"{layer.name}_{name}"}


def query_indices(queries, height, width):
    """Flat row-major indices ``(Q,)`` (int32) of ``(y, x)`` fractions in ``[0, 1]`` on an H x W grid.

    Position ``(y, x)`` is the cell ``(min(floor(y H), H - 1), min(floor(x W), W - 1))``, so
    ``(0.5, 0.5)`` is the centre cell (the lower-right of the four for even sizes). H and W
    may be tensors (dynamic shapes).
    """
    fractions = ops.convert_to_tensor([[float(y), float(x)] for y, x in queries], "float32")
    h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
    rows = ops.minimum(ops.floor(fractions[:, 0] * h), h - 1.0)
    cols = ops.minimum(ops.floor(fractions[:, 1] * w), w - 1.0)
    return ops.cast(rows * w + cols, "int32")


def check_queries(queries):
    """Validates ``queries`` (a sequence of ``(y, x)`` fractions in [0, 1], or None); returns a tuple."""
    if queries is None:
        return None
    try:
        pairs = tuple((float(y), float(x)) for y, x in queries)
    except (TypeError, ValueError):
        raise ValueError(f"`queries` must be a sequence of (y, x) fractions in [0, 1], "
                         f"received {queries!r}.") from None
    if not pairs or any(not (0.0 <= v <= 1.0) for pair in pairs for v in pair):
        raise ValueError(f"`queries` must be a non-empty sequence of (y, x) fractions in [0, 1], "
                         f"received {queries!r}.")
    return pairs


def query_rows(attention, queries, height, width, key_height, key_width):
    """Rows of a float32 ``(N, H*W, H'*W')`` attention for ``queries``, as ``(N, Q, H', W')``.

    Without ``queries`` returns ``attention`` unchanged.
    """
    if queries is None:
        return attention
    rows = ops.take(attention, query_indices(queries, height, width), axis=1)
    return ops.reshape(rows, (ops.shape(attention)[0], len(queries), key_height, key_width))
