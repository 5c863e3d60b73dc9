"""Train anywhere: the command line end to end on the JAX backend from a prepared dataset:
train a few steps on real CIFAR-10, kill -9 after the first checkpoint, resume, evaluate,
predict, and the README's main job. CI runs this in a virtual environment without TensorFlow
(installed as the README says), where it also checks that nothing imported TensorFlow."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO_ROOT, import_or_skip

RECIPE = REPO_ROOT / "weights" / "_recipes" / "cifar10_resnet_short.yaml"
NO_TF = importlib.util.find_spec("tensorflow") is None
# Runs the command, then reports whether TensorFlow was imported on the way.
_CLI = ("import random, sys; random.seed(0); from keras_attention.cli import main; code = main(sys.argv[1:]); "
        "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(code)")


def _cli(args, **kw):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", _CLI, *args], env=env, cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _finish(proc, timeout=900):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    if NO_TF:
        assert "tensorflow imported: False" in out
    return out


@pytest.mark.slow
def test_train_kill_resume_evaluate_predict_on_jax(tmp_path, cifar10_prepared):
    import_or_skip("jax", "the JAX backend is what this tests")
    run = tmp_path / "run"
    args = ["train", "--recipe", str(RECIPE), "--model", "resnet20", "--dataset", str(cifar10_prepared),
            "--train-split", "train[:640]", "--val-split", "test[:200]", "--epochs", "3",
            "--batch-size", "64", "--warmup-epochs", "0.5", "--progress", "2", "--output", str(run)]
    first = _cli(args)
    deadline = time.time() + 600
    while not (run / "checkpoints" / "ckpt-epoch0001.keras").exists():
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint after 600 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    out = _finish(_cli(args + ["--resume"]))
    assert "resuming after epoch" in out and "backend jax, grain pipeline" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["optimizer_steps"] == 3 * 10 and metrics["backend"] == "jax"
    assert metrics["num_eval_examples"] == 200 and 0 <= metrics["top1"] <= 100

    out = _finish(_cli(["evaluate", str(run), "--dataset", str(cifar10_prepared), "--split", "test[:200]",
                        "--no-progress", "--json", str(tmp_path / "eval.json")]))
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["top1"] == pytest.approx(metrics["top1"]) and result["num_examples"] == 200

    from keras_attention.data import load_source
    source = load_source(str(cifar10_prepared), "test[:2]")
    files = []
    for i in range(2):
        data, ext = source.encoded_image(i)
        files.append(tmp_path / f"img{i}{ext}")
        files[-1].write_bytes(data)
    out = _finish(_cli(["predict", str(run), *map(str, files), "--top-k", "2", "--json"]))
    predictions = json.loads(out[out.index("["):out.rindex("]") + 1])
    assert [p["file"] for p in predictions] == list(map(str, files))
    assert all(len(p["top"]) == 2 for p in predictions)


@pytest.mark.slow
def test_the_main_job_reproduces_the_cards_top1_on_jax(cifar10_prepared):
    """The README's first command, on the JAX backend from the prepared CIFAR-10: the shipped
    se_resnet20.cifar10 gives the model card's top-1 on the full test split."""
    import_or_skip("jax", "the JAX backend is what this tests")
    out = _finish(_cli(["demo", "--dataset", str(cifar10_prepared), "--no-progress"]))
    assert "-> same" in out and "10000 images, jax backend, grain pipeline" in out


def test_an_installed_backend_is_chosen_when_none_is_configured(tmp_path):
    """Keras defaults to TensorFlow; without it (and without KERAS_BACKEND), importing the
    package selects JAX (else PyTorch). A configured, installed backend is kept."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(PYTHONPATH=str(REPO_ROOT), KERAS_HOME=str(tmp_path))
    code = "import keras_attention, keras; print(keras.backend.backend())"
    chosen = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=300).stdout.strip().splitlines()[-1]
    expected = "tensorflow" if not NO_TF else ("jax" if importlib.util.find_spec("jax") else "torch")
    assert chosen == expected
    if importlib.util.find_spec("jax"):
        (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
        kept = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=300).stdout.strip().splitlines()[-1]
        assert kept == "jax"
