"""Model complexity: parameters and multiply-accumulates (MACs), as papers report them.

Papers' "GFLOPs" for CNNs (ResNet, SENet, CBAM, GCNet, ...) are multiply-accumulates of
the convolution and fully connected layers (plus the matrix products of attention),
not counting BatchNorm, activations, pooling or additions. :func:`count_macs` counts
exactly those by running one image through the model and recording the shapes seen
by every convolution, dense layer and ``keras.ops.matmul``.
"""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np


def count_params(model: keras.Model, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of a built model."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(math.prod(w.shape) for w in weights))


def _layer_macs(layer, inputs, outputs) -> int:
    # The batch axis counts: the model runs on ONE image, so a layer that sees a batch of B
    # (TNet's patches, a model's crops) works B times for that image.
    in_shape, out_shape = tuple(inputs.shape), tuple(outputs.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return math.prod(out_shape) * math.prod(layer.kernel_size)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        cin = in_shape[-1] // layer.groups
        return math.prod(out_shape) * math.prod(layer.kernel_size) * cin
    if isinstance(layer, keras.layers.Dense):
        return math.prod(out_shape) * in_shape[-1]
    return 0


@contextlib.contextmanager
def _recording(records: list):
    original_call = keras.layers.Layer.__call__
    original_matmul = keras.ops.matmul

    def call(self, *args, **kwargs):
        outputs = original_call(self, *args, **kwargs)
        if args and hasattr(args[0], "shape") and hasattr(outputs, "shape"):
            macs = _layer_macs(self, args[0], outputs)
            if macs:
                records.append((self.name, macs))
        return outputs

    def matmul(a, b):
        out = original_matmul(a, b)
        records.append(("matmul", math.prod(out.shape) * a.shape[-1]))
        return out

    keras.layers.Layer.__call__, keras.ops.matmul = call, matmul
    try:
        yield
    finally:
        keras.layers.Layer.__call__, keras.ops.matmul = original_call, original_matmul


def count_macs(model: keras.Model, input_shape=None, by_layer: bool = False):
    """Multiply-accumulates for ONE input image (the papers' "FLOPs").

    Args:
        model: a built model taking one NHWC image tensor.
        input_shape: ``(H, W, C)``; default the model's input shape (a subclassed model's
            ``image_shape``; must be fully known).
        by_layer: also return a list of ``(layer name, MACs)``.

    Returns:
        Total MACs (int), or ``(total, records)`` with ``by_layer=True``.

    Raises:
        ValueError: the input shape is not fully known and not given.
    """
    if input_shape is None:  # a functional model's input, or a subclassed one's image_shape
        input_shape = getattr(model, "image_shape", None) or model.input_shape[1:]
    input_shape = tuple(input_shape)
    if any(d is None for d in input_shape):
        raise ValueError(f"count_macs needs a fully known input shape, received {input_shape}; "
                         "pass input_shape=(H, W, C).")
    return count_call_macs(lambda: model(np.zeros((1, *input_shape), "float32"), training=False), by_layer)


def count_call_macs(fn, by_layer: bool = False):
    """Multiply-accumulates of every convolution, dense layer and ``keras.ops.matmul`` that ``fn()``
    runs, each times the batch it saw (so ``fn`` should run ONE image; a model that batches its
    patches or crops internally is counted in full).

    Returns:
        Total MACs (int), or ``(total, records)`` with ``by_layer=True``.
    """
    records: list = []
    with _recording(records):
        fn()
    total = int(sum(m for _, m in records))
    return (total, records) if by_layer else total
