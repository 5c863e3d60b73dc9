"""CPU inference throughput, parameters and MACs of ResNet-50 with each attention module.

Every model is timed in the same run, interleaved round by round, against
``keras.applications.ResNet50`` as the reference, so the ratios are meaningful on a
shared, noisy machine where absolute times are not. Each model is timed in float32 and
in bfloat16 (``keras_attention.evaluation``'s ``precision="bfloat16"``: float32 weights,
bfloat16 computation, float32 logits), and timm's ``resnet50`` / ``seresnet50`` (PyTorch,
the same number of threads, ``torch.inference_mode``) are timed in the same rounds in both
memory layouts (default NCHW-contiguous and channels-last) and both precisions (float32 and
``torch.autocast("cpu", torch.bfloat16)``). Writes the inference section of
``docs/benchmarks.md`` (``--output``; the training-throughput section below it, between ``scripts/benchmark_train.py``'s markers, is kept)
and prints it.

    python scripts/benchmark.py                 # batch 16, 224x224, all variants
    python scripts/benchmark.py --rounds 3 --models resnet50 se_resnet50
    python scripts/benchmark.py --no-timm --precisions float32
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

import keras_attention as ka
from keras_attention._files import atomic_write_text
from keras_attention._precision import with_precision
from keras_attention.complexity import count_macs, count_params

DEFAULT_MODELS = ["resnet50", "se_resnet50", "ge_resnet50", "gc_resnet50", "cbam_resnet50",
                  "nam_resnet50", "eca_resnet50"]
REFERENCE = "keras.applications.ResNet50"
# Papers' GFLOPs (multiply-accumulates) for 224x224, where the paper gives one.
PAPER_GMACS = {"resnet50": 3.86, "se_resnet50": 3.87}
#: timm models timed against ours: timm name -> our name.
TIMM_MODELS = {"resnet50": "resnet50", "seresnet50": "se_resnet50"}
TIMM_LAYOUTS = ("default", "channels_last")
#: Where the training-throughput section (scripts/benchmark_train.py's markers) starts; kept as it is.
TRAINING_HEADING = "<!-- training-benchmark:begin -->"


V1_SUFFIX = " (stride_in_1x1)"


def _build(name):
    if name == REFERENCE:
        return keras.applications.ResNet50(weights=None)
    if name.endswith(V1_SUFFIX):
        return ka.create_model(name[: -len(V1_SUFFIX)], stride_in_1x1=True)
    return ka.create_model(name)


class TimmRunner:
    """One timm model in one layout and precision, timed like ``predict_on_batch``."""

    def __init__(self, name, layout, precision, x_nhwc):
        import timm
        import torch
        self.torch = torch
        self.model = timm.create_model(name, pretrained=False).eval()
        x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        if layout == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.precision = x, precision

    def __call__(self):
        torch = self.torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=self.precision == "bfloat16"):
            return self.model(self.x)


def _keep_training_section(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find(TRAINING_HEADING)
    return "" if at < 0 else "\n" + text[at:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--no-timm", action="store_true", help="leave timm's ResNet-50s out")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per model (median reported)")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)

    # keras.applications.ResNet50 is ResNet v1 (stride on the first 1x1, 3.86 GMACs), so our
    # resnet50 is also timed in that placement: the like-for-like throughput comparison.
    names = [REFERENCE]
    for name in args.models:
        names += [name, name + V1_SUFFIX] if name in PAPER_GMACS else [name]
    x = np.random.default_rng(0).standard_normal((args.batch_size, args.image_size, args.image_size, 3)).astype("float32")
    size = (args.image_size, args.image_size, 3)
    runners, stats = {}, {}
    for name in tqdm(names, desc="build + warm up"):
        model = _build(name)
        params, macs = count_params(model), count_macs(model, size)
        for precision in args.precisions:
            key = (name, precision)
            m = with_precision(model, precision) if precision != "float32" else model
            m.predict_on_batch(x)  # compile and warm up
            runners[key] = (lambda m=m: m.predict_on_batch(x))
            stats[key] = {"params": params, "macs": macs, "times": []}
    threads = None
    if not args.no_timm:
        import torch
        threads = os.cpu_count()  # TensorFlow's intra-op default: one thread per core
        torch.set_num_threads(threads)
        for name in tqdm(TIMM_MODELS, desc="timm build + warm up"):
            for precision in args.precisions:
                for layout in TIMM_LAYOUTS:
                    key = (f"timm {name} ({layout})", precision)
                    runners[key] = TimmRunner(name, layout, precision, x)
                    runners[key]()
                    runners[key]()
                    stats[key] = {"times": []}
    for _ in tqdm(range(args.rounds), desc="timing rounds"):
        for key, run in runners.items():  # interleaved, so load changes hit every model alike
            start = time.perf_counter()
            run()
            stats[key]["times"].append(time.perf_counter() - start)

    def median(key):
        return statistics.median(stats[key]["times"])

    def rate(key):
        return args.batch_size / median(key)

    first = args.precisions[0]
    ref_time = median((REFERENCE, "float32")) if (REFERENCE, "float32") in stats else median((REFERENCE, first))
    base = ("resnet50", "float32") if ("resnet50", "float32") in stats else None
    command = "python scripts/benchmark.py" + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
    lines = [
        "# Benchmarks",
        "",
        f"CPU inference, batch {args.batch_size}, {args.image_size}x{args.image_size}, Keras {keras.__version__} on "
        f"{keras.backend.backend()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"median of {args.rounds} interleaved rounds, {datetime.date.today().isoformat()}.",
        f"Command: `{command}`.",
        "Throughput ratios are against `keras.applications.ResNet50` (float32) and our `resnet50` (float32) "
        "measured in the same run; absolute images/s on a shared machine are indicative only. *bfloat16*: "
        "`precision=\"bfloat16\"` (float32 weights, bfloat16 computation, float32 pooling and logits).",
        "MACs are multiply-accumulates for one image (the papers' \"GFLOPs\"). Our builders put the "
        "stride on the 3x3 convolution (torchvision/timm, \"v1.5\"); *(stride_in_1x1)* rows put it on the "
        "first 1x1 as the original Caffe ResNet / SENet releases and keras.applications do, which is "
        "the placement the papers' figures (3.86 / 3.87 G) are for.",
        "",
        "| model | precision | params | GMACs | paper GMACs | images/s | throughput vs keras ResNet50 | "
        "time vs our resnet50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        for precision in args.precisions:
            key = (name, precision)
            s, t = stats[key], median(key)
            paper = f"{PAPER_GMACS[name[: -len(V1_SUFFIX)]]:.2f}" if name.endswith(V1_SUFFIX) else "-"
            rel = f"{t / median(base):.3f}x" if base else "-"
            lines.append(f"| `{name}` | {precision} | {s['params']:,} | {s['macs'] / 1e9:.3f} | {paper} | "
                         f"{rate(key):.1f} | {ref_time / t:.3f}x | {rel} |")
    if not args.no_timm:
        import timm
        import torch
        lines += [
            "",
            "## Against timm (PyTorch) in the same run",
            "",
            f"timm {timm.__version__} on PyTorch {torch.__version__}, {threads} threads (as TensorFlow), "
            "`torch.inference_mode()`, float32 or `torch.autocast(\"cpu\", dtype=torch.bfloat16)`, timed in the "
            "same interleaved rounds as the table above. *ours / timm best*: our images/s over the faster of "
            "timm's two layouts at that precision (>= 1 is parity or better).",
            "",
            "| ours | timm | precision | ours images/s | timm default layout | timm channels-last | "
            "ours / timm default | ours / timm best |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for timm_name, ours in TIMM_MODELS.items():
            if (ours, first) not in stats:
                continue
            for precision in args.precisions:
                mine = rate((ours, precision))
                default = rate((f"timm {timm_name} (default)", precision))
                last = rate((f"timm {timm_name} (channels_last)", precision))
                lines.append(f"| `{ours}` | `{timm_name}` | {precision} | {mine:.1f} | {default:.1f} | {last:.1f} | "
                             f"{mine / default:.2f}x | {mine / max(default, last):.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write_text(args.output, table + _keep_training_section(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
