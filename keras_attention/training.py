"""Training any registry model on a TFDS dataset or a class folder (``keras-attention train``).

One call, :func:`train`, does a whole run from a :class:`TrainConfig` (usually a
recipe file from ``weights/_recipes/`` plus command-line overrides):

* data: :mod:`keras_attention.data` (TFDS by name or a class folder), augmented by
  the config's recipe, deterministic from ``seed`` (epoch ``e`` depends only on
  ``(seed, e)``);
* model: ``keras_attention.create_model(model, num_classes=..., input_shape=...,
  **model_kwargs)``;
* optimizer: SGD with (Nesterov) momentum or AdamW; per-step cosine schedule with
  linear warmup (:class:`WarmupCosine`); label smoothing;
* weight decay on kernels only (BatchNorm/LayerNorm parameters and biases, i.e. all
  variables with fewer than two dimensions, are skipped), in one of two forms:

  - ``"l2"`` (default for SGD): classic L2 regularisation, ``wd/2 * ||w||^2`` added to
    the loss, so its gradient ``wd * w`` goes through momentum, as in the ResNet
    paper's recipe (He et al. 2016: SGD, momentum 0.9, weight decay 1e-4) and
    PyTorch's ``SGD(weight_decay=...)``;
  - ``"decoupled"`` (default for AdamW; Loshchilov & Hutter 2019): Keras's optimizer
    ``weight_decay``, which applies ``w -= lr * wd * w`` after the update, outside
    momentum/Adam statistics. For SGD with momentum ``m`` the same decay strength
    needs roughly ``wd_decoupled = wd_l2 / (1 - m)``; the values are not
    interchangeable, which is why the mode is explicit in every recipe;

* mixed precision by Keras dtype policy (``mixed_float16`` with a
  ``LossScaleOptimizer``, or ``mixed_bfloat16``);
* distribution: ``tf.distribute.MirroredStrategy`` / ``MultiWorkerMirroredStrategy``
  (``TF_CONFIG``) on TensorFlow, ``keras.distribution.DataParallel`` on JAX;
* an atomic checkpoint at the end of every epoch (``checkpoints/ckpt-epochNNNN.keras``:
  model, optimizer state and step counter, written to a temporary file and
  ``os.replace``-d into place) and ``resume=True``, which continues a run killed at any
  moment from the last checkpoint with the same optimizer state, epoch, learning-rate
  schedule and data order, and ends after the same number of optimizer steps;
* an output folder (see :func:`train`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from keras_attention._errors import did_you_mean
from keras_attention._errors import InvalidInputError
from keras_attention.weights import (PAPERS as _PAPERS, paper_for as _paper_for, pretrained_config,  # noqa: F401
                                     recipe_ref as _recipe_ref, sha256_file)

PRECISIONS = {"off": "float32", "float32": "float32", "float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16"}
DISTRIBUTE = ("off", "mirrored", "multiworker", "data_parallel")
OPTIMIZERS = ("sgd", "adamw")
CHECKPOINT_RE = re.compile(r"^ckpt-epoch(\d{4,})\.keras$")


# --------------------------------------------------------------------------- schedule
@keras.saving.register_keras_serializable(package="keras_attention")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup then cosine decay, per optimizer step.

    ``lr(s) = warmup_init + (peak - warmup_init) * s / warmup_steps`` for
    ``s < warmup_steps``; then ``final + (peak - final) * (1 + cos(pi * t)) / 2`` with
    ``t = (s - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1]
    (SGDR without restarts, Loshchilov & Hutter 2017; warmup as in Goyal et al. 2017).

    Args:
        peak_lr: learning rate after warmup (> 0).
        total_steps: optimizer steps of the whole run (> 0).
        warmup_steps: steps of linear warmup (0 <= warmup_steps < total_steps).
        warmup_init_lr: learning rate at step 0 (default 0).
        final_lr: learning rate at the last step (default 0).
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, warmup_init_lr=0.0, final_lr=0.0):
        if not peak_lr > 0:
            raise InvalidInputError(f"peak_lr must be > 0; received {peak_lr}.")
        if int(total_steps) <= 0:
            raise InvalidInputError(f"total_steps must be > 0; received {total_steps}.")
        if not 0 <= int(warmup_steps) < int(total_steps) and int(warmup_steps) != 0:
            raise InvalidInputError(f"warmup_steps must be in [0, total_steps={total_steps}); received "
                             f"{warmup_steps}.")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_init_lr = float(warmup_init_lr)
        self.final_lr = float(final_lr)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warm_lr = self.warmup_init_lr + (self.peak_lr - self.warmup_init_lr) * step / warm
        span = float(max(self.total_steps - self.warmup_steps, 1))
        t = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cos_lr = self.final_lr + (self.peak_lr - self.final_lr) * 0.5 * (1.0 + ops.cos(math.pi * t))
        return ops.where(step < self.warmup_steps, warm_lr, cos_lr)

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_init_lr": self.warmup_init_lr,
                "final_lr": self.final_lr}


# --------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything a training run depends on (a recipe file holds these keys).

    Data: ``dataset`` (TFDS name or class-folder path), ``data_dir``, ``train_split``,
    ``val_split`` (``None``: no validation), ``cache``, ``skip_corrupt``, ``verify``.
    Preprocessing: ``input_size`` (H, W, 3), ``crop_pct``, ``interpolation``,
    ``mean``, ``std``, ``augment`` (``"cifar"``, ``"imagenet"``, ``"none"``), ``pad``,
    ``scale``, ``ratio``, ``hflip``.
    Optimisation: ``epochs``, ``batch_size`` (global), ``optimizer`` (``"sgd"`` or
    ``"adamw"``), ``lr`` (peak), ``momentum``, ``nesterov``, ``beta_1``, ``beta_2``,
    ``weight_decay``, ``weight_decay_mode`` (``"l2"``, ``"decoupled"``, ``"auto"``: l2
    for SGD, decoupled for AdamW), ``warmup_epochs``, ``warmup_init_lr``,
    ``final_lr``, ``label_smoothing``, ``grad_clip_norm`` (``None``: off).
    Run: ``mixed_precision`` (``"off"``, ``"float16"``, ``"bfloat16"``),
    ``distribute`` (``"off"``, ``"mirrored"``, ``"multiworker"``, ``"data_parallel"``),
    ``logical_cpus`` (split the CPU into N logical devices: tests the multi-replica
    path without GPUs), ``seed``, ``deterministic`` (TensorFlow op determinism),
    ``val_every`` (epochs), ``steps_per_execution``, ``output_dir``, ``resume``,
    ``tag`` (pretrained tag written into ``pretrained.json``; default: the dataset
    name), ``verbose`` (Keras progress bar: 1 bar, 2 one line per epoch, 0 silent),
    ``recipe`` (the recipe file it came from, recorded in the outputs).
    """

    model: str = "resnet20"
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = "cifar10"
    data_dir: str | None = None
    train_split: str = "train"
    val_split: str | None = "test"
    cache: str = "auto"
    skip_corrupt: bool = False
    verify: str = "header"
    input_size: tuple = (32, 32, 3)
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    mean: tuple = (0.4914, 0.4822, 0.4465)
    std: tuple = (0.2470, 0.2435, 0.2616)
    augment: str = "cifar"
    pad: int = 4
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: bool = True
    epochs: int = 180
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    beta_1: float = 0.9
    beta_2: float = 0.999
    weight_decay: float = 5e-4
    weight_decay_mode: str = "auto"
    warmup_epochs: float = 0.0
    warmup_init_lr: float = 0.0
    final_lr: float = 0.0
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    mixed_precision: str = "off"
    distribute: str = "off"
    logical_cpus: int | None = None
    seed: int = 0
    deterministic: bool = False
    val_every: int = 1
    steps_per_execution: int = 1
    output_dir: str = "runs/run"
    resume: bool = False
    tag: str | None = None
    verbose: int = 1
    recipe: str | None = None

    # Fields that may differ between a run and its resumption.
    RUNTIME_FIELDS = ("data_dir", "distribute", "logical_cpus", "output_dir", "resume",
                      "verbose", "steps_per_execution", "recipe", "cache", "skip_corrupt",
                      "verify")

    def __post_init__(self):
        for name in ("input_size", "mean", "std", "scale", "ratio"):
            setattr(self, name, tuple(getattr(self, name)))
        self.model_kwargs = dict(self.model_kwargs or {})
        if self.optimizer not in OPTIMIZERS:
            raise InvalidInputError(f"optimizer must be one of {OPTIMIZERS}; received {self.optimizer!r}.")
        if self.mixed_precision not in PRECISIONS:
            raise InvalidInputError(f"mixed_precision must be one of off, float16, bfloat16; received "
                             f"{self.mixed_precision!r}.")
        if self.distribute not in DISTRIBUTE:
            raise InvalidInputError(f"distribute must be one of {DISTRIBUTE}; received "
                             f"{self.distribute!r}.")
        if self.weight_decay_mode not in ("auto", "l2", "decoupled"):
            raise InvalidInputError(f"weight_decay_mode must be 'auto', 'l2' or 'decoupled'; received "
                             f"{self.weight_decay_mode!r}.")
        for name in ("epochs", "batch_size", "val_every", "steps_per_execution"):
            if int(getattr(self, name)) <= 0:
                raise InvalidInputError(f"{name} must be a positive integer; received "
                                 f"{getattr(self, name)!r}.")
        if not self.lr > 0:
            raise InvalidInputError(f"lr must be > 0; received {self.lr}.")
        if not 0 <= self.label_smoothing < 1:
            raise InvalidInputError(f"label_smoothing must be in [0, 1); received {self.label_smoothing}.")
        if self.weight_decay < 0:
            raise InvalidInputError(f"weight_decay must be >= 0; received {self.weight_decay}.")
        if not 0 <= self.warmup_epochs < self.epochs and self.warmup_epochs != 0:
            raise InvalidInputError(f"warmup_epochs must be in [0, epochs={self.epochs}); received "
                             f"{self.warmup_epochs}.")

    @property
    def wd_mode(self) -> str:
        if self.weight_decay_mode != "auto":
            return self.weight_decay_mode
        return "l2" if self.optimizer == "sgd" else "decoupled"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """From recipe/CLI values; unknown keys raise ``ValueError`` with the close names."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = "".join(f" {k!r}:{did_you_mean(k, names) or ' no close name.'}" for k in unknown)
            raise InvalidInputError(f"Unknown training option(s) {unknown}.{hints}")
        return cls(**values)


def load_recipe(path: str | os.PathLike) -> dict:
    """Reads a YAML (``.yaml``/``.yml``) or TOML (``.toml``) recipe into a dict of
    :class:`TrainConfig` fields (a ``description`` key is allowed and dropped)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"Recipe file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        import tomllib
        values = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml
        values = yaml.safe_load(text) or {}
    else:
        raise InvalidInputError(f"Recipe {str(path)!r}: expected a .yaml, .yml or .toml file.")
    if not isinstance(values, dict):
        raise InvalidInputError(f"Recipe {str(path)!r} must hold a mapping of options; got "
                         f"{type(values).__name__}.")
    values.pop("description", None)
    values.setdefault("recipe", str(path))
    return values


