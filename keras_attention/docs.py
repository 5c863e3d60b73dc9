"""Renders generated tables into the docs (``python -m keras_attention.docs``).

- the README's model table, from the model registry and the weights registry;
- ``docs/results.md``'s table of our trained weights, from their registry entries
  (``weights/*/pretrained.json``: the measured metrics and the command behind them).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from keras_attention.registry import get_model_entry, list_models

BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"
RESULTS_BEGIN, RESULTS_END = "<!-- results-table:begin -->", "<!-- results-table:end -->"
REPO_ROOT = Path(__file__).resolve().parents[1]


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


def results_table(dataset: str = "cifar10") -> str:
    """Markdown table of our own trained weights on ``dataset``, baseline first.

    Every number comes from the entry's ``pretrained.json`` (written by the training
    script from its evaluation on the full split) or is counted from the model.
    """
    from keras_attention import hub
    from keras_attention.complexity import count_params
    from keras_attention.registry import create_model

    cfgs = [hub.get_pretrained_cfg(n) for n in list_models(pretrained=True)]
    cfgs = [c for c in cfgs if c["format"] == "keras" and c["dataset"] == dataset]
    cfgs.sort(key=lambda c: (c["architecture"] != c["architecture"].split("_")[-1], c["name"]))
    rows = ["| model | params | top-1 (%) | top-5 (%) | epochs | train time (min) | reproduce |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for c in cfgs:
        params = count_params(create_model(c["architecture"], **c["model_kwargs"]))
        source, m = c.get("source") or {}, c["metrics"]
        minutes = f"{source['train_time_s'] / 60:.1f}" if source.get("train_time_s") else "n/a"
        rows.append(f"| `{c['name']}` | {params:,} | {m['top1']:.2f} | {m['top5']:.2f} | "
                    f"{source.get('epochs', 'n/a')} | {minutes} | `{source.get('command', 'n/a')}` |")
    return "\n".join(rows)


def _replace_block(text: str, begin: str, end: str, table: str, what: str) -> str:
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{what} has no {begin} ... {end} block.")
    return pattern.sub(lambda _: f"{begin}\n{table}\n{end}", text)


def render_readme(text: str) -> str:
    """``text`` with the block between the model-table markers replaced by a fresh table."""
    return _replace_block(text, BEGIN, END, model_table(), "README")


def render_results(text: str) -> str:
    """``text`` with the block between the results-table markers replaced by a fresh table."""
    return _replace_block(text, RESULTS_BEGIN, RESULTS_END, results_table(), "docs/results.md")


def main(argv=None) -> int:
    for path, render in ((REPO_ROOT / "README.md", render_readme),
                         (REPO_ROOT / "docs" / "results.md", render_results)):
        path.write_text(render(path.read_text()))
        print(f"updated the generated table in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
