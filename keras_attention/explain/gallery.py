"""Regenerates ``docs/explain.md`` and its figures from the shipped CIFAR-10 weights.

    python -m keras_attention.explain.gallery                       # TFDS cifar10 ($TFDS_DATA_DIR)
    python -m keras_attention.explain.gallery --dataset /path/to/prepared/cifar10

Everything on the page is computed here: the test images (the first test image of a few
classes), the predictions, the maps, Grad-CAM, the per-class excitation of
``se_resnet20.cifar10`` over the whole test split and the class-specificity numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np

GALLERY_MODELS = ("se_resnet20.cifar10", "cbam_resnet20.cifar10", "gc_resnet20.cifar10")
GALLERY_CLASSES = ("airplane", "cat", "horse", "ship")
#: The spatial maps shown side by side: (model, map name), at the last block of each stage.
SPATIAL = (("cbam_resnet20.cifar10", "spatial_gate"), ("gc_resnet20.cifar10", "context_weights"))


def _pick_images(source, classes):
    labels = np.asarray(source.labels)
    indices = [int(np.flatnonzero(labels == source.label_names.index(c))[0]) for c in classes]
    return indices, list(source.read(np.asarray(indices)))


def _side_by_side(loaded, images, indices, truths, maps, cams, dpi):
    from keras_attention.explain.figures import _pyplot, _show_image, overlay
    from keras_attention.explain.report import display_view, softmax
    plt = _pyplot()
    columns = [("input", None)] + [("gradcam", name) for name in GALLERY_MODELS]
    for name, key in SPATIAL:
        for entry in maps[name]:
            if entry.block == max(e.block for e in maps[name] if e.stage == entry.stage):
                columns.append((key, (name, entry.layer)))
    fig, axes = plt.subplots(len(images), len(columns), figsize=(1.35 * len(columns), 1.55 * len(images)),
                             squeeze=False)
    first = loaded[GALLERY_MODELS[0]]
    for row, image in enumerate(images):
        view = display_view(image, first.preprocessing)
        for col, (kind, what) in enumerate(columns):
            ax = axes[row, col]
            if kind == "input":
                _show_image(ax, view)
                ax.set_title(f"test[{indices[row]}]: {truths[row]}", fontsize=6)
            elif kind == "gradcam":
                cam, lm = cams[what], loaded[what]
                p = softmax(cam.outputs, lm.outputs_probabilities)[row]
                c = int(cam.class_indices[row])
                overlay(ax, view, cam.heatmaps[row], scale=False,
                        title=f"{what.split('.')[0]}\nGrad-CAM: {lm.label_names[c]} {100 * p[c]:.0f}%")
            else:
                name, layer = what
                entry = maps[name][layer]
                overlay(ax, view, entry.maps[kind][row], cmap="inferno", alpha=0.6,
                        title=f"{name.split('_')[0].upper()} {kind}\ns{entry.stage}b{entry.block}")
    fig.tight_layout()
    return fig


def _gates_figure(maps, dpi):
    """Stage-3 channel gates of the SE and CBAM models for the gallery images (rows: image x block)."""
    from keras_attention.explain.figures import _pyplot
    plt = _pyplot()
    models = [m for m in GALLERY_MODELS if any(e.channel_gate is not None for e in maps[m])]
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 2.6), squeeze=False)
    for ax, name in zip(axes[0], models):
        entries = [e for e in maps[name] if e.stage == 3 and e.channel_gate is not None]
        rows, labels = [], []
        for i in range(len(maps[name].outputs)):
            for e in entries:
                rows.append(e.channel_gate[i])
                labels.append(f"img {i} b{e.block}")
        image = ax.imshow(np.stack(rows), aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=5)
        ax.set_xlabel("channel", fontsize=7)
        ax.set_title(f"{name}: stage-3 channel gates", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def class_specificity(result) -> list[dict]:
    """Per layer: the mean gate, and the spread of the per-class means across classes
    (standard deviation over classes, averaged over channels): SENet's Fig. 6 in numbers."""
    rows = []
    for name, stage, block in zip(result.layers, result.stages, result.blocks):
        per_class = result.per_class[name]
        rows.append({"layer": name, "stage": stage, "block": block,
                     "mean": float(result.overall[name].mean()),
                     "class_std": float(np.nanstd(per_class, axis=0).mean())})
    return rows


