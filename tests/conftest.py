"""Shared fixtures: the local Hub stand-in, a test-only tiny architecture, a temporary registry.

No test touches the network beyond loopback: :func:`hf_hub` points ``huggingface_hub`` at
:class:`tests.hub_server.FakeHub` on 127.0.0.1, keeps its cache and token files in
``tmp_path``, and makes any connection to a non-loopback address fail.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.hub_server import FakeHub

TINY_ARCH = "ka_test_tiny"

#: A prepared CIFAR-10 folder (``keras-attention data prepare cifar10``) made by ``.ci/run`` in
#: the TensorFlow environment, so that the no-TensorFlow job reads the same real data.
CIFAR10_PREPARED_ENV = "KERAS_ATTENTION_CIFAR10_PREPARED"


@pytest.fixture(scope="session")
def cifar10_prepared(tmp_path_factory) -> Path:
    """CIFAR-10 as a prepared dataset: ``$KERAS_ATTENTION_CIFAR10_PREPARED``, else written once per
    session from ../shared/data's TFDS copy (the full test split, the first 5,000 training
    images). Skips (fails in our CI) when neither is available."""
    import os

    from tests.helpers import TFDS_DIR, skip_or_fail
    if os.environ.get(CIFAR10_PREPARED_ENV):
        return Path(os.environ[CIFAR10_PREPARED_ENV])
    try:
        from keras_attention.data.tfds import load_tfds
        import tensorflow  # noqa: F401
    except ImportError:
        skip_or_fail(f"no prepared CIFAR-10 ({CIFAR10_PREPARED_ENV}) and no TensorFlow to make one")
    if not (TFDS_DIR / "cifar10").is_dir():
        skip_or_fail("prepared CIFAR-10 not found in ../shared/data")
    from keras_attention.data.prepared import write_prepared
    splits = {}
    for split, name in (("train[:5000]", "train"), ("test", "test")):
        source = load_tfds("cifar10", split, data_dir=TFDS_DIR, download=False)
        splits[name] = (source.arrays, source.labels)
    return write_prepared(tmp_path_factory.mktemp("data") / "cifar10", name="cifar10",
                          label_names=source.label_names, splits=splits,
                          source="tests: tfds cifar10 (train[:5000], test)")


# --------------------------------------------------------------------------------------
# The Hub stand-in
# --------------------------------------------------------------------------------------

def _loopback_only(monkeypatch):
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise OSError(f"tests may only use loopback; a connection to {address!r} was attempted")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def hf_hub(tmp_path, monkeypatch):
    """A running :class:`FakeHub`, with ``huggingface_hub`` pointed at it and its cache in tmp_path.

    The same settings are exported as ``HF_ENDPOINT``/``HF_HOME``/``HF_HUB_CACHE`` for
    subprocesses. After the test, no request may have gone to a route the stand-in lacks.
    """
    from huggingface_hub import constants

    hub = FakeHub().start()
    home = tmp_path / "hf-home"
    cache = home / "hub"
    for name, value in {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }.items():
        monkeypatch.setattr(constants, name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    _loopback_only(monkeypatch)
    hub.cache = cache
    try:
        yield hub
    finally:
        hub.stop()
    assert not hub.unhandled, f"requests the stand-in Hub does not implement: {hub.unhandled}"


# --------------------------------------------------------------------------------------
# A test-only architecture and registry
# --------------------------------------------------------------------------------------

def ka_test_tiny(num_classes=3, input_shape=(8, 8, 3), include_top=True, pooling="avg"):
    """Test-only tiny CNN (conv, BN, ReLU, squeeze-excite, pooling, float32 classifier)."""
    from keras_attention.layers import SqueezeExcite
    inputs = keras.Input(tuple(input_shape))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = SqueezeExcite(reduction_ratio=2, name="stem_se")(x)
    if include_top or pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        x = keras.layers.Dense(num_classes, dtype="float32", name="head_fc")(x)
    return keras.Model(inputs, x, name=TINY_ARCH)


@pytest.fixture
def tiny_arch():
    """Registers :func:`ka_test_tiny` as an architecture for one test (never in the package).

    Unregistered afterwards, so tests that list every model never see it.
    """
    from keras_attention import registry
    registry.register_model(ka_test_tiny)
    try:
        yield TINY_ARCH
    finally:
        registry._MODELS.pop(TINY_ARCH, None)


def random_tiny_model(seed: int, **kwargs) -> keras.Model:
    """A tiny model whose every weight (BN statistics included) depends on ``seed``."""
    keras.utils.set_random_seed(seed)
    model = ka_test_tiny(**kwargs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name == "stem_bn":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])
        elif layer.weights:
            layer.set_weights([rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()])
    return model


def tiny_cfg(tag: str, sha256: str | None, size: int | None, *, repo_id: str, revision: str | None,
             default: bool = False, fmt: str = "keras", filename: str = "model.weights.h5",
             arch: str = TINY_ARCH, input_size=(8, 8, 3)) -> dict:
    """A complete pretrained.json (3 classes) for the tiny architecture (or ``arch``)."""
    return {
        "schema_version": 1,
        "name": f"{arch}.{tag}",
        "architecture": arch,
        "tag": tag,
        "default": default,
        "format": fmt,
        "files": {filename: {"sha256": sha256, "size": size}},
        "hub": {"repo_id": repo_id, "revision": revision},
        "model_kwargs": {"num_classes": 3, "input_shape": list(input_size)},
        "classifier": "head_fc",
        "input_size": list(input_size),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "num_classes": 3,
        "label_names": ["cat", "dog", "fox"],
        "license": "apache-2.0",
        "paper": {"title": "Squeeze-and-Excitation Networks", "arxiv": "1709.01507"},
        "dataset": "cifar10",
        "metrics": {"top1": 91.5, "top5": 99.25, "split": "test", "dataset": "cifar10",
                    "command": "keras-attention evaluate ka_test_tiny.unit --dataset cifar10"},
    }


class TinyRegistry:
    """A temporary weights folder (first on ``KERAS_ATTENTION_WEIGHTS_PATH``) for the tiny model."""

    def __init__(self, root: Path):
        self.root = root

    def add(self, tag: str, model: keras.Model | None = None, *, repo_id: str | None = None,
            revision: str | None = None, default: bool = False, keep_file: bool = True,
            card: str | None = None, arch: str = TINY_ARCH) -> str:
        """Writes ``weights/<arch>.<tag>/`` (weights of ``model``, entry, card); returns the name."""
        from keras_attention.weights import sha256_file
        name = f"{arch}.{tag}"
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.weights.h5"
        if model is not None:
            model.save_weights(str(path))
        cfg = tiny_cfg(tag, sha256_file(path), path.stat().st_size,
                       repo_id=repo_id or f"keras-attention-test/{name}", revision=revision, default=default,
                       arch=arch, input_size=tuple(model.input_shape[1:]) if model is not None else (8, 8, 3))
        (folder / "pretrained.json").write_text(json.dumps(cfg, indent=2))
        if card is not None:
            (folder / "README.md").write_text(card)
        if not keep_file:
            path.unlink()
        return name

    def write_cfg(self, cfg: dict) -> Path:
        folder = self.root / cfg["name"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pretrained.json").write_text(json.dumps(cfg, indent=2))
        return folder


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch, tiny_arch) -> TinyRegistry:
    """An empty temporary registry searched before the package's ``weights/``."""
    from keras_attention.weights import WEIGHTS_PATH_ENV
    root = tmp_path / "weights"
    root.mkdir()
    monkeypatch.setenv(WEIGHTS_PATH_ENV, str(root))
    return TinyRegistry(root)


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))
