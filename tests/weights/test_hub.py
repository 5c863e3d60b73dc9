"""Tests of keras_attention.weights: registry, resolving, verifying and loading weights.

Hub traffic goes to the local stand-in (tests/hub_server.py) through the real
huggingface_hub client; see the ``hf_hub`` fixture in conftest.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_attention
from keras_attention import weights
from tests.conftest import TINY_ARCH, predict, random_tiny_model, tiny_cfg
from tests.helpers import REPO_ROOT, random_images

X = random_images((2, 8, 8, 3), seed=11)


def _offline(monkeypatch, value=True):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", value)


def _publish_weights(hf_hub, repo_id, model, message="weights") -> tuple[str, bytes]:
    """Commits ``model``'s weights file to the stand-in; returns (commit, file bytes)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.weights.h5"
        model.save_weights(str(path))
        data = path.read_bytes()
    return hf_hub.commit(repo_id, {"model.weights.h5": data}, message), data


def _cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

def test_registry_lists_and_resolves_tags(tiny_registry):
    tiny_registry.add("unit", random_tiny_model(1), default=True)
    tiny_registry.add("other", random_tiny_model(2))
    assert weights.list_pretrained("ka_test_tiny.*") == ["ka_test_tiny.other", "ka_test_tiny.unit"]
    assert "ka_test_tiny.unit" in keras_attention.list_models(pretrained=True)
    assert keras_attention.list_models("ka_test_tiny*") == ["ka_test_tiny"]
    assert weights.find_pretrained("ka_test_tiny").name == "ka_test_tiny.unit"  # the default tag
    cfg = keras_attention.get_pretrained_cfg("ka_test_tiny.other")
    assert cfg["label_names"] == ["cat", "dog", "fox"] and cfg["input_size"] == [8, 8, 3]
    cfg["mean"][0] = 99  # a copy: the registry is not changed
    assert keras_attention.get_pretrained_cfg("ka_test_tiny.other")["mean"][0] == 0.5
    with pytest.raises(weights.RegistryError, match="Tags of 'ka_test_tiny': ka_test_tiny.other, ka_test_tiny.unit"):
        weights.find_pretrained("ka_test_tiny.nope")
    with pytest.raises(weights.RegistryError, match="has no pretrained weights"):
        weights.find_pretrained("resnet_without_weights")
    with pytest.raises(weights.RegistryError, match=r"'se_resnet2' has no pretrained weights\. Did you mean .*"
                                                "'se_resnet20.cifar10'"):
        weights.find_pretrained("se_resnet2")


def test_default_tag_rules(tiny_registry):
    tiny_registry.add("a", random_tiny_model(1))
    assert weights.find_pretrained(TINY_ARCH).name == "ka_test_tiny.a"  # the only tag
    tiny_registry.add("b", random_tiny_model(1))
    with pytest.raises(weights.RegistryError, match="none is the default"):
        weights.find_pretrained(TINY_ARCH)
    tiny_registry.add("c", random_tiny_model(1), default=True)
    tiny_registry.add("d", random_tiny_model(1), default=True)
    with pytest.raises(weights.RegistryError, match="several default tags"):
        weights.find_pretrained(TINY_ARCH)
    with pytest.raises(weights.RegistryError, match="several default tags"):
        weights.validate_registry()


