"""One training run, start to finish, as a sequence of named steps (:func:`train`)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from keras_attention import data as kdata
from keras_attention._errors import InvalidInputError
from keras_attention._files import atomic_write, write_json
from keras_attention.data.source import explain_decode_error
from keras_attention.evaluation import evaluate_model
from keras_attention.models._common import outputs_probabilities
from keras_attention.registry import create_model, split_model_name
from keras_attention.training.callbacks import (EpochCheckpoint, RunMonitor, list_checkpoints,
                                                plot_history, read_history, truncate_history)
from keras_attention.training.config import PRECISIONS, TrainConfig
from keras_attention.training.distribute import (chief_worker, configure_logical_cpus,
                                                 hardware_description, make_strategy)
from keras_attention.training.optim import apply_l2, build_optimizer, decay_variables, make_schedule
from keras_attention.weights import load, pretrained_config


@dataclass
class _RunFolder:
    """Where a run writes (the chief's ``output_dir``; other workers a hidden sub-folder)."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def config(self) -> Path:
        return self.root / "train_config.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"


@dataclass
class _Data:
    train_source: kdata.ImageSource
    val_source: kdata.ImageSource | None
    preprocessing: kdata.Preprocessing
    train: object
    val: object
    steps: int


def train(cfg: TrainConfig, command: str | None = None) -> dict:
    """Runs (or resumes) training; returns the final metrics.

    Output folder ``cfg.output_dir``:

    A phase of a multi-phase recipe (Saccader, RA-CNN, ...) is a run whose ``model_kwargs``
    name the phase (``training_phase``) and whose ``init_from`` is the previous phase's run
    folder: its weights are copied in before the first step (see :func:`initialize_from`).

    * ``train_config.json``: the resolved config (a resumed run must match it);
    * ``checkpoints/ckpt-epochNNNN.keras``: the last end-of-epoch checkpoint;
    * ``model.keras`` and ``model.weights.h5``: the final model in float32, built by
      ``create_model(model, **model_kwargs)`` (no optimizer);
    * ``pretrained.json``: input size, crop, interpolation, mean/std, label names,
      SHA-256 of the weights, metrics (``weights/README.md`` schema);
    * ``metrics.json``: top-1/top-5 (percent), per-class top-1 and cross-entropy on the full
      validation split, epochs, optimizer steps, times, training throughput, parameters;
    * ``history.csv`` (one row per epoch), ``logs/`` (TensorBoard, where TensorFlow and
      TensorBoard are installed), ``curves.png``.

    Raises:
        InvalidInputError: bad options, data errors (see :mod:`keras_attention.data`), or a
            ``resume`` whose saved config differs in a field that changes the run.
    """
    folder = _check_run_folder(cfg)
    _seed_and_configure(cfg)
    strategy, replicas = make_strategy(cfg.distribute)
    chief, worker_id = chief_worker(strategy)
    if not chief:  # every worker saves (collectives), but only the chief into output_dir
        folder = _RunFolder(folder.root / f".worker{worker_id}")
    if cfg.batch_size % replicas:
        raise InvalidInputError(f"batch_size {cfg.batch_size} must be divisible by the {replicas} "
                                f"replicas.")
    checkpoints = list_checkpoints(folder.checkpoints) if cfg.resume else []
    initial_epoch = checkpoints[-1][0] if checkpoints else 0
    if initial_epoch > cfg.epochs:
        raise InvalidInputError(f"The checkpoint is at epoch {initial_epoch}, beyond epochs={cfg.epochs}.")
    data = _open_data(cfg, initial_epoch)
    init_source = load(cfg.init_from) if cfg.init_from and not checkpoints else None
    folder.root.mkdir(parents=True, exist_ok=True)
    write_json(folder.config, cfg.to_dict())

    arch = split_model_name(cfg.model)[0]
    model_kwargs = {"num_classes": data.train_source.num_classes,
                    "input_shape": list(cfg.input_size), **cfg.model_kwargs}
    with _dtype_policy(PRECISIONS[cfg.mixed_precision]):
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = _build_and_compile(cfg, arch, model_kwargs, data)
            if checkpoints:
                model.load_weights(checkpoints[-1][1])
            elif init_source is not None:
                initialize_from(model, init_source, cfg.init_from)
        _check_restored_steps(model, initial_epoch, data.steps, checkpoints)
        if cfg.verbose:
            _print_plan(cfg, arch, model, data, replicas, initial_epoch)
        fit_time = _fit(cfg, model, data, folder, initial_epoch)
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if not chief:
        return {"worker": worker_id, "optimizer_steps": iterations}
    export = _export_float32(cfg, arch, model_kwargs, model, folder)
    metrics = _evaluate_and_record(cfg, arch, model_kwargs, export, data, folder, replicas,
                                   iterations, fit_time, command)
    if cfg.verbose:
        summary = (f"top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}% on "
                   f"{cfg.val_split}" if data.val_source is not None else "no validation split")
        print(f"[train] done: {iterations} optimizer steps; {summary}; outputs in {folder.root}",
              flush=True)
    return metrics


# ----------------------------------------------------------------------------- the steps
def _check_run_folder(cfg: TrainConfig) -> _RunFolder:
    """A resumed run must have the saved options; a new run must not overwrite checkpoints."""
    folder = _RunFolder(Path(cfg.output_dir))
    if cfg.resume and folder.config.exists():
        saved = json.loads(folder.config.read_text())
        diffs = {k: (saved.get(k), v) for k, v in cfg.to_dict().items()
                 if k not in TrainConfig.RUNTIME_FIELDS and saved.get(k) != v}
        if diffs:
            raise InvalidInputError(f"Cannot resume {str(folder.root)!r}: options differ from the "
                                    f"saved run (saved, given): {diffs}.")
    elif not cfg.resume and list_checkpoints(folder.checkpoints):
        raise InvalidInputError(f"{str(folder.root)!r} already holds checkpoints; pass --resume to "
                                f"continue that run or choose another --output.")
    return folder


def _seed_and_configure(cfg: TrainConfig) -> None:
    configure_logical_cpus(cfg.logical_cpus)
    if cfg.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.seed)


