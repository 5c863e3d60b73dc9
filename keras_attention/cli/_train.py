"""``keras-attention train``: options (defaults < recipe < flags; the saved run with
``--resume``) -> :class:`keras_attention.training.TrainConfig` -> ``train``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

from keras_attention._errors import InvalidInputError
from keras_attention.cli import add_common_arguments

def _is_none(value) -> bool:
    return isinstance(value, str) and value.lower() in ("none", "null", "")


def _bool(value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, received {value!r}")


# (flag, TrainConfig field, type, nargs, help); every default is None so only given options override
# the recipe (or, with --resume, the saved run).
_TRAIN_OPTIONS = [
    ("--model", "model", str, None, "registered architecture, e.g. se_resnet20"),
    ("--model-kwargs", "model_kwargs", json.loads, None,
     'JSON dict of extra builder arguments, e.g. \'{"attention_kwargs": {"reduction_ratio": 8}}\''),
    ("--dataset", "dataset", str, None, "a prepared dataset folder (keras-attention data prepare), "
     "a class folder (<split>/<class>/<images>) or a TFDS name (cifar10; needs TensorFlow)"),
    ("--data-dir", "data_dir", str, None, "TFDS data directory (default: $TFDS_DATA_DIR)"),
    ("--train-split", "train_split", str, None, "training split, slices allowed: train[:5000]"),
    ("--val-split", "val_split", str, None, "validation split ('none' to skip)"),
    ("--pipeline", "pipeline", str, None, "input pipeline: auto | grain (every backend) | tf "
     "(tf.data)"),
    ("--num-threads", "num_threads", int, None, "grain reader threads (default: CPU cores)"),
    ("--cache", "cache", str, None, "tf.data caching: auto | decoded | encoded | none"),
    ("--skip-corrupt", "skip_corrupt", _bool, None, "skip unreadable images in a folder "
     "dataset (true/false)"),
    ("--verify", "verify", str, None, "folder images check: header (default) | full | none"),
    ("--input-size", "input_size", int, 3, "H W C"),
    ("--crop-pct", "crop_pct", float, None, "evaluation crop fraction"),
    ("--interpolation", "interpolation", str, None, "bilinear | bicubic | nearest | area"),
    ("--mean", "mean", float, 3, "per-channel mean of [0, 1] RGB"),
    ("--std", "std", float, 3, "per-channel std of [0, 1] RGB"),
    ("--augment", "augment", str, None, "cifar | imagenet | none"),
    ("--epochs", "epochs", int, None, "number of epochs"),
    ("--batch-size", "batch_size", int, None, "global batch size"),
    ("--optimizer", "optimizer", str, None, "sgd | adamw"),
    ("--lr", "lr", float, None, "peak learning rate"),
    ("--momentum", "momentum", float, None, "SGD momentum"),
    ("--nesterov", "nesterov", _bool, None, "Nesterov momentum (true/false)"),
    ("--weight-decay", "weight_decay", float, None, "weight decay (kernels only)"),
    ("--weight-decay-mode", "weight_decay_mode", str, None, "l2 | decoupled | auto"),
    ("--warmup-epochs", "warmup_epochs", float, None, "linear warmup length"),
    ("--final-lr", "final_lr", float, None, "learning rate at the end of the cosine"),
    ("--label-smoothing", "label_smoothing", float, None, "label smoothing in [0, 1)"),
    ("--grad-clip-norm", "grad_clip_norm", float, None, "global gradient-norm clipping"),
    ("--mixed-precision", "mixed_precision", str, None, "off | float16 | bfloat16"),
    ("--initial-loss-scale", "initial_loss_scale", float, None, "float16: start of the dynamic "
     "loss scale"),
    ("--distribute", "distribute", str, None, "off | mirrored | multiworker (TensorFlow) | "
     "data_parallel (JAX)"),
    ("--logical-cpus", "logical_cpus", int, None, "split the CPU into N logical devices "
     "(TensorFlow; tests the multi-replica path)"),
    ("--seed", "seed", int, None, "run seed (data order, augmentation, initialisation)"),
    ("--deterministic", "deterministic", _bool, None, "TensorFlow op determinism (true/false)"),
    ("--val-every", "val_every", int, None, "validate every N epochs"),
    ("--steps-per-execution", "steps_per_execution", int, None, "Keras steps_per_execution"),
    ("--tag", "tag", str, None, "pretrained tag for pretrained.json (default: dataset name)"),
    ("--init-from", "init_from", str, None, "start from these weights (a previous phase's run "
     "folder, a .keras file or a registry name)"),
    ("--progress", "verbose", int, None, "Keras progress output: 0 silent, 1 progress bar, 2 one "
     "line per epoch"),
]


def _add_train_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "train", help="train a registry model",
                       description="Train any registry model. Values come from, in increasing "
                       "priority: built-in defaults, --recipe, the options given. With --resume "
                       "the saved run's options are the base instead."))
    p.add_argument("--recipe", help="YAML/TOML recipe (weights/_recipes/*.yaml)")
    p.add_argument("--output", "-o", help="output folder (default runs/<model>-<dataset>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any recipe key (YAML value syntax), repeatable")
    for flag, key, typ, nargs, help_ in _TRAIN_OPTIONS:
        p.add_argument(flag, dest=f"set_{key}", type=typ, nargs=nargs, default=None, help=help_)
    return p


def _train_values(args) -> dict:
    from keras_attention.training import load_recipe

    values: dict = {}
    out = args.output
    saved_path = Path(out) / "train_config.json" if out else None
    if args.resume:
        if not out:
            raise InvalidInputError("--resume needs --output (the run folder to continue).")
        if saved_path.exists():
            values.update(json.loads(saved_path.read_text()))
    if args.recipe and not (args.resume and saved_path and saved_path.exists()):
        values.update(load_recipe(args.recipe))
    for flag, key, *_ in _TRAIN_OPTIONS:
        v = getattr(args, f"set_{key}")
        if v is not None:
            values[key] = None if (key == "val_split" and _is_none(v)) else v
    if args.set:
        import yaml
        for item in args.set:
            key, sep, raw = item.partition("=")
            if not sep:
                raise InvalidInputError(f"--set expects KEY=VALUE, received {item!r}")
            values[key.strip().replace("-", "_")] = yaml.safe_load(raw)
    model = values.get("model", "resnet20")
    dataset = str(values.get("dataset", "cifar10"))
    data_name = Path(dataset).name if os.path.isdir(dataset) else dataset.replace("/", "_")
    values["output_dir"] = out or str(Path("runs") / f"{model}-{data_name}")
    values["resume"] = bool(args.resume)
    return values


def cmd_train(args) -> int:
    from keras_attention.training import TrainConfig, train
    cfg = TrainConfig.from_dict(_train_values(args))
    command = "keras-attention " + " ".join(shlex.quote(a) for a in args.argv)
    train(cfg, command=command)
    return 0


def register(sub) -> None:
    _add_train_parser(sub).set_defaults(func=cmd_train)