# --------------------------------------------------------------------------- devices
def configure_logical_cpus(n: int | None):
    """Splits the first CPU into ``n`` logical devices (TensorFlow; before any TF op)."""
    if not n or n <= 1 or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as err:
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise RuntimeError(f"Could not split the CPU into {n} logical devices: TensorFlow was "
                               f"already initialised ({err}). Start a new process.") from err


def make_strategy(distribute: str):
    """``(tf.distribute strategy or None, number of replicas)``; sets the JAX distribution."""
    backend = keras.backend.backend()
    if distribute == "off":
        return None, 1
    if distribute in ("mirrored", "multiworker"):
        if backend != "tensorflow":
            raise InvalidInputError(f"--distribute {distribute} needs KERAS_BACKEND=tensorflow (running "
                             f"{backend}); on JAX use --distribute data_parallel.")
        import tensorflow as tf
        if distribute == "multiworker":
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        return strategy, strategy.num_replicas_in_sync
    if distribute == "data_parallel":
        if backend != "jax":
            raise InvalidInputError(f"--distribute data_parallel needs KERAS_BACKEND=jax (running "
                             f"{backend}); on TensorFlow use --distribute mirrored.")
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return None, len(devices)
    raise InvalidInputError(f"distribute must be one of {DISTRIBUTE}; received {distribute!r}.")


