"""The accelerator runner end to end on this CPU (JAX backend, a tiny budget): a prepared dataset
packed into pieces, each piece "carried" in its own call, the plan trained two runs at once with
the epochs fitted to a measured throughput, the outputs collected within the device tool's limits,
then turned into registry entries whose cards this machine reproduces (cross-device check)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_attention.data import load_source, write_prepared
from tests.helpers import REPO_ROOT, import_or_skip

RUN_SH = REPO_ROOT / "scripts" / "device" / "run.sh"
DRIVER = REPO_ROOT / "scripts" / "device" / "driver.py"


def test_working_tree_leaves_room_for_a_dataset_piece():
    """Every accelerator call carries the tracked tree and one dataset piece within 64 MiB; a large
    weights file committed to weights/ would shrink the pieces (more calls of a 15-minute budget)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("device_driver", DRIVER)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    tree_mib = sum((REPO_ROOT / f).stat().st_size for f in files.decode().split("\0")
                   if f and (REPO_ROOT / f).is_file()) / 2**20
    assert tree_mib + driver.PIECE_MIB <= driver.CALL_MIB, (
        f"the tracked tree is {tree_mib:.1f} MiB: with a {driver.PIECE_MIB:.0f} MiB piece a call exceeds "
        f"{driver.CALL_MIB:.0f} MiB; publish large weights to the Hub instead of committing them")


def _device(args, tmp_path, **env):
    env = {**os.environ, "KERAS_BACKEND": "jax", "KA_DEVICE_STAGING": str(tmp_path / "staging"),
           "OUT": str(tmp_path / "OUT"), "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    proc = subprocess.run(["bash", str(RUN_SH), *args], env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_pack_carry_train_collect_unpack_on_cpu(tmp_path, cifar10_prepared, monkeypatch):
    import_or_skip("jax", "the runner trains with the JAX backend")
    train, test = load_source(str(cifar10_prepared), "train[:256]"), load_source(str(cifar10_prepared), "test[:100]")
    data = write_prepared(tmp_path / "data" / "cifar10", name="cifar10", label_names=train.label_names,
                          source="test slice", splits={"train": (np.asarray(train.arrays), train.labels),
                                                       "test": (np.asarray(test.arrays), test.labels)})
    subprocess.run([sys.executable, str(DRIVER), "pack", str(data), "--out", str(tmp_path / "packed"),
                    "--piece-mib", "0.3", "--no-wheels"], check=True, capture_output=True)
    pieces = sorted(p for p in (tmp_path / "packed").iterdir())
    assert len(pieces) >= 3 and all(sum(f.stat().st_size for f in p.iterdir()) <= 0.4 * 2**20
                                    for p in pieces)
    for piece in pieces[:-1]:  # one call per piece: only that piece is carried
        carried = tmp_path / f"call-{piece.name}" / ".device"
        carried.mkdir(parents=True)
        (carried / piece.name).symlink_to(piece)
        _device(["receive", "--device-dir", str(carried)], tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({  # YAML is a superset of JSON
        "dataset": "cifar10", "recipe": "weights/_recipes/cifar10_resnet_gpu.yaml", "parallel": 2,
        "budget_s": 1200, "reserve_s": 0, "measure": True, "measure_steps": 2, "measure_s": 600,
        "set": {"epochs": 3, "batch_size": 32, "lr": 0.05, "warmup_epochs": 1,
                "mixed_precision": "bfloat16"},
        "runs": [{"model": "resnet20"}, {"model": "se_resnet20", "set": {"epochs": 1, "warmup_epochs": 0}}]}))
    last = tmp_path / "last-call" / ".device"
    last.mkdir(parents=True)
    (last / pieces[-1].name).symlink_to(pieces[-1])
    # Output parts of 0.25 MiB: the ~2.2 MB of two ResNet-20 runs need more than one call.
    small_parts = {"KA_DEVICE_PART_MIB": "0.25"}
    log = _device(["train", str(plan), "--device-dir", str(last)], tmp_path, **small_parts)
    assert "datasets ready: cifar10" in log and "measured (images/s per run, 2 at once)" in log
    calls = [tmp_path / "OUT"]
    while True:  # each call's $OUT is a fresh folder, as on the device
        files = sorted(calls[-1].iterdir())
        assert 0 < len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files)
        if len(files) < 8:
            break
        calls[-1] = calls[-1].rename(tmp_path / f"files-{len(calls)}")
        calls.append(tmp_path / "OUT")
        _device(["fetch", str(len(calls) - 1)], tmp_path)
    assert len(calls) >= 2

    weights = tmp_path / "weights"
    monkeypatch.setenv("KERAS_ATTENTION_WEIGHTS_PATH", str(weights))
    proc = subprocess.run([sys.executable, str(DRIVER), "unpack", *map(str, calls), "--runs", str(tmp_path / "runs"),
                           "--weights-dir", str(weights), "--dataset", str(data)],
                          env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads(proc.stdout[proc.stdout.rindex("\n[\n") + 1:])
    metrics = json.loads((tmp_path / "runs" / "resnet20.cifar10" / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["precision"] == "mixed_bfloat16"
    assert metrics["num_eval_examples"] == 100 and metrics["optimizer_steps"] == 3 * 8
    assert {r["name"] for r in report} == {"resnet20.cifar10", "se_resnet20.cifar10"}
    assert all(abs(r["difference"]) <= 0.05 for r in report), report
    card = (weights / "resnet20.cifar10" / "README.md").read_text()
    assert "mixed_bfloat16" in card and "jax" in card

