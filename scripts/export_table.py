"""Regenerates docs/export.md: every registry family (and every attention layer) x export format.

Each cell is the result of ``keras_attention.export.export`` on this machine: the artifact is
written with Keras's ``model.export``, loaded back in its own runtime (TensorFlow's SavedModel
loader, onnxruntime, the LiteRT interpreter of ai-edge-litert) and compared with the Keras
model on standard-normal inputs; a failure cell quotes the first line of the error.

    python scripts/export_table.py                    # all rows, writes docs/export.md
    python scripts/export_table.py --rows se gc       # a few rows, printed only
    python scripts/export_table.py --rows se --update # ... and replaced in docs/export.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_attention as ka  # noqa: E402
from keras_attention._files import atomic_write_text  # noqa: E402
from keras_attention.evaluation import load_for_inference  # noqa: E402
from keras_attention.export import FORMATS, SUFFIXES, export  # noqa: E402

CIFAR = {"num_classes": 10, "input_shape": (32, 32, 3)}
#: key -> (registry family, what is exported, how to build it: a pretrained name or (arch, kwargs)).
ROWS = {
    "resnet": ("resnet", "resnet20.cifar10", "resnet20.cifar10"),
    "resnet_imagenet": ("resnet + ECA", "eca_resnet50d (ImageNet: ResNet-D stem, avg-down; random weights, 224 px)",
                        ("eca_resnet50d", {})),
    "se": ("resnet + SE", "se_resnet20.cifar10", "se_resnet20.cifar10"),
    "ge": ("resnet + GE-θ⁻", "ge_resnet20.cifar10", "ge_resnet20.cifar10"),
    "ge_theta": ("resnet + GE-θ", "ge_theta_resnet20 (random weights)", ("ge_theta_resnet20", {})),
    "ge_theta_plus": ("resnet + GE-θ⁺", "ge_theta_plus_resnet20 (random weights)", ("ge_theta_plus_resnet20", {})),
    "gc": ("resnet + GC", "gc_resnet20.cifar10", "gc_resnet20.cifar10"),
    "cbam": ("resnet + CBAM", "cbam_resnet20.cifar10", "cbam_resnet20.cifar10"),
    "nam": ("resnet + NAM", "nam_resnet20.cifar10", "nam_resnet20.cifar10"),
    "eca": ("resnet + ECA", "eca_resnet20.cifar10", "eca_resnet20.cifar10"),
    "densenet": ("densenet", "densenet_bc_40_12 (random weights)", ("densenet_bc_40_12", {})),
    "colornet": ("colornet", "colornet40_12.cifar10", "colornet40_12.cifar10"),
    "non_local": ("non_local", "nl_resnet50 (random weights, 224 px)", ("nl_resnet50", {})),
    "residual_attention": ("residual_attention", "attention56_cifar (random weights)", ("attention56_cifar", {})),
    "sagan": ("attention layer: SAGAN", "resnet20, attention='sagan' (random weights)",
              ("resnet20", {"attention": "sagan", "attention_kwargs": {"reduction_ratio": 4}})),
    "danet_pam": ("attention layer: DANet position", "resnet20, attention='danet_pam' (random weights)",
                  ("resnet20", {"attention": "danet_pam", "attention_kwargs": {"reduction_ratio": 4}})),
    "danet_cam": ("attention layer: DANet channel", "resnet20, attention='danet_cam' (random weights)",
                  ("resnet20", {"attention": "danet_cam"})),
    "nonlocal_block": ("attention layer: non-local", "resnet20, attention='nonlocal' (random weights)",
                       ("resnet20", {"attention": "nonlocal"})),
    "stn": ("attention layer: spatial transformer", "resnet20, attention='stn' (random weights)",
            ("resnet20", {"attention": "stn"})),
    "adcm": ("attention layer: ADCM", "resnet20, attention='adcm' (random weights)",
             ("resnet20", {"attention": "adcm", "attention_kwargs": {"reduction_ratio": 4}})),
    "sk": ("resnet + SK", "sk_resnet18 (random weights, 224 px)", ("sk_resnet18", {})),
    "splat": ("resnet + split attention", "resnest14d (random weights, 224 px)", ("resnest14d", {})),
    "bat": ("resnet + BAT", "bat_resnext26ts (random weights, 256 px)", ("bat_resnext26ts", {})),
    "bagnet": ("bagnet", "bagnet9 (random weights, 224 px)", ("bagnet9", {})),
    "saccader": ("saccader", "saccader77 (random weights, 224 px; the subclassed model called on a "
                 "`keras.Input`, learned policy, 6 glimpses)", ("saccader77", {})),
}


def _loaded(spec):
    if isinstance(spec, str):
        return load_for_inference(spec)
    arch, kwargs = spec
    keras.utils.set_random_seed(0)
    kwargs = {**(CIFAR if arch.endswith(("20", "cifar", "_40_12")) else {}), **kwargs}
    model = ka.create_model(arch, **kwargs)
    # Several attention layers start as the identity (a zero scale or zero last layer), which
    # would leave their computation out of the comparison: every all-zero weight gets small values.
    rng = np.random.default_rng(0)
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        if value.size and not value.any():
            weight.assign(rng.normal(0, 0.1, value.shape).astype(value.dtype))
    if not hasattr(model, "inputs"):  # a subclassed model (Saccader): exported through a functional wrapper
        inputs = keras.Input(model.image_shape, name="images")
        model = keras.Model(inputs, model(inputs, training=False), name=model.name)
    return load_for_inference(model, config={"label_names": [f"class_{i}" for i in range(model.output_shape[-1])]})


def _reason(err: Exception, folder) -> str:
    """The error of a failed export as one short table cell: the temporary folder's path left out,
    and of a runtime's long load error the clause that names the cause (its last one)."""
    text = " ".join(str(err).replace(str(folder), "<artifact folder>").split()).replace("|", "\\|")
    if len(text) > 300:  # what failed, then the end of the message, where the runtimes name the cause
        text = f"{text.split(': ', 1)[0]}: ... {text[-200:]}"
    return text


