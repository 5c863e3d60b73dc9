"""Evaluates every readout of a trained multi_granularity run on the full val split in one pass,
and draws the discovered regions on 4 val images.

usage: python scripts/granularity_evaluate.py RUN_FOLDER OUT_JSON OUT_PNG
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attention  # noqa: F401, E402  (registers the models)
from keras_attention import data as kdata  # noqa: E402
from keras_attention._files import write_json  # noqa: E402

run, out_json, out_png = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cfg = json.loads((run / "train_config.json").read_text())
model = keras.saving.load_model(run / "model.keras")
levels = list(model.levels)
pre = kdata.Preprocessing(input_size=cfg["input_size"], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                          mean=cfg["mean"], std=cfg["std"])
train = kdata.load_source(cfg["dataset"], cfg["train_split"])
source = kdata.load_source(cfg["dataset"], cfg["val_split"], label_names=train.label_names)
assert list(train.label_names) == list(model.hierarchy.classes)
batches = kdata.pipeline_module("grain").eval_dataset(source, pre, 100)
maps = [model.hierarchy.mapping_matrix(level).argmax(-1) for level in levels]
hits = {}
seen = 0
t0 = time.time()
glimpse = model.glimpse
for images, labels in batches:
    labels = np.asarray(labels).astype(np.int64)
    out = glimpse(images)
    np_ = keras.ops.convert_to_numpy
    reads = {"all (concatenated descriptors)": np_(out["all_logits"]),
             "fine detector on the whole image": np_(out["detector_logits"][-1])}
    for i, level in enumerate(levels):
        reads[f"probe on the {level} descriptor alone"] = np_(out["glimpse_logits"][:, i])
    for name, logits in reads.items():
        hits[name] = hits.get(name, 0) + int((logits.argmax(-1) == labels).sum())
    for i, level in enumerate(levels):  # each network at its own level's classes
        target = maps[i][labels]
        for kind, key in (("detector", "detector_logits"), ("describer", "level_logits")):
            name = f"{kind} {level} at its level ({model.hierarchy.mapping_matrix(level).shape[1]} classes)"
            hits[name] = hits.get(name, 0) + int((np_(out[key][i]).argmax(-1) == target).sum())
    seen += len(labels)
result = {"run": str(run), "split": cfg["val_split"], "num_examples": seen,
          "top1": {k: round(100.0 * v / seen, 2) for k, v in hits.items()}, "eval_seconds": round(time.time() - t0, 1)}
write_json(out_json, result, indent=1)
print(json.dumps(result, indent=1))

# discovered regions on 4 val images of 4 different classes
import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

picks = [int(np.flatnonzero(source.labels == c)[0]) for c in (0, 2, 4, 7) if (source.labels == c).any()]
picks = (picks + [i for i in range(4) if i not in picks])[:4]
# decode the 4 picked images through the same preprocessing
arrays = []
for batch_images, batch_labels in kdata.pipeline_module("grain").eval_dataset(source, pre, 100):
    arrays.append(np.asarray(batch_images))
    if sum(len(a) for a in arrays) > max(picks):
        break
allimg = np.concatenate(arrays)[picks]
out = glimpse(allimg)
boxes = keras.ops.convert_to_numpy(out["boxes"])
pred = keras.ops.convert_to_numpy(out["all_logits"]).argmax(-1)
shown = np.clip(allimg * np.array(cfg["std"]) + np.array(cfg["mean"]), 0, 1)
colors = ["tab:orange", "tab:green", "tab:red"]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
h = model.hierarchy
for ax, img, b, idx, p in zip(axes, shown, boxes, picks, pred):
    ax.imshow(img)
    for level, (top, left, bottom, right), color in zip(levels, b, colors):
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, lw=2, ec=color,
                               label=level))
    truth = h.classes[int(source.labels[idx])]
    ax.set_title(f"{h.name(truth).split(',')[0]}\npredicted: {h.name(h.classes[p]).split(',')[0]}", fontsize=9)
    ax.axis("off")
axes[0].legend(loc="lower left", fontsize=7)
fig.suptitle("Discovered regions per granularity level (CAM of each level's detector >= 0.5 of its range)",
             fontsize=10)
fig.tight_layout(rect=(0, 0, 1, 0.92))
fig.savefig(out_png, dpi=100)
print("wrote", out_png)
