"""Figures (matplotlib, Agg): maps over the image, channel-gate heatmaps, SENet's Fig. 6.

* :func:`plot_explanation`: one image: the input with the prediction, Grad-CAM over it,
  every spatial map over it (CBAM's spatial gate, GC's context weights, the attention of
  a query position, residual-attention masks averaged over channels, the spatial
  transformer's sampling grid, a hard-attention model's glimpses as numbered boxes), and
  the channel gates of each stage as a heatmap
  (rows: blocks, columns: channels; SK's and split attention's per-path weights give one
  row per path);
* :func:`plot_channel_gates`: only the heatmaps;
* :func:`plot_excitation_per_class`: SENet (TPAMI 2019) Fig. 6, the mean gate per class
  at several depths, from :func:`~keras_attention.explain.excitation_per_class`.

Every function returns the ``matplotlib.figure.Figure``; :func:`save_figure` writes a PNG
atomically. Spatial maps are shown min-max scaled per panel (the range is in the title).
Not drawn: BAT's block transforms P and Q (``(N, G, b, b)`` matrices between block rows
and columns, not maps over the image); :func:`~keras_attention.explain.attention_maps`
returns them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from keras_attention._files import atomic_write

#: Map names drawn as one value per channel (rows of a stage's heatmap).
CHANNEL_MAPS = ("gate", "channel_gate", "mean_gate", "channel_weights", "transform")
#: Map names of per-path channel weights ``(N, paths, C)`` (SK, split attention): one row per path.
PATH_MAPS = ("path_weights", "split_weights")
#: Maps that are not over the image (never drawn as spatial panels).
_NOT_SPATIAL = ("theta", "grid", "output", "row_transform", "column_transform", "boxes", "locations",
                "glimpse_logits", "location_probability") + PATH_MAPS


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, path, dpi: int = 100) -> Path:
    """Writes ``figure`` as a PNG to ``path`` (atomically) and closes it; returns the path."""
    plt = _pyplot()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(figure)
    return path


def _where(entry) -> str:
    """A short location for titles: ``s3b1`` (stage 3, block 1), else the layer name."""
    return f"s{entry.stage}b{entry.block}" if entry.stage is not None else entry.layer


def spatial_panels(entry, index: int) -> list[tuple[str, np.ndarray]]:
    """``[(title, (h, w) array)]``: the spatial maps of one :class:`AttentionMap` for image ``index``.

    Channel-resolved maps (a residual-attention mask, a finite-extent GE gate) are averaged
    over the channels; pairwise attention gives one panel per query position.
    """
    where = _where(entry)
    panels = []
    for key, value in entry.maps.items():
        v = value[index]
        if key in _NOT_SPATIAL:
            continue  # the spatial transformer (drawn by _draw_grid), per-path channel weights, BAT's P and Q
        if key in ("attention", "position_attention") and entry.queries is not None and v.ndim == 3:
            for (qy, qx), plane in zip(entry.queries, v):
                panels.append((f"{where} {entry.kind}\nquery ({qy:.2f}, {qx:.2f})", plane))
        elif v.ndim == 2 and key not in ("attention", "channel_attention"):
            panels.append((f"{where} {entry.kind}\n{key}", v))
        elif v.ndim == 3 and key in ("mask", "gate"):
            panels.append((f"{where} {entry.kind}\n{key} (mean over C)", v.mean(axis=-1)))
    return panels


def _show_image(ax, image):
    ax.imshow(np.asarray(image, np.uint8), extent=(0, image.shape[1], image.shape[0], 0),
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def overlay(ax, image, heat, *, cmap="jet", alpha=0.5, title=None, scale=True):
    """Draws ``heat`` (any ``(h, w)``, stretched over the image, bilinear) over ``image`` on ``ax``."""
    _show_image(ax, image)
    heat = np.asarray(heat, np.float32)
    lo, hi = float(heat.min()), float(heat.max())
    shown = (heat - lo) / (hi - lo) if scale and hi > lo else heat
    ax.imshow(shown, extent=(0, image.shape[1], image.shape[0], 0), cmap=cmap, alpha=alpha,
              interpolation="bilinear", vmin=0.0, vmax=1.0)
    if title:
        ax.set_title(f"{title}\n[{lo:.3g}, {hi:.3g}]" if scale else title, fontsize=7)


def _draw_grid(ax, image, entry, index):
    """The spatial transformer's sampling points over ``image`` (normalised coordinates)."""
    _show_image(ax, image)
    grid = entry.maps["grid"][index]  # (h, w, 2) of (x, y) in [-1, 1]
    h, w = grid.shape[:2]
    step = max(1, max(h, w) // 8)
    pts = grid[::step, ::step].reshape(-1, 2)
    # input pixel centres: -1 and 1 are the border pixels' centres (see bilinear_sample)
    px = (pts[:, 0] + 1) * (image.shape[1] - 1) / 2 + 0.5
    py = (pts[:, 1] + 1) * (image.shape[0] - 1) / 2 + 0.5
    ax.scatter(px, py, s=4, c="cyan")
    ax.set_title(f"{_where(entry)} {entry.kind}\nsampling grid", fontsize=7)


def _draw_glimpses(ax, image, entry, index):
    """A hard-attention model's glimpses of image ``index``: numbered boxes in the order taken."""
    import matplotlib.patches as patches
    _show_image(ax, image)
    cmap = _pyplot().get_cmap("autumn")
    boxes = entry.maps["boxes"][index]
    for t, (top, left, bottom, right) in enumerate(boxes):
        colour = cmap(t / max(len(boxes) - 1, 1))
        ax.add_patch(patches.Rectangle((left, top), right - left, bottom - top, fill=False, lw=1.2,
                                       edgecolor=colour))
        ax.text(left + 2, top + 2, str(t + 1), color=colour, fontsize=6, va="top")
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_title(f"{entry.kind}\n{len(boxes)} glimpses (1 = first)", fontsize=7)


def _stage_gates(entries, index):
    """``{stage: (rows, labels, vmin, vmax)}`` of the channel maps, one row per block."""
    stages = {}
    for entry in entries:
        for key in CHANNEL_MAPS:
            value = entry.maps.get(key)
            if value is None or value.ndim != 2:
                continue
            label = f"b{entry.block} {key}" if entry.block is not None else f"{entry.layer} {key}"
            stages.setdefault((entry.stage, value.shape[1], key), []).append((label, value[index]))
            break
        for key in PATH_MAPS:
            value = entry.maps.get(key)
            if value is None or value.ndim != 3:
                continue
            where = f"b{entry.block}" if entry.block is not None else entry.layer
            stages.setdefault((entry.stage, value.shape[2], key), []).extend(
                (f"{where} path {m}", row) for m, row in enumerate(value[index]))
    return stages


def _draw_gates(fig, axes, entries, index):
    for ax, ((stage, channels, key), rows) in zip(axes, sorted(_stage_gates(entries, index).items(),
                                                             key=lambda kv: (kv[0][0] or 0, kv[0][1]))):
        data = np.stack([r for _, r in rows])
        gate_like = key != "transform" and data.min() >= 0 and data.max() <= 1
        bound = 1.0 if gate_like else max(float(np.abs(data).max()), 1e-12)  # diverging maps centred on 0
        image = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis" if gate_like else "coolwarm",
                          vmin=0.0 if gate_like else -bound, vmax=bound)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([label for label, _ in rows], fontsize=6)
        ax.set_xlabel("channel", fontsize=6)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(f"stage {stage}: {key} ({channels} channels)", fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01).ax.tick_params(labelsize=6)


