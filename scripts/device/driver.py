#!/usr/bin/env python3
"""The accelerator runner's driver: ship datasets in pieces, train a plan of runs, bring back
the outputs, and turn them into registry entries.

The device machine (one H200; JAX, PyTorch and timm installed, no TensorFlow, no package
registry) receives at most 64 MiB per call, the working tree and the carried paths together, keeps
``/tmp`` while it stays warm (about 30 s between calls), and returns at most 8 files of at
most 16 MiB from ``$OUT``. So a session is a few calls:

1. here: ``driver.py pack`` writes ``.device/`` (git-ignored): the wheels the device lacks
   (``keras``, ``grain`` and their missing dependencies) and each dataset cut into pieces of
   ``--piece-mib`` with a manifest of SHA-256 checksums;
2. there, one call per piece: ``bash scripts/device/run.sh receive`` (carry
   ``.device/<dataset>-pNN``) copies the carried piece to ``/tmp/ka-device``;
3. there, the last call: ``bash scripts/device/run.sh train PLAN`` (carry ``.device/wheels``
   and the last piece) installs the wheels, reassembles and verifies the datasets,
   optionally measures images/s (``measure: true``) to fit the epochs into the time budget,
   trains the plan's runs (several at once), each evaluated on its full test split, and packs
   weights, metrics, pretrained.json, history, curves and logs into ``runs.tar``, cut into
   parts of at most 15.5 MiB; the first 7 parts come back in ``$OUT`` with an index, and
   ``bash scripts/device/run.sh fetch N`` brings batch N of the rest (a ResNet-50 weights file
   is 95 MB: 7 of them need about 11 calls);
4. here: ``driver.py unpack FOLDER...`` (the calls' ``files_at`` folders) reassembles
   ``runs.tar`` (SHA-256 checked), turns the runs into registry entries with model cards
   (``keras-attention add-weights``) and re-evaluates each on this machine's CPU in float32,
   reporting the difference from the card's top-1 (the cross-device check).

Every step runs on the CPU here too (``tests/test_device_runner.py`` runs the whole chain with
the JAX backend and a tiny budget).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGING = Path(os.environ.get("KA_DEVICE_STAGING", "/tmp/ka-device"))  # on the device (or a test)
WHEELS = ["keras==3.15.1", "namex", "optree", "grain==0.2.18", "array-record", "portpicker"]
WHEEL_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                   "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
#: What one call may carry: the working tree (tracked files) and the carried paths together. A
#: dataset piece is carried with the tree, so the tree must stay under CALL_MIB - PIECE_MIB
#: (tests/test_device_runner.py): large weights belong on the Hugging Face Hub, not in the tree.
CALL_MIB = 64.0
PIECE_MIB = 32.0
#: Parts of the outputs: at most 16 MiB per file and 8 files (one is the index) per call.
PART_MIB = float(os.environ.get("KA_DEVICE_PART_MIB", "15.5"))
PARTS_PER_CALL = 7
#: Outputs of a run brought back (not the checkpoints nor model.keras: the weights file is enough).
RUN_FILES = ("model.weights.h5", "pretrained.json", "metrics.json", "train_config.json",
             "history.csv", "curves.png")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def log(message: str) -> None:
    print(f"[device {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------ here: pack
def pack(datasets: list[Path], out: Path, piece_mib: float, wheels: bool) -> list[Path]:
    """Cuts each dataset folder into pieces of at most ``piece_mib`` MiB under ``out``.

    Each piece folder ``<dataset>-pNN`` holds byte ranges of the dataset's files and the
    dataset's manifest (every file's SHA-256, size and parts). Returns the piece folders, in
    the order to carry them (one per call).
    """
    out.mkdir(parents=True, exist_ok=True)
    limit = int(piece_mib * 2**20)
    folders = []
    for dataset in datasets:
        manifest = {"dataset": dataset.name, "files": {}}
        mine, used = [], limit
        for path in sorted(p for p in dataset.rglob("*") if p.is_file()):
            rel = path.relative_to(dataset).as_posix()
            size = path.stat().st_size
            parts = []
            with open(path, "rb") as f:
                remaining, first = size, True
                while first or remaining:
                    if used >= limit:
                        piece = out / f"{dataset.name}-p{len(mine):02d}"
                        shutil.rmtree(piece, ignore_errors=True)
                        piece.mkdir()
                        mine.append(piece)
                        used = 0
                    chunk = f.read(min(limit - used, remaining))
                    name = f"{rel.replace('/', '__')}.part{len(parts):03d}"
                    (mine[-1] / name).write_bytes(chunk)
                    parts.append(f"{mine[-1].name}/{name}")
                    used += len(chunk)
                    remaining -= len(chunk)
                    first = False
            manifest["files"][rel] = {"sha256": _sha256(path), "size": size, "parts": parts}
        for piece in mine:  # every piece knows the whole dataset
            (piece / "manifest.json").write_text(json.dumps(manifest, indent=1))
        folders += mine
    if wheels:
        target = out / "wheels"
        shutil.rmtree(target, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(target)]
        for platform in WHEEL_PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd + WHEELS, check=True)
    return folders


# ------------------------------------------------------------------------------ there
def receive(device_dir: Path) -> list[str]:
    """Copies every carried piece (``.device/*-pNN``) into the staging folder."""
    parts = STAGING / "parts"
    got = []
    for piece in sorted(device_dir.glob("*-p[0-9][0-9]")):
        dest = parts / piece.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(piece, dest)
        got.append(piece.name)
    log(f"received {got or 'no pieces'}; staged: {sorted(p.name for p in parts.glob('*'))}")
    return got


def assemble() -> dict[str, Path]:
    """Reassembles every dataset whose pieces have all arrived; verifies each file's SHA-256.

    Raises:
        RuntimeError: a missing piece or a checksum mismatch (named).
    """
    done = {}
    manifests = {}
    for m in sorted((STAGING / "parts").glob("*/manifest.json")):
        manifest = json.loads(m.read_text())
        manifests[manifest["dataset"]] = manifest
    for name, manifest in manifests.items():
        target = STAGING / "data" / name
        for rel, info in manifest["files"].items():
            path = target / rel
            if path.is_file() and path.stat().st_size == info["size"] and _sha256(path) == info["sha256"]:
                continue
            missing = [p for p in info["parts"] if not (STAGING / "parts" / p).is_file()]
            if missing:
                raise RuntimeError(f"dataset {name}: {rel} lacks pieces {sorted({p.split('/')[0] for p in missing})}; "
                                   f"carry them with `run.sh receive` first")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                for p in info["parts"]:
                    f.write((STAGING / "parts" / p).read_bytes())
            if _sha256(path) != info["sha256"]:
                raise RuntimeError(f"dataset {name}: {rel} reassembled with the wrong SHA-256")
        done[name] = target
    log(f"datasets ready: {', '.join(f'{k} ({v})' for k, v in done.items()) or 'none'}")
    return done


def split_base(split: str) -> str:
    from keras_attention.data.source import split_base as base
    return base(split)


def _load_plan(path: Path) -> dict:
    import yaml
    plan = yaml.safe_load(path.read_text())
    if not isinstance(plan, dict) or not plan.get("runs"):
        raise ValueError(f"{path}: a plan needs a 'runs' list")
    return plan


def _run_config(plan: dict, run: dict, datasets: dict, runs_dir: Path) -> dict:
    """The TrainConfig values of one run: recipe + plan-wide ``set`` + the run's ``set``."""
    from keras_attention.training import load_recipe
    values = load_recipe(REPO / run.get("recipe", plan.get("recipe")))
    values.update(plan.get("set") or {})
    values.update(run.get("set") or {})
    values["model"] = run["model"]
    dataset = run.get("dataset", plan.get("dataset"))
    values["dataset"] = str(datasets[dataset]) if dataset in datasets else dataset
    values["output_dir"] = str(runs_dir / f"{run['model']}.{values.get('tag') or 'run'}")
    values["verbose"] = 2
    return values


def _child(values: dict, log_path: Path, env: dict) -> subprocess.Popen:
    code = ("import json, sys; from keras_attention.training import TrainConfig, train; "
            "train(TrainConfig.from_dict(json.loads(sys.argv[1])), command=sys.argv[2])")
    command = (f"keras-attention train --recipe weights/{values.get('recipe', '').split('weights/')[-1]} "
               f"--model {values['model']} (accelerator runner)")
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(values), command], env=env,
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT, cwd=REPO)


