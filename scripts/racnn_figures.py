#!/usr/bin/env python3
"""RA-CNN report material: accuracy with 1, 2 and 3 scales, and a figure of the proposed boxes.

    python scripts/racnn_figures.py evaluate RUN_FOLDER --dataset ../shared/data/imagewoof-160 --split val \
        --json docs/racnn/eval.json
    python scripts/racnn_figures.py figure RUN_FOLDER --dataset ../shared/data/imagewoof-160 --split val \
        --out docs/racnn/boxes.png

``evaluate`` scores the trained model over the whole split with 1, 2 and 3 scales in one pass
(``model(images, scales=s)``'s fusion of ``glimpse``'s per-scale logits). ``figure``
draws, for one image of each of the first classes, the input with the two proposed boxes
(``glimpse``'s ``boxes``, in the input's pixels) and the two zoomed crops.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_attention import data as kdata  # noqa: E402
from keras_attention.evaluation import (load_for_inference, load_image_file, preprocess_images,  # noqa: E402
                                        topk_correct)


def evaluate(args):
    """One pass over the split: each batch's three scales' logits (``glimpse``), fused over the first
    1, 2 or 3 scales exactly as ``model(images, scales=s)`` fuses them, scored with
    :func:`keras_attention.evaluation.topk_correct`."""
    loaded = load_for_inference(args.run)
    model = loaded.model
    source = kdata.load_source(args.dataset, args.split, label_names=loaded.label_names)
    batches = kdata.pipeline_module("auto").eval_dataset(source, loaded.preprocessing, args.batch_size)
    correct = {s: [0, 0] for s in (1, 2, 3)}
    nll = {s: 0.0 for s in (1, 2, 3)}
    seen = 0
    for images, labels in batches:
        scale_logits = model.glimpse(images)["scale_logits"]
        labels = np.asarray(labels, np.int64)
        for s in (1, 2, 3):
            logits = model._fuse([scale_logits[:, i] for i in range(s)])
            probs = np.asarray(keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1)), np.float64)
            correct[s][0] += int(topk_correct(probs, labels, 1).sum())
            correct[s][1] += int(topk_correct(probs, labels, 5).sum())
            nll[s] += float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).sum())
        seen += len(labels)
    results = {}
    for s in (1, 2, 3):
        top1, top5 = 100.0 * correct[s][0] / seen, 100.0 * correct[s][1] / seen
        results[f"scales_{s}"] = {"top1": top1, "top5": top5, "loss": nll[s] / seen, "num_examples": seen}
        print(f"scales 1..{s}: top-1 {top1:.2f}%  top-5 {top5:.2f}%  cross-entropy {nll[s] / seen:.4f}  "
              f"({seen} images)", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"run": str(args.run), "dataset": args.dataset, "split": args.split,
                                               "backend": keras.backend.backend(), **results}, indent=2) + "\n")


def figure(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    loaded = load_for_inference(args.run)
    model, pre = loaded.model, loaded.preprocessing
    split_dir = Path(args.dataset) / args.split
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())[:args.images]
    files = [sorted((split_dir / c).iterdir())[args.index] for c in classes]
    images = preprocess_images([load_image_file(f) for f in files], pre)
    out = model.glimpse(images)
    boxes, apn_boxes = (keras.ops.convert_to_numpy(out[k]) for k in ("boxes", "apn_boxes"))
    crops = [keras.ops.convert_to_numpy(c) for c in out["crops"]]
    scale_logits = keras.ops.convert_to_numpy(out["scale_logits"])
    mean, std = np.asarray(pre.mean), np.asarray(pre.std)
    show = lambda x: np.clip(x * std + mean, 0, 1)  # noqa: E731
    names = loaded.label_names
    fig, axes = plt.subplots(len(files), 3, figsize=(7.5, 2.6 * len(files)))
    for i, f in enumerate(files):
        truth = names.index(f.parent.name)
        preds = [names[j] for j in scale_logits[i].argmax(-1)]
        ax = axes[i, 0]
        ax.imshow(show(images[i]))
        for box, color in zip(boxes[i], ("red", "yellow")):
            top, left, bottom, right = box
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                   edgecolor=color, linewidth=2))
        ax.set_title(f"scale 1 ({images.shape[1]} px)\ntrue {names[truth]}\npred {preds[0]}", fontsize=7)
        cx, cy, half = apn_boxes[i, 1]
        axes[i, 1].imshow(show(crops[0][i]))
        axes[i, 1].add_patch(Rectangle((cx - half - 0.5, cy - half - 0.5), 2 * half, 2 * half, fill=False,
                                       edgecolor="yellow", linewidth=2))
        axes[i, 1].set_title(f"scale 2 (red crop, {crops[0].shape[1]} px)\npred {preds[1]}", fontsize=7)
        axes[i, 2].imshow(show(crops[1][i]))
        axes[i, 2].set_title(f"scale 3 (yellow crop, {crops[1].shape[1]} px)\npred {preds[2]}", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}; boxes (top, left, bottom, right) in input pixels:\n{np.round(boxes, 1)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("evaluate", "figure"):
        p = sub.add_parser(name)
        p.add_argument("run", help="a trained RA-CNN: run folder, .keras file, ...")
        p.add_argument("--dataset", default="../shared/data/imagewoof-160")
        p.add_argument("--split", default="val")
    sub.choices["evaluate"].add_argument("--batch-size", type=int, default=100)
    sub.choices["evaluate"].add_argument("--json", help="also write the numbers here")
    sub.choices["figure"].add_argument("--out", default="docs/racnn/boxes.png")
    sub.choices["figure"].add_argument("--images", type=int, default=4, help="one image of each of the first N classes")
    sub.choices["figure"].add_argument("--index", type=int, default=0, help="which image of each class folder")
    args = parser.parse_args(argv)
    (evaluate if args.command == "evaluate" else figure)(args)


if __name__ == "__main__":
    main()
