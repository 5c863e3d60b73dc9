"""One resolver: ``keras_attention.load``, ``get_pretrained_cfg`` and evaluation's
``load_for_inference`` accept the same names (registry names, ``hf://`` addresses, published
folders, training runs, ``.keras`` / ``.weights.h5`` files) and find the same model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import keras_attention
from keras_attention import weights
from keras_attention.evaluation import load_for_inference
from tests.conftest import TINY_ARCH, predict, random_tiny_model
from tests.helpers import random_images

X = random_images((2, 8, 8, 3), seed=13)
LABELS = ["cat", "dog", "fox"]


def _run_folder(path, model, cfg):
    """A training run's outputs: model.keras, model.weights.h5 and pretrained.json."""
    path.mkdir()
    model.save(path / "model.keras")
    model.save_weights(path / "model.weights.h5")
    cfg = dict(cfg, files={"model.weights.h5": {"sha256": weights.sha256_file(path / "model.weights.h5"),
                                                "size": (path / "model.weights.h5").stat().st_size}})
    (path / "pretrained.json").write_text(json.dumps(cfg))
    return path


def test_every_kind_of_name_resolves_alike(tiny_registry, hf_hub, tmp_path):
    source = random_tiny_model(41)
    name = tiny_registry.add("unit", source, default=True)
    commit = weights.publish(name)
    repo_id = f"keras-attention-test/{name}"
    published = weights.build_hub_folder(name, tmp_path / "published")
    run = _run_folder(tmp_path / "run", source, keras_attention.get_pretrained_cfg(name))
    only_weights = tmp_path / "only-weights"
    only_weights.mkdir()
    for f in ("model.weights.h5", "pretrained.json"):
        shutil.copy(run / f, only_weights / f)
    kinds = {name: "registry", TINY_ARCH: "registry", f"hf://{repo_id}": "hub", f"hf://{repo_id}@{commit}": "hub",
             published: "folder", str(published): "folder", run: "run", str(run / "model.keras"): "run",
             only_weights: "run", only_weights / "model.weights.h5": "run"}
    expected = predict(source, X)
    for spec, kind in kinds.items():
        assert weights.resolve_source(spec).kind == kind, spec
        np.testing.assert_array_equal(predict(keras_attention.load(spec), X), expected, err_msg=str(spec))
        loaded = load_for_inference(spec)
        np.testing.assert_array_equal(predict(loaded.model, X), expected, err_msg=str(spec))
        assert loaded.label_names == LABELS and loaded.preprocessing.mean == (0.5, 0.5, 0.5), spec
        assert keras_attention.get_pretrained_cfg(spec)["label_names"] == LABELS, spec
        assert keras_attention.load(spec, num_classes=5).output.shape == (None, 5), spec  # head swap
        assert keras_attention.load(spec, pretrained=False).output.shape == (None, 3), spec


def test_missing_paths_and_bare_folder_names(tiny_registry, tmp_path, monkeypatch):
    missing = tmp_path / "nothing.keras"
    for call in (keras_attention.load, load_for_inference, keras_attention.get_pretrained_cfg):
        with pytest.raises(weights.ModelNotFoundError, match="does not exist") as info:
            call(missing)
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    # A bare name is a registry name even where a folder of that name exists: the error says how.
    source = random_tiny_model(42)
    name = tiny_registry.add("unit", source)
    _run_folder(tmp_path / "myrun", source, keras_attention.get_pretrained_cfg(name))
    monkeypatch.chdir(tmp_path)
    for call in (keras_attention.load, load_for_inference):
        with pytest.raises(weights.RegistryError, match="write './myrun'"):
            call("myrun")
    np.testing.assert_array_equal(predict(keras_attention.load("./myrun"), X), predict(source, X))
    np.testing.assert_array_equal(predict(load_for_inference("./myrun").model, X), predict(source, X))


def test_run_weights_are_verified_against_their_pretrained_json(tiny_registry, tmp_path):
    source = random_tiny_model(43)
    name = tiny_registry.add("unit", source)
    run = _run_folder(tmp_path / "run", source, keras_attention.get_pretrained_cfg(name))
    (run / "model.keras").unlink()
    random_tiny_model(44).save_weights(run / "model.weights.h5")
    for call in (keras_attention.load, load_for_inference):
        with pytest.raises(weights.ChecksumError, match="wrong SHA-256"):
            call(run)
