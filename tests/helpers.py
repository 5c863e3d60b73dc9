"""Checks every layer (and model) of the package must pass.

``run_layer_test`` is the one contract test: config round trip, output shapes on
several input sizes, symbolic build, ``.keras`` save -> load in a fresh process with
identical outputs, mixed precision (float16 and bfloat16) with float32 logits,
gradients reaching every trainable weight, and identity at initialisation where
the paper says so. Layer test modules call it with their own arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TFDS_DIR = SHARED_DATA / "tensorflow_datasets"
IMAGEWOOF = SHARED_DATA / "imagewoof-160"

#: Our CI (``.ci/run`` sets ``KERAS_ATTENTION_CI=1``) must test the real data and the timm
#: reference: there a missing one is a failure, not a skip. Elsewhere (a user's checkout, a
#: fork's CI that has no ``../shared``; other CI systems set ``CI=true`` too, so that is not
#: the key) such tests skip.
STRICT = os.environ.get("KERAS_ATTENTION_CI") == "1"


def needs(available: bool, reason: str):
    """``skipif(not available)`` outside our CI; in our CI the test runs (and fails)."""
    return pytest.mark.skipif(not available and not STRICT, reason=reason)


def skip_or_fail(reason: str):
    """Inside a test: skip, or fail in our CI (see :data:`STRICT`)."""
    if STRICT:
        pytest.fail(f"{reason} (KERAS_ATTENTION_CI=1: our CI must have it)")
    pytest.skip(reason)


def import_or_skip(module: str, reason: str):
    """``pytest.importorskip`` outside our CI; a failure in it."""
    try:
        return __import__(module)
    except ImportError as err:
        skip_or_fail(f"{reason}: {err}")


needs_cifar = needs((TFDS_DIR / "cifar10").is_dir(), "prepared CIFAR-10 not found in ../shared/data")
needs_imagewoof = needs((IMAGEWOOF / "val").is_dir(), "Imagewoof not found in ../shared/data")


#: ``run_eagerly`` for tests that run a few train steps of a large model: on TensorFlow tracing
#: the graph costs more than running it op by op, on JAX op-by-op dispatch costs more than one
#: jit compile (full-size ``tnet_bagnet77``, one step on 2 cores: TensorFlow 2.7 s eager vs 11.7 s
#: traced, JAX 46 s eager vs 10.4 s jitted). PyTorch runs eagerly either way.
FEW_STEPS_RUN_EAGERLY = keras.backend.backend() != "jax"


def random_images(shape, seed=0, low=None, high=None):
    """Float32 array of ``shape``: standard normal, or uniform in [low, high)."""
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, high, size=shape).astype("float32")
    return rng.standard_normal(shape).astype("float32")


def _wrap(layer, input_shape, call_kwargs=None):
    inputs = keras.Input(batch_shape=(None, *input_shape[1:]))
    outputs = layer(inputs, **(call_kwargs or {}))
    return keras.Model(inputs, outputs)


def _first_output(y):
    return y[0] if isinstance(y, (list, tuple)) else y


def check_fresh_process_reload(model: keras.Model, inputs: np.ndarray, tmp_path: Path, atol=1e-6):
    """Saves ``model`` as ``.keras``, reloads it in a new Python process, compares outputs."""
    check_fresh_process_reload_many({"model": (model, inputs)}, tmp_path, atol=atol)


def check_fresh_process_reload_many(cases: dict, tmp_path: Path, atol=1e-6):
    """:func:`check_fresh_process_reload` for ``{name: (model, inputs)}``, all in one new process
    (one interpreter start instead of one per model)."""
    expected = {}
    for name, (model, inputs) in cases.items():
        model.save(tmp_path / f"{name}.keras")
        expected[name] = keras.ops.convert_to_numpy(_first_output(model(inputs, training=False)))
        np.save(tmp_path / f"{name}_inputs.npy", inputs)
    code = textwrap.dedent(f"""
        import numpy as np, keras, keras_attention
        for name in {sorted(cases)!r}:
            model = keras.saving.load_model(f"{tmp_path}/{{name}}.keras")
            y = model(np.load(f"{tmp_path}/{{name}}_inputs.npy"), training=False)
            y = y[0] if isinstance(y, (list, tuple)) else y
            np.save(f"{tmp_path}/{{name}}_reloaded.npy", keras.ops.convert_to_numpy(y))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"reload in a fresh process failed:\n{proc.stderr[-3000:]}"
    for name in cases:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}_reloaded.npy"), expected[name], atol=atol,
                                   rtol=1e-5, err_msg=name)