def test_labels_file(tiny_registry):
    name = tiny_registry.add("labels", random_tiny_model(1))
    path = tiny_registry.root / name / "pretrained.json"
    cfg = json.loads(path.read_text())
    del cfg["label_names"]
    cfg["labels_file"] = "_labels/three.txt"
    path.write_text(json.dumps(cfg))
    (tiny_registry.root / "_labels").mkdir()
    (tiny_registry.root / "_labels" / "three.txt").write_text("ant\nbee\n\ncow\n")
    assert weights.get_pretrained_cfg(name)["label_names"] == ["ant", "bee", "cow"]
    (tiny_registry.root / "_labels" / "three.txt").write_text("ant\nbee\n")
    with pytest.raises(weights.RegistryError, match="2 labels, expected num_classes = 3"):
        weights.get_pretrained_cfg(name)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("license"), "missing field 'license'"),
    (lambda c: c.update(name="ka_test_tiny.x"), "must equal architecture"),
    (lambda c: c.update(format="torch"), "format must be 'keras' or 'timm'"),
    (lambda c: c["files"]["model.weights.h5"].update(sha256="ABC"), "64 lowercase hex"),
    (lambda c: c["files"]["model.weights.h5"].update(sha256=None), "required for format 'keras'"),
    (lambda c: c["hub"].update(revision="main"), "40-hex commit hash or null"),
    (lambda c: c["hub"].update(repo_id="no-slash"), "'org/name'"),
    (lambda c: c.update(num_classes=4), "equal model_kwargs.num_classes"),
    (lambda c: c.update(crop_pct=1.5), r"crop_pct must be in \(0, 1\]"),
    (lambda c: c.update(mean=[0.5, 0.5]), "one number per channel"),
    (lambda c: c.update(label_names=["a"]), "list of 3 strings"),
    (lambda c: c["metrics"].update(top1=0.9 * 200), r"percentage in \[0, 100\]"),
    (lambda c: c.update(default="yes"), "'default' must be true or false"),
])
def test_schema_errors_name_the_field(change, message):
    cfg = tiny_cfg("unit", "0" * 64, 10, repo_id="org/repo", revision=None)
    weights.validate_pretrained_cfg(copy.deepcopy(cfg), "x.json")  # the complete entry is valid
    change(cfg)
    with pytest.raises(weights.RegistryError, match=message):
        weights.validate_pretrained_cfg(cfg, "x.json")


def test_validate_registry_checks_files(tiny_registry):
    name = tiny_registry.add("unit", random_tiny_model(1))
    assert name in weights.validate_registry()
    (tiny_registry.root / name / "model.weights.h5").write_bytes(b"not the weights")
    with pytest.raises(weights.RegistryError, match="SHA-256 .* entry says"):
        weights.validate_registry()
    (tiny_registry.root / name / "model.weights.h5").unlink()
    with pytest.raises(weights.RegistryError, match="neither in the folder nor published"):
        weights.validate_registry()


def test_one_malformed_entry_does_not_break_the_others(tiny_registry, hf_hub):
    """A bad pretrained.json is reported once and only its own name fails to load."""
    source = random_tiny_model(3)
    good = tiny_registry.add("unit", source, default=True)
    truncated = tiny_registry.root / "ka_test_tiny.truncated"
    truncated.mkdir()
    (truncated / "pretrained.json").write_text('{"schema_version": 1, "name": ')
    cfg = tiny_cfg("nolicense", "0" * 64, 10, repo_id="org/repo", revision=None)
    del cfg["license"]
    tiny_registry.write_cfg(cfg)
    with pytest.warns(RuntimeWarning) as record:
        names = keras_attention.list_models(pretrained=True)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert str(tiny_registry.root / "ka_test_tiny.nolicense" / "pretrained.json") in messages[0]
    assert "missing field 'license'" in messages[0]
    assert str(truncated / "pretrained.json") in messages[1] and "not valid JSON" in messages[1]
    assert good in names and "se_resnet20.cifar10" in names
    assert "ka_test_tiny.truncated" not in names and "ka_test_tiny.nolicense" not in names
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once per process, not at every lookup
        assert weights.find_pretrained(TINY_ARCH).name == good
        assert keras_attention.get_pretrained_cfg("se_resnet20.cifar10")["name"] == "se_resnet20.cifar10"
        np.testing.assert_array_equal(predict(keras_attention.load(good), X), predict(source, X))
        with pytest.raises(weights.RegistryError, match=r"ka_test_tiny\.truncated/pretrained\.json: not valid JSON"):
            keras_attention.load("ka_test_tiny.truncated")
        with pytest.raises(weights.RegistryError,
                           match=r"ka_test_tiny\.nolicense/pretrained\.json: missing field 'license'"):
            keras_attention.get_pretrained_cfg("ka_test_tiny.nolicense")
    with pytest.raises(weights.RegistryError) as info:  # the registry check still reports both
        weights.validate_registry()
    assert "ka_test_tiny.truncated" in str(info.value) and "missing field 'license'" in str(info.value)


def test_repository_weights_registry_is_valid():
    """Every entry shipped in weights/ (and its files) matches the schema and its hashes."""
    names = weights.validate_registry()
    assert all(n in weights.list_pretrained() for n in names)


# --------------------------------------------------------------------------------------
# Loading from the package folder
# --------------------------------------------------------------------------------------

