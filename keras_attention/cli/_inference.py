"""``keras-attention evaluate``, ``predict`` and ``demo`` (the README's main job)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keras_attention.cli import add_common_arguments
from keras_attention.data.catalog import PIPELINES, resolve_pipeline

def _add_evaluate_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "evaluate", help="top-1/top-5 accuracy on a whole split",
                       description="Evaluate a model (run folder, .keras file or pretrained "
                       "name) on a TFDS split or class folder."))
    p.add_argument("model", help="run folder, .keras / .weights.h5 file, or pretrained name")
    p.add_argument("--dataset", help="TFDS name or folder (default: the model's dataset)")
    p.add_argument("--split", help="split (default: the model's evaluation split, else test)")
    p.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--tta", default="none", choices=["none", "flip", "five_crop", "five_crop_flip"],
                   help="test-time augmentation: average the softmax over views")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable folder images")
    p.add_argument("--verify", default="header", choices=["header", "full", "none"])
    p.add_argument("--pipeline", default="auto", choices=PIPELINES,
                   help="input pipeline: grain (every backend; auto) or tf (tf.data)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="compute in bfloat16 (float32 weights and logits), or float32")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument("--per-class", action="store_true", help="also print the top-1 of every class")
    p.add_argument("--no-progress", action="store_true")
    return p


def cmd_evaluate(args) -> int:
    from keras_attention.evaluation import evaluate
    result = evaluate(args.model, args.dataset, args.split, data_dir=args.data_dir,
                      batch_size=args.batch_size, tta=args.tta, progress=not args.no_progress,
                      skip_corrupt=args.skip_corrupt, verify=args.verify, pipeline=args.pipeline,
                      precision=args.precision)
    tta = "" if result["tta"] == "none" else f", TTA {result['tta']}"
    precision = "" if result["precision"] == "float32" else f", {result['precision']}"
    print(f"{result['model']} on {result['dataset']} [{result['split']}]: "
          f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
          f"({result['num_examples']} images{tta}{precision})", flush=True)
    if args.per_class:
        width = max(map(len, result["per_class_top1"]))
        for label, top1 in result["per_class_top1"].items():
            print(f"  {label:<{width}}  " + ("no images" if top1 is None else f"{top1:6.2f}%"))
    if args.json:
        from keras_attention._files import write_json
        write_json(args.json, result)
    return 0


def _add_predict_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "predict", help="top-k classes for image files",
                       description="Classify image files with a model's own preprocessing "
                       "and label names."))
    p.add_argument("model", help="run folder, .keras / .weights.h5 file, or pretrained name")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, GIF, BMP, WebP)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="compute in bfloat16 (float32 weights and logits), or float32")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--output", "-o", metavar="FILE.json",
                   help="also save the results (top classes, and the glimpse boxes of a hard- or "
                        "region-attention model) as JSON")
    return p


def _label_text(record: dict) -> str:
    """``n02086240 (Shih-Tzu)`` where the weights give readable names, else the label."""
    return f"{record['label']} ({record['description']})" if record.get("description") else record["label"]


def cmd_predict(args) -> int:
    from keras_attention.evaluation import predict
    results = predict(args.model, args.images, top_k=args.top_k, batch_size=args.batch_size,
                      precision=args.precision)
    if args.output:
        from keras_attention._files import write_json
        write_json(args.output, results)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["file"])
        for t in r["top"]:
            print(f"  {100 * t['probability']:6.2f}%  {_label_text(t)}")
        if "glimpses" in r:
            print(f"  {len(r['glimpses'])} glimpses, in order (top, left, bottom, right in image pixels):")
            for n, g in enumerate(r["glimpses"], 1):
                box = ", ".join(f"{v:.0f}" for v in g["box"])
                own = f"  {100 * g['probability']:5.1f}% {_label_text(g)}" if "label" in g else ""
                print(f"    {n}: ({box}){own}")
    return 0


def _add_demo_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "demo", help="the main job: evaluate shipped weights, classify test images",
        description="Evaluate a pretrained model (default se_resnet20.cifar10) on its dataset's "
                    "full evaluation split, compare top-1 with its model card, then classify a few "
                    "test images with `predict`. Exit status 1 if top-1 differs from the card."))
    p.add_argument("model", nargs="?", default="se_resnet20.cifar10")
    p.add_argument("--dataset", help="dataset (default: the model's); e.g. a prepared folder "
                   "from `keras-attention data prepare cifar10` where TensorFlow is absent")
    p.add_argument("--images", type=int, default=4, help="test images to classify")
    p.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--pipeline", default="auto", choices=PIPELINES,
                   help="input pipeline: grain (every backend; auto) or tf (tf.data)")
    p.add_argument("--no-progress", action="store_true")
    return p


def cmd_demo(args) -> int:
    import tempfile

    from keras_attention.data import load_source
    from keras_attention.evaluation import evaluate_model, load_for_inference, predict

    loaded = load_for_inference(args.model)
    card = loaded.config.get("metrics") or {}
    dataset = args.dataset or loaded.config.get("dataset")
    split = card.get("split") or "test"
    source = load_source(dataset, split, data_dir=args.data_dir, label_names=loaded.label_names)
    result = evaluate_model(loaded.model, source, loaded.preprocessing, batch_size=args.batch_size,
                            progress=not args.no_progress, pipeline=args.pipeline)
    print(f"{loaded.name} on {dataset} [{split}]: top-1 {result['top1']:.2f}%  top-5 "
          f"{result['top5']:.2f}%  ({result['num_examples']} images, {keras_backend()} backend, "
          f"{resolve_pipeline(args.pipeline)} pipeline)")
    same = True
    if card.get("top1") is not None:
        same = abs(card["top1"] - result["top1"]) < 0.005
        top5 = card.get("top5")
        print(f"model card: top-1 {card['top1']:.2f}%"
              + (f"  top-5 {top5:.2f}%" if top5 is not None else "")
              + f"  -> {'same' if same else 'DIFFERENT'}")
    with tempfile.TemporaryDirectory() as tmp:
        files, truth = [], []
        for i in range(min(args.images, source.num_examples)):
            data, ext = source.encoded_image(i)
            files.append(os.path.join(tmp, f"{split.split('[')[0]}_{i}{ext}"))
            Path(files[-1]).write_bytes(data)
            truth.append(source.label_names[int(source.labels[i])])
        for r, true in zip(predict(loaded, files, top_k=3), truth):
            guesses = ", ".join(f"{t['label']} {100 * t['probability']:.1f}%" for t in r["top"])
            print(f"{Path(r['file']).name} (true: {true}): {guesses}")
    return 0 if same else 1


def keras_backend() -> str:
    import keras
    return keras.backend.backend()


def register(sub) -> None:
    _add_evaluate_parser(sub).set_defaults(func=cmd_evaluate)
    _add_predict_parser(sub).set_defaults(func=cmd_predict)
    _add_demo_parser(sub).set_defaults(func=cmd_demo)