def _cell(loaded, fmt, folder) -> str:
    path = Path(folder) / f"{fmt}{SUFFIXES[fmt]}"
    start = time.perf_counter()
    try:
        result = export(loaded, fmt, path, verify=True, verify_batch=4)
    except Exception as err:  # every failure is a table cell
        return f"fails: {_reason(err, folder)}"
    seconds = time.perf_counter() - start
    return f"exports; max rel. error {result.max_rel_error:.1e} ({seconds:.0f} s)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--update", action="store_true",
                        help="with --rows: replace those rows in the page instead of only printing them")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "export.md")
    args = parser.parse_args(argv)
    lines = ["| family | exported model | " + " | ".join(f"`{f}`" for f in FORMATS) + " |",
             "|---|---|" + "---|" * len(FORMATS)]
    for key in args.rows:
        family, what, spec = ROWS[key]
        loaded = _loaded(spec)
        with tempfile.TemporaryDirectory() as folder:
            cells = [_cell(loaded, fmt, folder) for fmt in FORMATS]
        lines.append(f"| {family} | {what} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        keras.backend.clear_session()
    if args.rows != list(ROWS):
        if args.update and args.output.exists():  # replace those rows in the page, keep the rest
            new = {line.split(" | ")[1]: line for line in lines[2:]}
            page = [new.get(line.split(" | ")[1], line) if line.startswith("| ") and line.count(" | ") > 1 else line
                    for line in args.output.read_text().splitlines()]
            atomic_write_text(args.output, "\n".join(page) + "\n")
            print(f"updated {len(new)} row(s) of {args.output}")
        return 0
    import importlib.metadata as md

    def version(package):
        try:
            return md.version(package)
        except md.PackageNotFoundError:
            return "not installed"

    text = "\n".join([
        "# Export",
        "",
        "`keras-attention export MODEL --format tf_saved_model|onnx|litert --output PATH` exports through "
        "Keras 3's `model.export` (float32, NHWC `(N, H, W, 3)` input with a free batch size, logits out) and "
        "writes `PATH.README.md` and `PATH.json` next to the artifact: the preprocessing (resize, crop, "
        "mean/std), the output and the label names; an ONNX file also carries that JSON in its "
        "`metadata_props` (key `keras_attention`). Installing: `pip install 'keras-attention[export]'`.",
        "",
        "## Every family x format",
        "",
        f"Generated by `python scripts/export_table.py` on {datetime.date.today().isoformat()} (Keras "
        f"{keras.__version__}, {keras.backend.backend()} backend; tensorflow {version('tensorflow')}, "
        f"tf2onnx {version('tf2onnx')}, onnxruntime {version('onnxruntime')}, ai-edge-litert "
        f"{version('ai-edge-litert')}). Each artifact is loaded back in its own runtime (TensorFlow's "
        "SavedModel loader, onnxruntime's CPU session, the LiteRT `Interpreter` of ai-edge-litert) and run on "
        "4 standard-normal inputs; *max rel. error* is `max |runtime - keras| / max |keras|` over the logits. "
        "Shipped weights where a tag exists, else seeded random weights, with every all-zero weight (the "
        "zero-initialised scales and last layers that make several attention layers start as the identity) "
        "set to small random values so that the attention's computation shows in the comparison. "
        "The export tests (`tests/test_export.py`) check `se_resnet20.cifar10` in all three runtimes on real "
        "CIFAR-10 test images.",
        "",
        *lines,
        "",
        "Reading of the failures: tf2onnx leaves the grouped 3x3 convolutions of `resnest14d` and `bat_resnext26ts` as `StatefulPartitionedCall` nodes, which onnxruntime rejects; the Saccader graph has `Bitcast` and `BitwiseAnd` ops, for which tf2onnx has no converter (its log names them); the LiteRT interpreter needs the Flex delegate (TensorFlow select ops) for BAT and the Saccader.",
        "",
    ])
    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