def plot_channel_gates(maps, index: int = 0, *, title: str | None = None):
    """Per-stage heatmaps of the channel gates of image ``index`` (rows: blocks, columns: channels).

    Args:
        maps: :class:`~keras_attention.explain.AttentionMaps` (or a list of its entries).
        index: which image.
        title: figure title.
    """
    plt = _pyplot()
    entries = list(maps)
    groups = _stage_gates(entries, index)
    fig, axes = plt.subplots(max(1, len(groups)), 1, figsize=(7, 1.2 + 1.1 * max(1, len(groups))),
                             squeeze=False)
    _draw_gates(fig, axes[:, 0], entries, index)
    if not groups:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no channel gates", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_explanation(image, maps=None, gradcam=None, index: int = 0, *, label_names=None,
                     probabilities=None, true_label: str | None = None, title: str | None = None,
                     columns: int = 6):
    """One image explained: input and prediction, Grad-CAM, spatial maps, channel-gate heatmaps.

    Args:
        image: the displayed image ``(H, W, 3)`` uint8: the model's view of it before
            normalisation (``keras_attention.data.transforms.eval_view``).
        maps: :class:`~keras_attention.explain.AttentionMaps` of a batch holding the image
            (or ``None``).
        gradcam: :class:`~keras_attention.explain.GradCAM` of that batch (or ``None``).
        index: the image's position in the batch.
        label_names: class names (for the prediction and Grad-CAM titles).
        probabilities: ``(N, classes)`` softmax of the outputs, for the prediction's title.
        true_label: the image's true class, if known.
        title: figure title (e.g. the model's name).
        columns: panels per row.
    """
    plt = _pyplot()
    entries = list(maps) if maps is not None else []
    panels = [("input", None)]
    if gradcam is not None:
        panels.append(("gradcam", None))
    for entry in entries:
        if "grid" in entry.maps:
            panels += [("grid", entry), ("transformed", entry)]
        if "boxes" in entry.maps:
            panels.append(("glimpses", entry))
        panels += [(name, heat) for name, heat in spatial_panels(entry, index)]
    gate_groups = _stage_gates(entries, index)
    rows = math.ceil(len(panels) / columns)
    height_ratios = [1.0] * rows + [0.55] * len(gate_groups)
    fig = plt.figure(figsize=(1.75 * columns, 2.1 * rows + 1.05 * len(gate_groups)))
    grid = fig.add_gridspec(rows + len(gate_groups), columns, height_ratios=height_ratios)
    names = label_names or []

    def label(i):
        return names[i] if i < len(names) else f"class {i}"

    for i, (kind, payload) in enumerate(panels):
        ax = fig.add_subplot(grid[i // columns, i % columns])
        if kind == "input":
            _show_image(ax, image)
            lines = []
            if probabilities is not None:
                p = probabilities[index]
                top = int(np.argmax(p))
                lines.append(f"pred: {label(top)} {100 * p[top]:.0f}%")
            if true_label is not None:
                lines.append(f"true: {true_label}")
            ax.set_title("\n".join(lines) or "input", fontsize=7)
        elif kind == "gradcam":
            c = int(gradcam.class_indices[index])
            overlay(ax, image, gradcam.heatmaps[index], scale=False,
                    title=f"Grad-CAM ({label(c)})\n{gradcam.layer}")
        elif kind == "grid":
            _draw_grid(ax, image, payload, index)
        elif kind == "glimpses":
            _draw_glimpses(ax, image, payload, index)
        elif kind == "transformed":  # the spatial transformer's output (not aligned with the image)
            out = payload.maps["output"][index]
            shown = out if out.shape[-1] == 3 else out.mean(axis=-1)
            if shown.ndim == 3:
                shown = (shown - shown.min()) / max(float(shown.max() - shown.min()), 1e-12)
            ax.imshow(shown, cmap=None if shown.ndim == 3 else "inferno", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_where(payload)} {payload.kind}\noutput" + ("" if out.shape[-1] == 3 else " (mean over C)"),
                         fontsize=7)
        else:
            overlay(ax, image, payload, cmap="inferno", alpha=0.6, title=kind)
    gate_axes = [fig.add_subplot(grid[rows + j, :]) for j in range(len(gate_groups))]
    _draw_gates(fig, gate_axes, entries, index)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def default_depths(layers, stages, blocks, count: int = 6) -> list[str]:
    """Layers for Fig. 6: the last block of every stage, then every block of the last stage
    (SENet's choice for SE-ResNet-50: SE_2_3, SE_3_4, SE_4_6, SE_5_1..SE_5_3), at most ``count``."""
    if any(s is None for s in stages):
        step = max(1, len(layers) // count)
        return list(layers[::step])[:count]
    last_stage = max(stages)
    chosen = [layers[i] for i, s in enumerate(stages)
              if s != last_stage and (i + 1 == len(stages) or stages[i + 1] != s)]
    chosen += [layers[i] for i, s in enumerate(stages) if s == last_stage]
    return chosen[-count:]


def plot_excitation_per_class(result, *, layers=None, classes=None, title: str | None = None):
    """SENet Fig. 6: mean excitation per class (one line per class) at several depths.

    Args:
        result: :class:`~keras_attention.explain.ExcitationPerClass`.
        layers: which layers (default :func:`default_depths`).
        classes: which class names (default all), plus the mean over all images.
        title: figure title.
    """
    plt = _pyplot()
    layers = layers or default_depths(result.layers, result.stages, result.blocks)
    names = result.label_names
    chosen = [names.index(c) for c in classes] if classes else list(range(len(names)))
    cols = min(3, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    colours = plt.get_cmap("tab10" if len(chosen) <= 10 else "tab20")
    for ax, name in zip(axes.flat, layers):
        i = result.layers.index(name)
        per_class = result.per_class[name]
        x = np.arange(per_class.shape[1])
        for j, k in enumerate(chosen):
            ax.plot(x, per_class[k], lw=0.8, color=colours(j % colours.N), label=names[k])
        ax.plot(x, result.overall[name], lw=1.2, color="black", ls="--", label="all")
        where = f"stage {result.stages[i]}, block {result.blocks[i]}" if result.stages[i] else name
        ax.set_title(f"{where} ({result.map_name[name]})", fontsize=8)
        ax.set_xlabel("channel index", fontsize=7)
        ax.set_ylabel("mean activation", fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(layers):]:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(11, len(labels)), fontsize=7, frameon=False)
    fig.suptitle(title or f"Mean excitation per class: {result.dataset}", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
