"""timm ResNet-family checkpoints -> our Keras models, by a table of layer names.

timm (``pytorch-image-models``) publishes ImageNet weights for ``resnet*``,
``resnext*``, ``seresnet*``, ``seresnext*`` and ``ecaresnet*`` as ``model.safetensors``
state dicts. Our builders name every layer after timm's module path, so the
conversion is a table from our deterministic layer names to timm's keys:

==================================  ============================================
ours (Keras layer / weight)         timm (state-dict key)
==================================  ============================================
``stem_conv``, ``stem_bn``          ``conv1``, ``bn1``
``stem_conv{1,2,3}`` (deep stem)    ``conv1.0``, ``conv1.3``, ``conv1.6``
``stem_bn{1,2,3}`` (deep stem)      ``conv1.1``, ``conv1.4``, ``bn1``
``stage{i}_block{j}_conv{k}``       ``layer{i}.{j}.conv{k}``
``stage{i}_block{j}_bn{k}``         ``layer{i}.{j}.bn{k}``
``stage{i}_block{j}_downsample_*``  ``layer{i}.{j}.downsample.{0,1}`` (conv, BN), or
                                    ``.{1,2}`` after the average pool of ResNet-D
``stage{i}_block{j}_attention``     ``layer{i}.{j}.se`` (SE: ``fc1``, ``fc2``; ECA: ``conv``)
``head_fc``                         ``fc``
==================================  ============================================

and per weight: convolution ``weight`` ``(O, I/groups, kH, kW)`` -> ``kernel``
``(kH, kW, I/groups, O)`` (Keras's grouped ``Conv2D`` kernel has the same group
order as PyTorch's: output channel ``o`` belongs to group ``o // (O / groups)``);
BatchNorm ``weight, bias, running_mean, running_var`` -> ``gamma, beta,
moving_mean, moving_variance`` (eps 1e-5 in both); linear ``weight`` ``(O, I)`` ->
Dense ``kernel`` ``(I, O)``; SE's 1x1 convolutions with bias ``(O, I, 1, 1)`` ->
Dense ``(I, O)``; ECA's ``Conv1d(1, 1, k)`` weight ``(1, 1, k)`` -> our ECA layer's
kernel (see :data:`ATTENTION_CONVERTERS`). ``num_batches_tracked`` is ignored.

The conversion is strict: a Keras weight without a timm tensor, a timm tensor
that nothing consumed, or a shape mismatch is a :class:`ConversionError` listing
every offending name. Only NumPy and ``safetensors.numpy`` are used: PyTorch and
timm are not needed at run time (the tests use them as the reference).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import keras
import numpy as np

from keras_attention._errors import InvalidInputError, MissingFileError, did_you_mean
from keras_attention.layers._common import reduced_channels
from keras_attention.registry import create_model

#: timm architecture -> our registered architecture. The timm names map one to one:
#: ``se``/``eca`` prefixes become our ``se_``/``eca_`` attention prefixes.
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
}

#: State-dict entries that carry no weights (BatchNorm's step counter).
IGNORED_SUFFIXES = (".num_batches_tracked",)

#: timm keys of the classifier (dropped with ``include_top=False`` or a new ``num_classes``).
CLASSIFIER_KEYS = ("fc.weight", "fc.bias")

#: Parity with timm: max |ours - timm| / max |timm| of the logits, on random weights and random
#: BatchNorm statistics, is below this (tests/convert/test_timm.py asserts it for ten
#: architectures, ``keras-attention convert --verify`` checks it, the README states it).
#: Measured: 3.8e-7 to 7.4e-7 (resnet50d), TensorFlow 2.21 CPU backend vs timm 1.0 / PyTorch
#: CPU, 80 px inputs; the bound leaves room for other CPUs' float32 round-off.
PARITY_RTOL = 5e-6


class ConversionError(InvalidInputError):
    """A checkpoint does not fit the model: lists every unmapped, unused or mis-shaped tensor."""


# ------------------------------------------------------------------------------------------
# Per-weight transforms (PyTorch layout -> Keras layout).

def conv2d_kernel(w: np.ndarray) -> np.ndarray:
    """``(O, I/groups, kH, kW)`` -> ``(kH, kW, I/groups, O)``."""
    return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """Linear ``(O, I)`` or 1x1 convolution ``(O, I, 1, 1)`` -> Dense ``(I, O)``."""
    if w.ndim == 4:
        if w.shape[2:] != (1, 1):
            raise ValueError(f"expected a 1x1 convolution, got weight shape {w.shape}")
        w = w[:, :, 0, 0]
    return np.transpose(w)


def identity(w: np.ndarray) -> np.ndarray:
    return w


def conv1d_kernel(w: np.ndarray) -> np.ndarray:
    """``Conv1d(C_in, C_out, k)`` weight ``(C_out, C_in, k)`` -> Keras ``Conv1D`` ``(k, C_in, C_out)``."""
    return np.transpose(w, (2, 1, 0))


@dataclass(frozen=True)
class WeightSpec:
    """One Keras variable and the timm tensor (and transform) it is loaded from."""

    variable: keras.Variable
    key: str
    transform: Callable[[np.ndarray], np.ndarray]

    @property
    def path(self) -> str:
        return self.variable.path


# ------------------------------------------------------------------------------------------
# The name table.

_BN_WEIGHTS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var"}


def _plain_layer_specs(layer: keras.layers.Layer, prefix: str) -> list[WeightSpec]:
    """Conv2D / BatchNormalization / Dense: every variable by its Keras name."""
    specs = []
    for v in layer.weights:
        if isinstance(layer, keras.layers.BatchNormalization):
            specs.append(WeightSpec(v, f"{prefix}.{_BN_WEIGHTS[v.name]}", identity))
        elif isinstance(layer, keras.layers.Conv2D):
            specs.append(WeightSpec(v, f"{prefix}.weight" if v.name == "kernel" else f"{prefix}.bias",
                                    conv2d_kernel if v.name == "kernel" else identity))
        elif isinstance(layer, keras.layers.Dense):
            specs.append(WeightSpec(v, f"{prefix}.weight" if v.name == "kernel" else f"{prefix}.bias",
                                    dense_kernel if v.name == "kernel" else identity))
        else:
            raise ConversionError(f"No conversion rule for weight {v.path!r} of layer "
                                  f"{layer.name!r} ({type(layer).__name__}).")
    return specs


def _squeeze_excite_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm SEModule: fc1/fc2 are 1x1 Conv2d with bias (no BN: timm's `se.bn` is Identity).
    specs = []
    for sub in ("fc1", "fc2"):
        dense = getattr(layer, sub)
        specs.append(WeightSpec(dense.kernel, f"{prefix}.{sub}.weight", dense_kernel))
        specs.append(WeightSpec(dense.bias, f"{prefix}.{sub}.bias", identity))
    return specs


def _eca_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm EcaModule: `conv` = Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False) sliding over the
    # pooled channel descriptor, weight (1, 1, k); ours: Conv1D(1, k, padding="same", no bias)
    # over (N, C, 1), kernel (k, 1, 1). Both are cross-correlations with the same centring, and
    # both pick k adaptively from C (timm adds max(k, 3), equal for C >= 8).
    return [WeightSpec(layer.conv.kernel, f"{prefix}.conv.weight", conv1d_kernel)]


#: Attention layer class name -> function(layer, timm prefix) -> weight specs.
ATTENTION_CONVERTERS: dict[str, Callable] = {
    "SqueezeExcite": _squeeze_excite_specs,
    "ECA": _eca_specs,
}

_STEM_DEEP = {"stem_conv1": "conv1.0", "stem_bn1": "conv1.1", "stem_conv2": "conv1.3",
              "stem_bn2": "conv1.4", "stem_conv3": "conv1.6", "stem_bn3": "bn1"}
_STEM_PLAIN = {"stem_conv": "conv1", "stem_bn": "bn1", "head_fc": "fc"}
_BLOCK = re.compile(r"^stage(\d+)_block(\d+)_(conv\d|bn\d|downsample_conv|downsample_bn|attention)$")


def timm_prefix(layer_name: str, avg_down: bool) -> str | None:
    """The timm module path of our layer ``layer_name`` (``None``: not a weight layer we know).

    ``avg_down``: the model uses ResNet-D shortcuts, whose ``downsample`` Sequential
    starts with the (parameter-free) average pool, so the conv and BN are ``.1``/``.2``.
    """
    if layer_name in _STEM_PLAIN:
        return _STEM_PLAIN[layer_name]
    if layer_name in _STEM_DEEP:
        return _STEM_DEEP[layer_name]
    m = _BLOCK.match(layer_name)
    if not m:
        return None
    stage, block, part = m.groups()
    base = f"layer{stage}.{block}"
    if part == "attention":
        return f"{base}.se"
    if part.startswith("downsample"):
        index = (1 if avg_down else 0) + (part == "downsample_bn")
        return f"{base}.downsample.{index}"
    return f"{base}.{part}"


def uses_avg_down(model: keras.Model) -> bool:
    """Whether ``model`` was built with ResNet-D (average-pool) shortcuts."""
    return any(layer.name.endswith("_downsample_pool") for layer in model.layers)


def weight_mapping(model: keras.Model) -> list[WeightSpec]:
    """Every weight of ``model`` with the timm key and transform it is loaded from.

    Raises:
        ConversionError: a layer with weights whose name or type is not in the table
            (all such layers are listed).
    """
    avg_down = uses_avg_down(model)
    specs, unknown = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = timm_prefix(layer.name, avg_down)
        if prefix is None:
            unknown.append(f"{layer.name} ({type(layer).__name__})")
            continue
        if prefix.endswith(".se"):
            converter = ATTENTION_CONVERTERS.get(type(layer).__name__)
            if converter is None:
                unknown.append(f"{layer.name} ({type(layer).__name__}: no timm equivalent; "
                               f"known attention layers: {sorted(ATTENTION_CONVERTERS)})")
                continue
            specs.extend(converter(layer, prefix))
        else:
            specs.extend(_plain_layer_specs(layer, prefix))
    if unknown:
        raise ConversionError(f"Model {model.name!r} has layers with weights that have no timm "
                              f"equivalent: {', '.join(unknown)}.")
    return specs


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


def load_timm_weights(model: keras.Model, checkpoint, *, allow_unused: Iterable[str] = (),
                      allow_missing: Iterable[str] = ()) -> keras.Model:
    """Loads a timm state dict into ``model`` (in place), strictly, and returns ``model``.

    Args:
        model: one of our ResNet-family models (layer names as :func:`timm_prefix` expects).
        checkpoint: path to timm's ``model.safetensors``, or a ``{key: np.ndarray}`` mapping.
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
    specs = [s for s in weight_mapping(model)
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

    Returns ``{"num_classes": ...}`` (from ``fc.weight``), plus ``attention_kwargs``
    for SE models whose widths need them (see :func:`infer_se_kwargs`).
    """
    state = _as_state_dict(checkpoint)
    our_architecture(timm_name)  # validates the name
    kwargs = {}
    if "fc.weight" in state:
        kwargs["num_classes"] = int(state["fc.weight"].shape[0])
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
        allow_unused = CLASSIFIER_KEYS
    if include_top and new_head:
        allow_missing = ("head_fc/*",)  # fresh classifier, left as initialised
    if num_classes is not None:
        options["num_classes"] = num_classes
    model = create_model(arch, include_top=include_top, input_shape=input_shape, **options)
    return load_timm_weights(model, state, allow_unused=allow_unused, allow_missing=allow_missing)


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
    load_timm_weights(model, files["model.safetensors"])


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
