"""Attention maps of images (:func:`attention_maps`) and of a dataset (:func:`excitation_per_class`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np

from keras_attention._errors import InvalidInputError
from keras_attention.data import loader
from keras_attention.explain._probe import (DEFAULT_QUERIES, attention_layers, probe_model,
                                            stage_and_block)
from keras_attention.layers._common import check_queries

#: Map names that hold one value per channel, ``(N, C)``, in the order they are preferred.
CHANNEL_GATES = ("gate", "channel_gate", "mean_gate")


@dataclass
class AttentionMap:
    """The maps of one attention layer for a batch of images.

    Attributes:
        layer: the layer's name (``"stage2_block1_attention"``).
        kind: the layer's class name (``"SqueezeExcite"``, ``"CBAM"``, ...).
        stage, block: from the layer's name (``stage{i}_block{j}`` / ``stage{i}_attention{j}``;
            1-based stage, 0-based block), ``None`` if the name has neither.
        input_shape: the layer's input ``(H, W, C)``.
        maps: ``{map name: float32 array}``, the layer's ``MAPS`` (e.g. SE ``"gate"``
            ``(N, C)``, CBAM ``"channel_gate"`` ``(N, C)`` and ``"spatial_gate"`` ``(N, H, W)``).
        queries: the ``(y, x)`` query fractions of pairwise maps ``(N, Q, H', W')``, else ``None``.
    """

    layer: str
    kind: str
    stage: int | None
    block: int | None
    input_shape: tuple
    maps: dict[str, np.ndarray]
    queries: tuple | None = None

    @property
    def channel_gate(self) -> np.ndarray | None:
        """The layer's per-channel gate ``(N, C)`` (see :data:`CHANNEL_GATES`), or ``None``."""
        for key in CHANNEL_GATES:
            value = self.maps.get(key)
            if value is not None and value.ndim == 2:
                return value
        return None


@dataclass
class AttentionMaps:
    """The model's outputs and the maps of its attention layers, from one forward pass.

    Iterating gives the :class:`AttentionMap` entries in graph order; ``maps["name"]``
    (or ``maps[i]``) picks one by layer name (or position).
    """

    outputs: np.ndarray
    entries: list[AttentionMap] = field(default_factory=list)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, key):
        if isinstance(key, str):
            for entry in self.entries:
                if entry.layer == key:
                    return entry
            raise KeyError(f"No attention layer {key!r}; layers: {[e.layer for e in self.entries]}")
        return self.entries[key]


def _entries(model, layers, queries):
    selected = attention_layers(model, layers)
    entries = []
    for layer in selected:
        stage, block = stage_and_block(layer.name)
        pairwise = any("query" in str(doc) for doc in getattr(layer, "MAPS", {}).values())
        entries.append(AttentionMap(layer.name, type(layer).__name__, stage, block,
                                    tuple(layer.input.shape[1:]), {}, queries if pairwise else None))
    return entries


def _as_inputs(images, preprocessing):
    if preprocessing is not None:
        return loader.eval_views(images, preprocessing)
    images = np.asarray(images)
    if images.ndim != 4:
        raise InvalidInputError(f"images must be a (N, H, W, C) batch of model inputs, received shape "
                                f"{images.shape}; pass preprocessing= for raw uint8 images.")
    return images.astype("float32", copy=False)


