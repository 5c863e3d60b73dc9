"""Command line: ``keras-attention {train,evaluate,predict,demo}`` (``scripts/*.py`` wrap it).

Examples::

    keras-attention train --recipe weights/_recipes/cifar10_resnet.yaml --model se_resnet20 \\
        --output runs/se_resnet20
    keras-attention train --output runs/se_resnet20 --resume        # after a crash / kill -9
    keras-attention evaluate runs/se_resnet20 --dataset cifar10 --split test --tta flip
    keras-attention predict se_resnet20.cifar10 cat.png ship.jpg --top-k 3
    keras-attention demo          # the main job: evaluate se_resnet20.cifar10, classify images

The Keras backend is chosen by ``KERAS_BACKEND`` (``tensorflow`` or ``jax``); TFDS
datasets are read from ``--data-dir`` or ``TFDS_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path


def _is_none(value) -> bool:
    return isinstance(value, str) and value.lower() in ("none", "null", "")


def _bool(value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, received {value!r}")


# (flag, dest, type, nargs, help); every default is None so only given options override
# the recipe (or, with --resume, the saved run).
_TRAIN_OPTIONS = [
    ("--model", "model", str, None, "registered architecture, e.g. se_resnet20"),
    ("--model-kwargs", "model_kwargs", json.loads, None,
     'JSON dict of extra builder arguments, e.g. \'{"attention_kwargs": {"reduction_ratio": 8}}\''),
    ("--dataset", "dataset", str, None, "TFDS name (cifar10, imagenette/160px-v2) or a folder "
     "with <split>/<class>/<images>"),
    ("--data-dir", "data_dir", str, None, "TFDS data directory (default: $TFDS_DATA_DIR)"),
    ("--train-split", "train_split", str, None, "training split, slices allowed: train[:5000]"),
    ("--val-split", "val_split", str, None, "validation split ('none' to skip)"),
    ("--cache", "cache", str, None, "auto | decoded | encoded | none (in-memory caching)"),
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
    ("--distribute", "distribute", str, None, "off | mirrored | multiworker (TensorFlow) | "
     "data_parallel (JAX)"),
    ("--logical-cpus", "logical_cpus", int, None, "split the CPU into N logical devices "
     "(TensorFlow; tests the multi-replica path)"),
    ("--seed", "seed", int, None, "run seed (data order, augmentation, initialisation)"),
    ("--deterministic", "deterministic", _bool, None, "TensorFlow op determinism (true/false)"),
    ("--val-every", "val_every", int, None, "validate every N epochs"),
    ("--steps-per-execution", "steps_per_execution", int, None, "Keras steps_per_execution"),
    ("--tag", "tag", str, None, "pretrained tag for pretrained.json (default: dataset name)"),
    ("--verbose", "verbose", int, None, "0 silent, 1 progress bar, 2 one line per epoch"),
]


def _add_train_parser(sub):
    p = sub.add_parser("train", help="train a registry model",
                       description="Train any registry model. Values come from, in increasing "
                       "priority: built-in defaults, --recipe, the options given. With --resume "
                       "the saved run's options are the base instead.")
    p.add_argument("--recipe", help="YAML/TOML recipe (weights/_recipes/*.yaml)")
    p.add_argument("--output", "-o", help="output folder (default runs/<model>-<dataset>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any recipe key (YAML value syntax), repeatable")
    for flag, dest, typ, nargs, help_ in _TRAIN_OPTIONS:
        p.add_argument(flag, dest=dest, type=typ, nargs=nargs, default=None, help=help_)
    return p


def _train_values(args) -> dict:
    from keras_attention.training import load_recipe

    values: dict = {}
    out = args.output
    saved_path = Path(out) / "train_config.json" if out else None
    if args.resume:
        if not out:
            raise SystemExit("error: --resume needs --output (the run folder to continue).")
        if saved_path.exists():
            values.update(json.loads(saved_path.read_text()))
    if args.recipe and not (args.resume and saved_path and saved_path.exists()):
        values.update(load_recipe(args.recipe))
    for flag, dest, *_ in _TRAIN_OPTIONS:
        v = getattr(args, dest)
        if v is not None:
            values[dest] = None if (dest == "val_split" and _is_none(v)) else v
    if args.set:
        import yaml
        for item in args.set:
            key, sep, raw = item.partition("=")
            if not sep:
                raise SystemExit(f"error: --set expects KEY=VALUE, received {item!r}")
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


def _add_evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="top-1/top-5 accuracy on a whole split",
                       description="Evaluate a model (run folder, .keras file or pretrained "
                       "name) on a TFDS split or class folder.")
    p.add_argument("model", help="run folder, .keras / .weights.h5 file, or pretrained name")
    p.add_argument("--dataset", help="TFDS name or folder (default: the model's dataset)")
    p.add_argument("--split", help="split (default: the model's evaluation split, else test)")
    p.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--tta", default="none", choices=["none", "flip", "five_crop", "five_crop_flip"],
                   help="test-time augmentation: average the softmax over views")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable folder images")
    p.add_argument("--verify", default="header", choices=["header", "full", "none"])
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument("--per-class", action="store_true", help="also print the top-1 of every class")
    p.add_argument("--no-progress", action="store_true")
    return p


def cmd_evaluate(args) -> int:
    from keras_attention.evaluation import evaluate
    result = evaluate(args.model, args.dataset, args.split, data_dir=args.data_dir,
                      batch_size=args.batch_size, tta=args.tta, progress=not args.no_progress,
                      skip_corrupt=args.skip_corrupt, verify=args.verify)
    tta = "" if result["tta"] == "none" else f", TTA {result['tta']}"
    print(f"{result['model']} on {result['dataset']} [{result['split']}]: "
          f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
          f"({result['num_examples']} images{tta})", flush=True)
    if args.per_class:
        width = max(map(len, result["per_class_top1"]))
        for label, top1 in result["per_class_top1"].items():
            print(f"  {label:<{width}}  " + ("no images" if top1 is None else f"{top1:6.2f}%"))
    if args.json:
        from keras_attention.training import atomic_save
        text = json.dumps(result, indent=2) + "\n"
        atomic_save(lambda tmp: Path(tmp).write_text(text), args.json)
    return 0


def _add_predict_parser(sub):
    p = sub.add_parser("predict", help="top-k classes for image files",
                       description="Classify image files with a model's own preprocessing "
                       "and label names.")
    p.add_argument("model", help="run folder, .keras / .weights.h5 file, or pretrained name")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, GIF, BMP, WebP)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def cmd_predict(args) -> int:
    from keras_attention.evaluation import predict
    results = predict(args.model, args.images, top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["file"])
        for t in r["top"]:
            print(f"  {100 * t['probability']:6.2f}%  {t['label']}")
    return 0


def _add_demo_parser(sub):
    p = sub.add_parser("demo", help="the main job: evaluate shipped weights, classify test images",
                       description="Evaluate a pretrained model (default se_resnet20.cifar10) on "
                       "its dataset's full evaluation split, compare top-1 with its model card, "
                       "then classify a few test images with `predict`.")
    p.add_argument("model", nargs="?", default="se_resnet20.cifar10")
    p.add_argument("--images", type=int, default=4, help="test images to classify")
    p.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--no-progress", action="store_true")
    return p


def cmd_demo(args) -> int:
    import tempfile

    from keras_attention.data import load_source
    from keras_attention.evaluation import evaluate, load_for_inference, predict

    loaded = load_for_inference(args.model)
    card = loaded.config.get("metrics") or {}
    result = evaluate(loaded, data_dir=args.data_dir, batch_size=args.batch_size,
                      progress=not args.no_progress)
    print(f"{result['model']} on {result['dataset']} [{result['split']}]: top-1 "
          f"{result['top1']:.2f}%  top-5 {result['top5']:.2f}%  ({result['num_examples']} images)")
    if card.get("top1") is not None:
        same = abs(card["top1"] - result["top1"]) < 0.005
        top5 = card.get("top5")
        print(f"model card: top-1 {card['top1']:.2f}%"
              + (f"  top-5 {top5:.2f}%" if top5 is not None else "")
              + f"  -> {'same' if same else 'DIFFERENT'}")
    source = load_source(result["dataset"], result["split"], data_dir=args.data_dir,
                         label_names=loaded.label_names)
    with tempfile.TemporaryDirectory() as tmp:
        files, truth = [], []
        for i, (encoded, label) in enumerate(source.records.take(args.images)):
            ext = ".png" if encoded.numpy()[:4] == b"\x89PNG" else ".jpg"
            files.append(os.path.join(tmp, f"{result['split'].split('[')[0]}_{i}{ext}"))
            Path(files[-1]).write_bytes(encoded.numpy())
            truth.append(source.label_names[int(label)])
        for r, true in zip(predict(loaded, files, top_k=3), truth):
            guesses = ", ".join(f"{t['label']} {100 * t['probability']:.1f}%" for t in r["top"])
            print(f"{Path(r['file']).name} (true: {true}): {guesses}")
    return 0 if card.get("top1") is None or same else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-attention", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub).set_defaults(func=cmd_train)
    _add_evaluate_parser(sub).set_defaults(func=cmd_evaluate)
    _add_predict_parser(sub).set_defaults(func=cmd_predict)
    _add_demo_parser(sub).set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status.

    Bad options and data errors (``ValueError``) print one line and return 2; set
    ``KERAS_ATTENTION_TRACEBACK=1`` to see the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from keras_attention.hub import WeightsError
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, WeightsError) as err:
        if os.environ.get("KERAS_ATTENTION_TRACEBACK"):
            raise
        print(f"keras-attention {args.command}: error: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
