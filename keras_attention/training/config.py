"""The options of a training run (:class:`TrainConfig`) and recipe files."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from keras_attention._errors import InvalidInputError, did_you_mean
from keras_attention.data.catalog import PIPELINES

PRECISIONS = {"off": "float32", "float32": "float32", "float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16"}
DISTRIBUTE = ("off", "mirrored", "multiworker", "data_parallel")
OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    """Everything a training run depends on (a recipe file holds these keys).

    Data: ``dataset`` (a prepared-dataset folder, a class folder or a TFDS name), ``data_dir``
    (TFDS), ``train_split``, ``val_split`` (``None``: no validation), ``pipeline``
    (``"auto"``/``"grain"``: NumPy/Pillow scheduled by grain, every backend; ``"tf"``:
    ``tf.data``), ``num_threads`` (grain reader threads), ``cache`` (``tf.data`` caching),
    ``skip_corrupt``, ``verify``.
    Preprocessing: ``input_size`` (H, W, 3), ``crop_pct``, ``interpolation``,
    ``mean``, ``std``, ``augment`` (``"cifar"``, ``"imagenet"``, ``"none"``), ``pad``,
    ``scale``, ``ratio``, ``hflip``.
    Optimisation: ``epochs``, ``batch_size`` (global), ``optimizer`` (``"sgd"`` or
    ``"adamw"``), ``lr`` (peak), ``momentum``, ``nesterov``, ``beta_1``, ``beta_2``,
    ``weight_decay``, ``weight_decay_mode`` (``"l2"``, ``"decoupled"``, ``"auto"``: l2
    for SGD, decoupled for AdamW), ``warmup_epochs``, ``warmup_init_lr``,
    ``final_lr``, ``label_smoothing``, ``grad_clip_norm`` (``None``: off).
    Run: ``mixed_precision`` (``"off"``, ``"float16"``, ``"bfloat16"``),
    ``initial_loss_scale`` (``float16``: the dynamic loss scale's start),
    ``distribute`` (``"off"``, ``"mirrored"``, ``"multiworker"``, ``"data_parallel"``),
    ``logical_cpus`` (split the CPU into N logical devices: tests the multi-replica
    path without GPUs), ``seed``, ``deterministic`` (TensorFlow op determinism),
    ``val_every`` (epochs), ``steps_per_execution``, ``output_dir``, ``resume``,
    ``tag`` (pretrained tag written into ``pretrained.json``; default: the dataset
    name), ``init_from`` (start from another model's weights: a previous phase's run folder,
    a ``.keras`` file or a registry name, anything ``keras_attention.load`` takes; used when
    the run starts, not when it resumes; ``None``: random initialisation), ``verbose`` (Keras progress bar: 1 bar, 2 one line per epoch, 0 silent),
    ``recipe`` (the recipe file it came from, recorded in the outputs).
    """

    model: str = "resnet20"
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = "cifar10"
    data_dir: str | None = None
    train_split: str = "train"
    val_split: str | None = "test"
    pipeline: str = "auto"
    num_threads: int | None = None
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
    initial_loss_scale: float = 2.0**15
    distribute: str = "off"
    logical_cpus: int | None = None
    seed: int = 0
    deterministic: bool = False
    val_every: int = 1
    steps_per_execution: int = 1
    output_dir: str = "runs/run"
    resume: bool = False
    tag: str | None = None
    init_from: str | None = None
    verbose: int = 1
    recipe: str | None = None

    # Fields that may differ between a run and its resumption.
    RUNTIME_FIELDS = ("data_dir", "distribute", "logical_cpus", "output_dir", "resume",
                      "verbose", "steps_per_execution", "recipe", "cache", "num_threads", "skip_corrupt",
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
        if self.pipeline not in PIPELINES:
            raise InvalidInputError(f"pipeline must be one of {PIPELINES}; received {self.pipeline!r}.")
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
        """From recipe/CLI values; unknown keys raise :class:`InvalidInputError` with the
        close names."""
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
