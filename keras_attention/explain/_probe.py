"""The probe: one functional model over a model's own layers that also outputs their maps.

:func:`probe_model` walks the model's functional graph as ``keras.models.clone_model`` does
(``Functional._run_through_graph``), keeping every layer (so weights are shared, not
copied) and calling each selected attention layer through its ``call_with_maps`` (see
:mod:`keras_attention.layers._common`), which returns the layer's output *and* the maps it
computed on the way. The result is one graph in which each attention layer runs once:
its output feeds the rest of the network exactly as before, and its maps are extra
outputs. :func:`tap_model` does the same for the output of any layer (Grad-CAM's
features), adding a zero input there whose gradient is the gradient at that layer.
"""

from __future__ import annotations

import fnmatch
import re

import keras
from keras import ops

from keras_attention._errors import InvalidInputError, did_you_mean

#: Query positions of the pairwise layers when none are given: the centre of the map.
DEFAULT_QUERIES = ((0.5, 0.5),)

_STAGE_BLOCK = re.compile(r"stage(\d+)_(?:block|attention)(\d+)")


def has_maps(layer) -> bool:
    """Whether ``layer`` exposes its attention maps (has ``call_with_maps``)."""
    return callable(getattr(layer, "call_with_maps", None))


def stage_and_block(name: str) -> tuple[int | None, int | None]:
    """``(stage, block)`` from a deterministic layer name (``stage2_block3_attention`` ->
    ``(2, 3)``, ``stage1_attention0`` -> ``(1, 0)``); ``(None, None)`` if it has none."""
    match = _STAGE_BLOCK.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


def attention_layers(model: keras.Model, layers=None) -> list[keras.layers.Layer]:
    """The attention layers of ``model``'s graph, found by type, in graph order.

    Args:
        model: a functional or ``Sequential`` model.
        layers: ``None`` or ``"all"`` for every attention layer; else names, ``fnmatch``
            patterns (``"stage3_*"``) or class names (``"CBAM"``) selecting among them.

    Returns:
        The selected layers (each has ``call_with_maps``).

    Raises:
        InvalidInputError: a name or pattern that selects no attention layer (the
            attention layers of the model are listed).
    """
    found = [layer for layer in model.layers if has_maps(layer)]
    if layers is None or layers == "all" or list(layers) == ["all"]:
        return found
    if isinstance(layers, str):
        layers = [layers]
    selected = []
    for pattern in layers:
        hits = [layer for layer in found
                if fnmatch.fnmatchcase(layer.name, pattern) or type(layer).__name__ == pattern]
        if not hits:
            names = [layer.name for layer in found]
            hint = did_you_mean(pattern, names)
            raise InvalidInputError(
                f"{pattern!r} selects no attention layer of {model.name!r}.{hint} Its attention "
                f"layers: {', '.join(names) or 'none'}.")
        selected += [layer for layer in hits if layer not in selected]
    return [layer for layer in found if layer in selected]


class _MapProbe(keras.layers.Layer):
    """Calls ``layer.call_with_maps``: the layer's own output and its maps (as float32).

    Runtime only (never serialised); it holds the wrapped layer, so its weights are the
    wrapped layer's own variables.
    """

    def __init__(self, layer, queries, **kwargs):
        super().__init__(name=f"{layer.name}_maps", dtype=layer.dtype_policy, **kwargs)
        self.wrapped = layer
        self.queries = queries
        self.built = True

    def call(self, inputs, training=None):
        outputs, maps = self.wrapped.call_with_maps(inputs, training=training, queries=self.queries)
        return outputs, {key: ops.cast(value, "float32") for key, value in maps.items()}


def _walk(model: keras.Model, call_fn):
    """``(inputs, outputs)`` of ``model``'s graph re-run on new inputs through ``call_fn(layer, ...)``."""
    if not isinstance(model, keras.Sequential) and (
            not hasattr(model, "_run_through_graph") or not hasattr(model, "_nodes_by_depth")):
        raise InvalidInputError(f"Attention maps need a functional or Sequential model; "
                                f"{model.name!r} is a subclassed {type(model).__name__}.")
    inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name) for x in model.inputs]
    if isinstance(model, keras.Sequential):
        x = inputs[0]
        for layer in model.layers:
            x = call_fn(layer, x)
        return inputs, x
    # What keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=...)
    # runs, without its final check that the outputs depend on the original inputs only
    # (tap_model adds an input).
    structured = inputs[0] if len(inputs) == 1 else inputs
    return inputs, model._run_through_graph(structured, operation_fn=lambda layer: layer, call_fn=call_fn)


def probe_model(model: keras.Model, layers=None, queries=DEFAULT_QUERIES) -> keras.Model:
    """A model over ``model``'s own layers that outputs ``{"outputs": ..., "maps": ...}``.

    ``outputs`` is what ``model`` returns; ``maps`` is ``{layer name: {map name: float32
    tensor}}`` for the selected attention layers, taken from the same forward pass (each
    attention layer runs once, through its ``call_with_maps``). Weights are shared with
    ``model`` (nothing is copied). Run it with ``training=False``.

    Args:
        model: a functional or ``Sequential`` model (every registry model).
        layers: which attention layers (see :func:`attention_layers`); all by default.
        queries: ``(y, x)`` fractions in [0, 1] of the query positions of pairwise
            attention (non-local, SAGAN, DANet): only their rows are output, ``(N, Q, H', W')``.

    Raises:
        InvalidInputError: a selection that matches no attention layer, or a subclassed model.
    """
    selected = {id(layer) for layer in attention_layers(model, layers)}
    maps = {}

    def call_fn(layer, *args, **kwargs):
        if id(layer) in selected:
            outputs, layer_maps = _MapProbe(layer, queries)(*args, **kwargs)
            maps[layer.name] = layer_maps
            return outputs
        return layer(*args, **kwargs)

    inputs, outputs = _walk(model, call_fn)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], {"outputs": outputs, "maps": maps},
                       name=f"{model.name}_maps")


def tap_model(model: keras.Model, layer_name: str) -> keras.Model:
    """A model ``[images, delta] -> {"outputs", "features"}`` over ``model``'s layers.

    ``features`` is the output ``A`` of layer ``layer_name``; the network continues from
    ``A + delta``, so with ``delta = 0`` the outputs are the model's and the gradient of any
    output with respect to ``delta`` is its gradient with respect to ``A`` (Grad-CAM).

    Raises:
        InvalidInputError: no such layer (the closest names listed), or a layer with several
            outputs.
    """
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise InvalidInputError(f"{model.name!r} has no layer {layer_name!r}.{did_you_mean(layer_name, names)}")
    tapped = {}

    def call_fn(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if layer.name == layer_name:
            if not isinstance(outputs, keras.KerasTensor):
                raise InvalidInputError(f"Layer {layer_name!r} has several outputs; Grad-CAM needs a "
                                        f"layer with one feature map.")
            delta = keras.Input(batch_shape=outputs.shape, dtype=outputs.dtype, name="gradient_tap")
            tapped["features"], tapped["delta"] = outputs, delta
            outputs = keras.layers.Add(name=f"{layer_name}_tap", dtype=layer.dtype_policy)([outputs, delta])
        return outputs

    inputs, outputs = _walk(model, call_fn)
    if len(inputs) != 1:
        raise InvalidInputError(f"Grad-CAM needs a model with one image input; {model.name!r} has {len(inputs)}.")
    return keras.Model([inputs[0], tapped["delta"]], {"outputs": outputs, "features": tapped["features"]},
                       name=f"{model.name}_tap")