def test_load_from_package_folder_needs_no_network(tiny_registry, hf_hub):
    source = random_tiny_model(3)
    name = tiny_registry.add("unit", source, default=True)
    model = keras_attention.load(name)
    np.testing.assert_array_equal(predict(model, X), predict(source, X))
    np.testing.assert_array_equal(predict(keras_attention.load(TINY_ARCH), X), predict(source, X))
    assert hf_hub.requests == []


def test_damaged_package_file_is_refused(tiny_registry):
    name = tiny_registry.add("unit", random_tiny_model(3))
    path = tiny_registry.root / name / "model.weights.h5"
    expected = weights.sha256_file(path)
    path.write_bytes(path.read_bytes()[:-10])
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(weights.ChecksumError) as info:
        keras_attention.load(name)
    assert expected in str(info.value) and actual in str(info.value) and "model.weights.h5" in str(info.value)


def test_new_head_keeps_backbone(tiny_registry):
    source = random_tiny_model(4)
    name = tiny_registry.add("unit", source)
    model = keras_attention.load(name, num_classes=5)
    assert model.get_layer("head_fc").kernel.shape == (8, 5)
    for layer in source.layers:
        if layer.weights and layer.name != "head_fc":
            for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    # The new head is trainable with fit right away.
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, np.array([0, 4]), epochs=1, verbose=0)

    features = keras_attention.load(name, include_top=False)
    assert "head_fc" not in [layer.name for layer in features.layers]
    pooled_source = keras.Model(source.input, source.get_layer("pool").output)
    np.testing.assert_allclose(predict(features, X), predict(pooled_source, X), rtol=1e-6, atol=1e-6)

    bigger = keras_attention.load(name, input_shape=(16, 16, 3))  # same classes, every weight kept
    x16 = random_images((1, 16, 16, 3), seed=2)
    reference = ka_copy(source, (16, 16, 3))
    np.testing.assert_allclose(predict(bigger, x16), predict(reference, x16), rtol=1e-6, atol=1e-6)


def ka_copy(source, input_shape):
    from tests.conftest import ka_test_tiny
    model = ka_test_tiny(input_shape=input_shape)
    model.set_weights(source.get_weights())
    return model


def test_pretrained_false_and_unknown_names(tiny_registry):
    name = tiny_registry.add("unit", random_tiny_model(4))
    model = keras_attention.load(name, pretrained=False, num_classes=7)
    assert model.output.shape == (None, 7)
    with pytest.raises(ValueError, match="Unknown model 'ka_test_tiny_typo'.*Did you mean 'ka_test_tiny'"):
        keras_attention.load("ka_test_tiny_typo", pretrained=False)
    with pytest.raises(ValueError, match="Unknown model 'se_resnet05'.*Did you mean.*'se_resnet50'"):
        keras_attention.load("se_resnet05", pretrained=False)
    with pytest.raises(weights.RegistryError, match="No pretrained weights named"):
        keras_attention.load("ka_test_tiny.nope")


# --------------------------------------------------------------------------------------
# Resolving through the Hub (stand-in)
# --------------------------------------------------------------------------------------

@pytest.fixture
def published(tiny_registry, hf_hub):
    """ka_test_tiny.unit published on the stand-in at a pinned commit, with no local file."""
    source = random_tiny_model(5)
    repo_id = "keras-attention-test/ka_test_tiny.unit"
    commit, data = _publish_weights(hf_hub, repo_id, source)
    name = tiny_registry.add("unit", source, repo_id=repo_id, revision=commit, keep_file=False)
    assert hashlib.sha256(data).hexdigest() == weights.get_pretrained_cfg(name)["files"]["model.weights.h5"]["sha256"]
    return {"name": name, "source": source, "repo_id": repo_id, "commit": commit, "hub": hf_hub,
            "registry": tiny_registry, "sha256": hashlib.sha256(data).hexdigest()}


def test_download_at_pinned_revision_then_cache(published):
    hf_hub, name = published["hub"], published["name"]
    model = keras_attention.load(name)
    np.testing.assert_array_equal(predict(model, X), predict(published["source"], X))
    path = weights.resolve_file(name, "model.weights.h5")
    assert f"snapshots/{published['commit']}/model.weights.h5" in str(path)
    assert str(path).startswith(str(hf_hub.cache))
    # Every request named the pinned commit, never a branch.
    resolves = [p for m, p, _ in hf_hub.requests if "/resolve/" in p]
    assert resolves and all(f"/resolve/{published['commit']}/" in p for p in resolves)
    # Second load: from the cache, without any request.
    before = len(hf_hub.requests)
    keras_attention.load(name)
    assert len(hf_hub.requests) == before