def _child_env(parallel: int) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("KERAS_BACKEND", "jax")
    # Several JAX processes share one GPU: no preallocation of 75% of its memory each.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / max(parallel, 1):.3f}")
    return env


def measure(plan: dict, datasets: dict, seconds: float) -> dict:
    """Images/s of each distinct (model, recipe) of the plan, ``parallel`` at a time, from
    short runs of ``measure_steps`` steps (timed after compilation, as the RunMonitor does)."""
    runs_dir = STAGING / "measure"
    shutil.rmtree(runs_dir, ignore_errors=True)
    parallel = int(plan.get("parallel", 1))
    results = {}
    pending = list(plan["runs"])
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        procs = []
        for run in batch:
            values = _run_config(plan, run, datasets, runs_dir)
            n_train = int(plan.get("measure_steps", 60)) * values["batch_size"]
            values.update(epochs=2, train_split=f"{split_base(values.get('train_split', 'train'))}[:{n_train}]",
                          val_split=None, warmup_epochs=0)
            procs.append((run, values, _child(values, runs_dir.parent / f"measure-{run['model']}.log",
                                              _child_env(parallel))))
        deadline = time.time() + seconds
        for run, values, proc in procs:
            try:
                proc.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
            metrics = Path(values["output_dir"]) / "metrics.json"
            if metrics.is_file():
                m = json.loads(metrics.read_text())
                # epoch 2 only: epoch 1 includes compilation
                results[run["model"]] = m.get("images_per_s_median")
        log(f"measured (images/s per run, {parallel} at once): {results}")
    (STAGING / "measure.json").write_text(json.dumps({"parallel": parallel, "images_per_s": results}))
    return results


