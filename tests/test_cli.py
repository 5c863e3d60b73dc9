"""Command line: option precedence (defaults < recipe < flags; saved run with --resume),
one-line errors, and train -> evaluate -> predict end to end on real CIFAR-10."""

import json
import os
import subprocess
import sys

import pytest

from keras_attention.cli import build_parser, main
from keras_attention.cli._train import _train_values
from tests.helpers import REPO_ROOT, TFDS_DIR, needs_cifar

RECIPE = str(REPO_ROOT / "weights" / "_recipes" / "cifar10_resnet.yaml")


def _values(argv):
    return _train_values(build_parser().parse_args(["train", *argv]))


def test_flags_override_the_recipe_and_set_sets_any_key(tmp_path):
    v = _values(["--recipe", RECIPE, "--model", "se_resnet20", "--lr", "0.05", "--nesterov",
                 "false", "--input-size", "32", "32", "3", "--set", "label_smoothing=0.1",
                 "--val-split", "none", "--output", str(tmp_path / "o")])
    assert v["model"] == "se_resnet20" and v["lr"] == 0.05 and v["nesterov"] is False
    assert v["label_smoothing"] == 0.1 and v["val_split"] is None and v["input_size"] == [32, 32, 3]
    assert v["epochs"] == 180 and v["optimizer"] == "sgd"  # from the recipe
    assert v["output_dir"] == str(tmp_path / "o") and v["resume"] is False
    assert _values(["--model", "eca_resnet20"])["output_dir"] == os.path.join("runs",
                                                                             "eca_resnet20-cifar10")


def test_resume_starts_from_the_saved_run(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"model": "gc_resnet20", "lr": 0.3,
                                                            "epochs": 7}))
    v = _values(["--recipe", RECIPE, "--output", str(tmp_path), "--resume", "--progress", "2"])
    assert (v["model"], v["lr"], v["epochs"], v["verbose"]) == ("gc_resnet20", 0.3, 7, 2)
    assert v["resume"] is True


def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    code = main(["train", "--optimizer", "adam", "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "keras-attention train: error: optimizer must be one of" in err
    assert main(["train", "--set", "epoch=3", "--output", str(tmp_path / "y")]) == 2
    assert "Unknown training option" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.keras"), "a.png"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "m", "--tta", "ten_crop"])


def _run(args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TFDS_DATA_DIR": str(TFDS_DIR)}
    proc = subprocess.run([sys.executable, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@needs_cifar
@pytest.mark.slow
def test_train_evaluate_predict_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(TFDS_DIR))
    run = tmp_path / "run"
    _run(["-m", "keras_attention.cli", "train", "--recipe", RECIPE, "--model", "se_resnet20",
          "--train-split", "train[:512]", "--val-split", "test[:200]", "--epochs", "1",
          "--batch-size", "64", "--warmup-epochs", "0", "--progress", "2", "--output", str(run)])
    cfg = json.loads((run / "pretrained.json").read_text())
    assert cfg["name"] == "se_resnet20.cifar10"
    assert "--model se_resnet20" in cfg["source"]["command"]
    metrics = json.loads((run / "metrics.json").read_text())

    out = _run(["scripts/evaluate.py", str(run), "--dataset", "cifar10", "--split", "test[:200]",
                "--json", str(tmp_path / "eval.json"), "--no-progress"])
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_examples"] == 200 and f"top-1 {result['top1']:.2f}%" in out
    assert result["top1"] == pytest.approx(metrics["top1"])  # same number as after training

    import tensorflow_datasets as tfds
    ds = tfds.load("cifar10", split="test[:2]", data_dir=str(TFDS_DIR), download=False,
                   decoders={"image": tfds.decode.SkipDecoding()})
    files = []
    for i, ex in enumerate(ds):
        files.append(str(tmp_path / f"test{i}.png"))
        with open(files[-1], "wb") as f:
            f.write(ex["image"].numpy())
    lines = _run(["scripts/predict.py", str(run), *files, "--top-k", "3"]).strip().splitlines()
    assert lines[0] == files[0] and lines[4] == files[1] and len(lines) == 8
    assert lines[1].split("%  ")[1] in cfg["label_names"]
    assert main(["predict", str(run / "model.keras"), files[1], "--json", "--top-k", "2"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js[0]["file"] == files[1] and len(js[0]["top"]) == 2
    result_json = tmp_path / "eval.json"
    assert main(["evaluate", str(run / "model.keras"), "--split", "test[:100]", "--tta",
                 "five_crop_flip", "--no-progress", "--per-class", "--json", str(result_json)]) == 0
    out = capsys.readouterr().out
    assert "TTA five_crop_flip" in out and "(100 images" in out
    result = json.loads(result_json.read_text())
    assert list(result["per_class_top1"]) == cfg["label_names"]
    assert all(f"  {name}" in out for name in cfg["label_names"])
    # the main job's command, on this run folder: evaluate, compare with the card, classify
    assert main(["demo", str(run), "--images", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith("-> same") and len(out) == 4 and "(true: " in out[2]


@needs_cifar
@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.parametrize("pipeline", ["tf", "grain"])
def test_the_main_job_prints_the_cards_top1_on_both_pipelines(pipeline, capsys, monkeypatch):
    """The README's first command: the shipped se_resnet20.cifar10 on the full CIFAR-10 test split
    (TFDS) gives the card's top-1 with the tf.data pipeline and with grain."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(TFDS_DIR))
    assert main(["demo", "--pipeline", pipeline, "--images", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"(10000 images, tensorflow backend, {pipeline} pipeline)" in out[0] and out[1].endswith("-> same")


def test_the_command_hides_backend_start_up_logs_unless_verbose(tmp_path):
    """A new user sees our one-line message, not TensorFlow's C++ start-up lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    missing = str(tmp_path / "missing.png")
    cmd = [sys.executable, "-m", "keras_attention.cli", "predict", "se_resnet20.cifar10", missing]
    quiet = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        f"keras-attention predict: error: Image file {missing!r} does not exist."]
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        loud = subprocess.run(cmd + ["--verbose"], env=env, capture_output=True, text=True, timeout=300)
        assert loud.returncode == 2 and len(loud.stderr.strip().splitlines()) > 1