def attention_maps(model: keras.Model, images, *, layers=None, queries=DEFAULT_QUERIES,
                   preprocessing=None, batch_size: int = 32) -> AttentionMaps:
    """The maps of every attention layer of ``model`` for ``images``, from one forward pass.

    Runs :func:`~keras_attention.explain.probe_model` (the model's own layers, each
    attention layer called once through its ``call_with_maps``) in inference mode.

    Args:
        model: a functional model (every registry model), e.g. ``keras_attention.load(...)``.
        images: model inputs ``(N, H, W, 3)`` (already normalised), or with
            ``preprocessing`` uint8 images of any size (``(N, h, w, 3)`` or a list).
        layers: ``None``/``"all"``, or names, ``fnmatch`` patterns or class names of the
            attention layers to read (see :func:`~keras_attention.explain.attention_layers`).
        queries: ``(y, x)`` fractions in [0, 1] of the query positions of pairwise attention
            (non-local, SAGAN, DANet position attention); only those rows are computed into
            the output, ``(N, Q, H', W')``. Default: the centre.
        preprocessing: a :class:`keras_attention.data.Preprocessing` to apply to raw images.
        batch_size: images per forward pass.

    Returns:
        :class:`AttentionMaps`: ``outputs`` (the model's outputs, ``(N, classes)``) and one
        :class:`AttentionMap` per attention layer (float32 arrays; shapes in each layer's
        ``MAPS``). A hard-attention model (one with a ``glimpse`` method: Saccader) gives
        one entry, ``"glimpses"``, from that method (see :data:`GLIMPSE_MAPS`).

    Raises:
        InvalidInputError: bad ``images``, ``queries`` or a layer selection that matches nothing.
    """
    try:
        queries = check_queries(queries)
    except ValueError as err:
        raise InvalidInputError(str(err)) from None
    x = _as_inputs(images, preprocessing)
    if has_glimpses(model):
        return _glimpse_maps(model, x, layers, batch_size)
    probe = probe_model(model, layers, queries)
    entries = _entries(model, layers, queries)
    outputs, collected = [], {entry.layer: {} for entry in entries}
    for start in range(0, len(x), batch_size):
        # predict_on_batch: compiled (XLA on JAX: much faster than JAX's op-by-op eager mode)
        result = probe.predict_on_batch(x[start:start + batch_size])
        outputs.append(np.asarray(result["outputs"]))
        for name, maps in result["maps"].items():
            for key, value in maps.items():
                collected[name].setdefault(key, []).append(np.asarray(value, np.float32))
    for entry in entries:
        entry.maps = {key: np.concatenate(parts) for key, parts in collected[entry.layer].items()}
    return AttentionMaps(np.concatenate(outputs) if outputs else np.zeros((0,)), entries)


#: The maps of a hard-attention model's ``"glimpses"`` entry (T glimpses, in the order taken).
GLIMPSE_MAPS = {
    "boxes": "(N, T, 4) pixel boxes (top, left, bottom, right; exclusive) of the glimpsed patches",
    "locations": "(N, T, 2) glimpse centres (y, x) in [-1, 1] (the official convention)",
    "glimpse_logits": "(N, T, K) the logits of each glimpsed patch (their mean is the output)",
    "location_probability": "(N, T, h, w) the policy's probability of each grid cell at each glimpse "
                            "(learned policy only)",
}


def has_glimpses(model) -> bool:
    """Whether ``model`` is a hard-attention model with a ``glimpse`` method (Saccader)."""
    return callable(getattr(model, "glimpse", None))


def _glimpse_maps(model, x, layers, batch_size) -> AttentionMaps:
    """The ``"glimpses"`` entry of a hard-attention model, from its own ``glimpse`` (inference)."""
    if layers not in (None, "all") and list(layers) not in (["all"], ["glimpses"], [type(model).__name__]):
        raise InvalidInputError(f"{model.name!r} is a hard-attention model: its only maps are 'glimpses' "
                                f"(layers=None, 'all' or 'glimpses'), received {layers!r}.")
    outputs, collected = [], {}
    for start in range(0, len(x), batch_size):
        result = model.glimpse(keras.ops.convert_to_tensor(x[start:start + batch_size]), training=False)
        outputs.append(np.asarray(keras.ops.convert_to_numpy(result["logits"]), np.float32))
        maps = {key: result[key] for key in ("boxes", "locations", "glimpse_logits")}
        if "location_logits" in result:
            logits = keras.ops.cast(result["location_logits"], "float32")
            probability = keras.ops.softmax(logits, axis=-1)
            maps["location_probability"] = keras.ops.reshape(probability, (*probability.shape[:2], *model.grid_shape))
        for key, value in maps.items():
            collected.setdefault(key, []).append(np.asarray(keras.ops.convert_to_numpy(value), np.float32))
    entry = AttentionMap("glimpses", type(model).__name__, None, None, tuple(x.shape[1:]),
                         {key: np.concatenate(parts) for key, parts in collected.items()})
    return AttentionMaps(np.concatenate(outputs), [entry])