def train(plan_path: Path, out: Path, budget_s: float | None) -> int:
    """Trains the plan's runs ``parallel`` at a time; packs finished runs into ``out``."""
    t0 = time.time()
    plan = _load_plan(plan_path)
    datasets = assemble()
    budget_s = budget_s or float(plan.get("budget_s", 480))
    parallel = int(plan.get("parallel", 1))
    rates = {}
    if plan.get("measure"):
        rates = measure(plan, datasets, float(plan.get("measure_s", 90)))
    runs_dir = STAGING / "runs"
    pending = list(plan["runs"])
    running: list[tuple[dict, subprocess.Popen, float]] = []
    finished, failed = [], []
    while pending or running:
        while pending and len(running) < parallel:
            run = pending.pop(0)
            values = _run_config(plan, run, datasets, runs_dir)
            left = budget_s - (time.time() - t0) - float(plan.get("reserve_s", 45))
            rate = rates.get(run["model"])
            if rate:
                from keras_attention.data import load_source
                n = load_source(values["dataset"], values.get("train_split", "train")).num_examples
                per_run = left / math.ceil((len(pending) + len(running) + 1) / parallel)
                fit = int(per_run * rate * 0.9 / n)  # 10% for compilation and evaluation
                if fit < 1:
                    log(f"skip {run['model']}: {left:.0f} s left, not one epoch at {rate:.0f} img/s")
                    failed.append(run["model"])
                    continue
                if fit < values["epochs"]:
                    log(f"{run['model']}: {values['epochs']} epochs do not fit in {per_run:.0f} s at "
                        f"{rate:.0f} img/s; training {fit}")
                    values["epochs"] = fit
                    values["warmup_epochs"] = min(values.get("warmup_epochs", 0), max(fit - 1, 0) / 2)
            shutil.rmtree(values["output_dir"], ignore_errors=True)
            log(f"start {run['model']}: {values['epochs']} epochs, batch {values['batch_size']}, "
                f"{values.get('mixed_precision')}")
            proc = _child(values, runs_dir.parent / f"train-{run['model']}.log", _child_env(parallel))
            running.append((values, proc, time.time()))
        time.sleep(1)
        for item in list(running):
            values, proc, started = item
            if proc.poll() is None and time.time() - t0 > budget_s:
                proc.kill()
                log(f"killed {values['model']}: time budget of {budget_s:.0f} s spent")
            if proc.poll() is not None:
                running.remove(item)
                ok = proc.returncode == 0 and (Path(values["output_dir"]) / "metrics.json").is_file()
                (finished if ok else failed).append(values["model"])
                log(f"{'done' if ok else 'FAILED'} {values['model']} in {time.time() - started:.0f} s")
    collect(runs_dir, out)
    log(f"finished {finished}; failed {failed}; {time.time() - t0:.0f} s")
    return 0 if finished and not failed else 1


