"""The name tables of the timm converter: our layer names -> timm's state-dict keys.

Our ResNet builder names every layer deterministically; timm names the same modules in
three layouts, one per model class. Each layout is a table (:data:`LAYOUTS`):

=================================  ========================  ====================  ==========================
ours (Keras layer)                 ``resnet`` (resnet.py)    ``sknet`` (sknet.py)  ``byobnet`` (byobnet.py)
=================================  ========================  ====================  ==========================
``stem_conv``, ``stem_bn``         ``conv1``, ``bn1``        same                  -
``stem_conv{1,2,3}``               ``conv1.{0,3,6}``         same                  ``stem.conv{1,2,3}.conv``
``stem_bn{1,2,3}``                 ``conv1.{1,4}``, ``bn1``  same                  ``stem.conv{1,2,3}.bn``
block ``stage{i}_block{j}_``       ``layer{i}.{j}.``         same                  ``stages.{i-1}.{j}.``
``..._conv{k}``, ``..._bn{k}``     ``conv{k}``, ``bn{k}``    ``conv{k}.conv/.bn``  ``conv1_1x1``, ``conv2_kxk``,
                                                                                   ``conv3_1x1`` ``.conv/.bn``
``..._downsample_conv/_bn``        ``downsample.{0,1}``,     same                  ``shortcut.conv/.bn``
                                   ``.{1,2}`` (ResNet-D)
``..._attention``                  ``se``                    ``se``                ``attn``
``final_conv``, ``final_bn``       -                         -                     ``final_conv.conv/.bn``
``head_fc``                        ``fc``                    ``fc``                ``head.fc``
=================================  ========================  ====================  ==========================

Layers with their own inner structure are converted by class (:data:`LAYER_CONVERTERS`)
under the module of their slot: the attention (``SqueezeExcite``: ``fc1``, ``fc2``;
``ECA``: ``conv``; ``GlobalContext``: ``conv_attn``, ``mlp_add``/``mlp_scale`` ``.fc1``,
``.norm``, ``.fc2``; ``BilinearAttentionTransform``: ``conv1``, ``ba.{conv1, conv_p,
conv_q, conv2}``, ``conv2``) and the layers that replace a block's 3x3 conv-BN-activation,
at timm's ``conv{k}`` (``SelectiveKernel``: ``paths.{m}.conv/.bn``, ``attn.fc_reduce``,
``attn.bn``, ``attn.fc_select``; ``SplitAttention``: ``conv``, ``bn0``, ``fc1``, ``bn1``,
``fc2``).

Per weight: convolution ``(O, I/groups, kH, kW)`` -> ``(kH, kW, I/groups, O)`` (Keras's
grouped ``Conv2D`` kernel has PyTorch's group order); BatchNorm ``weight, bias,
running_mean, running_var`` -> ``gamma, beta, moving_mean, moving_variance``; LayerNorm
``weight, bias`` -> ``gamma, beta``; linear ``(O, I)`` -> Dense ``(I, O)``; a 1x1
convolution ``(O, I, 1, 1)`` that we compute as a Dense on the pooled vector -> ``(I, O)``;
``Conv1d`` ``(O, I, k)`` -> ``(k, I, O)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import keras
import numpy as np

from keras_attention._errors import InvalidInputError


class ConversionError(InvalidInputError):
    """A checkpoint does not fit the model: lists every unmapped, unused or mis-shaped tensor."""


# ------------------------------------------------------------------------------------------
# Per-weight transforms (PyTorch layout -> Keras layout).

def conv2d_kernel(w: np.ndarray) -> np.ndarray:
    """``(O, I/groups, kH, kW)`` -> ``(kH, kW, I/groups, O)``."""
    return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """Linear ``(O, I)`` (or a 1x1 convolution ``(O, I, 1, 1)``) -> Dense ``(I, O)``."""
    if w.ndim == 4:
        return pointwise_kernel(w)
    return np.transpose(w)


def pointwise_kernel(w: np.ndarray) -> np.ndarray:
    """A 1x1 convolution ``(O, I, 1, 1)`` computed by us as a Dense layer -> ``(I, O)``."""
    if w.ndim != 4 or w.shape[2:] != (1, 1):
        raise ValueError(f"expected a 1x1 convolution, got weight shape {w.shape}")
    return np.transpose(w[:, :, 0, 0])


def conv1d_kernel(w: np.ndarray) -> np.ndarray:
    """``Conv1d(C_in, C_out, k)`` weight ``(C_out, C_in, k)`` -> Keras ``Conv1D`` ``(k, C_in, C_out)``."""
    return np.transpose(w, (2, 1, 0))


def identity(w: np.ndarray) -> np.ndarray:
    return w


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
# Plain layers and layers converted by class.

_NORM_WEIGHTS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                 "moving_variance": "running_var"}


def _plain_layer_specs(layer: keras.layers.Layer, prefix: str, dense=dense_kernel) -> list[WeightSpec]:
    """Conv2D / BatchNormalization / LayerNormalization / Dense: every variable by its Keras name.

    ``dense``: the transform of a Dense kernel (:func:`pointwise_kernel` where timm has a 1x1
    convolution, :func:`dense_kernel` for its linear layers).
    """
    specs = []
    for v in layer.weights:
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
            specs.append(WeightSpec(v, f"{prefix}.{_NORM_WEIGHTS[v.name]}", identity))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = conv2d_kernel if isinstance(layer, keras.layers.Conv2D) else dense
            specs.append(WeightSpec(v, f"{prefix}.weight" if v.name == "kernel" else f"{prefix}.bias",
                                    kernel if v.name == "kernel" else identity))
        else:
            raise ConversionError(f"No conversion rule for weight {v.path!r} of layer "
                                  f"{layer.name!r} ({type(layer).__name__}).")
    return specs


def _sublayers(layer, prefix: str, table: Mapping[str, str]) -> list[WeightSpec]:
    """Specs of ``layer``'s sub-layers: ``{attribute: timm sub-module}``; Dense ones from 1x1 convs."""
    specs = []
    for attribute, module in table.items():
        specs.extend(_plain_layer_specs(getattr(layer, attribute), f"{prefix}.{module}", dense=pointwise_kernel))
    return specs


