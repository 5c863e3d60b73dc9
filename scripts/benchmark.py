"""CPU inference throughput, parameters and MACs of ResNet-50 with each attention module.

Every model is timed in the same run, interleaved round by round, against
``keras.applications.ResNet50`` as the reference, so the ratios are meaningful on a
shared, noisy machine where absolute times are not. Writes a markdown table to
``docs/benchmarks.md`` (``--output``) and prints it.

    python scripts/benchmark.py                 # batch 16, 224x224, all variants
    python scripts/benchmark.py --rounds 3 --models resnet50 se_resnet50
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
from keras_attention.complexity import count_macs, count_params

DEFAULT_MODELS = ["resnet50", "se_resnet50", "ge_resnet50", "gc_resnet50", "cbam_resnet50",
                  "nam_resnet50", "eca_resnet50"]
REFERENCE = "keras.applications.ResNet50"
# Papers' GFLOPs (multiply-accumulates) for 224x224, where the paper gives one.
PAPER_GMACS = {"resnet50": 3.86, "se_resnet50": 3.87}


V1_SUFFIX = " (stride_in_1x1)"


def _build(name):
    if name == REFERENCE:
        return keras.applications.ResNet50(weights=None)
    if name.endswith(V1_SUFFIX):
        return ka.create_model(name[: -len(V1_SUFFIX)], stride_in_1x1=True)
    return ka.create_model(name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
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
    models, stats = {}, {}
    for name in tqdm(names, desc="build + warm up"):
        model = _build(name)
        model.predict_on_batch(x)  # compile and warm up
        models[name] = model
        size = (args.image_size, args.image_size, 3)
        stats[name] = {"params": count_params(model), "macs": count_macs(model, size), "times": []}
    for _ in tqdm(range(args.rounds), desc="timing rounds"):
        for name in names:  # interleaved, so load changes hit every model alike
            start = time.perf_counter()
            models[name].predict_on_batch(x)
            stats[name]["times"].append(time.perf_counter() - start)

    ref_time = statistics.median(stats[REFERENCE]["times"])
    base_time = statistics.median(stats["resnet50"]["times"]) if "resnet50" in stats else None
    lines = [
        "# Benchmarks",
        "",
        f"CPU inference, batch {args.batch_size}, {args.image_size}x{args.image_size}, float32, "
        f"Keras {keras.__version__} on {keras.backend.backend()}, {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), median of {args.rounds} interleaved rounds, "
        f"{datetime.date.today().isoformat()}.",
        f"Command: `python scripts/benchmark.py --rounds {args.rounds}`.",
        "Throughput ratios are against `keras.applications.ResNet50` and our `resnet50` measured in the "
        "same run; absolute images/s on a shared machine are indicative only.",
        "MACs are multiply-accumulates for one image (the papers' \"GFLOPs\"). Our builders put the "
        "stride on the 3x3 convolution (torchvision/timm, \"v1.5\"); *(stride_in_1x1)* rows put it on the "
        "first 1x1 as the original Caffe ResNet / SENet releases and keras.applications do, which is "
        "the placement the papers' figures (3.86 / 3.87 G) are for.",
        "",
        "| model | params | GMACs | paper GMACs | images/s | throughput vs keras ResNet50 | time vs our resnet50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        s = stats[name]
        t = statistics.median(s["times"])
        paper = f"{PAPER_GMACS[name[: -len(V1_SUFFIX)]]:.2f}" if name.endswith(V1_SUFFIX) else "-"
        rel = f"{t / base_time:.3f}x" if base_time else "-"
        lines.append(f"| `{name}` | {s['params']:,} | {s['macs'] / 1e9:.3f} | {paper} | "
                     f"{args.batch_size / t:.1f} | {ref_time / t:.3f}x | {rel} |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(table)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