def test_pinned_revisions(tiny_registry, hf_hub):
    repo_id = "keras-attention-test/ka_test_tiny.pinned"
    first, second = random_tiny_model(6), random_tiny_model(7)
    c1, _ = _publish_weights(hf_hub, repo_id, first, "first")
    c2, _ = _publish_weights(hf_hub, repo_id, second, "second")
    assert c1 != c2 and len(c1) == len(c2) == 40
    n1 = tiny_registry.add("v1", first, repo_id=repo_id, revision=c1, keep_file=False)
    n2 = tiny_registry.add("v2", second, repo_id=repo_id, revision=c2, keep_file=False)
    np.testing.assert_array_equal(predict(keras_attention.load(n1), X), predict(first, X))
    np.testing.assert_array_equal(predict(keras_attention.load(n2), X), predict(second, X))
    # `revision=` overrides the pin (verified against the Hub's hash, the entry's is for c1).
    np.testing.assert_array_equal(predict(keras_attention.load(n1, revision=c2), X), predict(second, X))
    # The branch moved on, the pinned entry did not.
    hf_hub.commit(repo_id, {"model.weights.h5": b"garbage"}, "broken upload")
    np.testing.assert_array_equal(predict(keras_attention.load(n1), X), predict(first, X))


def test_offline_from_cache(published, monkeypatch):
    name, hf_hub = published["name"], published["hub"]
    keras_attention.load(name)  # fills the cache
    hf_hub.stop()
    _offline(monkeypatch)
    before = len(hf_hub.requests)
    model = keras_attention.load(name)
    np.testing.assert_array_equal(predict(model, X), predict(published["source"], X))
    assert len(hf_hub.requests) == before


