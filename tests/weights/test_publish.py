"""Tests of publishing (keras_attention.weights._publish, ``keras-attention publish``) against the local
Hub stand-in."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import yaml

import keras_attention
from keras_attention import weights
from keras_attention.cli import main
from tests.conftest import predict, random_tiny_model
from tests.helpers import random_images

X = random_images((2, 8, 8, 3), seed=12)
CARD = "# ka_test_tiny.unit\n\nA tiny test network, trained on nothing at all.\n"


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def test_dry_run_writes_the_keras_layout_and_card(tiny_registry, hf_hub, tmp_path, capsys):
    source = random_tiny_model(21)
    name = tiny_registry.add("unit", source, card=CARD)
    out = tmp_path / "out"
    assert main(["publish", name, "--dry-run", "--out", str(out)]) == 0
    assert "Nothing was uploaded" in capsys.readouterr().out
    assert hf_hub.requests == []
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "metadata.json",
                                                     "model.weights.h5"]
    # The weights file is the registry's, byte for byte (so its SHA-256 stays pinned).
    assert (out / "model.weights.h5").read_bytes() == (tiny_registry.root / name / "model.weights.h5").read_bytes()
    meta = json.loads((out / "metadata.json").read_text())
    cfg = meta["pretrained_cfg"]
    assert cfg["name"] == name and cfg["label_names"] == ["cat", "dog", "fox"]
    assert cfg["files"]["model.weights.h5"]["sha256"] == weights.sha256_file(out / "model.weights.h5")
    assert cfg["hub"] == {"repo_id": f"keras-attention-test/{name}", "revision": None}
    for key in ("keras_version", "date_saved", "keras_attention_version", "huggingface_hub_version", "backend"):
        assert meta[key]
    card = (out / "README.md").read_text()
    front = front_matter(card)
    assert front["library_name"] == "keras" and front["license"] == "apache-2.0"
    assert front["datasets"] == ["cifar10"] and "image-classification" in front["tags"]
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"accuracy": 91.5, "top_5_accuracy": 99.25}
    assert "trained on nothing at all" in card and f'keras_attention.load("{name}")' in card
    assert 'keras.saving.load_model("hf://keras-attention-test/ka_test_tiny.unit")' in card
    # Keras loads the folder by itself, and so do we (with a new head too).
    np.testing.assert_array_equal(predict(keras.saving.load_model(str(out)), X), predict(source, X))
    np.testing.assert_array_equal(predict(keras_attention.load(out), X), predict(source, X))  # a Path
    assert keras_attention.load(str(out), num_classes=6).output.shape == (None, 6)
    assert keras_attention.get_pretrained_cfg(str(out))["name"] == name
    assert main(["publish", name, "--dry-run", "--out", str(out)]) == 2  # a one-line error
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="--overwrite"):
        weights.build_hub_folder(name, out)


def test_local_folder_checksum_is_verified(tiny_registry, tmp_path):
    name = tiny_registry.add("unit", random_tiny_model(22))
    out = weights.build_hub_folder(name, tmp_path / "folder")
    path = out / "model.weights.h5"
    path.write_bytes(path.read_bytes()[:-1] + b"\1")
    with pytest.raises(weights.ChecksumError, match="expected .* \\(metadata.json\\), got"):
        keras_attention.load(str(out))


def test_publish_then_load_round_trip(tiny_registry, hf_hub, monkeypatch, capsys):
    source = random_tiny_model(23)
    name = tiny_registry.add("unit", source, card=CARD)
    repo_id = "keras-attention-test/ka_test_tiny.unit"
    hf_hub.require_token = "hf_test_token"
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # read by huggingface_hub, as for any user
    assert main(["publish", name, "--update-registry"]) == 0
    commit = capsys.readouterr().out.strip().splitlines()[-1]
    assert commit == hf_hub.repos[repo_id].branches["main"] and len(commit) == 40
    assert hf_hub.count("POST", "/api/validate-yaml") == 1
    writes = [h for m, p, h in hf_hub.requests if m == "POST" and ("/commit/" in p or "/repos/create" in p)]
    assert len(writes) == 2 and all(h.get("authorization") == "Bearer hf_test_token" for h in writes)
    files = hf_hub.repos[repo_id].commits[commit].files
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "metadata.json", "model.weights.h5"]
    # The registry now pins the commit; without the local file, the weights come from the Hub.
    cfg = keras_attention.get_pretrained_cfg(name)
    assert cfg["hub"] == {"repo_id": repo_id, "revision": commit}
    assert weights.sha256_file(tiny_registry.root / name / "model.weights.h5") == files["model.weights.h5"].sha256
    (tiny_registry.root / name / "model.weights.h5").unlink()
    expected = predict(source, X)
    np.testing.assert_array_equal(predict(keras_attention.load(name), X), expected)
    assert any(f"/resolve/{commit}/model.weights.h5" in p for _, p, _ in hf_hub.requests)
    np.testing.assert_array_equal(predict(keras_attention.load(f"hf://{repo_id}"), X), expected)
    np.testing.assert_array_equal(predict(keras_attention.load(f"hf://{repo_id}@{commit}"), X), expected)
    assert keras_attention.get_pretrained_cfg(f"hf://{repo_id}")["metrics"]["top1"] == 91.5
    # Keras's own hf:// support (snapshot_download of the folder) with our layers registered.
    np.testing.assert_array_equal(predict(keras.saving.load_model(f"hf://{repo_id}"), X), expected)
    assert not hf_hub.unhandled


def test_publish_new_version_keeps_old_pin(tiny_registry, hf_hub):
    first, second = random_tiny_model(24), random_tiny_model(25)
    name = tiny_registry.add("unit", first)
    c1 = weights.publish(name, update_registry=True)
    tiny_registry.add("unit", second)  # retrained weights: new file and SHA-256
    c2 = weights.publish(name)
    assert c1 != c2
    (tiny_registry.root / name / "model.weights.h5").unlink()
    with pytest.raises(weights.WeightsNotFoundError, match="not published yet"):
        keras_attention.load(name)  # the rewritten entry has revision null again
    weights.update_registry_revision(name, c1)
    with pytest.raises(weights.ChecksumError, match="expected"):
        keras_attention.load(name)  # entry's sha256 is the new file's, c1 holds the old one
    weights.update_registry_revision(name, c2)
    np.testing.assert_array_equal(predict(keras_attention.load(name), X), predict(second, X))
    np.testing.assert_array_equal(predict(keras_attention.load(name, revision=c1), X), predict(first, X))
    repo_id = f"keras-attention-test/{name}"
    np.testing.assert_array_equal(predict(keras_attention.load(f"hf://{repo_id}@{c1}"), X), predict(first, X))


def test_invalid_card_is_rejected_before_any_upload(tiny_registry, hf_hub):
    name = tiny_registry.add("unit", random_tiny_model(26))
    path = tiny_registry.root / name / "pretrained.json"
    cfg = json.loads(path.read_text())
    cfg["license"] = "not-a-license"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        weights.publish(name)
    repo = hf_hub.repos[f"keras-attention-test/{name}"]
    assert len(repo.commits) == 1  # only the repo's initial commit
    assert hf_hub.count("POST", "/commit/") == 0


def test_update_registry_revision_validates(tiny_registry):
    name = tiny_registry.add("unit", random_tiny_model(27))
    with pytest.raises(ValueError, match="40-hex"):
        weights.update_registry_revision(name, "main")
    path = weights.update_registry_revision(name, "a" * 40, "org/other")
    assert json.loads(path.read_text())["hub"] == {"repo_id": "org/other", "revision": "a" * 40}
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.weights.h5", "pretrained.json"]  # no leftovers


def test_real_architecture_round_trip(tiny_registry, hf_hub):
    """se_resnet20 (the package's own layers and blocks) through publish, Hub, cache and Keras's hf://."""
    keras.utils.set_random_seed(28)
    source = keras_attention.create_model("se_resnet20", num_classes=3, input_shape=(32, 32, 3))
    rng = np.random.default_rng(28)
    source.set_weights([w + rng.normal(scale=0.1, size=w.shape) for w in source.get_weights()])
    name = tiny_registry.add("unittest", source, arch="se_resnet20")
    commit = weights.publish(name, update_registry=True)
    (tiny_registry.root / name / "model.weights.h5").unlink()
    x = random_images((2, 32, 32, 3), seed=3)
    expected = predict(source, x)
    np.testing.assert_array_equal(predict(keras_attention.load("se_resnet20.unittest"), x), expected)
    repo_id = f"keras-attention-test/{name}"
    np.testing.assert_array_equal(predict(keras.saving.load_model(f"hf://{repo_id}"), x), expected)
    np.testing.assert_array_equal(predict(keras_attention.load(f"hf://{repo_id}@{commit}"), x), expected)
    tuned = keras_attention.load(name, num_classes=100)
    assert tuned.get_layer("head_fc").kernel.shape == (64, 100)
    moved = [layer.name for layer in source.layers if layer.weights and layer.name != "head_fc"]
    for layer_name in moved:
        for a, b in zip(source.get_layer(layer_name).get_weights(), tuned.get_layer(layer_name).get_weights()):
            np.testing.assert_array_equal(a, b)
    features = keras_attention.load(name, include_top=False, pooling="avg")
    assert features.output.shape == (None, 64)


def test_replacing_a_folder_keeps_the_old_one_until_the_new_one_is_in_place(tiny_registry, tmp_path,
                                                                            monkeypatch):
    """If the final rename fails, the previous Hub folder is still there, complete."""
    name = tiny_registry.add("unit", random_tiny_model(29), card=CARD)
    out = weights.build_hub_folder(name, tmp_path / "folder")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace, failed = os.replace, []

    def replace(src, dst):
        if os.fspath(dst) == os.fspath(out) and not failed:
            failed.append(src)
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    tiny_registry.add("unit", random_tiny_model(30), card=CARD)  # new weights to publish
    with pytest.raises(OSError, match="disk full"):
        weights.build_hub_folder(name, out, overwrite=True)
    assert failed, "the folder was not renamed into place"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "weights"]  # no temporary folders left


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fsync-ed files")
def test_text_files_are_fsynced_before_they_replace_the_old_ones(tiny_registry, tmp_path, monkeypatch):
    name = tiny_registry.add("unit", random_tiny_model(31), card=CARD)
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    weights.update_registry_revision(name, "b" * 40)
    assert any(f.endswith("pretrained.json") for f in synced), synced
    synced.clear()
    weights.build_hub_folder(name, tmp_path / "folder")
    assert {"README.md", "metadata.json", "config.json", "model.weights.h5"} <= {
        f.rsplit("-", 1)[-1] if f.startswith(".tmp-") else f for f in synced}, synced
