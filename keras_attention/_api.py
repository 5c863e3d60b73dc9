"""The public API module: where the architecture registry and the weights registry meet.

``keras_attention`` re-exports :func:`list_models` from here; it needs both registries, so it
lives above :mod:`keras_attention.registry` and :mod:`keras_attention.weights`.
"""

from __future__ import annotations

import fnmatch

from keras_attention import registry
from keras_attention.weights import list_pretrained


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Sorted model names, optionally filtered by an ``fnmatch`` pattern.

    Args:
        pattern: e.g. ``"*se_resnet*"``; ``None`` lists all.
        pretrained: list the pretrained tags (``arch.tag``) whose registry entries are
            valid, instead of the registered architectures.

    Returns:
        The names, sorted.
    """
    if not pretrained:
        return registry.list_models(pattern)
    names = list_pretrained()
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names