def _squeeze_excite_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm SEModule: fc1/fc2 are 1x1 Conv2d with bias (no BN: timm's `se.bn` is Identity).
    return _sublayers(layer, prefix, {"fc1": "fc1", "fc2": "fc2"})


def _eca_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm EcaModule: `conv` = Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False) sliding over the
    # pooled channel descriptor, weight (1, 1, k); ours: Conv1D(1, k, padding="same", no bias)
    # over (N, C, 1), kernel (k, 1, 1). Both are cross-correlations with the same centring, and
    # both pick k adaptively from C (timm adds max(k, 3), equal for C >= 8).
    return [WeightSpec(layer.conv.kernel, f"{prefix}.conv.weight", conv1d_kernel)]


def _global_context_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm GlobalContext: conv_attn (1x1, bias) and one ConvMlp (fc1, LayerNorm2d, fc2) per fusion.
    mlp = "mlp_add" if layer.fusion == "add" else "mlp_scale"
    table = {"fc1": f"{mlp}.fc1", "norm": f"{mlp}.norm", "fc2": f"{mlp}.fc2"}
    if layer.conv_mask is not None:
        table = {"conv_mask": "conv_attn", **table}
    return _sublayers(layer, prefix, table)


def _bilinear_attention_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm BatNonLocalAttn: conv1, ba (BilinearAttnTransform: conv1, conv_p, conv_q, conv2), conv2;
    # the ConvNormAct modules hold `.conv` and `.bn`.
    table = {}
    for ours, theirs in (("conv1", "conv1"), ("ba_conv1", "ba.conv1"), ("ba_conv2", "ba.conv2"),
                         ("conv2", "conv2")):
        table[ours] = f"{theirs}.conv"
        table[ours.replace("conv", "bn")] = f"{theirs}.bn"
    return _sublayers(layer, prefix, {**table, "conv_p": "ba.conv_p", "conv_q": "ba.conv_q"})


def _selective_kernel_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm SelectiveKernel: paths[m] = ConvNormAct (conv, bn); attn = SelectiveKernelAttn
    # (fc_reduce 1x1 no bias, bn, fc_select 1x1 no bias).
    specs = []
    for m, (conv, bn) in enumerate(zip(layer.convs, layer.bns)):
        specs += _plain_layer_specs(conv, f"{prefix}.paths.{m}.conv")
        specs += _plain_layer_specs(bn, f"{prefix}.paths.{m}.bn")
    return specs + _sublayers(layer, prefix, {"fc_reduce": "attn.fc_reduce", "attn_bn": "attn.bn",
                                              "fc_select": "attn.fc_select"})