def _open_data(cfg: TrainConfig, initial_epoch: int) -> _Data:
    pre = kdata.Preprocessing(input_size=cfg.input_size, crop_pct=cfg.crop_pct,
                              interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std,
                              recipe=cfg.augment, pad=cfg.pad, scale=cfg.scale, ratio=cfg.ratio,
                              hflip=cfg.hflip)
    train_source = kdata.load_source(cfg.dataset, cfg.train_split, data_dir=cfg.data_dir,
                                     skip_corrupt=cfg.skip_corrupt, verify=cfg.verify)
    val_source = None
    if cfg.val_split:
        val_source = kdata.load_source(cfg.dataset, cfg.val_split, data_dir=cfg.data_dir,
                                       label_names=train_source.label_names,
                                       skip_corrupt=cfg.skip_corrupt, verify=cfg.verify)
    pipeline = kdata.pipeline_module(cfg.pipeline)
    extra = ({"cache": cfg.cache} if kdata.resolve_pipeline(cfg.pipeline) == "tf"
             else {"num_threads": cfg.num_threads})
    train_ds, steps = pipeline.train_dataset(train_source, pre, cfg.batch_size, epochs=cfg.epochs,
                                             initial_epoch=initial_epoch, seed=cfg.seed,
                                             one_hot=True, **extra)
    val_ds = (pipeline.eval_dataset(val_source, pre, cfg.batch_size, one_hot=True, **extra)
              if val_source is not None else None)
    return _Data(train_source, val_source, pre, train_ds, val_ds, steps)