def _chief_worker(strategy) -> tuple[bool, int]:
    """``(is_chief, task_id)`` under MultiWorkerMirroredStrategy (``TF_CONFIG``); else chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, task_id


class _NullScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- optimizer
def decay_variables(model: keras.Model) -> list:
    """Trainable variables that get weight decay: kernels (ndim >= 2); not norms or biases."""
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


def apply_l2(model: keras.Model, weight_decay: float) -> int:
    """Adds ``weight_decay / 2 * ||w||^2`` to the loss for every decayed kernel.

    Uses the variables' ``regularizer`` slot; a regularizer already there (e.g. NAM's
    L1 on its BatchNorm scales) is kept and summed. Returns the number of variables.
    """
    variables = decay_variables(model)
    l2 = keras.regularizers.L2(weight_decay / 2.0)
    for v in variables:
        previous = v.regularizer
        v.regularizer = l2 if previous is None else _SumRegularizer(previous, l2)
    return len(variables)


class _SumRegularizer:
    def __init__(self, *parts):
        self.parts = parts

    def __call__(self, x):
        return sum(p(x) for p in self.parts)


def make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> WarmupCosine:
    """The per-step learning-rate schedule of ``cfg``."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return WarmupCosine(cfg.lr, total, warmup, cfg.warmup_init_lr, cfg.final_lr)


