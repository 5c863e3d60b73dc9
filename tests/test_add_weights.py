"""Adding a finished training run to the weights registry (hub.add_trained_weights)."""

import json

import numpy as np
import pytest

import keras_attention
from keras_attention import hub
from tests.conftest import predict, random_tiny_model, tiny_cfg

X = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")


def _fake_run(path, model):
    """The files the training script leaves in its output folder."""
    path.mkdir()
    model.save_weights(str(path / "model.weights.h5"))
    cfg = tiny_cfg("cifar10", hub.sha256_file(path / "model.weights.h5"),
                   (path / "model.weights.h5").stat().st_size, repo_id="keras-attention/x", revision=None,
                   default=True)
    cfg["source"] = {"recipe": "recipes/cifar10_resnet_short.yaml", "command": "keras-attention train ...",
                     "hardware": "CPU x86_64 x2 (tensorflow)", "epochs": 5}
    cfg["metrics"]["per_class_top1"] = {"cat": 91.0, "dog": None}
    (path / "pretrained.json").write_text(json.dumps(cfg))
    (path / "metrics.json").write_text(json.dumps({
        "trainable_params": 123, "num_eval_examples": 10000, "steps_per_epoch": 390, "precision": "float32",
        "backend": "tensorflow", "train_time_s_total": 600.0, "images_per_s_median": 400.0,
        "final_train_loss": 0.5, "final_train_top1": 85.0}))
    (path / "train_config.json").write_text(json.dumps({
        "train_split": "train", "epochs": 5, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
        "momentum": 0.9, "nesterov": True, "warmup_epochs": 1, "weight_decay": 5e-4,
        "weight_decay_mode": "l2", "label_smoothing": 0.0, "augment": "cifar", "seed": 0}))
    return cfg


def test_run_becomes_a_loadable_entry_with_a_card(tmp_path, tiny_registry):
    source = random_tiny_model(5)
    cfg = _fake_run(tmp_path / "run", source)
    folder = hub.add_trained_weights(tmp_path / "run", tiny_registry.root, notes="Shortened recipe.")
    assert folder.name == cfg["name"]
    np.testing.assert_array_equal(predict(keras_attention.load(cfg["name"]), X), predict(source, X))
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: keras")
    for text in ("| 91.50 | 99.25 | test |", cfg["files"]["model.weights.h5"]["sha256"], "Shortened recipe.",
                 "weights/_recipes/cifar10_resnet_short.yaml", "10.0 min",
                 "Top-1 per class (%): cat 91.0, dog n/a."):
        assert text in card
    entry = json.loads((folder / "pretrained.json").read_text())
    assert entry["source"]["recipe"] == "_recipes/cifar10_resnet_short.yaml"
    assert entry["source"]["train_time_s"] == 600.0
    assert name_is_valid(cfg["name"])
    with pytest.raises(FileExistsError):
        hub.add_trained_weights(tmp_path / "run", tiny_registry.root)


def name_is_valid(name):
    return name in hub.validate_registry(check_architectures=True)


def test_tampered_run_weights_are_refused(tmp_path, tiny_registry):
    _fake_run(tmp_path / "run", random_tiny_model(1))
    random_tiny_model(2).save_weights(str(tmp_path / "run" / "model.weights.h5"))
    with pytest.raises(hub.ChecksumError, match="SHA-256"):
        hub.add_trained_weights(tmp_path / "run", tiny_registry.root)
    assert not any(tiny_registry.root.iterdir())


def test_unfinished_run_is_refused(tmp_path, tiny_registry):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        hub.add_trained_weights(tmp_path / "run", tiny_registry.root)
