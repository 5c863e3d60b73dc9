#!/usr/bin/env python3
"""Training throughput (images/s) per backend, precision and input pipeline, in one run.

For each workload (ResNet-20 on CIFAR-10 at batch 128; ResNet-50 on Imagewoof at 128 px,
batch 32) and each backend (TensorFlow with the grain pipeline, TensorFlow with tf.data,
TensorFlow with XLA, JAX, PyTorch), float32 and bfloat16, it measures steady-state training
steps of ``model.fit`` two ways:

* **end to end**: the real input pipeline (decode, augment, normalise) feeding ``fit``;
* **in memory**: the same batches made beforehand, fed from NumPy arrays, so the
  pipeline's own cost shows as the difference.

Each (backend) runs in its own process (Keras fixes the backend at import); all are
measured in the same run, and the table gives ratios against TensorFlow float32 in memory
on the same workload, which is what is comparable on a shared machine. Writes the
"Training throughput" section of ``docs/benchmarks.md`` (between its markers).

    python scripts/benchmark_train.py                     # everything (~30 min on 2 cores)
    python scripts/benchmark_train.py --workloads resnet20 --steps 30
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MARK_BEGIN, MARK_END = "<!-- training-benchmark:begin -->", "<!-- training-benchmark:end -->"

WORKLOADS = {
    "resnet20": {"model": "resnet20", "dataset": "cifar10", "split": "train[:6400]", "batch": 128,
                 "input_size": (32, 32, 3), "augment": "cifar", "crop_pct": 1.0,
                 "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)},
    "resnet50": {"model": "resnet50", "dataset": str(SHARED / "imagewoof-160"), "split": "train",
                 "batch": 32, "input_size": (128, 128, 3), "augment": "imagenet", "crop_pct": 0.875,
                 "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}
# (label, KERAS_BACKEND, pipeline, jit_compile)
CONFIGS = [("TensorFlow + grain", "tensorflow", "grain", "auto"),
           ("TensorFlow + tf.data", "tensorflow", "tf", "auto"),
           ("TensorFlow + XLA", "tensorflow", "grain", True),
           ("JAX", "jax", "grain", "auto"),
           ("PyTorch", "torch", "grain", "auto")]
PRECISIONS = ("float32", "bfloat16")


# ------------------------------------------------------------------------------ worker
class _StepTimes:
    """A Keras callback recording the wall time at the end of every training batch."""

    def __new__(cls):
        import keras

        class Times(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter())
        return Times()


def _images_per_s(times, batch, skip):
    steady = times[skip:]
    return (len(steady) - 1) * batch / (steady[-1] - steady[0])


def worker(spec: dict) -> list[dict]:
    """Measures every (precision, mode) of one backend configuration in this process."""
    import keras
    import numpy as np

    from keras_attention import create_model, data
    from keras_attention.training import TrainConfig, build_optimizer

    w = WORKLOADS[spec["workload"]]
    data_dir = str(SHARED / "tensorflow_datasets")
    dataset = spec.get("dataset") or w["dataset"]
    source = data.load_source(dataset, w["split"], data_dir=data_dir)
    pre = data.Preprocessing(input_size=w["input_size"], crop_pct=w["crop_pct"], mean=w["mean"],
                             std=w["std"], recipe=w["augment"])
    steps, skip, batch = spec["steps"], spec["warmup"], w["batch"]
    pipe = data.pipeline_module(spec["pipeline"])
    out = []
    for precision in spec["precisions"]:
        keras.config.set_dtype_policy("float32" if precision == "float32" else "mixed_bfloat16")
        keras.utils.set_random_seed(0)
        model = create_model(w["model"], num_classes=source.num_classes, input_shape=w["input_size"])
        cfg = TrainConfig(model=w["model"], epochs=1, batch_size=batch, lr=0.05, weight_decay=0.0)
        model.compile(optimizer=build_optimizer(cfg, model, steps + skip),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      jit_compile=spec["jit"])
        total = steps + skip
        train, _ = pipe.train_dataset(source, pre, batch, epochs=max(1, -(-total * batch // source.num_examples)) + 1,
                                      seed=0)
        # End to end: the real pipeline feeding fit.
        times = _StepTimes()
        model.fit(train, steps_per_epoch=total, epochs=1, verbose=0, callbacks=[times])
        e2e = _images_per_s(times.times, batch, skip)
        # In memory: the same kind of batches, made beforehand.
        it = iter(train.as_numpy_iterator() if hasattr(train, "as_numpy_iterator") else train)
        xs, ys = zip(*[next(it) for _ in range(min(total, 12))])
        x, y = np.concatenate(xs), np.concatenate(ys)
        reps = -(-total * batch // len(x))
        x, y = np.concatenate([x] * reps)[:total * batch], np.concatenate([y] * reps)[:total * batch]
        times = _StepTimes()
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[times])
        mem = _images_per_s(times.times, batch, skip)
        out.append({"workload": spec["workload"], "label": spec["label"], "precision": precision,
                    "end_to_end": e2e, "in_memory": mem})
        keras.config.set_dtype_policy("float32")
    return out


# ------------------------------------------------------------------------------ driver
def _run_worker(spec: dict) -> list[dict]:
    env = {**os.environ, "KERAS_BACKEND": spec["backend"], "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=spec.get("timeout", 3600))
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return [{"workload": spec["workload"], "label": spec["label"], "precision": p,
                 "error": " / ".join(tail)[-300:]} for p in spec["precisions"]]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: list[dict], meta: str) -> str:
    lines = [MARK_BEGIN, "## Training throughput", "", meta, "",
             "| workload | backend / pipeline | precision | end to end (img/s) | in memory (img/s) | "
             "end to end / in memory | in memory vs TF float32 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for workload in dict.fromkeys(r["workload"] for r in results):
        rows = [r for r in results if r["workload"] == workload]
        ref = next((r["in_memory"] for r in rows if r["label"] == CONFIGS[0][0]
                    and r["precision"] == "float32" and "in_memory" in r), None)
        for r in rows:
            if "error" in r:
                lines.append(f"| {workload} | {r['label']} | {r['precision']} | fails: {r['error']} | | | |")
                continue
            ratio = f"{r['in_memory'] / ref:.2f}x" if ref else "-"
            lines.append(f"| {workload} | {r['label']} | {r['precision']} | {r['end_to_end']:.1f} | "
                         f"{r['in_memory']:.1f} | {r['end_to_end'] / r['in_memory']:.2f} | {ratio} |")
    return "\n".join(lines + ["", MARK_END])


def _write_section(path: Path, section: str) -> None:
    from keras_attention._files import atomic_write_text
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if MARK_BEGIN in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(path, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--configs", nargs="+", help="labels of CONFIGS to run (default all)")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out before timing")
    parser.add_argument("--cifar", help="CIFAR-10 dataset (default: TFDS 'cifar10' in ../shared/data; "
                        "pass a prepared folder where TensorFlow is absent)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    results = []
    configs = [c for c in CONFIGS if not args.configs or c[0] in args.configs]
    for workload in args.workloads:
        for label, backend, pipeline, jit in configs:
            spec = {"workload": workload, "label": label, "backend": backend, "pipeline": pipeline,
                    "jit": jit, "precisions": args.precisions, "steps": args.steps,
                    "warmup": args.warmup, "dataset": args.cifar if workload == "resnet20" else None}
            t0 = time.perf_counter()
            rows = _run_worker(spec)
            results += rows
            print(f"{workload:9s} {label:22s} {time.perf_counter() - t0:6.0f} s  " + "  ".join(
                f"{r['precision']}: " + (f"{r['end_to_end']:.1f} / {r['in_memory']:.1f} img/s"
                                         if "in_memory" in r else r["error"])
                for r in rows), flush=True)
    import keras
    meta = (f"Measured {datetime.date.today()} with `python scripts/benchmark_train.py --steps {args.steps}` "
            f"on {platform.machine()} x{os.cpu_count()} CPU cores ({platform.processor() or 'CPU'}), "
            f"Keras {keras.__version__}; images/s of steady-state `model.fit` steps ({args.warmup} warm-up "
            f"steps left out, then {args.steps}). End to end = the real input pipeline (decode, augment, "
            f"normalise) feeding `fit`; in memory = the same batches fed from NumPy arrays. The machine is "
            f"shared: compare ratios within a workload, not absolute numbers across runs.")
    section = _table(results, meta)
    print(section)
    if not args.no_write:
        _write_section(args.output, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
