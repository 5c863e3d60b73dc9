"""Inference precision: a float32 model as the same model computing in bfloat16 (or float16).

:func:`with_precision` rebuilds a functional model layer by layer (``keras.models.clone_model``)
with the mixed-precision dtype policy (float32 variables, bfloat16 computation), except the
layers that produce the model's outputs (the classifier returns float32 logits, as the style
guide asks of mixed precision) and global pooling layers (a mean over H*W values), which
stay float32, then copies the weights. The attention layers keep their own reductions that
overflow or lose mass in half precision (softmax over H*W, spatial means) in float32.
"""

from __future__ import annotations

import keras

from keras_attention._errors import InvalidInputError

#: Precision name -> Keras dtype policy.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an :class:`InvalidInputError`."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {sorted(PRECISIONS)}; received {precision!r}.")
    return precision


def with_precision(model: keras.Model, precision: str = "bfloat16") -> keras.Model:
    """``model`` computing in ``precision`` (same weights); ``model`` itself for ``"float32"``.

    Args:
        model: a functional or ``Sequential`` model with float32 layers.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Returns:
        A new model whose layers use the ``mixed_<precision>`` policy, except the output
        and global pooling layers (float32), with ``model``'s weights.

    Raises:
        InvalidInputError: unknown ``precision``.
    """
    policy = PRECISIONS[check_precision(precision)]
    if policy == "float32":
        return model
    outputs = {id(t._keras_history.operation) for t in keras.tree.flatten(model.outputs)}
    pooling = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)

    def clone(layer):
        config = layer.get_config()
        if id(layer) not in outputs and not isinstance(layer, pooling):
            config["dtype"] = policy
        return type(layer).from_config(config)

    new = keras.models.clone_model(model, clone_function=clone)
    new.set_weights(model.get_weights())
    return new
