"""Evaluation (exact top-1/top-5, test-time augmentation) and prediction (files -> top-k),
and loading a model from a run folder, a .keras or .weights.h5 file, or a pretrained name."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_attention as ka
from keras_attention.data import CIFAR10_MEAN, CIFAR10_STD, Preprocessing, eval_dataset, load_source
from keras_attention.evaluation import (evaluate, evaluate_model, load_for_inference, predict,
                                        topk_correct)
from tests.helpers import IMAGEWOOF, TFDS_DIR, needs_cifar

CIFAR_PRE = Preprocessing(input_size=(32, 32, 3), crop_pct=1.0, mean=CIFAR10_MEAN,
                          std=CIFAR10_STD, recipe="cifar")
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _constant_model(logits):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    out = keras.layers.Dense(len(logits), kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(logits))(x)
    return keras.Model(inputs, out)


def _mirror_model():
    """Logits (d, 0.2, -1e4, ...) with d = mean(left half) - mean(right half).

    Averaged over an image and its mirror (d -> -d), class 1 always wins:
    sigmoid(x - a) + sigmoid(-x - a) < 1 for a > 0. Without the mirror, class 0 wins
    whenever d > 0.2.
    """
    inputs = keras.Input((32, 32, 3))
    d = keras.layers.Lambda(lambda t: keras.ops.mean(t[:, :, :16], axis=(1, 2, 3)) -
                            keras.ops.mean(t[:, :, 16:], axis=(1, 2, 3)))(inputs)
    d = keras.layers.Reshape((1,))(d)
    out = keras.ops.concatenate([d, keras.ops.zeros_like(d) + 0.2] +
                                [keras.ops.zeros_like(d) - 1e4] * 8, axis=-1)
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def cifar_test(cifar10_prepared):
    return load_source(str(cifar10_prepared), "test[:300]")


@pytest.fixture(scope="module")
def labels300(cifar_test):
    return cifar_test.labels


def test_topk_correct_breaks_ties_towards_lower_index():
    probs = np.array([[0.1, 0.6, 0.3], [1 / 3, 1 / 3, 1 / 3]])
    assert topk_correct(probs, np.array([1, 0]), 1).tolist() == [True, True]
    assert topk_correct(probs, np.array([2, 2]), 1).tolist() == [False, False]
    assert topk_correct(probs, np.array([2, 2]), 2).tolist() == [True, False]


@needs_cifar
def test_top1_top5_exact_on_real_cifar(cifar_test, labels300):
    logits = np.array([0, 1, 2, 9, 3, 4, 5, 6, 7, 8], "float32")  # ranking 3, 9, 8, 7, 6
    result = evaluate_model(_constant_model(logits), cifar_test, CIFAR_PRE, batch_size=128,
                            progress=False)
    assert result["num_examples"] == 300
    assert result["top1"] == pytest.approx(100 * np.mean(labels300 == 3))
    assert result["top5"] == pytest.approx(100 * np.mean(np.isin(labels300, [3, 9, 8, 7, 6])))
    # a constant "class 3" model: 100% on class 3, 0% on every other class present
    assert result["per_class_top1"] == [None if not np.any(labels300 == c) else 100.0 * (c == 3)
                                        for c in range(10)]
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert result["loss"] == pytest.approx(float(-np.log(p[labels300]).mean()), rel=1e-5)
    for tta in ("flip", "five_crop", "five_crop_flip"):  # views of a constant model agree
        r = evaluate_model(_constant_model(logits), cifar_test, CIFAR_PRE, batch_size=128,
                           tta=tta, progress=False)
        assert (r["top1"], r["top5"]) == (result["top1"], result["top5"])


@needs_cifar
def test_flip_tta_averages_the_mirrored_view(cifar_test, labels300):
    model = _mirror_model()
    plain = evaluate_model(model, cifar_test, CIFAR_PRE, progress=False)
    flip = evaluate_model(model, cifar_test, CIFAR_PRE, tta="flip", progress=False)
    assert flip["top1"] == pytest.approx(100 * np.mean(labels300 == 1))
    counts = np.bincount(labels300, minlength=10)
    per_class = np.array([0.0 if v is None else v for v in plain["per_class_top1"]])
    assert np.sum(per_class * counts) / 100 == pytest.approx(plain["top1"] / 100 * 300)
    assert plain["top1"] != flip["top1"]
    with pytest.raises(ValueError, match="tta must be"):
        evaluate_model(model, cifar_test, CIFAR_PRE, tta="ten_crop")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as training writes it (random resnet20 weights)."""
    out = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(1)
    model = ka.create_model("resnet20", num_classes=10, input_shape=(32, 32, 3))
    model.save(out / "model.keras")
    model.save_weights(out / "model.weights.h5")
    cfg = {"architecture": "resnet20", "model_kwargs": {"num_classes": 10,
                                                        "input_shape": [32, 32, 3]},
           "input_size": [32, 32, 3], "crop_pct": 1.0, "interpolation": "bilinear",
           "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD), "label_names": LABELS,
           "dataset": "cifar10", "metrics": {"split": "test[:100]"}}
    (out / "pretrained.json").write_text(json.dumps(cfg))
    return out