def _reading(rows) -> str:
    """One sentence on what the numbers show (computed, not typed)."""
    top = max(rows, key=lambda r: r["class_std"])
    low = min(rows, key=lambda r: r["class_std"])
    by_stage = {}
    for r in rows:
        by_stage.setdefault(r["stage"], []).append(r["class_std"])
    stages = ", ".join(f"stage {s} {np.mean(v):.4f}" for s, v in sorted(by_stage.items()))
    last = rows[-1]
    return (f"The most class-specific gate is stage {top['stage']} block {top['block']} (spread "
            f"{top['class_std']:.4f}), the least stage {low['stage']} block {low['block']} "
            f"({low['class_std']:.4f}); mean spread by stage: {stages}. The last gate's mean is "
            f"{last['mean']:.3f}: {'saturated (near 0 or 1)' if abs(last['mean'] - 0.5) > 0.4 else 'not saturated'}"
            f" in this 20-layer CIFAR network.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", help="TFDS name or prepared/class folder of CIFAR-10")
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR"))
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[2] / "docs")
    parser.add_argument("--dpi", type=int, default=64)
    args = parser.parse_args(argv)

    import keras

    from keras_attention.data import load_source
    from keras_attention.evaluation import load_for_inference
    from keras_attention.explain import attention_maps, excitation_per_class, grad_cam
    from keras_attention.explain.figures import plot_excitation_per_class, save_figure
    from keras_attention.explain.report import explain_images
    from keras_attention.weights import list_pretrained

    figures = args.docs / "explain"
    loaded = {name: load_for_inference(name) for name in GALLERY_MODELS}
    source = load_source(args.dataset, "test", data_dir=args.data_dir,
                         label_names=loaded[GALLERY_MODELS[0]].label_names)
    indices, images = _pick_images(source, GALLERY_CLASSES)
    truths = list(GALLERY_CLASSES)
    maps = {n: attention_maps(lm.model, images, preprocessing=lm.preprocessing) for n, lm in loaded.items()}
    cams = {n: grad_cam(lm.model, images, preprocessing=lm.preprocessing) for n, lm in loaded.items()}
    written = {"side_by_side": save_figure(_side_by_side(loaded, images, indices, truths, maps, cams, args.dpi),
                                           figures / "side_by_side.png", dpi=args.dpi),
               "gates": save_figure(_gates_figure(maps, args.dpi), figures / "channel_gates.png", dpi=args.dpi)}
    for name in GALLERY_MODELS:  # the `keras-attention explain` page of one image per model
        fig = explain_images(loaded[name], images[1:2], true_labels=truths[1:2])[0]
        written[name] = save_figure(fig, figures / f"{name.split('.')[0]}_{truths[1]}.png", dpi=args.dpi)
    se = loaded[GALLERY_MODELS[0]]
    result = excitation_per_class(se.model, source, se.preprocessing, batch_size=200, progress=True)
    fig6 = plot_excitation_per_class(result, title=f"{se.name}: mean excitation per class, {result.dataset}")
    written["fig6"] = save_figure(fig6, figures / "se_resnet20_excitation_per_class.png", dpi=args.dpi)
    specificity = class_specificity(result)
    non_local = [n for n in list_pretrained() if n.split(".")[0].startswith("nl_")]
    residual = [n for n in list_pretrained() if n.split(".")[0].startswith("attention")]

    def rel(path):
        return os.path.relpath(path, args.docs)

    predictions = []
    for name in GALLERY_MODELS:
        labels = loaded[name].label_names
        guesses = [labels[int(c)] for c in cams[name].class_indices]
        predictions.append(f"| `{name}` | " + " | ".join(
            f"{g}{'' if g == t else ' (wrong)'}" for g, t in zip(guesses, truths)) + " |")
    lines = [
        "# Explain: attention maps, Grad-CAM and figures",
        "",
        "<!-- Generated by `python -m keras_attention.explain.gallery`; do not edit by hand. -->",
        "",
        "```python",
        "import keras_attention as ka",
        "from keras_attention import explain",
        "from keras_attention.evaluation import load_for_inference",
        "",
        'lm = load_for_inference("cbam_resnet20.cifar10")       # model + preprocessing + labels',
        "maps = explain.attention_maps(lm.model, images, preprocessing=lm.preprocessing)  # one forward pass",
        'maps["stage3_block2_attention"].maps["spatial_gate"]   # (N, 8, 8)',
        "cam = explain.grad_cam(lm.model, images, preprocessing=lm.preprocessing)         # last stage",
        "```",
        "",
        "```",
        "keras-attention explain cbam_resnet20.cifar10 cat.png ship.jpg --output explained/",
        "keras-attention explain se_resnet20.cifar10 --dataset cifar10 --split test --excitation-per-class "
        "--output fig6/",
        "```",
        "",
        "Every attention layer returns its maps through `call_with_maps` (the same computation as its "
        "`call`); `explain.probe_model` builds one functional model over the model's own layers in "
        "which each attention layer runs once and also outputs its maps. Grad-CAM (Selvaraju et al., "
        "ICCV 2017) uses the gradient of the class logit at a layer's output (default: the last stage), "
        "from the backend's own autodiff (TensorFlow, JAX or PyTorch).",
        "",
        f"Generated on {datetime.date.today().isoformat()} (Keras {keras.__version__}, "
        f"{keras.backend.backend()} backend) from the shipped weights on CIFAR-10 test images: the first "
        f"test image of each of {', '.join(GALLERY_CLASSES)} (test indices {', '.join(map(str, indices))}).",
        "",
        "## SE, CBAM and GC on the same images",
        "",
        "Predictions (the class Grad-CAM explains):",
        "",
        "| model | " + " | ".join(f"test[{i}] ({t})" for i, t in zip(indices, truths)) + " |",
        "|---|" + "---|" * len(truths),
        *predictions,
        "",
        f"![side by side]({rel(written['side_by_side'])})",
        "",
        "Columns: the input; Grad-CAM of each model at its last stage (`stage3_block2_out`); CBAM's "
        "spatial gate and GC's context weights (softmax over positions) at the last block of each stage, "
        "over the image (each map min-max scaled, its range in the title). SE has no spatial map: its "
        "reading is the channel gate.",
        "",
        f"![channel gates]({rel(written['gates'])})",
        "",
        "Stage-3 channel gates (SE's excitation, CBAM's channel gate) of the four images, one row per "
        "image and block.",
        "",
        "Non-local: " + (f"shipped weights {', '.join(non_local)}." if non_local else
                         "no shipped weights for `nl_resnet50` (nor for the residual attention networks"
                         + (")" if not residual else f"; those have {', '.join(residual)})")
                         + ", so no non-local reading is shown; `explain.attention_maps` returns its "
                         "attention for chosen query positions, `(N, Q, H', W')`, as tested on random "
                         "weights in `tests/explain`."),
        "",
        "## One image as `keras-attention explain` writes it",
        "",
        *[f"![{n}]({rel(written[n])})\n" for n in GALLERY_MODELS],
        "## SENet Fig. 6: mean excitation per class",
        "",
        f"![fig6]({rel(written['fig6'])})",
        "",
        f"`{se.name}` on {result.dataset}: the mean SE gate of each class's images (coloured lines) and of "
        "all images (dashed), at the last block of stages 1-2 and every block of stage 3, as the SENet "
        "paper (Hu et al., TPAMI 2019, Sec. 7.2, Fig. 6) plots for SE-ResNet-50 on ImageNet, where the "
        "paper reads: early gates are nearly the same for every class, later ones differ by class, and "
        "the last ones saturate. Here, in numbers (*class spread*: the standard deviation over the 10 "
        "classes of the per-class mean gate, averaged over channels):",
        "",
        "| SE block | mean gate | class spread |",
        "|---|---:|---:|",
        *[f"| stage {r['stage']} block {r['block']} | {r['mean']:.3f} | {r['class_std']:.4f} |"
          for r in specificity],
        "",
        _reading(specificity),
        "",
    ]
    text = "\n".join(lines)
    page = args.docs / "explain.md"
    tmp = page.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, page)
    print(f"wrote {page} and {len(written)} figures in {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
