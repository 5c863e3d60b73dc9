"""Adding a finished training run to the weights registry (weights.add_trained_weights,
``keras-attention add-weights``): a hand-made run for the card's contents, a real tiny training
run without a validation split, and the default registry folder."""

import json

import keras
import numpy as np
import pytest
import yaml

import keras_attention
from keras_attention import weights
from keras_attention._errors import InvalidInputError
from keras_attention.cli import main
from tests.conftest import predict, random_tiny_model, tiny_cfg
from tests.helpers import REPO_ROOT, TFDS_DIR, needs_cifar

X = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")


def _fake_run(path, model):
    """The files the training script leaves in its output folder."""
    path.mkdir()
    model.save_weights(str(path / "model.weights.h5"))
    cfg = tiny_cfg("cifar10", weights.sha256_file(path / "model.weights.h5"),
                   (path / "model.weights.h5").stat().st_size, repo_id="keras-attention/x", revision=None,
                   default=True)
    cfg["source"] = {"recipe": "recipes/cifar10_resnet_short.yaml",
                     "command": "keras-attention train --recipe /home/me/recipes/cifar10_resnet_short.yaml --set "
                                "dataset=/home/me/cifar10 --init-from /scratch/runs/phase1 --set epochs=5 "
                                "--output /scratch/runs/r20 --progress 2 --set mixed_precision=bfloat16",
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
    folder = weights.add_trained_weights(tmp_path / "run", tiny_registry.root, notes="Shortened recipe.")
    assert folder.name == cfg["name"]
    np.testing.assert_array_equal(predict(keras_attention.load(cfg["name"]), X), predict(source, X))
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "keras" and front["license"] == "apache-2.0"
    for text in ("| 91.50 | 99.25 | test |", cfg["files"]["model.weights.h5"]["sha256"], "Shortened recipe.",
                 "weights/_recipes/cifar10_resnet_short.yaml", "10.0 min",
                 "Top-1 per class (%): cat 91.0, dog n/a.", "sgd (lr 0.1, momentum 0.9, nesterov True)",
                 "trained from scratch on"):
        assert text in card
    # the command a user types in the repository, with the run's own options kept
    assert ("`keras-attention train --recipe weights/_recipes/cifar10_resnet_short.yaml --model "
            f"{cfg['architecture']} --init-from runs/phase1 --set epochs=5 --set mixed_precision=bfloat16 --output runs/"
            f"{cfg['name']}`") in card
    entry = json.loads((folder / "pretrained.json").read_text())
    assert entry["source"]["recipe"] == "_recipes/cifar10_resnet_short.yaml"
    assert entry["source"]["train_time_s"] == 600.0
    assert name_is_valid(cfg["name"])
    with pytest.raises(FileExistsError):
        weights.add_trained_weights(tmp_path / "run", tiny_registry.root)


def test_card_of_a_phase_run_names_its_start_and_optimizer(tmp_path, tiny_registry):
    """A multi-phase method's run (``init_from``) is not "from scratch"; AdamW has no momentum."""
    _fake_run(tmp_path / "run", random_tiny_model(6))
    train_cfg = json.loads((tmp_path / "run" / "train_config.json").read_text())
    train_cfg.update(optimizer="adamw", lr=0.001, beta_1=0.9, beta_2=0.999, init_from="/runs/phase1")
    (tmp_path / "run" / "train_config.json").write_text(json.dumps(train_cfg))
    card = (weights.add_trained_weights(tmp_path / "run", tiny_registry.root) / "README.md").read_text()
    assert "initialised from the run `phase1` (`init_from`) and trained on" in card
    assert "adamw (lr 0.001, beta_1 0.9, beta_2 0.999)" in card and "momentum" not in card


def test_label_descriptions_are_stored_shown_and_checked(tmp_path, tiny_registry):
    cfg = _fake_run(tmp_path / "run", random_tiny_model(7))
    labels = cfg["label_names"]
    hierarchy = tmp_path / "hierarchy.json"  # a label hierarchy's "names" (WordNet id -> words) serve too
    hierarchy.write_text(json.dumps({"levels": ["group"], "names": {label: label.upper() for label in labels}}))
    names = weights.read_label_descriptions(hierarchy)
    folder = weights.add_trained_weights(tmp_path / "run", tiny_registry.root, label_descriptions=names)
    entry = json.loads((folder / "pretrained.json").read_text())
    assert entry["label_descriptions"] == [label.upper() for label in labels]
    assert f"{labels[0]} ({labels[0].upper()}) " in (folder / "README.md").read_text()
    with pytest.raises(InvalidInputError, match="No description for the labels"):
        weights.add_trained_weights(tmp_path / "run", tiny_registry.root, overwrite=True,
                                    label_descriptions={labels[0]: "only one"})
    (tmp_path / "bad.json").write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(InvalidInputError, match="expected a JSON object"):
        weights.read_label_descriptions(tmp_path / "bad.json")
    with pytest.raises(weights.RegistryError, match="label_descriptions must be a list"):
        weights.validate_pretrained_cfg({**entry, "label_descriptions": ["too few"]}, "entry")


def name_is_valid(name):
    return name in weights.validate_registry(check_architectures=True)


def test_tampered_run_weights_are_refused(tmp_path, tiny_registry):
    _fake_run(tmp_path / "run", random_tiny_model(1))
    random_tiny_model(2).save_weights(str(tmp_path / "run" / "model.weights.h5"))
    with pytest.raises(weights.ChecksumError, match="SHA-256"):
        weights.add_trained_weights(tmp_path / "run", tiny_registry.root)
    assert not any(tiny_registry.root.iterdir())


def test_unfinished_run_is_refused(tmp_path, tiny_registry):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        weights.add_trained_weights(tmp_path / "run", tiny_registry.root)


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---\n", 4)])


@needs_cifar
def test_real_run_without_validation_split_becomes_a_loadable_entry(tmp_path, tiny_registry, capsys):
    """A real (tiny) training run with ``val_split=None``: the entry, its card and ``load``."""
    from keras_attention.training import TrainConfig, train

    run = tmp_path / "run"
    cfg = TrainConfig(model="resnet20", dataset="cifar10", data_dir=str(TFDS_DIR), train_split="train[:128]",
                      val_split=None, epochs=1, batch_size=64, output_dir=str(run), verbose=0,
                      recipe=str(REPO_ROOT / "weights" / "_recipes" / "cifar10_resnet.yaml"))
    train(cfg, command="keras-attention train --model resnet20 --val-split none")
    run_cfg = json.loads((run / "pretrained.json").read_text())
    assert run_cfg["metrics"]["top1"] is None and run_cfg["metrics"]["split"] is None
    assert main(["add-weights", str(run), "--weights-dir", str(tiny_registry.root)]) == 0
    folder = tiny_registry.root / "resnet20.cifar10"
    assert capsys.readouterr().out.strip() == str(folder)
    card = (folder / "README.md").read_text()
    assert "model-index" not in _front_matter(card)  # nothing measured, nothing claimed
    assert "no validation split" in card and "None" not in card.split("## Training")[0]
    assert run_cfg["files"]["model.weights.h5"]["sha256"] in card
    assert "resnet20.cifar10" in weights.validate_registry()
    # The registry entry (first on the search path) loads the run's weights.
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype("float32")
    expected = predict(keras.saving.load_model(run / "model.keras"), x)
    np.testing.assert_allclose(predict(keras_attention.load("resnet20.cifar10"), x), expected, rtol=1e-5, atol=1e-6)
    assert keras_attention.get_pretrained_cfg("resnet20")["source"]["train_time_s"] is not None


def test_default_weights_folder_is_never_site_packages(tmp_path, monkeypatch):
    installed = tmp_path / "lib" / "python3.11" / "site-packages" / "keras_attention"
    installed.mkdir(parents=True)
    (installed.parent / "weights").mkdir()  # another distribution's top-level "weights" package
    (installed.parent / "pyproject.toml").write_text("")
    monkeypatch.setattr(weights._trained, "package_root", lambda: installed)
    monkeypatch.delenv(weights.WEIGHTS_PATH_ENV, raising=False)
    with pytest.raises(InvalidInputError, match="--weights-dir.*KERAS_ATTENTION_WEIGHTS_PATH"):
        weights.default_weights_dir()
    (tmp_path / "run").mkdir()
    with pytest.raises(InvalidInputError, match="installed package"):
        weights.add_trained_weights(tmp_path / "run")
    assert list((installed.parent / "weights").iterdir()) == []
    monkeypatch.setenv(weights.WEIGHTS_PATH_ENV, str(tmp_path / "mine"))
    assert weights.default_weights_dir() == tmp_path / "mine"
    # Running from a source checkout: its weights/ folder.
    monkeypatch.setattr(weights._trained, "package_root", lambda: REPO_ROOT / "keras_attention")
    assert weights.default_weights_dir() == REPO_ROOT / "weights"
