"""Renders the README's model table from the registry (``python -m keras_attention.docs``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from keras_attention.registry import get_model_entry, list_models

BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"


def model_table() -> str:
    """Markdown table of every registered architecture, grouped by family prefix."""
    pretrained: dict[str, list[str]] = {}
    for tag in list_models(pretrained=True):
        arch, _, suffix = tag.partition(".")
        pretrained.setdefault(arch, []).append(suffix)
    rows = ["| model | description | pretrained tags |", "|---|---|---|"]
    for name in list_models():
        tags = ", ".join(f"`{t}`" for t in sorted(pretrained.get(name, []))) or "-"
        rows.append(f"| `{name}` | {get_model_entry(name).summary} | {tags} |")
    return "\n".join(rows)


def render_readme(text: str) -> str:
    """``text`` with the block between the model-table markers replaced by a fresh table."""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no {BEGIN} ... {END} block.")
    return pattern.sub(f"{BEGIN}\n{model_table()}\n{END}", text)


def main(argv=None) -> int:
    path = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "README.md")
    path.write_text(render_readme(path.read_text()))
    print(f"updated the model table in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
