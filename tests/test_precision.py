"""Inference in bfloat16: the model computes in bfloat16 with its float32 weights and returns float32
logits; on real CIFAR-10 test images the shipped weights keep their top-1 (the full 10,000-image
measurement is in docs/benchmarks.md); ``evaluate``/``predict`` and the CLI take the precision."""

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention._precision import with_precision
from keras_attention.cli import main
from keras_attention.evaluation import evaluate, load_for_inference, predict
from tests.helpers import random_images


def test_with_precision_keeps_weights_and_float32_outputs():
    keras.utils.set_random_seed(0)
    model = ka.create_model("cbam_resnet20")
    half = with_precision(model, "bfloat16")
    assert half is not model and with_precision(model, "float32") is model
    policies = {layer.name: layer.dtype_policy.name for layer in half.layers}
    assert policies["head_fc"] == policies["head_pool"] == "float32"
    assert policies["stage2_block1_conv1"] == policies["stage2_block1_attention"] == "mixed_bfloat16"
    assert half.get_layer("stage2_block1_attention").channel.dtype_policy.name == "mixed_bfloat16"
    for a, b in zip(model.weights, half.weights):
        assert a.path == b.path and keras.backend.standardize_dtype(b.dtype) == "float32"
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    x = random_images((2, 32, 32, 3))
    y32, y16 = (keras.ops.convert_to_numpy(m(x)) for m in (model, half))
    assert y16.dtype == np.float32
    np.testing.assert_allclose(y16, y32, atol=0.1 * np.abs(y32).max())
    assert not np.array_equal(y16, y32)  # it does compute in bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        with_precision(model, "int8")


def test_bfloat16_top1_on_real_cifar10(cifar10_prepared):
    split = "test[:500]"
    full = evaluate("se_resnet20.cifar10", str(cifar10_prepared), split, progress=False)
    half = evaluate("se_resnet20.cifar10", str(cifar10_prepared), split, progress=False, precision="bfloat16")
    assert (full["precision"], half["precision"]) == ("float32", "bfloat16")
    assert abs(half["top1"] - full["top1"]) <= 0.6  # 3 of 500 images; 10,000 images: docs/benchmarks.md
    loaded = load_for_inference("se_resnet20.cifar10", precision="bfloat16")
    assert loaded.precision == "bfloat16"
    assert evaluate(loaded, str(cifar10_prepared), split, progress=False)["top1"] == half["top1"]


def test_predict_and_cli_take_the_precision(cifar10_prepared, tmp_path, capsys):
    from keras_attention.data import open_prepared
    data, ext = open_prepared(cifar10_prepared, "test").encoded_image(0)
    path = tmp_path / f"img{ext}"
    path.write_bytes(data)
    p32 = predict("se_resnet20.cifar10", [path], top_k=1)[0]["top"][0]
    p16 = predict("se_resnet20.cifar10", [path], top_k=1, precision="bfloat16")[0]["top"][0]
    assert p16["label"] == p32["label"] and abs(p16["probability"] - p32["probability"]) < 0.05
    assert main(["predict", "se_resnet20.cifar10", str(path), "--precision", "bfloat16", "--top-k", "1"]) == 0
    assert p32["label"] in capsys.readouterr().out
    assert main(["evaluate", "se_resnet20.cifar10", "--dataset", str(cifar10_prepared), "--split", "test[:100]",
                 "--precision", "bfloat16", "--no-progress"]) == 0
    assert "100 images, bfloat16)" in capsys.readouterr().out
