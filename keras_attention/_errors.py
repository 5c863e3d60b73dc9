"""The package's own error types and the "did you mean" hint of unknown-name errors.

Errors that the package raises on purpose about what it was given (options, names, files,
datasets, weights) derive from :class:`KerasAttentionError`, so the command line can turn
exactly those into one-line messages and let every other exception (a bug) show its
traceback. Each also derives from the built-in type callers would expect
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class KerasAttentionError(Exception):
    """Base class of the errors keras_attention raises on purpose about its input."""


class InvalidInputError(KerasAttentionError, ValueError):
    """A bad option, name, file or dataset; the message says what was expected and received."""


class MissingFileError(KerasAttentionError, FileNotFoundError):
    """A file or folder the call needs does not exist; the message names it."""


def did_you_mean(value, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.5) -> str:
    """``" Did you mean 'a', 'b'?"`` with the up to ``n`` closest ``choices`` to ``value``
    (``difflib`` ratio >= ``cutoff``), or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""
