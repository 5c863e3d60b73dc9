"""Export round trips: ``se_resnet20.cifar10`` exported to each format, loaded back by the format's
own runtime (TensorFlow's SavedModel loader, onnxruntime, the LiteRT interpreter of ai-edge-litert)
and run on 64 real CIFAR-10 test images preprocessed as the model expects: float32 logits within
``max |runtime - keras| / max |keras| <= 1e-4`` of Keras's, the same predictions, and the
preprocessing written next to the artifact. A missing runtime or exporter skips with its name
(fails in our CI). The whole table of families x formats is docs/export.md
(``scripts/export_table.py``)."""

import json

import keras
import numpy as np
import pytest

from keras_attention.cli import main
from keras_attention.data import open_prepared
from keras_attention.evaluation import load_for_inference, preprocess_images
from keras_attention.export import EXPORTERS, FORMATS, RUNTIMES, export, load_artifact, relative_error
from tests.helpers import import_or_skip

pytestmark = [pytest.mark.tf, pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the export round trips are tested on the TensorFlow backend (Keras exports LiteRT from "
           "TensorFlow and PyTorch only, ONNX from JAX through jax2onnx)")]

MODEL = "se_resnet20.cifar10"
PATHS = {"tf_saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite"}


@pytest.fixture(scope="module")
def real_batch(cifar10_prepared):
    loaded = load_for_inference(MODEL)
    source = open_prepared(cifar10_prepared, "test")
    x = preprocess_images(source.read(np.arange(64)), loaded.preprocessing)
    return loaded, x, keras.ops.convert_to_numpy(loaded.model(x, training=False))


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_in_the_formats_runtime(fmt, real_batch, tmp_path):
    import_or_skip(EXPORTERS[fmt][0], f"exporting {fmt} needs {EXPORTERS[fmt][1]}")
    import_or_skip(RUNTIMES[fmt][0], f"running a {fmt} artifact needs {RUNTIMES[fmt][1]}")
    loaded, x, expected = real_batch
    result = export(loaded, fmt, tmp_path / PATHS[fmt])
    assert result.max_rel_error is not None and result.max_rel_error <= 1e-4  # the export's own check
    actual = load_artifact(result.path, fmt)(x)
    assert actual.dtype == np.float32 and actual.shape == (64, 10)
    _, rel = relative_error(actual, expected)
    assert rel <= 1e-4, f"{fmt}: max relative error {rel:.2e} on real images"
    np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))
    np.testing.assert_allclose(load_artifact(result.path, fmt)(x[:3]), actual[:3], rtol=1e-5, atol=1e-5)

    meta = json.loads(result.metadata.read_text())
    assert meta["preprocessing"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert meta["input"]["shape"] == [None, 32, 32, 3] and meta["label_names"][0] == "airplane"
    readme = result.readme.read_text()
    assert "mean = [0.4914, 0.4822, 0.4465]" in readme and "`airplane`" in readme
    if fmt == "onnx":
        import onnx
        props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
        assert json.loads(props["keras_attention"])["label_names"] == meta["label_names"]


def test_cli(tmp_path, capsys):
    import_or_skip("tf2onnx", "exporting ONNX needs tf2onnx")
    import_or_skip("onnxruntime", "running ONNX needs onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", MODEL, "--format", "onnx", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (onnx)" in printed and "max relative error" in printed
    assert "keras-attention export se_resnet20.cifar10 --format onnx" in (tmp_path / "m.onnx.README.md").read_text()
    assert main(["export", MODEL, "--format", "litert", "--output", str(tmp_path / "m.lite")]) == 2
    assert "must end in .tflite" in capsys.readouterr().err
