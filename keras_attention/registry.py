"""Model names -> builders (architectures), and ``arch.tag`` name handling.

Builders are registered with :func:`register_model`; each takes keyword arguments
(``num_classes``, ``input_shape``, ``include_top``, ``pooling``, attention options, ...)
and returns a built, uncompiled ``keras.Model``. The builders register themselves when
:mod:`keras_attention.models` is imported, which the package's ``__init__`` does (this
module imports neither the models nor the weights). Pretrained tags (``arch.tag``) and
their configs live as data in ``weights/`` and are resolved by :mod:`keras_attention.weights`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import keras

from keras_attention._errors import InvalidInputError, did_you_mean


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture."""

    name: str
    builder: Callable[..., keras.Model]
    family: str  # module it was defined in, e.g. "resnet"
    summary: str  # first docstring line


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    """Function decorator: registers ``fn`` under its ``__name__`` as an architecture."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"Model {name!r} is registered twice.")
    summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
    _MODELS[name] = ModelEntry(name, fn, fn.__module__.rsplit(".", 1)[-1], summary)
    return fn


def split_model_name(name: str) -> tuple[str, str | None]:
    """``"se_resnet50.a1_in1k"`` -> ``("se_resnet50", "a1_in1k")``; no tag -> ``(name, None)``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered architecture names, optionally filtered by an ``fnmatch`` pattern.

    (``keras_attention.list_models(pretrained=True)`` lists the pretrained tags as well.)
    """
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_model_entry(name: str) -> ModelEntry:
    """The entry of architecture ``name`` (a tag after a dot is ignored).

    Raises:
        InvalidInputError: (a ``ValueError``) unknown name; the message lists the closest
            registered names.
    """
    arch, _ = split_model_name(name)
    if arch not in _MODELS:
        hint = did_you_mean(arch, _MODELS, n=5)
        raise InvalidInputError(f"Unknown model {name!r}.{hint} See keras_attention.list_models() "
                         f"for all {len(_MODELS)} names.")
    return _MODELS[arch]


def create_model(name: str, **kwargs) -> keras.Model:
    """Builds architecture ``name`` with random weights.

    Args:
        name: a registered architecture (``"se_resnet50"``); a ``.tag`` suffix is
            accepted and ignored (use :func:`keras_attention.load` for weights).
        **kwargs: builder arguments: ``num_classes``, ``input_shape`` (HWC),
            ``include_top``, ``pooling``, ``attention`` and its options, ...

    Raises:
        ValueError: unknown name (closest names listed) or invalid arguments.
    """
    return get_model_entry(name).builder(**kwargs)
