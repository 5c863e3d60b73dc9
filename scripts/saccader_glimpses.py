"""Saccader accuracy against the number of glimpses, per glimpse policy, on a whole split.

For every image the representation network runs once; each policy then picks ``T_max`` glimpses
(the learned policy by its argmax, ``ordered_logits``, ``random``, ``center``, optionally the
Sobel policies), and the prediction with ``t`` glimpses is the mean of the first ``t`` glimpses'
patch logits, exactly ``model(images, num_glimpses=t, policy=...)`` (every policy chooses its
glimpses one after the other, so the first ``t`` of ``T_max`` glimpses are the ``t`` glimpses).
The BagNet baseline is the representation network's own prediction from the whole image (the
mean of all its patch logits). Writes a markdown table, a PNG plot (matplotlib) and the raw
curves (JSON).

    python scripts/saccader_glimpses.py /work/runs/sacc/3_saccader --split val \\
        --table docs/saccader/glimpses.md --plot docs/saccader/glimpses.png --json docs/saccader/glimpses.json

Reference: Elsayed, Kornblith & Le, "Saccader", NeurIPS 2019, Fig. 3 (accuracy against the
number of glimpses for the learned and engineered policies).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_attention.data import catalog  # noqa: E402
from keras_attention.evaluation import load_for_inference  # noqa: E402
from keras_attention.layers.saccader import POLICIES  # noqa: E402

DEFAULT_POLICIES = ("learned", "ordered_logits", "random", "center")
LABELS = {"learned": "learned (Saccader)", "ordered_logits": "ordered logits", "random": "random",
          "center": "center", "sobel_mean": "Sobel mean", "sobel_var": "Sobel variance",
          "representation": "BagNet-77 on the whole image"}


def policy_glimpse_logits(model, images, max_glimpses: int, policies=DEFAULT_POLICIES) -> dict:
    """Each policy's ``(N, T, K)`` float32 glimpse logits (numpy), the representation once.

    ``T`` is ``max_glimpses`` (at most ``h * w`` for the engineered policies, which never
    repeat a cell); key ``"representation"`` holds the BagNet's whole-image logits as ``(N, 1, K)``.
    """
    representation = model.representation(images, training=False)
    out = {"representation": keras.ops.mean(keras.ops.cast(representation[2], "float32"), axis=(1, 2))[:, None]}
    for policy in policies:
        out[policy] = model.policy_glimpses(images, representation, policy, max_glimpses)["glimpse_logits"]
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def correct_counts(glimpse_logits: dict, labels) -> dict:
    """Per policy, ``(T,)`` numbers of correct predictions with 1..T glimpses (prefix means)."""
    labels = np.asarray(labels)
    return {k: (np.argmax(np.cumsum(v, axis=1), axis=-1) == labels[:, None]).sum(0)
            for k, v in glimpse_logits.items()}


def accuracy_curves(glimpse_logits: dict, labels) -> dict:
    """Per policy, ``(T,)`` top-1 accuracy (percent) with 1..T glimpses."""
    return {k: 100.0 * v / len(labels) for k, v in correct_counts(glimpse_logits, labels).items()}


def markdown_table(curves: dict, rows, num_examples: int) -> str:
    """One row per number of glimpses, one column per policy; the BagNet baseline in every row."""
    policies = [p for p in curves if p != "representation"]
    head = "| glimpses | " + " | ".join(LABELS.get(p, p) for p in policies) + " | BagNet-77 (whole image) |"
    lines = [head, "|" + "---:|" * (len(policies) + 2)]
    for t in rows:
        cells = [f"{curves[p][t - 1]:.2f}" if t <= len(curves[p]) else "" for p in policies]
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {curves['representation'][0]:.2f} |")
    lines.append(f"\nTop-1 accuracy (%) on {num_examples:,} images.")
    return "\n".join(lines)


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, acc in curves.items():
        if policy == "representation":
            ax.axhline(acc[0], color="black", linestyle="--", linewidth=1, label=LABELS[policy])
        else:
            ax.plot(np.arange(1, len(acc) + 1), acc, marker="o", markersize=3, label=LABELS.get(policy, policy))
    ax.set_xlabel("number of glimpses")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a Saccader: training run folder, .keras file or registry name")
    parser.add_argument("--dataset", help="default: the model's pretrained.json dataset")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-glimpses", type=int, help="default: every cell of the grid (h * w)")
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), choices=POLICIES)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rows", type=int, nargs="+", help="glimpse counts in the table (default 1-12 and T)")
    parser.add_argument("--table", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    loaded = load_for_inference(args.model)
    model = loaded.model
    grid = model.grid_shape[0] * model.grid_shape[1]
    steps = args.max_glimpses or grid
    dataset = args.dataset or loaded.config.get("dataset")
    labels = loaded.label_names if loaded.config.get("label_names") else None  # as evaluation.evaluate
    source = catalog.load_source(dataset, args.split, label_names=labels)
    batches = catalog.pipeline_module("grain").eval_dataset(source, loaded.preprocessing, args.batch_size)
    totals, seen, start = None, 0, time.perf_counter()
    for images, labels in batches:
        counts = correct_counts(policy_glimpse_logits(model, images, steps, args.policies), labels)
        totals = counts if totals is None else {k: totals[k] + v for k, v in counts.items()}
        seen += len(labels)
        print(f"\r{seen}/{source.num_examples} images", end="", file=sys.stderr, flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s", file=sys.stderr)
    curves = {k: 100.0 * v / seen for k, v in totals.items()}
    rows = args.rows or sorted(set(range(1, min(12, steps) + 1)) | {steps})
    table = markdown_table(curves, rows, seen)
    print(table)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table + "\n")
    if args.plot:
        plot(curves, args.plot, f"{model.name} on {Path(str(dataset)).name} {args.split} ({seen:,} images)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model), "dataset": str(dataset), "split": args.split,
                                         "num_examples": seen, "grid": list(model.grid_shape),
                                         "top1": {k: [round(float(a), 4) for a in v] for k, v in curves.items()}},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
