"""Accuracy and MACs per image of a trained TNet against its levels and patches per level.

    python scripts/tnet_levels.py RUN_FOLDER --dataset ../shared/data/imagewoof-160 --split val \
        --output docs/tnet

Writes ``tnet_levels.json``, ``tnet_levels.md`` (a table) and ``tnet_accuracy_vs_macs.png``
into ``--output``. Every image of the split is classified once per configuration; MACs are
counted by :func:`keras_attention.models.tnet.tnet_macs` (one forward pass of one image).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package

import keras  # noqa: E402
import numpy as np  # noqa: E402

CONFIGS = [(1, ()), (2, (1,)), (2, (2,)), (2, (3,)), (2, (5,)), (3, (3, 1)), (3, (3, 2))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--dataset", default="../shared/data/imagewoof-160")
    parser.add_argument("--split", default="val")
    parser.add_argument("--output", default="docs/tnet")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="first N batches only (smoke test)")
    args = parser.parse_args(argv)

    from keras_attention._files import atomic_write_text, write_json
    from keras_attention.data import catalog
    from keras_attention.evaluation import load_for_inference
    from keras_attention.models.tnet import tnet_macs

    loaded = load_for_inference(args.run)
    model = loaded.model
    source = catalog.load_source(args.dataset, args.split)
    batches = catalog.pipeline_module("auto").eval_dataset(source, loaded.preprocessing, args.batch_size)
    correct = np.zeros(len(CONFIGS), np.int64)
    seen = 0
    start = time.time()
    for b, (images, labels) in enumerate(batches):
        if args.limit is not None and b >= args.limit:
            break
        for i, (levels, patches) in enumerate(CONFIGS):
            logits = keras.ops.convert_to_numpy(model(images, num_levels=levels,
                                                      patches_per_level=list(patches) or None))
            correct[i] += int((logits.argmax(-1) == labels).sum())
        seen += len(labels)
    rows = []
    for i, (levels, patches) in enumerate(CONFIGS):
        macs = tnet_macs(model, num_levels=levels, patches_per_level=list(patches) or None)
        rows.append({"levels": levels, "patches_per_level": list(patches), "passes": macs["passes"],
                     "top1": 100.0 * correct[i] / seen, "macs": macs["total"],
                     "full_resolution_macs": macs["full_resolution"]})
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {"run": str(args.run), "dataset": args.dataset, "split": args.split, "num_examples": seen,
              "seconds": time.time() - start, "rows": rows}
    write_json(out / "tnet_levels.json", result, indent=1)
    full = rows[0]["full_resolution_macs"]
    lines = ["| levels | patches per level | extractor passes | top-1 (%) | MMACs / image | vs full resolution |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['levels']} | {', '.join(map(str, r['patches_per_level'])) or '-'} | {r['passes']} | "
                     f"{r['top1']:.2f} | {r['macs'] / 1e6:.1f} | {r['macs'] / full:.2f}x |")
    lines.append(f"\nFull resolution (the extractor and a classifier on the whole {model.image_shape[0]} px "
                 f"image): {full / 1e6:.1f} MMACs. {seen} images of {args.split}.")
    atomic_write_text(out / "tnet_levels.md", "\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for levels in sorted({r["levels"] for r in rows}):
        pts = [r for r in rows if r["levels"] == levels]
        ax.plot([r["macs"] / 1e6 for r in pts], [r["top1"] for r in pts], "o-", label=f"{levels} level(s)")
        for r in pts:
            ax.annotate(",".join(map(str, r["patches_per_level"])) or "whole", (r["macs"] / 1e6, r["top1"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axvline(full / 1e6, color="grey", linestyle="--", label="full-resolution extractor")
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel(f"top-1 on {args.split} (%)")
    ax.set_title(f"TNet ({model.name}) on {Path(args.dataset).name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tnet_accuracy_vs_macs.png", dpi=120)


if __name__ == "__main__":
    main()