@contextlib.contextmanager
def _dtype_policy(policy: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _build_and_compile(cfg: TrainConfig, arch: str, model_kwargs: dict, data: _Data) -> keras.Model:
    model = create_model(arch, **model_kwargs)
    if cfg.wd_mode == "l2" and cfg.weight_decay > 0:
        apply_l2(model, cfg.weight_decay)
    k = min(5, data.train_source.num_classes)
    model.compile(
        optimizer=build_optimizer(cfg, model, data.steps),
        loss=keras.losses.CategoricalCrossentropy(from_logits=not outputs_probabilities(model),
                                                  label_smoothing=cfg.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top{k}")],
        steps_per_execution=cfg.steps_per_execution, jit_compile="auto")
    model.optimizer.build(model.trainable_variables)
    return model


def initialize_from(model: keras.Model, source: keras.Model, spec: str = "") -> None:
    """Copies ``source``'s weights into ``model`` (the start of a training phase).

    A model with an ``initialize_from(source)`` method decides itself (Saccader takes a
    trained ``saccader_bagnet77`` as its representation network); otherwise both models
    must hold the same weights in the same order and shapes (the same architecture, e.g.
    the previous phase of the same model).

    Raises:
        InvalidInputError: the weights do not correspond (the first difference named).
    """
    hook = getattr(model, "initialize_from", None)
    if callable(hook):
        hook(source)
        return
    mine, theirs = model.weights, source.weights
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if tuple(a.shape) != tuple(b.shape):
            raise InvalidInputError(f"init_from {spec!r} ({source.name}) does not fit {model.name}: weight "
                                    f"{i} is {b.path} {tuple(b.shape)}, expected {a.path} {tuple(a.shape)}.")
    if len(mine) != len(theirs):
        raise InvalidInputError(f"init_from {spec!r} ({source.name}) holds {len(theirs)} weights, "
                                f"{model.name} {len(mine)}: not the same architecture.")
    model.set_weights(source.get_weights())


def _check_restored_steps(model, initial_epoch: int, steps: int, checkpoints) -> None:
    done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if done != initial_epoch * steps:
        raise InvalidInputError(f"Checkpoint {checkpoints[-1][1]} holds {done} optimizer steps; "
                                f"expected {initial_epoch} epochs x {steps} steps = "
                                f"{initial_epoch * steps}. Were batch size or data changed?")


def _print_plan(cfg, arch, model, data: _Data, replicas: int, initial_epoch: int) -> None:
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    decayed = len(decay_variables(model)) if cfg.weight_decay > 0 else 0
    print(f"[train] {arch}: {params:,} trainable parameters; {data.train_source.describe()}; "
          f"{data.steps} steps/epoch x {cfg.epochs} epochs, global batch {cfg.batch_size} on "
          f"{replicas} replica(s); precision {PRECISIONS[cfg.mixed_precision]}; backend "
          f"{keras.backend.backend()}, {kdata.resolve_pipeline(cfg.pipeline)} pipeline; weight decay "
          f"{cfg.weight_decay} ({cfg.wd_mode}, {decayed} kernels)"
          + (f"; resuming after epoch {initial_epoch}" if initial_epoch else ""), flush=True)


def _callbacks(cfg: TrainConfig, model, data: _Data, folder: _RunFolder) -> list:
    callbacks = [RunMonitor(data.steps, cfg.batch_size, make_schedule(cfg, data.steps)),
                 keras.callbacks.CSVLogger(str(folder.history), append=True),
                 keras.callbacks.TerminateOnNaN(),
                 EpochCheckpoint(folder.checkpoints)]
    if _tensorboard_available():
        callbacks.insert(2, keras.callbacks.TensorBoard(log_dir=str(folder.root / "logs"),
                                                        write_graph=False, update_freq="epoch"))
    elif cfg.verbose:
        print("[train] TensorBoard logs need TensorFlow and TensorBoard (pip install "
              "'keras-attention[tf]'); history.csv and curves.png are written.", flush=True)
    return callbacks


def _fit(cfg: TrainConfig, model, data: _Data, folder: _RunFolder, initial_epoch: int) -> float:
    if initial_epoch:
        truncate_history(folder.history, initial_epoch)
    elif folder.history.exists():
        folder.history.unlink()
    t0 = time.perf_counter()
    if initial_epoch < cfg.epochs:
        try:
            model.fit(data.train, epochs=cfg.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=data.steps, validation_data=data.val,
                      validation_steps=(math.ceil(data.val_source.num_examples / cfg.batch_size)
                                        if data.val_source is not None else None),
                      validation_freq=cfg.val_every, callbacks=_callbacks(cfg, model, data, folder),
                      shuffle=False, verbose=cfg.verbose if cfg.verbose != 1 else "auto")
        except Exception as err:
            explain_decode_error(err, data.train_source, data.val_source)
            raise
    return time.perf_counter() - t0


def _export_float32(cfg, arch, model_kwargs, model, folder: _RunFolder) -> keras.Model:
    """The final model in float32, built exactly as ``create_model(arch, **model_kwargs)``."""
    if keras.backend.backend() == "jax" and cfg.distribute == "data_parallel":
        keras.distribution.set_distribution(None)
    export = create_model(arch, **model_kwargs)
    export.set_weights(model.get_weights())
    atomic_write(folder.root / "model.keras", lambda tmp: export.save(tmp))
    atomic_write(folder.root / "model.weights.h5", lambda tmp: export.save_weights(tmp))
    return export


def _evaluate_and_record(cfg, arch, model_kwargs, export, data: _Data, folder: _RunFolder,
                         replicas, iterations, fit_time, command) -> dict:
    history = read_history(folder.history)
    params = int(sum(np.prod(v.shape) for v in export.trainable_variables))
    metrics = {"model": arch, "dataset": cfg.dataset, "train_split": cfg.train_split,
               "epochs": cfg.epochs, "steps_per_epoch": data.steps, "optimizer_steps": iterations,
               "batch_size": cfg.batch_size, "replicas": replicas,
               "precision": PRECISIONS[cfg.mixed_precision], "backend": keras.backend.backend(),
               "pipeline": kdata.resolve_pipeline(cfg.pipeline), "trainable_params": params,
               "train_time_s_this_session": round(fit_time, 1),
               "train_time_s_total": round(sum(history.get("epoch_time", [])), 1),
               "images_per_s_median": (float(np.median(history["images_per_s"][1:] or
                                                       history["images_per_s"]))
                                       if history.get("images_per_s") else None),
               "final_train_loss": history.get("loss", [None])[-1],
               "final_train_top1": _pct(history.get("top1", [None])[-1])}
    if data.val_source is not None:
        result = evaluate_model(export, data.val_source, data.preprocessing,
                                batch_size=max(cfg.batch_size, 100), progress=bool(cfg.verbose),
                                pipeline=cfg.pipeline)
        metrics.update({"split": cfg.val_split, "top1": result["top1"], "top5": result["top5"],
                        "per_class_top1": dict(zip(data.val_source.label_names,
                                                   result["per_class_top1"])),
                        "eval_cross_entropy": result["loss"],
                        "num_eval_examples": result["num_examples"]})
    if data.train_source.skipped_files:
        metrics["skipped_files"] = len(data.train_source.skipped_files)
    write_json(folder.root / "metrics.json", metrics)
    write_json(folder.root / "pretrained.json",
               pretrained_config(cfg, data.train_source.label_names, model_kwargs,
                                 folder.root / "model.weights.h5",
                                 metrics if data.val_source is not None else None, command,
                                 hardware_description(replicas)))
    if history:
        plot_history(history, folder.root / "curves.png", title=f"{arch} on {cfg.dataset}")
    return metrics


def _tensorboard_available() -> bool:
    """Keras's TensorBoard callback writes through ``tf.summary``: TensorFlow and TensorBoard."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorboard"))


def _pct(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(100 * x, 4)
