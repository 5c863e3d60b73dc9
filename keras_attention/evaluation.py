"""Evaluation (top-1/top-5 over a whole split, optional test-time augmentation) and
prediction (top-k class names for image files).

A model is given as any of:

* a run folder written by :func:`keras_attention.training.train` (``model.keras`` or
  ``model.weights.h5``, plus ``pretrained.json``);
* a ``.keras`` file (its preprocessing and label names are read from a
  ``pretrained.json`` in the same folder);
* a ``.weights.h5`` file next to a ``pretrained.json`` (architecture and builder
  arguments come from it);
* a pretrained name (``"se_resnet20.cifar10"``), an ``hf://org/repo`` address or a
  published model folder (Keras unzipped layout with ``metadata.json``),

all resolved by :func:`keras_attention.weights.resolve_source`, as ``keras_attention.load``
resolves them. Nothing here needs TensorFlow (``pipeline="tf"`` aside).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import keras
import numpy as np

from keras_attention._errors import InvalidInputError
from keras_attention._precision import PRECISIONS, check_precision, with_precision  # noqa: F401
from keras_attention.data import catalog, loader, transforms
from keras_attention.data.preprocessing import Preprocessing
from keras_attention.data.folder import check_image_header
from keras_attention.data.source import explain_decode_error
from keras_attention.models._common import model_io_shape, outputs_probabilities
from keras_attention.weights import load, resolve_source, source_cfg

TTA_MODES = loader.TTA_MODES


@dataclass
class LoadedModel:
    """A model ready for inference with its preprocessing and labels."""

    model: keras.Model
    preprocessing: "object"  # keras_attention.data.Preprocessing
    label_names: list[str]
    name: str
    config: dict
    precision: str = "float32"

    def describe(self, index: int) -> dict:
        """``{"label": ..., "index": ...}`` of class ``index``, with ``description`` (a readable name,
        the entry's ``label_descriptions``) where the weights give one."""
        record = {"label": self.label_names[index], "index": int(index)}
        descriptions = self.config.get("label_descriptions")
        if descriptions and len(descriptions) == len(self.label_names):
            record["description"] = descriptions[index]
        return record

    @property
    def outputs_probabilities(self) -> bool:
        return outputs_probabilities(self.model)


def _from_cfg(model: keras.Model, cfg: dict, name: str) -> LoadedModel:
    image_shape, num_classes = model_io_shape(model)
    input_size = cfg.get("input_size") or list(image_shape)
    pre = Preprocessing.from_config({**cfg, "input_size": input_size})
    labels = cfg.get("label_names")
    if not labels:
        labels = [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise InvalidInputError(f"{name}: {len(labels)} label names for a model with {num_classes} "
                         f"outputs.")
    return LoadedModel(model, pre, list(labels), name, cfg)


def load_for_inference(spec: str | os.PathLike | keras.Model, config: dict | None = None,
                       precision: str = "float32") -> LoadedModel:
    """Loads a model with its preprocessing and label names, resolved as ``keras_attention.load`` does.

    Args:
        spec: a registry name (``"se_resnet20.cifar10"``), an ``hf://org/repo`` address, a
            published model folder, a training run folder, a ``.keras`` / ``.weights.h5`` file
            (see :func:`keras_attention.weights.resolve_source`, the one resolver ``load``
            uses too); or a ``keras.Model`` (then ``config`` gives its preprocessing and labels).
        config: a ``pretrained.json``-style dict overriding the one found.
        precision: ``"float32"`` (default) or ``"bfloat16"`` (also ``"float16"``): the
            model computes in that precision with its float32 weights, and returns float32
            outputs (:func:`keras_attention._precision.with_precision`).

    Returns:
        A :class:`LoadedModel`.

    Raises:
        ValueError: (``keras_attention`` errors) nothing at ``spec`` and no such pretrained
            name, a ``.weights.h5`` file without a ``pretrained.json``, or label names that
            do not fit the model.
    """
    check_precision(precision)
    if isinstance(spec, keras.Model):
        return at_precision(_from_cfg(spec, config or {}, spec.name), precision)
    source = resolve_source(spec)
    cfg = source_cfg(source, required=False)
    model = load(source)
    if not cfg and not config:
        warnings.warn(f"No pretrained config for {str(spec)!r}: using the model's input size, no crop, "
                      f"ImageNet mean/std and numbered class names.", stacklevel=2)
    cfg.update(config or {})
    return at_precision(_from_cfg(model, cfg, str(spec)), precision)


def at_precision(loaded: LoadedModel, precision: str | None) -> LoadedModel:
    """``loaded`` computing in ``precision`` (``None``: as it is); the weights are shared values."""
    if precision is None or precision == loaded.precision:
        return loaded
    if loaded.precision != "float32":
        raise InvalidInputError(f"{loaded.name} already computes in {loaded.precision}; load it again "
                                f"for {precision}.")
    return LoadedModel(with_precision(loaded.model, precision), loaded.preprocessing, loaded.label_names,
                       loaded.name, loaded.config, precision)


# --------------------------------------------------------------------------- maths
def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _probabilities(model, images, is_prob):
    out = model.predict_on_batch(images)
    out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
    return out if is_prob else _softmax(out)


def topk_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean per example: is the label among the ``k`` highest probabilities?

    Ties are broken in favour of the lower class index (stable sort), so an
    all-equal output is not counted correct for every class.
    """
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return (order == labels[:, None]).any(axis=-1)


def evaluate_model(model, source, preprocessing, *, batch_size: int = 100, tta: str = "none",
                   progress: bool = True, pipeline: str = "auto") -> dict:
    """Top-1/top-5 accuracy (percent) and mean cross-entropy over the whole ``source``.

    With ``tta``, each image is classified as several views whose softmax
    probabilities are averaged: ``"flip"`` (image and its mirror), ``"five_crop"``
    (four corners and centre; for the CIFAR recipe, crops of the 4-pixel-padded
    image), ``"five_crop_flip"`` (the ten views).

    Args:
        model: a ``keras.Model`` (logits or softmax output).
        source: :class:`keras_attention.data.ImageSource`.
        preprocessing: :class:`keras_attention.data.Preprocessing`.
        pipeline: ``"auto"``/``"grain"`` (NumPy/Pillow, every backend) or ``"tf"``
            (``tf.data``); both give the same evaluation tensors (``tests/data``).

    Returns:
        ``{"top1", "top5", "loss", "num_examples", "tta", "per_class_top1"}`` (percent;
        ``top5`` is top-k with k = min(5, number of classes); ``per_class_top1[i]`` is the
        top-1 accuracy over the images of class ``i``, ``None`` for a class without images).

    Raises:
        InvalidInputError: unknown ``tta``, a model with fewer outputs than classes, an
            empty split, an image that cannot be decoded (named).
    """
    if tta not in TTA_MODES:
        raise InvalidInputError(f"tta must be one of {TTA_MODES}; received {tta!r}.")
    is_prob = outputs_probabilities(model)
    n_out = model_io_shape(model)[1]
    if n_out < source.num_classes:
        raise InvalidInputError(f"The model has {n_out} outputs but the data has "
                                f"{source.num_classes} classes.")
    batches = catalog.pipeline_module(pipeline).eval_dataset(source, preprocessing, batch_size,
                                                             tta=tta)
    if catalog.resolve_pipeline(pipeline) == "tf":
        batches = batches.as_numpy_iterator()
    k = min(5, n_out)
    correct1 = correct5 = seen = 0
    class_seen = np.zeros(source.num_classes, np.int64)
    class_correct = np.zeros(source.num_classes, np.int64)
    nll = 0.0
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=math.ceil(source.num_examples / batch_size),
                       desc=f"evaluating {source.split}", unit="batch")
    try:
        for images, labels in batches:
            if images.ndim == 5:  # (B, views, H, W, 3)
                b, v = images.shape[:2]
                probs = _probabilities(model, images.reshape((b * v,) + images.shape[2:]), is_prob)
                probs = probs.reshape(b, v, -1).mean(axis=1)
            else:
                probs = _probabilities(model, images, is_prob)
            labels = labels.astype(np.int64)
            hit1 = topk_correct(probs, labels, 1)
            correct1 += int(hit1.sum())
            np.add.at(class_seen, labels, 1)
            np.add.at(class_correct, labels, hit1.astype(np.int64))
            correct5 += int(topk_correct(probs, labels, k).sum())
            nll += float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).sum())
            seen += len(labels)
    except Exception as err:
        explain_decode_error(err, source)
        raise
    if seen == 0:
        raise InvalidInputError(f"{source.describe()}: no examples to evaluate.")
    per_class = [100.0 * c / n if n else None for c, n in zip(class_correct, class_seen)]
    return {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen,
            "loss": nll / seen, "num_examples": seen, "tta": tta, "per_class_top1": per_class}


def evaluate(model_spec, dataset: str | None = None, split: str | None = None, *,
             data_dir: str | None = None, batch_size: int = 100, tta: str = "none",
             progress: bool = True, skip_corrupt: bool = False, verify: str = "header",
             download: bool = True, pipeline: str = "auto", precision: str | None = None) -> dict:
    """Loads ``model_spec`` and evaluates it on ``dataset``/``split``.

    ``dataset`` and ``split`` default to the model's ``pretrained.json``
    (``dataset``; ``metrics.split``). A class-folder dataset is mapped onto the
    model's label names. ``precision="bfloat16"`` evaluates the model computing in
    bfloat16 (float32 weights and outputs; see :func:`load_for_inference`); ``None``: as
    loaded (float32 for a name or path).

    Returns:
        :func:`evaluate_model`'s result with ``per_class_top1`` keyed by label name, plus
        ``model``, ``dataset``, ``split`` and ``precision``.
    """
    loaded = at_precision(model_spec if isinstance(model_spec, LoadedModel) else load_for_inference(model_spec),
                          precision)
    dataset = dataset or loaded.config.get("dataset")
    split = split or (loaded.config.get("metrics") or {}).get("split") or "test"
    if not dataset:
        raise InvalidInputError("No --dataset given and the model's config names none.")
    labels = loaded.label_names if loaded.config.get("label_names") else None
    source = catalog.load_source(dataset, split, data_dir=data_dir, label_names=labels,
                                 skip_corrupt=skip_corrupt, verify=verify, download=download)
    result = evaluate_model(loaded.model, source, loaded.preprocessing, batch_size=batch_size,
                            tta=tta, progress=progress, pipeline=pipeline)
    result["per_class_top1"] = dict(zip(source.label_names, result["per_class_top1"]))
    result.update({"model": loaded.name, "dataset": dataset, "split": split, "precision": loaded.precision})
    return result


# --------------------------------------------------------------------------- predict
def load_image_file(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file to uint8 ``(H, W, 3)`` with Pillow (as both pipelines decode).

    Raises:
        InvalidInputError: the file does not exist, is not an image, or cannot be decoded;
            the message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidInputError(f"Image file {path!r} does not exist.")
    reason = check_image_header(path)
    if reason:
        raise InvalidInputError(f"Image file {path!r} {reason}.")
    return transforms.decode_image(path)


def preprocess_images(images, preprocessing) -> np.ndarray:
    """uint8 images (any sizes) -> normalised float32 ``(N, H, W, 3)`` evaluation views."""
    return loader.eval_views(images, preprocessing)


def predict(model_spec, image_paths, *, top_k: int = 5, batch_size: int = 32,
            progress: bool = False, precision: str | None = None) -> list[dict]:
    """Top-``k`` classes for each image file, and the glimpses of a hard-attention model.

    ``precision="bfloat16"`` runs the model in bfloat16 (see :func:`load_for_inference`);
    ``None``: as loaded (float32 for a name or path).

    Returns:
        One dict per file, in order: ``{"file": path, "top": [{"label": name,
        "index": i, "probability": p}, ...]}`` (probabilities in [0, 1], descending; a
        ``"description"`` too, the class's readable name, where the weights give
        ``label_descriptions``). A
        model with a ``glimpse`` method (Saccader, TNet, RA-CNN, multi-granularity: the
        regions it looked at) adds ``"glimpses"``: one dict per glimpse, in the order
        taken, with ``"box"`` (top, left, bottom, right) in the image file's pixels,
        ``"view_box"`` the same in the model input's pixels (after the evaluation resize
        and centre crop), and, where the model gives per-glimpse logits, the glimpse's own
        top class (``"label"``, ``"index"``, ``"probability"``).

    Raises:
        ValueError: an image file that is missing or cannot be decoded (named), or
            ``top_k`` < 1.
    """
    if top_k < 1:
        raise InvalidInputError(f"top_k must be >= 1; received {top_k}.")
    loaded = at_precision(model_spec if isinstance(model_spec, LoadedModel) else load_for_inference(model_spec),
                          precision)
    paths = [os.fspath(p) for p in image_paths]
    if not paths:
        raise InvalidInputError("No image files given.")
    images = [load_image_file(p) for p in paths]  # fails early, naming the file
    k = min(top_k, len(loaded.label_names))
    glimpses = callable(getattr(loaded.model, "glimpse", None))
    results = []
    starts = range(0, len(paths), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="predicting", unit="batch")
    for start in starts:
        batch = preprocess_images(images[start:start + batch_size], loaded.preprocessing)
        if glimpses:
            out = {key: keras.ops.convert_to_numpy(v) for key, v in loaded.model.glimpse(batch).items()
                   if key in ("logits", "boxes", "glimpse_logits")}
            probs = _softmax(np.asarray(out["logits"], np.float64))
        else:
            probs = _probabilities(loaded.model, batch, loaded.outputs_probabilities)
        for i, (path, p) in enumerate(zip(paths[start:start + batch_size], probs)):
            order = np.argsort(-p, kind="stable")[:k]
            results.append({"file": path, "top": [
                {**loaded.describe(i), "probability": float(p[i])} for i in order]})
            if glimpses:
                results[-1]["glimpses"] = _glimpse_records(out, i, images[start + i].shape, loaded)
    return results


def _glimpse_records(out: dict, i: int, image_shape, loaded: LoadedModel) -> list[dict]:
    """Example ``i``'s glimpses (:func:`predict`), boxes mapped back to the image file."""
    pre = loaded.preprocessing
    left, top, right, bottom = transforms.eval_view_box(image_shape, pre.size, pre.crop_pct)
    sy, sx = (bottom - top) / pre.size[0], (right - left) / pre.size[1]
    records = []
    for t, (y0, x0, y1, x1) in enumerate(np.asarray(out["boxes"][i], np.float64)):
        record = {"view_box": [round(float(v), 2) for v in (y0, x0, y1, x1)],
                  "box": [round(v, 2) for v in (top + y0 * sy, left + x0 * sx, top + y1 * sy, left + x1 * sx)]}
        if "glimpse_logits" in out:
            p = _softmax(np.asarray(out["glimpse_logits"][i, t], np.float64)[None])[0]
            c = int(np.argmax(p))
            record.update({**loaded.describe(c), "probability": float(p[c])})
        records.append(record)
    return records