def test_offline_with_empty_cache_says_how_to_fetch(published, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(weights.WeightsNotFoundError) as info:
        keras_attention.load(published["name"])
    text = str(info.value)
    for part in (published["repo_id"], "model.weights.h5", published["commit"], "HF_HUB_OFFLINE",
                 f"hf download {published['repo_id']} model.weights.h5 --revision {published['commit']}"):
        assert part in text


def test_no_network_with_empty_cache(published, monkeypatch):
    import time
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the client's back-off between retries
    published["hub"].stop()
    with pytest.raises(weights.WeightsNotFoundError) as info:
        keras_attention.load(published["name"])
    text = str(info.value)
    assert "could not be reached" in text and published["hub"].endpoint in text and "Connection refused" in text
    assert published["repo_id"] in text and published["commit"] in text


def test_missing_file_repo_and_revision(published):
    hf_hub, registry_ = published["hub"], published["registry"]
    hf_hub.commit(published["repo_id"], {"model.weights.h5": None}, "delete")
    gone = hf_hub.repos[published["repo_id"]].branches["main"]
    registry_.add("gone", published["source"], repo_id=published["repo_id"], revision=gone, keep_file=False)
    with pytest.raises(weights.WeightsNotFoundError, match="does not exist in the repo"):
        keras_attention.load("ka_test_tiny.gone")
    registry_.add("norepo", published["source"], repo_id="nobody/nothing", revision=gone, keep_file=False)
    with pytest.raises(weights.WeightsNotFoundError, match="has no such repo"):
        keras_attention.load("ka_test_tiny.norepo")
    registry_.add("norev", published["source"], repo_id=published["repo_id"], revision="f" * 40, keep_file=False)
    with pytest.raises(weights.WeightsNotFoundError, match="has no revision f{40}"):
        keras_attention.load("ka_test_tiny.norev")
    registry_.add("unpublished", published["source"], keep_file=False)
    with pytest.raises(weights.WeightsNotFoundError, match="not published yet"):
        keras_attention.load("ka_test_tiny.unpublished")


def test_corrupted_cache_file_is_replaced(published, caplog):
    name = published["name"]
    path = weights.resolve_file(name, "model.weights.h5")
    blob = path.resolve()
    blob.write_bytes(b"\0" + blob.read_bytes()[1:])
    bad = hashlib.sha256(blob.read_bytes()).hexdigest()
    with caplog.at_level(logging.WARNING, logger="keras_attention.weights._download"):
        model = keras_attention.load(name)
    np.testing.assert_array_equal(predict(model, X), predict(published["source"], X))
    assert bad in caplog.text and published["sha256"] in caplog.text
    assert weights.sha256_file(weights.resolve_file(name, "model.weights.h5")) == published["sha256"]


def test_corrupted_cache_file_offline_is_refused_and_removed(published, monkeypatch):
    name = published["name"]
    blob = weights.resolve_file(name, "model.weights.h5").resolve()
    blob.write_bytes(blob.read_bytes()[:100])
    bad = hashlib.sha256(blob.read_bytes()).hexdigest()
    _offline(monkeypatch)
    with pytest.raises(weights.ChecksumError) as info:
        keras_attention.load(name)
    text = str(info.value)
    assert "model.weights.h5" in text and bad in text and published["sha256"] in text
    assert not blob.exists(), "the bad file is still in the cache"
    with pytest.raises(weights.WeightsNotFoundError):  # not trusted again: it is gone
        keras_attention.load(name)
    _offline(monkeypatch, False)
    np.testing.assert_array_equal(predict(keras_attention.load(name), X), predict(published["source"], X))


def test_corrupted_download_is_refused(published):
    hf_hub, name = published["hub"], published["name"]
    hf_hub.corrupt.add(f"{published['repo_id']}/model.weights.h5")
    with pytest.raises(weights.ChecksumError) as info:
        keras_attention.load(name)
    text = str(info.value)
    assert "model.weights.h5" in text and published["sha256"] in text and "got" in text
    assert _cached_files(hf_hub.cache / "models--keras-attention-test--ka_test_tiny.unit" / "blobs") == []
    hf_hub.corrupt.clear()
    np.testing.assert_array_equal(predict(keras_attention.load(name), X), predict(published["source"], X))


def test_interrupted_download_leaves_nothing_trusted(published, monkeypatch):
    import huggingface_hub.file_download as fd
    monkeypatch.setattr(fd.time, "sleep", lambda s: None)  # the client's retry pauses
    hf_hub, name = published["hub"], published["name"]
    hf_hub.interrupt.add(f"{published['repo_id']}/model.weights.h5")
    with pytest.raises(weights.WeightsNotFoundError, match="no partial file was kept|could not be reached"):
        keras_attention.load(name)
    storage = hf_hub.cache / "models--keras-attention-test--ka_test_tiny.unit"
    assert [p for p in _cached_files(storage) if "blobs" in p.parts or "snapshots" in p.parts] == []
    hf_hub.start()  # the network is back
    np.testing.assert_array_equal(predict(keras_attention.load(name), X), predict(published["source"], X))


def test_partial_blob_from_killed_process_is_not_trusted(published):
    """A truncated file left under the blob's final name (e.g. copied caches, old clients)."""
    hf_hub, name = published["hub"], published["name"]
    etag = hf_hub.file(published["repo_id"], "model.weights.h5").etag
    blobs = hf_hub.cache / "models--keras-attention-test--ka_test_tiny.unit" / "blobs"
    blobs.mkdir(parents=True)
    full = hf_hub.file(published["repo_id"], "model.weights.h5").data
    (blobs / etag).write_bytes(full[: len(full) // 3])
    (blobs / f"{etag}.1234abcd.incomplete").write_bytes(full[:10])
    np.testing.assert_array_equal(predict(keras_attention.load(name), X), predict(published["source"], X))
    assert weights.sha256_file(blobs / etag) == published["sha256"]


def test_entry_without_sha256_uses_the_hubs_lfs_hash(tiny_registry, hf_hub, monkeypatch):
    """timm-style entries: the file is an LFS file whose ETag is its SHA-256."""
    repo_id = "timm-test/tinynet.a1"
    data = os.urandom(3000)
    commit = hf_hub.commit(repo_id, {"model.safetensors": data}, "upload", lfs=True)
    cfg = tiny_cfg("lfs", None, None, repo_id=repo_id, revision=commit, fmt="timm", filename="model.safetensors")
    tiny_registry.write_cfg(cfg)
    path = weights.resolve_file("ka_test_tiny.lfs", "model.safetensors")
    assert path.read_bytes() == data
    assert path.resolve().name == hashlib.sha256(data).hexdigest()  # stored under its LFS hash
    assert hf_hub.count("GET", "/cdn/") == 1  # downloaded from the "CDN" origin, as from the real Hub
    # Offline, the cache blob's name (its LFS SHA-256) is what the file is checked against.
    _offline(monkeypatch)
    assert weights.resolve_file("ka_test_tiny.lfs", "model.safetensors") == path
    path.resolve().write_bytes(b"x" + data[1:])
    with pytest.raises(weights.ChecksumError, match=hashlib.sha256(data).hexdigest()):
        weights.resolve_file("ka_test_tiny.lfs", "model.safetensors")
    _offline(monkeypatch, False)
    hf_hub.corrupt.add(f"{repo_id}/model.safetensors")
    with pytest.raises(weights.ChecksumError, match=f"expected {hashlib.sha256(data).hexdigest()}"):
        weights.resolve_file("ka_test_tiny.lfs", "model.safetensors")
    hf_hub.corrupt.clear()
    assert weights.resolve_file("ka_test_tiny.lfs", "model.safetensors").read_bytes() == data


def test_timm_format_needs_a_registered_loader(tiny_registry, hf_hub, monkeypatch):
    repo_id = "timm-test/tinynet.a1"
    commit = hf_hub.commit(repo_id, {"model.safetensors": b"123"}, "upload", lfs=True)
    tiny_registry.write_cfg(tiny_cfg("timm", None, None, repo_id=repo_id, revision=commit, fmt="timm",
                                     filename="model.safetensors"))
    calls = []

    def loader(model, files, cfg):
        calls.append((model.name, sorted(files), cfg["name"]))

    monkeypatch.setitem(weights.FORMAT_LOADERS, "timm", loader)
    keras_attention.load("ka_test_tiny.timm")
    assert calls == [(TINY_ARCH, ["model.safetensors"], "ka_test_tiny.timm")]


@pytest.mark.slow  # two fresh Python processes (~20 s on 2 cores)
def test_env_vars_are_honoured_in_a_fresh_process(published, tmp_path):
    """HF_ENDPOINT and HF_HOME online; then HF_HUB_OFFLINE and HF_HUB_CACHE, the server down."""
    code = textwrap.dedent(f"""
        import sys, numpy as np, keras_attention
        from tests.conftest import ka_test_tiny
        from keras_attention import registry
        registry.register_model(ka_test_tiny)
        model = keras_attention.load({published['name']!r})
        np.save(sys.argv[1], np.asarray(model(np.load({str(tmp_path / 'x.npy')!r}), training=False)))
    """)
    np.save(tmp_path / "x.npy", X)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = lambda out, **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code, str(out)], env={**env, **extra}, capture_output=True, text=True, timeout=300)
    proc = run(tmp_path / "online.npy")  # HF_ENDPOINT and HF_HOME are set by the hf_hub fixture
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert published["hub"].count("GET", "/resolve/") == 1
    assert list(published["hub"].cache.glob("models--*/snapshots/*/model.weights.h5"))
    published["hub"].stop()
    proc = run(tmp_path / "offline.npy", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "elsewhere"),
               HF_HUB_CACHE=str(published["hub"].cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = predict(published["source"], X)
    np.testing.assert_allclose(np.load(tmp_path / "online.npy"), expected, rtol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "offline.npy"), expected, rtol=1e-6)


def test_transfer_weights_errors():
    from tests.conftest import ka_test_tiny
    a = ka_test_tiny(num_classes=3)
    b = ka_test_tiny(num_classes=4)
    with pytest.raises(ValueError, match="layer 'head_fc'.*shapes"):
        weights.transfer_weights(a, b)
    assert "head_fc" not in weights.transfer_weights(a, b, skip=("head_fc",))
    c = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="other")])
    with pytest.raises(ValueError, match="'other' of the new model is not in the pretrained model"):
        weights.transfer_weights(a, c)


def test_hf_address_parsing():
    assert weights.parse_hf_address("hf://org/repo") == ("org/repo", None)
    assert weights.parse_hf_address("hf://org/repo@" + "a" * 40) == ("org/repo", "a" * 40)
    assert weights.parse_hf_address("hf://org/repo", "main") == ("org/repo", "main")
    with pytest.raises(ValueError, match="expected 'hf://org/repo'"):
        weights.parse_hf_address("hf://repo-without-org")
    with pytest.raises(ValueError, match="but revision="):
        weights.parse_hf_address("hf://org/repo@v1", "v2")
