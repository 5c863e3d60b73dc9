"""What a training run writes as it goes: end-of-epoch checkpoints, throughput, history, curves.

Checkpoints (``checkpoints/ckpt-epochNNNN.keras``: model, optimizer state and step counter)
are written atomically at the end of every epoch, so a run killed at any moment resumes
from the last complete one.
"""

from __future__ import annotations

import csv
import math
import re
import time
from pathlib import Path

import keras

from keras_attention._files import atomic_write

CHECKPOINT_RE = re.compile(r"^ckpt-epoch(\d{4,})\.keras$")


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``[(epochs_done, path)]`` sorted by epoch; ignores temporary files."""
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves ``ckpt-epochNNNN.keras`` (model + optimizer) atomically after every epoch.

    ``NNNN`` is the number of completed epochs; older checkpoints are removed once
    the new one is in place (``keep`` are kept).
    """

    def __init__(self, ckpt_dir: Path, keep: int = 1):
        super().__init__()
        self.ckpt_dir = Path(ckpt_dir)
        self.keep = keep
        if self.ckpt_dir.is_dir():  # leftovers of a run killed while writing
            for stale in self.ckpt_dir.glob(".tmp-*"):
                stale.unlink(missing_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"ckpt-epoch{epoch + 1:04d}.keras"
        atomic_write(path, lambda tmp: self.model.save(tmp))
        for _, old in list_checkpoints(self.ckpt_dir)[:-self.keep]:
            old.unlink(missing_ok=True)


class RunMonitor(keras.callbacks.Callback):
    """Adds ``lr``, ``epoch_time`` (s) and ``images_per_s`` (training only) to the logs."""

    def __init__(self, steps_per_epoch: int, batch_size: int, schedule):
        super().__init__()
        self.steps = steps_per_epoch
        self.batch_size = batch_size
        self.schedule = schedule
        self.train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.train_end = None

    def on_train_batch_end(self, batch, logs=None):
        self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        now = time.perf_counter()
        train_time = (self.train_end or now) - self.start
        logs["lr"] = float(self.schedule((epoch + 1) * self.steps - 1))
        logs["epoch_time"] = now - self.start
        logs["images_per_s"] = self.steps * self.batch_size / max(train_time, 1e-9)


def truncate_history(path: Path, initial_epoch: int):
    """Drops rows of epochs >= ``initial_epoch`` (written before a kill, then redone)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < initial_epoch]
    atomic_write(path, lambda tmp: _write_rows(tmp, kept))


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def read_history(path: Path) -> dict[str, list[float]]:
    """The CSV log as ``{column: [values per epoch]}``."""
    if not Path(path).exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(float("nan"))
    return cols


def plot_history(history: dict, path: Path, title: str = ""):
    """PNG of loss, top-1 accuracy and learning rate per epoch (train and validation)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "top1", "top-1 accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                xs = [e for e, v in zip(epochs, values) if not math.isnan(v)]
                ys = [v for v in values if not math.isnan(v)]
                ax.plot(xs, ys, style, label=("validation " if prefix else "train ") + label)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if history.get("lr"):
        axes[2].plot(epochs, history["lr"])
    axes[2].set_xlabel("epoch")
    axes[2].set_title("learning rate (end of epoch)")
    axes[2].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
