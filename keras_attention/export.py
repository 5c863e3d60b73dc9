"""Export to TensorFlow SavedModel, ONNX and LiteRT through Keras 3's ``model.export``, and the
runtimes that load the artifacts back.

:func:`export` loads a model as ``keras_attention.load`` does, calls ``model.export`` (float32,
NHWC input ``(N, H, W, 3)`` with a dynamic batch size, logits out), and writes next to the
artifact ``<artifact>.README.md`` (how to preprocess an image, the output, the labels, the
command) and ``<artifact>.json`` (the same as data); the ONNX file also carries that JSON in
its ``metadata_props`` (key ``keras_attention``). By default it then runs the artifact in its
own runtime (:func:`load_artifact`: TensorFlow's SavedModel loader, onnxruntime, the LiteRT
interpreter of ``ai-edge-litert``) on random inputs and records the largest difference from
the Keras model.

What each format needs (``pip install 'keras-attention[export]'``): ``tf_saved_model`` and
``litert``: TensorFlow (the converter; Keras exports LiteRT from the TensorFlow and PyTorch
backends only); ``onnx``: ``tf2onnx`` on the TensorFlow backend; running the artifacts:
``onnxruntime``, ``ai-edge-litert``. The error of a missing one says which to install.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import importlib.util
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from keras_attention._errors import InvalidInputError, KerasAttentionError
from keras_attention._files import atomic_folder, atomic_write, atomic_write_text, write_json
from keras_attention._version import __version__

FORMATS = ("tf_saved_model", "onnx", "litert")
#: Format -> (runtime module, pip package) that loads the artifact.
RUNTIMES = {"tf_saved_model": ("tensorflow", "tensorflow"), "onnx": ("onnxruntime", "onnxruntime"),
            "litert": ("ai_edge_litert", "ai-edge-litert")}
#: Format -> (module, pip package) that ``model.export`` needs on the TensorFlow backend.
EXPORTERS = {"tf_saved_model": ("tensorflow", "tensorflow"), "onnx": ("tf2onnx", "tf2onnx"),
             "litert": ("tensorflow", "tensorflow")}
SUFFIXES = {"tf_saved_model": "", "onnx": ".onnx", "litert": ".tflite"}


class ExportError(KerasAttentionError, RuntimeError):
    """The export or the artifact's runtime is unavailable or failed; the message says why."""


@dataclass
class ExportResult:
    """Where an export went and how well its runtime reproduces Keras.

    Attributes:
        path: the artifact (a folder for SavedModel, a file otherwise).
        readme, metadata: the ``.README.md`` and ``.json`` written next to it.
        max_abs_error: ``max |runtime - keras|`` over the verification inputs (``None``
            if not verified).
        max_rel_error: ``max |runtime - keras| / max |keras|`` (the largest logit
            magnitude as the scale), or ``None``.
    """

    path: Path
    readme: Path
    metadata: Path
    max_abs_error: float | None = None
    max_rel_error: float | None = None


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}; received {fmt!r}.")
    return fmt


def _require(module: str, package: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(f"{purpose} needs {package} (pip install {package}, or "
                          f"pip install 'keras-attention[export]'): {err}") from None


def _first_line(err: Exception, limit: int = 300) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else "")[:limit]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """``(max |a - e|, max |a - e| / max |e|)``: the error relative to the largest output."""
    diff = float(np.max(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))))
    return diff, diff / max(float(np.max(np.abs(expected))), 1e-30)


