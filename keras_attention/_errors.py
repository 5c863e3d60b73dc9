"""The "did you mean" hint shared by every error about an unknown name."""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(value, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.5) -> str:
    """``" Did you mean 'a', 'b'?"`` with the up to ``n`` closest ``choices`` to ``value``
    (``difflib`` ratio >= ``cutoff``), or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""