def run_layer_test(layer_cls, init_kwargs=None, input_shapes=((2, 8, 8, 16),), *, tmp_path,
                   expected_output_shape=None, identity_at_init=False, call_kwargs=None,
                   input_range=None, no_gradient_weights=(), fresh_process=True,
                   mixed_precision=True, gradients=True, train_steps=3):
    """Runs the shared layer contract on ``layer_cls(**init_kwargs)``.

    Args:
        input_shapes: NHWC shapes to build and call on (the first is used for the
            save/reload, precision and gradient checks).
        expected_output_shape: callable ``input_shape -> output_shape``; default identity.
        identity_at_init: the freshly built layer must return its input.
        input_range: ``(low, high)`` for uniform inputs (e.g. images in [0, 1]);
            default standard normal.
        no_gradient_weights: substrings of weight paths that are documented to get no
            gradient (e.g. non-trainable by design).
        tmp_path: pytest's ``tmp_path``.
    """
    init_kwargs = dict(init_kwargs or {})
    keras.utils.set_random_seed(0)  # layer initialisation too, so every check is deterministic
    expected_output_shape = expected_output_shape or (lambda s: tuple(s))
    low, high = input_range or (None, None)

    # 1. get_config holds the constructor arguments and rebuilds an equal layer.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        got = config[key]
        assert got == value or (isinstance(value, tuple) and list(value) == list(got)), \
            f"get_config()[{key!r}] = {got!r}, constructed with {value!r}"
    assert layer_cls.from_config(config).get_config() == config
    json.dumps(keras.saving.serialize_keras_object(layer))  # serializable to JSON

    # 2. Eager calls on several input sizes; symbolic build; identity at initialisation.
    for i, shape in enumerate(input_shapes):
        layer = layer_cls(**init_kwargs)
        x = random_images(shape, seed=i, low=low, high=high)
        y = _first_output(layer(x, **(call_kwargs or {})))
        assert tuple(y.shape) == tuple(expected_output_shape(shape)), \
            f"output shape {tuple(y.shape)} for input {shape}, expected {expected_output_shape(shape)}"
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        y = keras.ops.convert_to_numpy(y)
        assert np.all(np.isfinite(y)), f"non-finite output for input shape {shape}"
        if identity_at_init:
            np.testing.assert_allclose(y, x, atol=1e-5, err_msg="not the identity at initialisation")
        symbolic = _first_output(_wrap(layer_cls(**init_kwargs), shape, call_kwargs).outputs)
        expected_symbolic = expected_output_shape((None, *shape[1:]))
        assert tuple(symbolic.shape)[1:] == tuple(expected_symbolic)[1:]

    shape = input_shapes[0]
    x = random_images(shape, seed=7, low=low, high=high)

    # 3. .keras save -> load in a fresh process gives identical outputs.
    if fresh_process:
        check_fresh_process_reload(_wrap(layer_cls(**init_kwargs), shape, call_kwargs), x, tmp_path)

    # 4. Mixed precision: finite outputs in the compute dtype, float32 logits.
    if mixed_precision:
        previous = keras.config.dtype_policy()
        try:
            for policy in ("mixed_float16", "mixed_bfloat16"):
                keras.config.set_dtype_policy(policy)
                layer = layer_cls(**init_kwargs)
                inputs = keras.Input(batch_shape=(None, *shape[1:]))
                features = _first_output(layer(inputs, **(call_kwargs or {})))
                logits = keras.layers.Dense(3, dtype="float32")(_flatten_features(features))
                model = keras.Model(inputs, [features, logits])
                feats, out = model(x)
                assert keras.backend.standardize_dtype(feats.dtype) == policy.split("_")[1], \
                    f"{policy}: layer output dtype {feats.dtype}"
                assert keras.backend.standardize_dtype(out.dtype) == "float32"
                assert np.all(np.isfinite(keras.ops.convert_to_numpy(out))), f"{policy}: non-finite logits"
        finally:
            keras.config.set_dtype_policy(previous)

    # 5. Gradients reach every trainable weight within a few SGD steps.
    if gradients:
        keras.utils.set_random_seed(1)
        layer = layer_cls(**init_kwargs)
        inputs = keras.Input(batch_shape=(None, *shape[1:]))
        features = _first_output(layer(inputs, training=True, **(call_kwargs or {})))
        logits = keras.layers.Dense(3)(_flatten_features(features))
        model = keras.Model(inputs, logits)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = {w.path: keras.ops.convert_to_numpy(w) for w in layer.trainable_weights}
        labels = np.arange(shape[0]) % 3
        for _ in range(train_steps):
            loss = model.train_on_batch(x, labels)
        assert np.isfinite(loss)
        unchanged = [w.path for w in layer.trainable_weights
                     if np.array_equal(before[w.path], keras.ops.convert_to_numpy(w))
                     and not any(s in w.path for s in no_gradient_weights)]
        assert not unchanged, f"no gradient reached {unchanged}"


