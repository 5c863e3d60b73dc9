"""timm ResNet-family checkpoints -> our Keras models, by a table of layer names.

timm (``pytorch-image-models``) publishes ImageNet weights for ``resnet*``, ``resnext*``,
``seresnet*``, ``ecaresnet*`` (its ResNet class), ``skresnet*``/``skresnext*`` (the same
class with Selective Kernel blocks), ``resnest*`` (Split attention) and the ByobNet ResNets
``gcresnet33ts``, ``seresnext26ts``, ``eca_resnet33ts``, ``bat_resnext26ts``, ... as
``model.safetensors`` state dicts. Our builders name every layer deterministically, so the
conversion is a table from our layer names to timm's keys, one per timm model class (its
"layout"): :mod:`keras_attention.convert.timm_layouts` holds the tables and the per-weight
transforms; :data:`TIMM_ARCHITECTURES` says which of our architectures each timm one is
and :data:`TIMM_LAYOUTS` which layout its checkpoints have.

The conversion is strict: a Keras weight without a timm tensor, a timm tensor
that nothing consumed, or a shape mismatch is a :class:`ConversionError` listing
every offending name. Only NumPy and ``safetensors.numpy`` are used: PyTorch and
timm are not needed at run time (the tests use them as the reference).
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Iterable, Mapping

import keras
import numpy as np

from keras_attention._errors import InvalidInputError, MissingFileError, did_you_mean
from keras_attention.convert.timm_layouts import (  # noqa: F401 (re-exported: the converter's API)
    ATTENTION_CONVERTERS, LAYER_CONVERTERS, LAYOUTS, ConversionError, TimmLayout, WeightSpec, conv1d_kernel,
    conv2d_kernel, dense_kernel, get_layout, identity, pointwise_kernel, timm_prefix, uses_avg_down,
    weight_mapping)
from keras_attention.layers._common import reduced_channels
from keras_attention.registry import create_model

#: timm architecture -> our registered architecture. The timm names map one to one:
#: attention prefixes (``se``, ``eca``, ``gc``, ``bat``, ``sk``) become our ``se_``, ``eca_``, ...
#: prefixes.
TIMM_ARCHITECTURES: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnet50d": "resnet50d",
    "resnet101d": "resnet101d",
    "resnext50_32x4d": "resnext50_32x4d",
    "resnext101_32x4d": "resnext101_32x4d",
    "seresnet18": "se_resnet18",
    "seresnet34": "se_resnet34",
    "seresnet50": "se_resnet50",
    "seresnet101": "se_resnet101",
    "seresnet152": "se_resnet152",
    "seresnext26d_32x4d": "se_resnext26d_32x4d",
    "seresnext26t_32x4d": "se_resnext26t_32x4d",
    "seresnext50_32x4d": "se_resnext50_32x4d",
    "seresnext101_32x4d": "se_resnext101_32x4d",
    "ecaresnet50d": "eca_resnet50d",
    "ecaresnet101d": "eca_resnet101d",
    # timm.models.byobnet
    "gcresnet33ts": "gc_resnet33ts",
    "gcresnet50t": "gc_resnet50t",
    "gcresnext26ts": "gc_resnext26ts",
    "gcresnext50ts": "gc_resnext50ts",
    "seresnet33ts": "se_resnet33ts",
    "seresnext26ts": "se_resnext26ts",
    "eca_resnet33ts": "eca_resnet33ts",
    "eca_resnext26ts": "eca_resnext26ts",
    "bat_resnext26ts": "bat_resnext26ts",
    # timm.models.sknet
    "skresnet18": "sk_resnet18",
    "skresnet34": "sk_resnet34",
    "skresnext50_32x4d": "sk_resnext50_32x4d",
    # timm.models.resnest (timm's ResNet class: the "resnet" layout)
    "resnest14d": "resnest14d",
    "resnest26d": "resnest26d",
    "resnest50d": "resnest50d",
}

#: timm's module layout (:data:`~keras_attention.convert.timm_layouts.LAYOUTS`) of the checkpoints
#: of our architectures; the others are ``"resnet"``.
TIMM_LAYOUTS: dict[str, str] = {
    **dict.fromkeys(["gc_resnet33ts", "gc_resnet50t", "gc_resnext26ts", "gc_resnext50ts", "se_resnet33ts",
                     "se_resnext26ts", "eca_resnet33ts", "eca_resnext26ts", "bat_resnext26ts"], "byobnet"),
    **dict.fromkeys(["sk_resnet18", "sk_resnet34", "sk_resnext50_32x4d"], "sknet"),
}

#: State-dict entries that carry no weights (BatchNorm's step counter).
IGNORED_SUFFIXES = (".num_batches_tracked",)

#: timm keys of the classifier (dropped with ``include_top=False`` or a new ``num_classes``) in its
#: ResNet layout; :func:`classifier_keys` gives them for any architecture.
CLASSIFIER_KEYS = LAYOUTS["resnet"].classifier

#: Parity with timm: max |ours - timm| / max |timm| of the logits, on random weights and random
#: BatchNorm statistics, is below this (tests/convert/test_timm.py asserts it for the parity
#: architectures, ``keras-attention convert --verify`` checks it, the README states it).
#: Measured: 3.8e-7 to 7.4e-7 (resnet50d), TensorFlow 2.21 CPU backend vs timm 1.0 / PyTorch
#: CPU, 80 px inputs; the bound leaves room for other CPUs' float32 round-off.
PARITY_RTOL = 5e-6


def timm_layout(arch: str) -> str:
    """timm's module layout of the checkpoints of our architecture ``arch`` (default ``"resnet"``)."""
    return TIMM_LAYOUTS.get(arch, "resnet")