def test_load_for_inference_from_folder_keras_and_weights_files(run_dir, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    ref = None
    for spec in (run_dir, run_dir / "model.keras", run_dir / "model.weights.h5"):
        loaded = load_for_inference(spec)
        assert loaded.label_names == LABELS and loaded.preprocessing.mean == CIFAR10_MEAN
        y = loaded.model.predict_on_batch(x)
        ref = y if ref is None else ref
        np.testing.assert_allclose(y, ref, atol=1e-5)
    with pytest.raises(ValueError, match="does not exist"):
        load_for_inference(tmp_path / "nothing.keras")
    (tmp_path / "w.weights.h5").write_bytes((run_dir / "model.weights.h5").read_bytes())
    with pytest.raises(ValueError, match="needs a pretrained.json"):
        load_for_inference(tmp_path / "w.weights.h5")


def test_pretrained_names_resolve_as_keras_attention_load_does(tiny_registry):
    from tests.conftest import random_tiny_model
    source = random_tiny_model(2)
    name = tiny_registry.add("unit", source)
    loaded = load_for_inference(name)
    assert loaded.label_names == ["cat", "dog", "fox"] and loaded.config["name"] == name
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.model.predict_on_batch(x), ka.load(name).predict_on_batch(x))
    with pytest.raises(ValueError, match="No pretrained weights named 'ka_test_tiny.nope'"):
        load_for_inference("ka_test_tiny.nope")


@needs_cifar
@pytest.mark.tf
def test_evaluate_defaults_to_the_models_dataset_and_split(run_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(TFDS_DIR))
    result = evaluate(run_dir, progress=False)
    assert (result["dataset"], result["split"], result["num_examples"]) == ("cifar10",
                                                                           "test[:100]", 100)
    assert 0 <= result["top1"] <= result["top5"] <= 100


@needs_cifar
def test_predict_real_images_matches_the_evaluation_pipeline(run_dir, tmp_path, cifar_test):
    files = []
    for i in range(3):
        data, ext = cifar_test.encoded_image(i)
        path = tmp_path / f"img{i}{ext}"
        path.write_bytes(data)
        files.append(str(path))
    jpeg = sorted((IMAGEWOOF / "val" / "n02086240").iterdir())[0] if IMAGEWOOF.is_dir() else None
    results = predict(run_dir, files + ([str(jpeg)] if jpeg else []), top_k=10)
    assert [r["file"] for r in results[:3]] == files
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
        assert {t["label"] for t in r["top"]} == set(LABELS)
    # same numbers as the evaluation pipeline gives for these images
    model = load_for_inference(run_dir).model
    x, _ = next(iter(eval_dataset(cifar_test, CIFAR_PRE, 3)))
    logits = np.asarray(model.predict_on_batch(x), np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    for r, p in zip(results, expected):
        assert r["top"][0]["index"] == int(np.argmax(p))
        assert r["top"][0]["probability"] == pytest.approx(p.max(), rel=1e-4)
    assert len(predict(run_dir, files[:1], top_k=2)[0]["top"]) == 2


def test_predict_names_a_bad_image_file(run_dir, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("definitely not a JPEG")
    with pytest.raises(ValueError, match=r"bad\.jpg.*not a readable image"):
        predict(run_dir, [str(good), str(bad)])
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"broken\.png.*not a readable image"):  # header cut
        predict(run_dir, [str(broken)])
    noisy = tmp_path / "noisy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(noisy)
    broken.write_bytes(noisy.read_bytes()[:3000])  # header intact, pixel data cut
    with pytest.raises(ValueError, match=r"broken\.png.*cannot be decoded"):
        predict(run_dir, [str(broken)])
    with pytest.raises(ValueError, match=r"missing\.png.*does not exist"):
        predict(run_dir, [os.fspath(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="top_k"):
        predict(run_dir, [str(good)], top_k=0)