def _flatten_features(features):
    if len(features.shape) == 4:
        return keras.layers.GlobalAveragePooling2D(dtype=features.dtype)(features)
    if len(features.shape) > 2:
        return keras.layers.Flatten()(features)
    return features


def count_trainable_params(model: keras.Model) -> int:
    """Number of trainable parameters (scalars) of a built model."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def timm_module_error(layer, module, x: np.ndarray, seed: int = 0) -> float:
    """Max relative error of our ``layer`` against timm's ``module`` on the NHWC batch ``x``.

    ``module`` (a ``torch.nn.Module``) gets random weights and random BatchNorm statistics
    and is put in eval mode; its state dict is loaded into ``layer`` through the timm
    converter's per-class table (:data:`keras_attention.convert.timm_layouts.LAYER_CONVERTERS`),
    so this checks the layer and its conversion together.
    """
    import torch

    from keras_attention.convert.timm_layouts import LAYER_CONVERTERS

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    module.eval()
    layer.build(x.shape)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    specs = LAYER_CONVERTERS[type(layer).__name__](layer, "m")
    assert sorted(s.path for s in specs) == sorted(w.path for w in layer.weights), "a weight is not converted"
    assert {s.key for s in specs} == {f"m.{k}" for k in state if not k.endswith("num_batches_tracked")}
    for spec in specs:
        spec.variable.assign(spec.transform(state[spec.key[2:]]))
    with torch.no_grad():
        expected = module(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    actual = keras.ops.convert_to_numpy(layer(x, training=False)).transpose(0, 3, 1, 2)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def gradient(fn, x: np.ndarray) -> np.ndarray:
    """Gradient of the scalar ``fn(x)`` with respect to the array ``x``, on the current backend.

    ``fn`` takes and returns backend tensors (``keras.ops`` and model calls); ``x`` and the
    result are NumPy arrays. Keras has no backend-agnostic gradient, hence one branch per backend.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        t = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = fn(t)
        return tape.gradient(y, t).numpy()
    if backend == "jax":
        import jax
        return np.asarray(jax.grad(fn)(jax.numpy.asarray(x)))
    if backend == "torch":
        import torch
        t = torch.tensor(x, requires_grad=True)
        fn(t).backward()
        return t.grad.detach().cpu().numpy()
    raise NotImplementedError(f"gradient() does not support the {backend!r} backend")


def randomize_batch_norms(model: keras.Model, seed: int = 0) -> None:
    """Gives every BatchNormalization of ``model`` (nested models too) random, non-zero statistics
    and scales, so no branch is switched off (zero-initialised gammas) and reloads compare real
    numbers."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape)])


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (the scripts are not a package), imported from its file."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