def build_optimizer(cfg: TrainConfig, model: keras.Model, steps_per_epoch: int):
    """The optimizer of ``cfg`` with its :class:`WarmupCosine` schedule.

    Weight decay is excluded from every variable with fewer than two dimensions
    (BatchNorm/LayerNorm scales and offsets, biases); with ``weight_decay_mode="l2"``
    the optimizer has no decay of its own (see :func:`apply_l2`).
    """
    schedule = make_schedule(cfg, steps_per_epoch)
    decoupled = cfg.weight_decay if (cfg.wd_mode == "decoupled" and cfg.weight_decay > 0) else None
    common = dict(learning_rate=schedule, weight_decay=decoupled,
                  global_clipnorm=cfg.grad_clip_norm)
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    else:
        opt = keras.optimizers.AdamW(beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                     **{**common, "weight_decay": decoupled or 0.0})
    if decoupled or cfg.optimizer == "adamw":
        skip = [v for v in model.trainable_variables if len(v.shape) < 2]
        opt.exclude_from_weight_decay(var_list=skip)
    if PRECISIONS[cfg.mixed_precision] == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether ``model``'s output is a softmax (else it gives logits)."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    if act is None and type(last).__name__ == "Softmax":
        return True
    return act is keras.activations.softmax or getattr(act, "__name__", "") == "softmax"


# --------------------------------------------------------------------------- checkpoints
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