# --------------------------------------------------------------------------- runtimes
def load_artifact(path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``images (N, H, W, 3) float32 -> outputs (N, K) float32`` running the artifact
    in its own runtime: ``tf.saved_model.load(path).serve``, an ``onnxruntime.InferenceSession``
    (CPU) or the LiteRT ``Interpreter`` of ``ai-edge-litert`` (input resized to the batch).

    Raises:
        ExportError: the runtime is not installed (the package to install is named).
    """
    check_format(fmt)
    module, package = RUNTIMES[fmt]
    _require(module, package, f"Running a {fmt} artifact")
    path = str(path)
    if fmt == "tf_saved_model":
        import tensorflow as tf
        artifact = tf.saved_model.load(path)
        return lambda x: np.asarray(artifact.serve(tf.constant(x, tf.float32)))
    if fmt == "onnx":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.asarray(x, np.float32)})[0]
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    shape = [None]

    def run(x):
        x = np.asarray(x, np.float32)
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return np.array(interpreter.get_tensor(out["index"]))

    return run


# --------------------------------------------------------------------------- metadata
def artifact_metadata(loaded, fmt: str, command: str | None = None) -> dict:
    """What a user of the artifact needs: input, preprocessing, output, labels, provenance."""
    pre = loaded.preprocessing
    h, w, c = (int(v) for v in loaded.model.input_shape[1:])
    return {
        "name": loaded.name, "format": fmt, "exported_by": f"keras-attention {__version__}",
        "keras": keras.__version__, "backend": keras.backend.backend(),
        "date": datetime.date.today().isoformat(), "command": command,
        "input": {"name": loaded.model.inputs[0].name, "shape": [None, h, w, c], "dtype": "float32",
                  "layout": "NHWC", "channels": "RGB"},
        "preprocessing": {"resize_shorter_side_to": int(np.floor(max(pre.size) / pre.crop_pct)),
                          "center_crop": [h, w], "crop_pct": pre.crop_pct, "interpolation": pre.interpolation,
                          "antialias": True, "scale": 1 / 255, "mean": list(pre.mean), "std": list(pre.std),
                          "formula": "x = (rgb_uint8 / 255 - mean) / std"},
        "output": {"shape": [None, len(loaded.label_names)], "dtype": "float32",
                   "meaning": "probabilities" if loaded.outputs_probabilities else "logits (apply softmax)"},
        "label_names": list(loaded.label_names),
        "source": loaded.config.get("source") or loaded.config.get("hub"),
        "license": loaded.config.get("license"),
    }


def readme_text(meta: dict, result: ExportResult | None = None, verified_on: str | None = None) -> str:
    p, i, o = meta["preprocessing"], meta["input"], meta["output"]
    lines = [
        f"# {meta['name']}: {meta['format']} export",
        "",
        f"Exported by {meta['exported_by']} (Keras {meta['keras']}, {meta['backend']} backend) on {meta['date']}"
        + (f" with `{meta['command']}`." if meta.get("command") else "."),
        "",
        "## Input",
        "",
        f"`{i['name']}`: float32 `(N, {i['shape'][1]}, {i['shape'][2]}, {i['shape'][3]})`, NHWC, RGB; the batch "
        "size N is free. Prepare each image exactly as the model was evaluated:",
        "",
        f"1. decode to RGB uint8; resize so the shorter side is {p['resize_shorter_side_to']} pixels "
        f"({p['interpolation']}, antialiased), then take the central {p['center_crop'][0]}x{p['center_crop'][1]} "
        f"crop (crop_pct {p['crop_pct']}; nothing to do for a {p['center_crop'][0]}x{p['center_crop'][1]} image);",
        f"2. `x = (pixel / 255 - mean) / std` per channel with mean = {p['mean']} and std = {p['std']}.",
        "",
        "## Output",
        "",
        f"float32 `(N, {o['shape'][1]})` {o['meaning']}, classes in this order: "
        + ", ".join(f"`{n}`" for n in meta["label_names"]) + ".",
    ]
    if result is not None and result.max_rel_error is not None:
        lines += ["", "## Check", "",
                  f"Run in its runtime on {verified_on}: largest difference from the Keras model "
                  f"{result.max_abs_error:.3g} (absolute), {result.max_rel_error:.3g} relative to the largest "
                  "output magnitude."]
    lines += ["", "## Metadata", "", "```json", json.dumps(meta, indent=2), "```", ""]
    return "\n".join(lines)


def _add_onnx_metadata(path: Path, meta: dict) -> None:
    onnx = _require("onnx", "onnx", "Writing ONNX metadata")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "keras_attention", json.dumps(meta)
    atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))


# --------------------------------------------------------------------------- export
def _model_export(model: keras.Model, path: Path, fmt: str) -> None:
    if keras.backend.backend() == "tensorflow":
        module, package = EXPORTERS[fmt]
        _require(module, package, f"Exporting to {fmt}")
    # Keras's ONNX path refuses a model that was never called (a loaded model may not have been).
    model(np.zeros((1, *model.input_shape[1:]), "float32"), training=False)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras's tf2onnx patch probes np.object
        if fmt == "tf_saved_model":
            with atomic_folder(path) as tmp:
                model.export(str(tmp), format=fmt, verbose=False)
        else:
            atomic_write(path, lambda tmp: model.export(str(tmp), format=fmt, verbose=False))


def export(model_spec, fmt: str, output, *, verify: bool = True, verify_batch: int = 4,
           command: str | None = None) -> ExportResult:
    """Exports a model to ``fmt`` at ``output`` with its preprocessing written next to it.

    Args:
        model_spec: anything :func:`keras_attention.evaluation.load_for_inference` loads (a
            pretrained name, run folder, ``.keras`` file, ``hf://`` address) or a
            :class:`~keras_attention.evaluation.LoadedModel`.
        fmt: ``"tf_saved_model"`` (a folder), ``"onnx"`` or ``"litert"`` (a ``.tflite`` file).
        output: the artifact's path; an existing one is replaced (atomically).
        verify: run the artifact in its runtime on ``verify_batch`` random normalised images
            and record the error (skipped, with ``None`` errors, if the runtime is missing).
        command: the command line, for the README.

    Returns:
        :class:`ExportResult`.

    Raises:
        InvalidInputError: unknown format; a LiteRT path not ending in ``.tflite``.
        ExportError: an exporter the format needs is not installed, or ``model.export`` failed
            (Keras's reason is included).
    """
    from keras_attention.evaluation import LoadedModel, load_for_inference
    check_format(fmt)
    output = Path(output)
    if fmt == "litert" and output.suffix != ".tflite":
        raise InvalidInputError(f"A LiteRT artifact's path must end in .tflite (Keras requires it); "
                                f"received {str(output)!r}.")
    loaded = model_spec if isinstance(model_spec, LoadedModel) else load_for_inference(model_spec)
    try:
        _model_export(loaded.model, output, fmt)
    except KerasAttentionError:
        raise
    except Exception as err:  # the exporters' own errors (conversion failures) become one line
        raise ExportError(f"Exporting {loaded.name} to {fmt} failed: {type(err).__name__}: "
                          f"{_first_line(err)}") from err
    meta = artifact_metadata(loaded, fmt, command)
    result = ExportResult(output, Path(f"{output}.README.md"), Path(f"{output}.json"))
    verified_on = None
    if verify and importlib.util.find_spec(RUNTIMES[fmt][0]) is not None:
        x = np.random.default_rng(0).standard_normal((verify_batch, *loaded.model.input_shape[1:])).astype("float32")
        expected = np.asarray(keras.ops.convert_to_numpy(loaded.model(x, training=False)), np.float32)
        try:
            actual = load_artifact(output, fmt)(x)
        except Exception as err:  # the runtime's own errors (e.g. an op it lacks)
            raise ExportError(f"{output} was written, but {RUNTIMES[fmt][1]} cannot run it: "
                              f"{type(err).__name__}: {_first_line(err)}") from err
        result.max_abs_error, result.max_rel_error = relative_error(actual, expected)
        verified_on = f"{verify_batch} standard-normal inputs"
        meta["check"] = {"inputs": verified_on, "max_abs_error": result.max_abs_error,
                         "max_rel_error": result.max_rel_error}
    if fmt == "onnx":
        _add_onnx_metadata(output, meta)
    write_json(result.metadata, meta)
    atomic_write_text(result.readme, readme_text(meta, result, verified_on))
    return result


def default_output(name: str, fmt: str) -> str:
    """``se_resnet20.cifar10`` -> ``se_resnet20.cifar10.onnx`` / ``.tflite`` / ``_saved_model``."""
    base = os.path.basename(str(name).rstrip("/")) or "model"
    return base + ("_saved_model" if fmt == "tf_saved_model" else SUFFIXES[fmt])