def collect(runs_dir: Path, out: Path) -> list[Path]:
    """Packs each finished run's outputs and the logs into ``runs.tar``, cut into parts of at
    most :data:`PART_MIB` MiB (the device tool returns files of at most 16 MiB, 8 per call),
    and puts the first batch of parts in ``out`` (:func:`fetch` puts the next ones)."""
    outbox = STAGING / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    outbox.mkdir(parents=True)
    archive = STAGING / "runs.tar"
    with tarfile.open(archive, "w") as tar:
        for run in sorted(p for p in runs_dir.glob("*") if (p / "metrics.json").is_file()):
            for name in RUN_FILES:
                if (run / name).is_file():
                    tar.add(run / name, arcname=f"{run.name}/{name}")
        for logfile in sorted(STAGING.glob("*.log")):
            tar.add(logfile, arcname=f"logs/{logfile.name}")
    size, limit = archive.stat().st_size, int(PART_MIB * 2**20)
    parts = []
    with open(archive, "rb") as f:
        while chunk := f.read(limit):
            parts.append(outbox / f"runs.tar.part{len(parts):03d}")
            parts[-1].write_bytes(chunk)
    index = {"archive": "runs.tar", "sha256": _sha256(archive), "size": size,
             "parts": [p.name for p in parts], "per_call": PARTS_PER_CALL}
    (outbox / "outbox.json").write_text(json.dumps(index, indent=1))
    calls = math.ceil(len(parts) / PARTS_PER_CALL)
    log(f"runs.tar: {size / 2**20:.1f} MiB in {len(parts)} part(s); "
        f"{calls} call(s) bring them back (`run.sh fetch 1` .. `fetch {calls - 1}` after this one)")
    return fetch(0, out)


def fetch(batch: int, out: Path) -> list[Path]:
    """Copies batch ``batch`` of the outbox's parts (and its index) into ``out``."""
    outbox = STAGING / "outbox"
    index = json.loads((outbox / "outbox.json").read_text())
    names = index["parts"][batch * PARTS_PER_CALL:(batch + 1) * PARTS_PER_CALL]
    out.mkdir(parents=True, exist_ok=True)
    copied = [Path(shutil.copy2(outbox / n, out / n)) for n in names + ["outbox.json"]]
    log(f"batch {batch}: {names or 'nothing left'}")
    return copied