def atomic_save(write, path: Path):
    """Calls ``write(tmp_path)`` then ``os.replace(tmp_path, path)`` (same folder)."""
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")  # keeps ".weights.h5" etc.
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
            for stale in self.ckpt_dir.glob(".tmp*"):
                stale.unlink(missing_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"ckpt-epoch{epoch + 1:04d}.keras"
        atomic_save(lambda tmp: self.model.save(tmp), path)
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


def _truncate_csv(path: Path, initial_epoch: int):
    """Drops rows of epochs >= ``initial_epoch`` (written before a kill, then redone)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < initial_epoch]
    atomic_save(lambda tmp: _write_rows(tmp, kept), path)


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
    atomic_save(lambda tmp: fig.savefig(tmp, dpi=100, format="png"), Path(path))
    plt.close(fig)


def _write_json(path: Path, obj):
    atomic_save(lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"), path)


def hardware_description(num_replicas: int = 1) -> str:
    import platform
    backend = keras.backend.backend()
    gpus = []
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
    elif backend == "jax":
        import jax
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if gpus:
        return f"{len(gpus)}x GPU ({backend}), {num_replicas} replica(s)"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} ({backend})"


# --------------------------------------------------------------------------- train
def train(cfg: TrainConfig, command: str | None = None) -> dict:
    """Runs (or resumes) training; returns the final metrics.

    Output folder ``cfg.output_dir``:

    * ``train_config.json``: the resolved config (a resumed run must match it);
    * ``checkpoints/ckpt-epochNNNN.keras``: the last end-of-epoch checkpoint;
    * ``model.keras`` and ``model.weights.h5``: the final model in float32, built by
      ``create_model(model, **model_kwargs)`` (no optimizer);
    * ``pretrained.json``: input size, crop, interpolation, mean/std, label names,
      SHA-256 of the weights, metrics (``weights/README.md`` schema);
    * ``metrics.json``: top-1/top-5 (percent) and cross-entropy on the full validation
      split, epochs, optimizer steps, times, training throughput, parameters;
    * ``history.csv`` (one row per epoch), ``logs/`` (TensorBoard), ``curves.png``.

    Raises:
        ValueError: bad options, data errors (see :mod:`keras_attention.data`), or a
            ``resume`` whose saved config differs in a field that changes the run.
    """
    from keras_attention import data as kdata
    from keras_attention.registry import create_model, split_model_name

    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    saved_cfg_path = out / "train_config.json"
    if cfg.resume and saved_cfg_path.exists():
        saved = json.loads(saved_cfg_path.read_text())
        diffs = {k: (saved.get(k), v) for k, v in cfg.to_dict().items()
                 if k not in TrainConfig.RUNTIME_FIELDS and saved.get(k) != v}
        if diffs:
            raise InvalidInputError(f"Cannot resume {str(out)!r}: options differ from the saved run "
                             f"(saved, given): {diffs}.")
    elif not cfg.resume and list_checkpoints(ckpt_dir):
        raise InvalidInputError(f"{str(out)!r} already holds checkpoints; pass --resume to continue "
                         f"that run or choose another --output.")

    configure_logical_cpus(cfg.logical_cpus)
    if cfg.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.seed)
    strategy, replicas = make_strategy(cfg.distribute)
    chief, worker_id = _chief_worker(strategy)
    if not chief:  # every worker saves (collectives), but only the chief into output_dir
        out = out / f".worker{worker_id}"
        ckpt_dir = out / "checkpoints"
        saved_cfg_path = out / "train_config.json"
    if cfg.batch_size % replicas:
        raise InvalidInputError(f"batch_size {cfg.batch_size} must be divisible by the {replicas} "
                         f"replicas.")

    pre = kdata.Preprocessing(input_size=cfg.input_size, crop_pct=cfg.crop_pct,
                              interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std,
                              recipe=cfg.augment, pad=cfg.pad, scale=cfg.scale, ratio=cfg.ratio,
                              hflip=cfg.hflip)
    train_src = kdata.load_source(cfg.dataset, cfg.train_split, data_dir=cfg.data_dir,
                                  skip_corrupt=cfg.skip_corrupt, verify=cfg.verify)
    val_src = None
    if cfg.val_split:
        val_src = kdata.load_source(cfg.dataset, cfg.val_split, data_dir=cfg.data_dir,
                                    label_names=train_src.label_names,
                                    skip_corrupt=cfg.skip_corrupt, verify=cfg.verify)
    label_names = train_src.label_names
    num_classes = len(label_names)

    checkpoints = list_checkpoints(ckpt_dir) if cfg.resume else []
    initial_epoch = checkpoints[-1][0] if checkpoints else 0
    if initial_epoch > cfg.epochs:
        raise InvalidInputError(f"The checkpoint is at epoch {initial_epoch}, beyond epochs={cfg.epochs}.")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(saved_cfg_path, cfg.to_dict())

    train_ds, steps = kdata.train_dataset(train_src, pre, cfg.batch_size, epochs=cfg.epochs,
                                          initial_epoch=initial_epoch, seed=cfg.seed,
                                          one_hot=True, cache=cfg.cache)
    val_ds = (kdata.eval_dataset(val_src, pre, cfg.batch_size, one_hot=True, cache=cfg.cache)
              if val_src is not None else None)

    arch = split_model_name(cfg.model)[0]
    model_kwargs = {"num_classes": num_classes, "input_shape": list(cfg.input_size),
                    **cfg.model_kwargs}
    policy = PRECISIONS[cfg.mixed_precision]
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with strategy.scope() if strategy is not None else _NullScope():
            model = create_model(arch, **model_kwargs)
            probs = outputs_probabilities(model)
            n_decay = apply_l2(model, cfg.weight_decay) if (
                cfg.wd_mode == "l2" and cfg.weight_decay > 0) else 0
            optimizer = build_optimizer(cfg, model, steps)
            k = min(5, num_classes)
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(from_logits=not probs,
                                                          label_smoothing=cfg.label_smoothing),
                metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                         keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top{k}")],
                steps_per_execution=cfg.steps_per_execution,
                jit_compile="auto")
            model.optimizer.build(model.trainable_variables)
            if checkpoints:
                model.load_weights(checkpoints[-1][1])
        done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if done != initial_epoch * steps:
            raise InvalidInputError(f"Checkpoint {checkpoints[-1][1]} holds {done} optimizer steps; "
                             f"expected {initial_epoch} epochs x {steps} steps = "
                             f"{initial_epoch * steps}. Were batch size or data changed?")
        schedule = make_schedule(cfg, steps)
        params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
        if cfg.verbose:
            print(f"[train] {arch}: {params:,} trainable parameters; {train_src.describe()}; "
                  f"{steps} steps/epoch x {cfg.epochs} epochs, global batch {cfg.batch_size} on "
                  f"{replicas} replica(s); precision {policy}; weight decay {cfg.weight_decay} "
                  f"({cfg.wd_mode}, {n_decay or len(decay_variables(model))} kernels)"
                  + (f"; resuming after epoch {initial_epoch}" if initial_epoch else ""),
                  flush=True)

        history_csv = out / "history.csv"
        if initial_epoch:
            _truncate_csv(history_csv, initial_epoch)
        elif history_csv.exists():
            history_csv.unlink()
        callbacks = [RunMonitor(steps, cfg.batch_size, schedule),
                     keras.callbacks.CSVLogger(str(history_csv), append=True),
                     keras.callbacks.TerminateOnNaN(),
                     EpochCheckpoint(ckpt_dir)]
        if _tensorboard_available():
            callbacks.insert(2, keras.callbacks.TensorBoard(log_dir=str(out / "logs"),
                                                            write_graph=False,
                                                            update_freq="epoch"))
        else:
            import warnings
            warnings.warn("TensorBoard is not installed (pip install tensorboard): no "
                          "TensorBoard logs; history.csv and curves.png are still written.",
                          stacklevel=2)
        t0 = time.perf_counter()
        if initial_epoch < cfg.epochs:
            try:
                model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=steps, validation_data=val_ds,
                          validation_freq=cfg.val_every, callbacks=callbacks, shuffle=False,
                          verbose=cfg.verbose if cfg.verbose != 1 else "auto")
            except Exception as err:
                _explain_decode_error(err, train_src, val_src)
                raise
        fit_time = time.perf_counter() - t0
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    finally:
        keras.config.set_dtype_policy(previous_policy)

    if not chief:
        return {"worker": worker_id, "optimizer_steps": iterations}
    # Export in float32, built exactly as `create_model(arch, **model_kwargs)` builds it.
    if keras.backend.backend() == "jax" and cfg.distribute == "data_parallel":
        keras.distribution.set_distribution(None)
    export = create_model(arch, **model_kwargs)
    export.set_weights(model.get_weights())
    atomic_save(lambda tmp: export.save(tmp), out / "model.keras")
    atomic_save(lambda tmp: export.save_weights(tmp), out / "model.weights.h5")

    history = read_history(history_csv)
    metrics = {"model": arch, "dataset": cfg.dataset, "train_split": cfg.train_split,
               "epochs": cfg.epochs, "steps_per_epoch": steps, "optimizer_steps": iterations,
               "batch_size": cfg.batch_size, "replicas": replicas, "precision": policy,
               "backend": keras.backend.backend(), "trainable_params": params,
               "train_time_s_this_session": round(fit_time, 1),
               "train_time_s_total": round(sum(history.get("epoch_time", [])), 1),
               "images_per_s_median": (float(np.median(history["images_per_s"][1:] or
                                                       history["images_per_s"]))
                                       if history.get("images_per_s") else None),
               "final_train_loss": history.get("loss", [None])[-1],
               "final_train_top1": _pct(history.get("top1", [None])[-1])}
    if val_src is not None:
        from keras_attention.evaluation import evaluate_model
        result = evaluate_model(export, val_src, pre, batch_size=max(cfg.batch_size, 100),
                                progress=bool(cfg.verbose))
        metrics.update({"split": cfg.val_split, "top1": result["top1"], "top5": result["top5"],
                        "per_class_top1": dict(zip(val_src.label_names, result["per_class_top1"])),
                        "eval_cross_entropy": result["loss"],
                        "num_eval_examples": result["num_examples"]})
    if train_src.skipped_files:
        metrics["skipped_files"] = len(train_src.skipped_files)
    _write_json(out / "metrics.json", metrics)
    _write_json(out / "pretrained.json",
                pretrained_config(cfg, label_names, model_kwargs, out / "model.weights.h5",
                                  metrics if val_src is not None else None, command,
                                  hardware_description(replicas)))
    if history:
        plot_history(history, out / "curves.png", title=f"{arch} on {cfg.dataset}")
    if cfg.verbose:
        summary = (f"top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}% on "
                   f"{cfg.val_split}" if val_src is not None else "no validation split")
        print(f"[train] done: {iterations} optimizer steps; {summary}; outputs in {out}",
              flush=True)
    return metrics


def _tensorboard_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("tensorboard") is not None


def _pct(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(100 * x, 4)


def _explain_decode_error(err, *sources):
    """Turns a tf.data decode error into one naming the file (folder datasets)."""
    if type(err).__name__ not in ("InvalidArgumentError", "UnknownError"):
        return
    for src in sources:
        if src is not None and src.on_decode_error is not None:
            src.on_decode_error(err)