def _split_attention_specs(layer, prefix: str) -> list[WeightSpec]:
    # timm SplitAttn: conv, bn0, fc1 (grouped 1x1, bias), bn1, fc2 (grouped 1x1, bias): all Conv2D here.
    return _sublayers(layer, prefix, {name: name for name in ("conv", "bn0", "fc1", "bn1", "fc2")})


#: Layer class name -> function(layer, timm module path) -> weight specs.
LAYER_CONVERTERS: dict[str, Callable[[keras.layers.Layer, str], list[WeightSpec]]] = {
    "SqueezeExcite": _squeeze_excite_specs,
    "ECA": _eca_specs,
    "GlobalContext": _global_context_specs,
    "BilinearAttentionTransform": _bilinear_attention_specs,
    "SelectiveKernel": _selective_kernel_specs,
    "SplitAttention": _split_attention_specs,
}
#: Backwards-compatible name (the attention converters are among :data:`LAYER_CONVERTERS`).
ATTENTION_CONVERTERS = LAYER_CONVERTERS

_PLAIN_LAYERS = (keras.layers.Conv2D, keras.layers.BatchNormalization, keras.layers.Dense)


# ------------------------------------------------------------------------------------------
# The layouts.

@dataclass(frozen=True)
class TimmLayout:
    """One timm model class's module names for our layers.

    Attributes:
        name: ``"resnet"``, ``"sknet"`` or ``"byobnet"``.
        fixed: our stem / final / head layer -> timm module.
        block: timm module of our ``stage{i}_block{j}`` (``{stage}`` is ``i - 1 + first_stage``).
        first_stage: timm's index of our stage 1 (``layer1`` or ``stages.0``).
        parts: our block layer suffix -> timm module inside the block.
        avg_down_parts: replacements of ``parts`` in models with ResNet-D shortcuts.
        modules: suffix -> timm module for layers converted by class that sit where a
            plain layer of ``parts`` would (an SK layer at ``conv1`` is timm's ``conv1``,
            whose plain conv would be ``conv1.conv``); default ``parts``.
        classifier: timm keys of the classifier.
    """

    name: str
    fixed: Mapping[str, str]
    block: str
    first_stage: int
    parts: Mapping[str, str]
    classifier: tuple[str, ...]
    avg_down_parts: Mapping[str, str] = field(default_factory=dict)
    modules: Mapping[str, str] = field(default_factory=dict)


_RESNET_STEM = {"stem_conv": "conv1", "stem_bn": "bn1", "stem_conv1": "conv1.0", "stem_bn1": "conv1.1",
                "stem_conv2": "conv1.3", "stem_bn2": "conv1.4", "stem_conv3": "conv1.6", "stem_bn3": "bn1",
                "head_fc": "fc"}
_RESNET_PARTS = {**{f"{kind}{k}": f"{kind}{k}" for kind in ("conv", "bn") for k in (1, 2, 3)},
                 "downsample_conv": "downsample.0", "downsample_bn": "downsample.1", "attention": "se"}

LAYOUTS: dict[str, TimmLayout] = {
    "resnet": TimmLayout(
        "resnet", fixed=_RESNET_STEM, block="layer{stage}.{block}", first_stage=1, parts=_RESNET_PARTS,
        classifier=("fc.weight", "fc.bias"),
        # ResNet-D: the downsample Sequential starts with the (parameter-free) average pool.
        avg_down_parts={"downsample_conv": "downsample.1", "downsample_bn": "downsample.2"}),
    "sknet": TimmLayout(
        "sknet", fixed=_RESNET_STEM, block="layer{stage}.{block}", first_stage=1,
        parts={**_RESNET_PARTS, **{f"conv{k}": f"conv{k}.conv" for k in (1, 2, 3)},
               **{f"bn{k}": f"conv{k}.bn" for k in (1, 2, 3)}},
        classifier=("fc.weight", "fc.bias"),
        avg_down_parts={"downsample_conv": "downsample.1", "downsample_bn": "downsample.2"},
        modules={f"conv{k}": f"conv{k}" for k in (1, 2, 3)}),
    "byobnet": TimmLayout(
        "byobnet",
        fixed={**{f"stem_{kind}{k}": f"stem.conv{k}.{kind}" for kind in ("conv", "bn") for k in (1, 2, 3)},
               "final_conv": "final_conv.conv", "final_bn": "final_conv.bn", "head_fc": "head.fc"},
        block="stages.{stage}.{block}", first_stage=0,
        parts={**{f"{kind}{k}": f"{module}.{kind}" for kind in ("conv", "bn")
                  for k, module in ((1, "conv1_1x1"), (2, "conv2_kxk"), (3, "conv3_1x1"))},
               "downsample_conv": "shortcut.conv", "downsample_bn": "shortcut.bn", "attention": "attn"},
        classifier=("head.fc.weight", "head.fc.bias")),
}

