"""Name -> attention layer factory, so a backbone can take ``attention="se"``.

Every registered attention layer infers its channel count from its input in
``build`` and takes the same keyword arguments for its bottleneck
(``reduction_ratio``, ``reduction_channels``, ``reduction_divisor``) where it has one,
so a backbone can build any of them from a name and a dict of options.
"""

from __future__ import annotations

from typing import Callable, Union

import keras

from keras_attention._errors import did_you_mean
from keras_attention.layers._common import serializable

ATTENTION_LAYERS: dict[str, type[keras.layers.Layer]] = {}

AttentionSpec = Union[None, str, type, keras.layers.Layer, Callable[..., keras.layers.Layer]]


def register_attention(*names: str):
    """Class decorator: registers an attention layer under ``names`` and as serializable."""

    def decorator(cls):
        cls = serializable(cls)
        for name in names:
            if name in ATTENTION_LAYERS and ATTENTION_LAYERS[name] is not cls:
                raise ValueError(f"Attention name {name!r} is already registered to "
                                 f"{ATTENTION_LAYERS[name].__name__}.")
            ATTENTION_LAYERS[name] = cls
        return cls

    return decorator


def list_attention() -> list[str]:
    """The registered attention names, sorted."""
    return sorted(ATTENTION_LAYERS)


def get_attention(name: str) -> type[keras.layers.Layer]:
    """The layer class registered under ``name``.

    Raises:
        ValueError: unknown name; the message lists the closest valid names.
    """
    key = name.lower().replace("-", "_")
    if key not in ATTENTION_LAYERS:
        hint = did_you_mean(key, ATTENTION_LAYERS, cutoff=0.4)
        raise ValueError(f"Unknown attention {name!r}.{hint} Valid names: {', '.join(list_attention())}.")
    return ATTENTION_LAYERS[key]


def create_attention(spec: AttentionSpec, name: str | None = None, **kwargs) -> keras.layers.Layer | None:
    """Builds one attention layer from ``spec`` (a new instance per call).

    Args:
        spec: ``None``/``"none"``/``False`` (no attention), a registered name such as
            ``"se"`` or ``"cbam"``, a ``keras.layers.Layer`` subclass, a layer instance
            (used as a template: a copy with the same config is made, so one instance
            can configure every block of a network), or a callable ``f(name=...)``
            returning a layer.
        name: the new layer's name.
        **kwargs: constructor arguments (e.g. ``reduction_ratio=8``); with an instance
            they override its config.

    Returns:
        A new, unbuilt layer, or ``None`` for no attention.

    Raises:
        ValueError: unknown name. TypeError: ``spec`` of an unsupported type.
    """
    if spec is None or spec is False or (isinstance(spec, str) and spec.lower() in ("none", "")):
        return None
    name_kw = {"name": name} if name else {}
    if isinstance(spec, str):
        return get_attention(spec)(**kwargs, **name_kw)
    if isinstance(spec, keras.layers.Layer):
        config = {**spec.get_config(), **kwargs, **name_kw}
        return type(spec).from_config(config)
    if isinstance(spec, type) and issubclass(spec, keras.layers.Layer):
        return spec(**kwargs, **name_kw)
    if callable(spec):
        layer = spec(**kwargs, **name_kw)
        if layer is not None and not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"An attention callable must return a keras Layer or None, "
                            f"received {type(layer).__name__}.")
        return layer
    raise TypeError("`attention` must be None, a name, a Layer subclass, a Layer instance or a "
                    f"callable returning a Layer; received {type(spec).__name__}.")