def _join_parts(folders: list[Path], target: Path) -> Path:
    """Reassembles ``runs.tar`` from the parts found in ``folders``; checks its SHA-256."""
    index = None
    found = {}
    for folder in folders:
        for p in folder.glob("runs.tar.part*"):
            found[p.name] = p
        if (folder / "outbox.json").is_file():
            index = json.loads((folder / "outbox.json").read_text())
    if index is None:
        raise SystemExit(f"no outbox.json in {', '.join(map(str, folders))}")
    missing = [n for n in index["parts"] if n not in found]
    if missing:
        raise SystemExit(f"runs.tar lacks parts {missing}: fetch them (run.sh fetch N)")
    with open(target, "wb") as f:
        for name in index["parts"]:
            f.write(found[name].read_bytes())
    if _sha256(target) != index["sha256"]:
        raise SystemExit(f"{target}: reassembled with the wrong SHA-256")
    return target


# ------------------------------------------------------------------------------ here: unpack
def unpack(folders: list[Path], runs_dir: Path, weights_dir: Path | None, notes: str | None,
           dataset: str | None, check: bool) -> list[dict]:
    """Registry entries (with model cards) for the runs brought back in ``folders`` (the
    ``files_at`` folders of the train and fetch calls), and the cross-device check: each
    entry re-evaluated here in float32 against its card's top-1."""
    from keras_attention.evaluation import evaluate
    from keras_attention.weights import add_trained_weights
    runs_dir.mkdir(parents=True, exist_ok=True)
    archive = _join_parts(folders, runs_dir / "runs.tar")
    with tarfile.open(archive) as tar:
        tar.extractall(runs_dir, filter="data")
    report = []
    for run in sorted(p for p in runs_dir.iterdir() if (p / "metrics.json").is_file()):
        entry = add_trained_weights(run, weights_dir, notes=notes, overwrite=True)
        card = json.loads((entry / "pretrained.json").read_text())
        row = {"name": card["name"], "card_top1": card["metrics"].get("top1")}
        if check and row["card_top1"] is not None:
            result = evaluate(str(run), dataset, card["metrics"]["split"], progress=False)
            row.update(here_top1=result["top1"], difference=result["top1"] - row["card_top1"])
        report.append(row)
        log(json.dumps(row))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: wheels + datasets in pieces under .device/")
    p.add_argument("datasets", nargs="+", type=Path, help="dataset folders (prepared or class folders)")
    p.add_argument("--out", type=Path, default=REPO / ".device")
    p.add_argument("--piece-mib", type=float, default=PIECE_MIB)
    p.add_argument("--no-wheels", action="store_true")
    p = sub.add_parser("receive", help="there: stage the carried pieces")
    p.add_argument("--device-dir", type=Path, default=REPO / ".device", help=argparse.SUPPRESS)
    p = sub.add_parser("train", help="there: assemble, (measure,) train the plan, collect")
    p.add_argument("plan", type=Path)
    p.add_argument("--device-dir", type=Path, default=REPO / ".device", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    p.add_argument("--budget-s", type=float)
    p = sub.add_parser("fetch", help="there: the next batch of output parts into $OUT")
    p.add_argument("batch", type=int)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    p = sub.add_parser("unpack", help="here: output parts -> registry entries + cross-device check")
    p.add_argument("folders", nargs="+", type=Path, help="the folders the device calls' files are in")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "device")
    p.add_argument("--weights-dir", type=Path)
    p.add_argument("--notes", help="markdown added to every model card")
    p.add_argument("--dataset", help="dataset to re-evaluate on (default: each card's)")
    p.add_argument("--no-check", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "pack":
        for folder in pack(args.datasets, args.out, args.piece_mib, not args.no_wheels):
            size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
            print(f"{folder.relative_to(args.out.parent) if args.out.parent in folder.parents else folder}"
                  f"  {size:.1f} MiB")
        return 0
    if args.command == "receive":
        receive(args.device_dir)
        return 0
    if args.command == "train":
        receive(args.device_dir)  # the last piece travels with the train call
        return train(args.plan, args.out, args.budget_s)
    if args.command == "fetch":
        fetch(args.batch, args.out)
        return 0
    report = unpack(args.folders, args.runs, args.weights_dir, args.notes, args.dataset, not args.no_check)
    bad = [r for r in report if abs(r.get("difference", 0.0)) > 0.05]
    print(json.dumps(report, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