_BLOCK = re.compile(r"^stage(\d+)_block(\d+)_(conv\d|bn\d|downsample_conv|downsample_bn|attention)$")


def get_layout(layout: str | TimmLayout) -> TimmLayout:
    """The layout named ``layout`` (or ``layout`` itself).

    Raises:
        ValueError: unknown name (the valid ones listed).
    """
    if isinstance(layout, TimmLayout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown timm layout {layout!r}; valid: {', '.join(LAYOUTS)}.")
    return LAYOUTS[layout]


def timm_prefix(layer_name: str, avg_down: bool, layout: str | TimmLayout = "resnet", *,
                by_class: bool = False) -> str | None:
    """The timm module path of our layer ``layer_name`` (``None``: not a weight layer we know).

    Args:
        layer_name: our layer's name (``stage2_block0_downsample_conv``).
        avg_down: the model uses ResNet-D shortcuts (an average pool first in timm's
            ``downsample`` Sequential, so its conv and BN are ``.1``/``.2``).
        layout: ``"resnet"``, ``"sknet"``, ``"byobnet"`` (see :data:`LAYOUTS`).
        by_class: the layer is converted by class (:data:`LAYER_CONVERTERS`): the path of
            the module that replaces the plain layer (``layer1.0.conv1``, not ``.conv1.conv``).
    """
    layout = get_layout(layout)
    if layer_name in layout.fixed:
        return layout.fixed[layer_name]
    m = _BLOCK.match(layer_name)
    if not m:
        return None
    stage, block, part = m.groups()
    base = layout.block.format(stage=int(stage) - 1 + layout.first_stage, block=int(block))
    parts = {**layout.parts, **(layout.avg_down_parts if avg_down else {}),
             **(layout.modules if by_class else {})}
    return f"{base}.{parts[part]}"


def uses_avg_down(model: keras.Model) -> bool:
    """Whether ``model`` was built with ResNet-D (average-pool) shortcuts."""
    return any(layer.name.endswith("_downsample_pool") for layer in model.layers)


def weight_mapping(model: keras.Model, layout: str | TimmLayout = "resnet") -> list[WeightSpec]:
    """Every weight of ``model`` with the timm key and transform it is loaded from.

    Args:
        model: one of our ResNet-family models.
        layout: timm's module layout of the checkpoint (:data:`LAYOUTS`).

    Raises:
        ConversionError: a layer with weights whose name or type is not in the table
            (all such layers are listed).
        ValueError: unknown ``layout``.
    """
    layout = get_layout(layout)
    avg_down = uses_avg_down(model)
    specs, unknown = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        converter = LAYER_CONVERTERS.get(type(layer).__name__)
        prefix = timm_prefix(layer.name, avg_down, layout, by_class=converter is not None)
        if prefix is None:
            unknown.append(f"{layer.name} ({type(layer).__name__})")
        elif converter is not None:
            specs.extend(converter(layer, prefix))
        elif isinstance(layer, _PLAIN_LAYERS):
            specs.extend(_plain_layer_specs(layer, prefix))
        else:
            unknown.append(f"{layer.name} ({type(layer).__name__}: no timm equivalent; "
                           f"known layers with inner structure: {sorted(LAYER_CONVERTERS)})")
    if unknown:
        raise ConversionError(f"Model {model.name!r} has layers with weights that have no timm "
                              f"equivalent in the {layout.name!r} layout: {', '.join(unknown)}.")
    return specs