@dataclass
class ExcitationPerClass:
    """Mean channel gates per class over a dataset (SENet, Fig. 6).

    Attributes:
        layers: the attention layers' names, in graph order.
        stages, blocks: their stage and block (as :class:`AttentionMap`).
        label_names: the classes.
        per_class: ``{layer: (classes, C)}`` the mean gate vector of each class's images.
        overall: ``{layer: (C,)}`` the mean gate vector over all images.
        counts: ``(classes,)`` images per class.
        map_name: the map averaged for each layer (``{layer: "gate"}``).
        dataset: a description of the data (``"cifar10 [test]: 10000 images, 10 classes"``).
    """

    layers: list[str]
    stages: list[int | None]
    blocks: list[int | None]
    label_names: list[str]
    per_class: dict[str, np.ndarray]
    overall: dict[str, np.ndarray]
    counts: np.ndarray
    map_name: dict[str, str]
    dataset: str = ""


def excitation_per_class(model: keras.Model, source, preprocessing, *, layers=None,
                         batch_size: int = 100, progress: bool = False) -> ExcitationPerClass:
    """Per-class averages of the channel gates of ``model`` over a dataset (SENet Fig. 6).

    For every selected attention layer with a per-channel gate (SE and ECA ``gate``, CBAM
    and ADCM ``channel_gate``, NAM ``mean_gate``, global GE ``gate``), the mean of the gate
    vectors ``(C,)`` over the images of each class, and over all images. The SENet paper
    (Hu et al., TPAMI 2019, Sec. 7.2, Fig. 6) plots these for SE-ResNet-50 at several
    depths: the early gates are nearly class-agnostic, the later ones class-specific.

    Args:
        model: the model (e.g. ``keras_attention.load("se_resnet20.cifar10")``).
        source: a :class:`keras_attention.data.ImageSource` (``data.load_source``).
        preprocessing: the model's :class:`keras_attention.data.Preprocessing`.
        layers: attention layers to read (default: all with a channel gate).
        batch_size: images per forward pass.
        progress: show a progress bar.

    Raises:
        InvalidInputError: no selected layer has a per-channel gate; an empty dataset.
    """
    candidates = attention_layers(model, layers)
    gated = {}
    for layer in candidates:
        keys = [k for k in CHANNEL_GATES if k in getattr(layer, "MAPS", {})]
        if keys:
            gated[layer.name] = keys[0]
    outputs = {}
    if gated:
        probe = probe_model(model, list(gated))
        # Only the (N, C) gates are outputs, so nothing else is computed for them (a
        # finite-extent GE gate is (N, h, w, C) and is left out).
        outputs = {name: probe.output["maps"][name][key] for name, key in gated.items()
                   if len(probe.output["maps"][name][key].shape) == 2}
    if not outputs:
        raise InvalidInputError(f"{model.name!r} has no attention layer with a per-channel gate "
                                f"among {[layer.name for layer in candidates] or 'its layers'}.")
    gates_model = keras.Model(probe.input, outputs)
    n = source.num_examples
    if n == 0:
        raise InvalidInputError(f"{source.describe()}: no images.")
    batches = loader.eval_dataset(source, preprocessing, batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=math.ceil(n / batch_size), desc="gates", unit="batch")
    k = source.num_classes
    sums = {name: np.zeros((k, shape[-1]), np.float64) for name, shape in
            ((name, tensor.shape) for name, tensor in outputs.items())}
    counts = np.zeros(k, np.int64)
    for images, labels in batches:
        result = gates_model.predict_on_batch(images)
        labels = np.asarray(labels, np.int64)
        np.add.at(counts, labels, 1)
        for name, value in result.items():
            np.add.at(sums[name], labels, np.asarray(value, np.float64))
    names = list(outputs)
    stages, blocks = zip(*(stage_and_block(name) for name in names))
    with np.errstate(invalid="ignore"):
        per_class = {name: (sums[name] / counts[:, None]).astype(np.float32) for name in names}
    overall = {name: (sums[name].sum(0) / counts.sum()).astype(np.float32) for name in names}
    return ExcitationPerClass(names, list(stages), list(blocks), list(source.label_names), per_class,
                              overall, counts, {name: gated[name] for name in names}, source.describe())