def classifier_keys(arch: str) -> tuple[str, ...]:
    """timm's classifier keys (weight, bias) in the checkpoints of our architecture ``arch``."""
    return LAYOUTS[timm_layout(arch)].classifier


# ------------------------------------------------------------------------------------------
# Loading.

def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a safetensors state dict as NumPy arrays (no PyTorch needed).

    Raises:
        MissingFileError: ``path`` does not exist. ConversionError: not a readable
            safetensors file (e.g. a pickled ``.pth``/``.bin`` checkpoint, or bfloat16
            tensors, which NumPy cannot represent).
    """
    from safetensors.numpy import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"No checkpoint at {path!r}.")
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types
        raise ConversionError(f"Could not read {path!r} as a safetensors state dict with NumPy "
                              f"({type(err).__name__}: {err}). Only float16/float32/float64 "
                              f"safetensors checkpoints (timm's `model.safetensors`) are "
                              f"supported.") from err


def _as_state_dict(checkpoint) -> Mapping[str, np.ndarray]:
    if isinstance(checkpoint, (str, os.PathLike)):
        return load_state_dict(checkpoint)
    if isinstance(checkpoint, Mapping):
        return checkpoint
    raise TypeError("`checkpoint` must be a path to a .safetensors file or a mapping of names to "
                    f"arrays, received {type(checkpoint).__name__}.")


def _shorten(items: list[str], limit: int = 40) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_timm_weights(model: keras.Model, checkpoint, *, layout: str | TimmLayout = "resnet",
                      allow_unused: Iterable[str] = (), allow_missing: Iterable[str] = ()) -> keras.Model:
    """Loads a timm state dict into ``model`` (in place), strictly, and returns ``model``.

    Args:
        model: one of our ResNet-family models (layer names as :func:`timm_prefix` expects).
        checkpoint: path to timm's ``model.safetensors``, or a ``{key: np.ndarray}`` mapping.
        layout: timm's module layout of the checkpoint: ``"resnet"`` (default), ``"sknet"``
            or ``"byobnet"`` (:func:`timm_layout` of the architecture).
        allow_unused: ``fnmatch`` patterns of timm keys that may be left unused (e.g.
            ``("fc.*",)`` when ``model`` has no classifier or a new one).
        allow_missing: ``fnmatch`` patterns of Keras weight paths that are left as they
            are (e.g. ``("head_fc/*",)`` for a new classifier).

    Raises:
        ConversionError: any Keras weight without a timm tensor, any timm tensor left
            unused (not ignored, not allowed), or any shape mismatch; the message lists
            all of them. Nothing is assigned unless everything fits.
    """
    state = _as_state_dict(checkpoint)
    allow_unused = tuple(allow_unused)
    allow_missing = tuple(allow_missing)
    specs = [s for s in weight_mapping(model, layout)
             if not any(fnmatch.fnmatchcase(s.path, p) for p in allow_missing)]
    missing, mismatched, values = [], [], []
    for spec in specs:
        if spec.key not in state:
            missing.append(f"{spec.path} <- {spec.key}")
            continue
        source = np.asarray(state[spec.key])
        try:
            value = spec.transform(source)
        except ValueError as err:
            mismatched.append(f"{spec.key} {tuple(source.shape)} -> {spec.path}: {err}")
            continue
        if tuple(value.shape) != tuple(spec.variable.shape):
            mismatched.append(f"{spec.key} {tuple(source.shape)} -> {spec.path} "
                              f"{tuple(spec.variable.shape)}")
            continue
        values.append((spec.variable, value))
    used = {spec.key for spec in specs}
    unused = sorted(k for k in state if k not in used and not k.endswith(IGNORED_SUFFIXES)
                    and not any(fnmatch.fnmatchcase(k, p) for p in allow_unused))
    problems = []
    if missing:
        problems.append(f"{len(missing)} Keras weights have no tensor in the checkpoint: "
                        f"{_shorten(missing)}")
    if unused:
        problems.append(f"{len(unused)} checkpoint tensors are not used by the model: "
                        f"{_shorten(unused)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_shorten(mismatched)}")
    if problems:
        raise ConversionError(f"The timm checkpoint does not fit model {model.name!r}:\n  - "
                              + "\n  - ".join(problems))
    for variable, value in values:
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return model


# ------------------------------------------------------------------------------------------
# From a timm name / checkpoint to our architecture and its arguments.

def split_timm_name(name: str) -> tuple[str, str | None]:
    """``"seresnet50.a1_in1k"`` -> ``("seresnet50", "a1_in1k")``; also accepts ``"timm/..."``."""
    name = name.split("/", 1)[1] if name.startswith("timm/") else name
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def our_architecture(timm_name: str) -> str:
    """Our registered architecture for a timm model name (tag ignored).

    Raises:
        InvalidInputError: a timm architecture we do not convert (closest supported names listed).
    """
    arch, _ = split_timm_name(timm_name)
    if arch not in TIMM_ARCHITECTURES:
        hint = did_you_mean(arch, TIMM_ARCHITECTURES, n=5)
        raise InvalidInputError(f"timm architecture {arch!r} is not supported by the converter.{hint} "
                         f"Supported: {', '.join(sorted(TIMM_ARCHITECTURES))}.")
    return TIMM_ARCHITECTURES[arch]


_SE_FC1 = re.compile(r"^layer\d+\.\d+\.se\.fc1\.weight$")


def infer_se_kwargs(state: Mapping[str, np.ndarray]) -> dict:
    """Our SE ``attention_kwargs`` that reproduce every SE width in a timm state dict.

    timm's SE width is ``make_divisible(C / 16, 8)`` (``C // 16`` rounded to a multiple
    of 8, never below 8), the SENet paper's is ``C // 16``; they differ only where
    ``C / 16`` is not a multiple of 8 (stage 1 of SE-ResNet-18/34). The ratio and divisor
    are read from the checkpoint: ``{}`` when our defaults (r=16, divisor 1) fit,
    else e.g. ``{"reduction_divisor": 8}``.

    Raises:
        ConversionError: no (ratio, divisor) reproduces all widths (lists them).
    """
    pairs = sorted({(int(w.shape[1]), int(w.shape[0])) for k, w in state.items() if _SE_FC1.match(k)})
    if not pairs:
        return {}
    ratios = [16.0] + sorted({c / h for c, h in pairs}, reverse=True)
    for ratio in ratios:
        for divisor in (1, 8):
            if all(reduced_channels(c, ratio, None, divisor) == h for c, h in pairs):
                kwargs = {}
                if ratio != 16.0:
                    kwargs["reduction_ratio"] = int(ratio) if float(ratio).is_integer() else ratio
                if divisor != 1:
                    kwargs["reduction_divisor"] = divisor
                return kwargs
    raise ConversionError("No SE reduction ratio/divisor reproduces the checkpoint's SE widths "
                          f"(channels, hidden): {pairs}.")


def infer_model_kwargs(timm_name: str, checkpoint) -> dict:
    """Builder arguments of our architecture that fit a timm checkpoint.

    Returns ``{"num_classes": ...}`` (from the classifier's weight), plus ``attention_kwargs``
    for SE models whose widths need them (see :func:`infer_se_kwargs`).
    """
    state = _as_state_dict(checkpoint)
    weight = classifier_keys(our_architecture(timm_name))[0]  # also validates the name
    kwargs = {}
    if weight in state:
        kwargs["num_classes"] = int(state[weight].shape[0])
    se = infer_se_kwargs(state)
    if se:
        kwargs["attention_kwargs"] = se
    return kwargs


def create_model_from_timm(timm_name: str, checkpoint, *, num_classes: int | None = None,
                           include_top: bool = True, input_shape=(None, None, 3), **kwargs) -> keras.Model:
    """Builds our architecture for ``timm_name`` and loads a timm checkpoint into it.

    Args:
        timm_name: timm model name, with or without tag (``"seresnet50.a1_in1k"``).
        checkpoint: path to timm's ``model.safetensors`` or a loaded state dict.
        num_classes: ``None`` keeps the checkpoint's classifier; another value builds a
            fresh (randomly initialised) ``head_fc`` and loads only the backbone.
        include_top: ``False`` drops the classifier (features or pooled features).
        input_shape: model input ``(H, W, 3)``; the default accepts any size.
        **kwargs: further builder arguments (``pooling``, ...).

    Returns:
        The model, with every backbone weight (and the classifier if kept) from the
        checkpoint.

    Raises:
        ValueError: unsupported timm architecture. ConversionError: the checkpoint does
            not fit (every problem listed).
    """
    state = _as_state_dict(checkpoint)
    arch = our_architecture(timm_name)
    inferred = infer_model_kwargs(timm_name, state)
    options = {**inferred, **kwargs}
    if "attention_kwargs" in inferred and "attention_kwargs" in kwargs:
        options["attention_kwargs"] = {**inferred["attention_kwargs"], **kwargs["attention_kwargs"]}
    allow_unused, allow_missing = (), ()
    new_head = num_classes is not None and num_classes != inferred.get("num_classes")
    if not include_top or new_head:
        allow_unused = classifier_keys(arch)
    if include_top and new_head:
        allow_missing = ("head_fc/*",)  # fresh classifier, left as initialised
    if num_classes is not None:
        options["num_classes"] = num_classes
    model = create_model(arch, include_top=include_top, input_shape=input_shape, **options)
    return load_timm_weights(model, state, layout=timm_layout(arch), allow_unused=allow_unused,
                             allow_missing=allow_missing)


def load_timm_files(model: keras.Model, files: Mapping[str, str | os.PathLike], cfg: Mapping) -> None:
    """The weights loader of registry format ``"timm"`` (``keras_attention.weights`` calls it).

    Args:
        model: built by ``create_model(cfg["architecture"], **cfg["model_kwargs"])``.
        files: ``{file name: verified local path}``; must hold ``model.safetensors``.
        cfg: the registry entry; where it names the timm model (``source.model``), that
            model must convert to ``cfg["architecture"]``.

    Raises:
        ConversionError: no ``model.safetensors``, a timm model of another architecture,
            or a checkpoint that does not fit (every problem listed).
    """
    if "model.safetensors" not in files:
        raise ConversionError(f"A timm entry needs 'model.safetensors'; files: {sorted(files)}.")
    timm_name = (cfg.get("source") or {}).get("model")
    if timm_name is not None and "architecture" in cfg and our_architecture(timm_name) != cfg["architecture"]:
        raise ConversionError(f"Entry {cfg.get('name')!r}: timm model {timm_name!r} converts to "
                              f"{our_architecture(timm_name)!r}, not {cfg['architecture']!r}.")
    arch = cfg.get("architecture") or (our_architecture(timm_name) if timm_name else None)
    load_timm_weights(model, files["model.safetensors"], layout=timm_layout(arch))


# ------------------------------------------------------------------------------------------
# Pretrained configs.

#: timm pretrained-config fields we keep (timm name -> our registry field name).
_CFG_FIELDS = {"input_size": "input_size", "test_input_size": "test_input_size", "crop_pct": "crop_pct",
               "test_crop_pct": "test_crop_pct", "crop_mode": "crop_mode",
               "interpolation": "interpolation", "mean": "mean", "std": "std",
               "num_classes": "num_classes", "license": "license", "label_names": "label_names",
               "hf_hub_id": "hf_hub_id", "origin_url": "origin_url", "paper_ids": "paper_ids",
               "tag": "tag", "architecture": "timm_architecture"}


def _hwc(size) -> list[int]:
    """timm's ``(C, H, W)`` input size -> our ``[H, W, C]``."""
    c, h, w = (int(v) for v in size)
    return [h, w, c]


def pretrained_cfg_from_timm(cfg: Mapping) -> dict:
    """timm's pretrained config -> our field names (``input_size`` as ``[H, W, C]``).

    Args:
        cfg: ``PretrainedCfg.to_dict()``, the ``pretrained_cfg`` object of a timm Hub
            repo's ``config.json``, or that whole ``config.json`` (``architecture``,
            ``num_classes``, ``pretrained_cfg``).

    Returns:
        A dict with the fields present among ``input_size``, ``test_input_size``,
        ``crop_pct``, ``test_crop_pct``, ``crop_mode``, ``interpolation``, ``mean``, ``std``,
        ``num_classes``, ``license``, ``label_names``, ``hf_hub_id``, ``origin_url``,
        ``paper_ids``, ``tag``, ``timm_architecture``. Missing fields are left out.
    """
    if "pretrained_cfg" in cfg:  # a timm Hub config.json
        outer = {k: v for k, v in cfg.items() if k != "pretrained_cfg"}
        cfg = {**{k: outer[k] for k in ("architecture", "num_classes", "label_names") if k in outer},
               **cfg["pretrained_cfg"]}
    out = {}
    for key, ours in _CFG_FIELDS.items():
        value = cfg.get(key)
        if value is None:
            continue
        if key in ("input_size", "test_input_size"):
            value = _hwc(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[ours] = value
    return out
