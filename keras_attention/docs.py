"""Renders generated tables into the docs (``python -m keras_attention.docs``).

- the README's model table, from the model registry and the weights registry;
- ``docs/results.md``'s tables of our trained weights, one per training recipe, from
  their registry entries (``weights/*/pretrained.json``: the measured metrics and the
  command behind them).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from keras_attention.complexity import count_macs, count_params
from keras_attention.registry import create_model, get_model_entry, list_models
from keras_attention.weights import get_pretrained_cfg, list_pretrained

BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"
# docs/results.md's generated tables: marker name -> the recipe whose weights it lists.
# A value may name several recipes (a multi-phase method's weights come from its last phase's recipe).
RESULTS_TABLES = {"results-table": "cifar10_resnet_short.yaml",
                  "colornet-table": "cifar10_colornet_short.yaml",
                  "imagewoof-attention-table": ("imagewoof_saccader_3_saccader.yaml", "imagewoof_tnet.yaml",
                                                "imagewoof_racnn_classifiers.yaml",
                                                "imagewoof_granularity_descriptors.yaml")}
PER_CLASS_TABLES = {"colornet-per-class": "cifar10_colornet_short.yaml"}
REPO_ROOT = Path(__file__).resolve().parents[1]


def model_table() -> str:
    """Markdown table of every registered architecture, grouped by family prefix."""
    pretrained: dict[str, list[str]] = {}
    for tag in list_pretrained():
        arch, _, suffix = tag.partition(".")
        pretrained.setdefault(arch, []).append(suffix)
    rows = ["| model | description | pretrained tags |", "|---|---|---|"]
    for name in list_models():
        tags = ", ".join(f"`{t}`" for t in sorted(pretrained.get(name, []))) or "-"
        rows.append(f"| `{name}` | {get_model_entry(name).summary} | {tags} |")
    return "\n".join(rows)


def recipes_of(value) -> tuple[str, ...]:
    """A :data:`RESULTS_TABLES` value as a tuple of recipe file names."""
    return (value,) if isinstance(value, str) else tuple(value)


def results_table(recipe) -> str:
    """Markdown table of our own trained weights made with ``recipe`` (a file name in
    ``weights/_recipes``, or several), best top-1 first.

    Every number comes from the entry's ``pretrained.json`` (written by the training
    script from its evaluation on the full split) or is counted from the model
    (trainable parameters; multiply-accumulates for one image at the input size). A run that
    started from another (``init_from``: a phase of a multi-phase method) gives its own epochs
    and time, marked "last phase"; its card gives the whole chain.
    """
    recipes = recipes_of(recipe)
    cfgs = [get_pretrained_cfg(n) for n in list_pretrained()]
    cfgs = [c for c in cfgs if Path((c.get("source") or {}).get("recipe") or "").name in recipes]
    cfgs.sort(key=lambda c: (-c["metrics"]["top1"], c["name"]))
    rows = ["| model | params | MACs | top-1 (%) | top-5 (%) | epochs | train time (min) | reproduce |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in cfgs:
        model = create_model(c["architecture"], **c["model_kwargs"])
        source, m = c["source"], c["metrics"]
        minutes = f"{source['train_time_s'] / 60:.1f}" if source.get("train_time_s") else "n/a"
        phase = " (last phase)" if "init_from" in (source.get("command") or "").replace("-", "_") else ""
        rows.append(f"| `{c['name']}` | {count_params(model):,} | {count_macs(model) / 1e6:.1f} M | "
                    f"{m['top1']:.2f} | {m['top5']:.2f} | {source.get('epochs', 'n/a')}{phase} | {minutes}{phase} | "
                    f"`{source.get('command', 'n/a')}` |")
    return "\n".join(rows)


def per_class_table(recipe: str) -> str:
    """Markdown table of the per-class top-1 (%) of the weights made with ``recipe`` that
    record it (``metrics.per_class_top1``), best overall top-1 first; the best model of
    each class in bold."""
    cfgs = [get_pretrained_cfg(n) for n in list_pretrained()]
    cfgs = [c for c in cfgs if Path((c.get("source") or {}).get("recipe") or "").name == recipe
            and c["metrics"].get("per_class_top1")]
    if not cfgs:
        return "(no weights of this recipe record per-class accuracy)"
    cfgs.sort(key=lambda c: (-c["metrics"]["top1"], c["name"]))
    labels = list(cfgs[0]["metrics"]["per_class_top1"])
    best = {label: max((c["metrics"]["per_class_top1"][label] or 0.0) for c in cfgs) for label in labels}
    rows = ["| model | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for c in cfgs:
        cells = []
        for label in labels:
            v = c["metrics"]["per_class_top1"].get(label)
            cells.append("n/a" if v is None else f"**{v:.1f}**" if v == best[label] else f"{v:.1f}")
        rows.append(f"| `{c['name']}` | " + " | ".join(cells) + " |")
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
    """``text`` with each generated block (:data:`RESULTS_TABLES`, :data:`PER_CLASS_TABLES`:
    marker name -> recipe) replaced by a fresh table."""
    def fill(text, marker, table):
        return _replace_block(text, f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->", table,
                              "docs/results.md")

    for marker, recipe in RESULTS_TABLES.items():
        text = fill(text, marker, results_table(recipe))
    for marker, recipe in PER_CLASS_TABLES.items():
        text = fill(text, marker, per_class_table(recipe))
    return text


def main(argv=None) -> int:
    for path, render in ((REPO_ROOT / "README.md", render_readme),
                         (REPO_ROOT / "docs" / "results.md", render_results)):
        path.write_text(render(path.read_text()))
        print(f"updated the generated table in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
