"""ResNet, ResNeXt and CIFAR ResNets with one pluggable attention slot per residual block.

The attention module sits on the residual branch after the block's last BatchNorm
and before the addition (SENet Fig. 3, CBAM Fig. 3, GCNet Fig. 4, GENet Sec. 3),
so every attention family is compared on the same backbone. Two options move or
replace parts of the block, each documented where a family needs it:

- ``attention_position="middle"`` moves the one slot to after the 3x3 conv-BN-activation
  (on the bottleneck's width), where timm's ByobNet ResNets (``gcresnet33ts``,
  ``seresnext26ts``, ``bat_resnext26ts``, ...) place their attention;
- ``spatial_conv`` replaces the block's 3x3 conv-BN-activation by a layer that does its
  own normalisation and activation (Selective Kernel, Split attention): that is a
  convolution with attention inside, not a module in the attention slot, and it
  composes with an attention in the slot.

Layer names are deterministic and mirror torchvision/timm's module paths, which
makes weight conversion a table: ``layer{i}.{j}.conv1`` <-> ``stage{i}_block{j}_conv1``,
``conv1``/``bn1`` <-> ``stem_conv``/``stem_bn``, ``fc`` <-> ``head_fc`` (see
:mod:`keras_attention.convert.timm` for timm's three layouts).
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras

from keras_attention.layers._common import check_activation, check_choice, check_positive
from keras_attention.layers.factory import AttentionSpec, create_attention
from keras_attention.models._common import (ChannelPadShortcut, PaddedMaxPooling2D, batch_norm,
                                            check_model_args, classifier_head, conv2d)
from keras_attention.registry import register_model

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "deep", "tiered", "cifar")
STEM_POOLS = ("max", None)
SHORTCUTS = ("projection", "avg_down", "pad")
ATTENTION_POSITIONS = ("last", "middle")


def _attention(spec, kwargs, stage_kwargs, stage, attention_stages, prefix):
    if attention_stages is not None and stage not in attention_stages:
        return None
    kwargs = {**(kwargs or {}), **((stage_kwargs or {}).get(stage) or {})}
    return create_attention(spec, name=f"{prefix}_attention", **kwargs)


def _activation(activation: str, name: str) -> keras.layers.Layer:
    """The activation layer ``name``: Keras's ``ReLU`` for ``"relu"``, else ``Activation``."""
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    return keras.layers.Activation(activation, name=name)


def _act_name(activation: str) -> str:
    return "relu" if activation == "relu" else activation


def _shortcut(x, out_channels, stride, kind, prefix):
    in_channels = x.shape[-1]
    if stride == 1 and in_channels == out_channels:
        return x
    if kind == "pad":
        return ChannelPadShortcut(out_channels, stride, name=f"{prefix}_downsample_pad")(x)
    if kind == "avg_down" and stride > 1:
        # ResNet-D (Bag of Tricks, Sec. 4.1): 2x2 average pool (ceil mode, padding excluded)
        # then a stride-1 projection.
        x = keras.layers.AveragePooling2D(2, strides=2, padding="same", name=f"{prefix}_downsample_pool")(x)
        stride = 1
    x = conv2d(x, out_channels, 1, stride, name=f"{prefix}_downsample_conv")
    return batch_norm(f"{prefix}_downsample_bn")(x)


def _spatial(x, width, stride, *, index, prefix, groups, activation, spatial_conv, stride_in_pool):
    """The block's 3x3 conv-BN-activation ``conv{index}`` (or the ``spatial_conv`` layer replacing
    it), with ResNeSt's average-pool downsampling after it when ``stride_in_pool``."""
    conv_stride = 1 if stride_in_pool else stride
    if spatial_conv is None:
        y = conv2d(x, width, 3, conv_stride, groups=groups, name=f"{prefix}_conv{index}")
        y = batch_norm(f"{prefix}_bn{index}")(y)
        y = _activation(activation, f"{prefix}_{_act_name(activation)}{index}")(y)
    else:
        y = spatial_conv(name=f"{prefix}_conv{index}", filters=width, strides=conv_stride, groups=groups)(x)
    if stride_in_pool and stride > 1:
        # ResNeSt "avd": nn.AvgPool2d(3, stride, padding=1), padding zeros counted.
        y = keras.layers.ZeroPadding2D(1, name=f"{prefix}_avd_pad")(y)
        y = keras.layers.AveragePooling2D(3, strides=stride, name=f"{prefix}_avd_pool")(y)
    return y


def _residual_tail(y, shortcut_x, attention, prefix, activation="relu"):
    """The block's attention on the residual branch (before the addition, as SENet places
    it), the identity/projection addition and the final activation."""
    if attention is not None:
        y = attention(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut_x])
    return _activation(activation, f"{prefix}_out")(y)


def basic_block(x, filters, stride, *, prefix, attention, shortcut="projection", zero_init_last=False,
                activation="relu", attention_position="last", spatial_conv=None, stride_in_pool=False, **_):
    """Two 3x3 conv-BN layers (ResNet-18/34 and the CIFAR ResNets); output has ``filters`` channels.

    ``spatial_conv`` replaces the first conv-BN-activation (``conv1``: timm's SK ResNet-18/34
    put their Selective Kernel there); ``attention_position="middle"`` puts the attention
    after it.
    """
    shortcut_x = _shortcut(x, filters, stride, shortcut, prefix)
    y = _spatial(x, filters, stride, index=1, prefix=prefix, groups=1, activation=activation,
                 spatial_conv=spatial_conv, stride_in_pool=stride_in_pool)
    if attention is not None and attention_position == "middle":
        y, attention = attention(y), None
    y = conv2d(y, filters, 3, 1, name=f"{prefix}_conv2")
    y = batch_norm(f"{prefix}_bn2", zero_init=zero_init_last)(y)
    return _residual_tail(y, shortcut_x, attention, prefix, activation)


def bottleneck_block(x, filters, stride, *, prefix, attention, groups=1, base_width=64, group_size=None,
                     stride_in_1x1=False, shortcut="projection", zero_init_last=False, activation="relu",
                     attention_position="last", spatial_conv=None, stride_in_pool=False):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 bottleneck; output has ``4 * filters`` channels.

    ``stride_in_1x1`` puts the stride on the first 1x1 convolution, as in the original
    Caffe ResNet and the official SENet release; by default it is on the 3x3 (torchvision,
    timm, "ResNet v1.5"). The 3x3 has ``groups`` groups of width ``filters * base_width / 64``
    each, or, with ``group_size``, ``filters`` channels in groups of ``group_size`` (timm's
    ByobNet ``gs``). ``spatial_conv`` replaces the 3x3 conv-BN-activation (``conv2``);
    ``attention_position="middle"`` puts the attention after it.
    """
    if group_size is not None:
        width = filters
        if width % group_size:
            raise ValueError(f"`group_size` {group_size} must divide the bottleneck width {width} ({prefix}).")
        groups = width // group_size
    else:
        width = int(filters * base_width / 64) * groups
    out_channels = filters * 4
    shortcut_x = _shortcut(x, out_channels, stride, shortcut, prefix)
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    act = _act_name(activation)
    y = conv2d(x, width, 1, s1, name=f"{prefix}_conv1")
    y = batch_norm(f"{prefix}_bn1")(y)
    y = _activation(activation, f"{prefix}_{act}1")(y)
    y = _spatial(y, width, s3, index=2, prefix=prefix, groups=groups, activation=activation,
                 spatial_conv=spatial_conv, stride_in_pool=stride_in_pool)
    if attention is not None and attention_position == "middle":
        y, attention = attention(y), None
    y = conv2d(y, out_channels, 1, 1, name=f"{prefix}_conv3")
    y = batch_norm(f"{prefix}_bn3", zero_init=zero_init_last)(y)
    return _residual_tail(y, shortcut_x, attention, prefix, activation)


def _stem(x, stem, stem_width, activation="relu", stem_pool="max"):
    act = _act_name(activation)
    if stem == "cifar":
        x = conv2d(x, stem_width, 3, 1, name="stem_conv")
        x = batch_norm("stem_bn")(x)
        return _activation(activation, f"stem_{act}")(x)
    if stem in ("deep", "tiered"):
        # ResNet-C/D deep stem (timm "deep"): 3x3/2 (w/2) -> 3x3 (w/2) -> 3x3 (w), BN-act after each;
        # timm's "deep_tiered" (the *t models) narrows the first conv to 3w/8 (24, 32, 64). Without
        # a pool the last conv has stride 2 (timm ByobNet's Stem with stride 4 and no pool).
        first = stem_width // 2 if stem == "deep" else 3 * (stem_width // 8)
        widths = (first, stem_width // 2, stem_width)
        strides = (2, 1, 1) if stem_pool else (2, 1, 2)
        for i, (w, s) in enumerate(zip(widths, strides), start=1):
            x = conv2d(x, w, 3, s, name=f"stem_conv{i}")
            x = batch_norm(f"stem_bn{i}")(x)
            x = _activation(activation, f"stem_{act}{i}")(x)
    else:
        x = conv2d(x, stem_width, 7, 2, name="stem_conv")
        x = batch_norm("stem_bn")(x)
        x = _activation(activation, f"stem_{act}")(x)
    if not stem_pool:
        return x
    if activation == "relu":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)  # zeros are safe after ReLU
        return keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    return PaddedMaxPooling2D(3, strides=2, padding=1, name="stem_pool")(x)  # -inf padding, as PyTorch


def build_resnet(block: str, stage_depths: Sequence[int], *, stage_widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 1000, input_shape: Sequence[int | None] = (224, 224, 3),
                 include_top: bool = True, pooling: str | None = None,
                 groups: int = 1, base_width: int = 64, group_size: int | None = None,
                 stem: str = "imagenet", stem_width: int = 64, stem_pool: str | None = "max",
                 shortcut: str = "projection", stride_in_1x1: bool = False, zero_init_last: bool = False,
                 activation: str = "relu",
                 attention: AttentionSpec = None, attention_kwargs: dict | None = None,
                 attention_stages: Sequence[int] | None = None,
                 attention_stage_kwargs: dict[int, dict] | None = None,
                 attention_position: str = "last",
                 spatial_conv: AttentionSpec = None, spatial_conv_kwargs: dict | None = None,
                 stride_in_pool: bool = False, final_conv_width: int | None = None,
                 after_block: Callable[[int, int], Callable | None] | None = None,
                 classifier_activation=None, name: str = "resnet") -> keras.Model:
    """Builds a ResNet-family network as a functional ``keras.Model``.

    Args:
        block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1-3x3-1x1, x4 channels).
        stage_depths: number of blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        stage_widths: base width of each stage (the first stage has stride 1, the others 2).
        num_classes: classifier outputs (used when ``include_top``).
        input_shape: ``(H, W, 3)``; H and W may be ``None`` (any size >= 32 for ImageNet stems).
        include_top: add global average pooling and the float32 dense classifier ``head_fc``.
        pooling: with ``include_top=False``: ``None`` (4D features), ``"avg"`` or ``"max"``.
        groups, base_width: ResNeXt cardinality and bottleneck width (32 and 4 for 32x4d).
        group_size: instead of ``groups``/``base_width``: bottleneck width ``stage_width`` in
            groups of this many channels (timm's ByobNet ResNeXts: 32, so 2, 4, 8, 16 groups).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool), ``"deep"`` (three 3x3 convs,
            ResNet-C/D), ``"tiered"`` (deep stem with widths 3w/8, w/2, w, timm's *t models)
            or ``"cifar"`` (one 3x3 conv, no pooling; He et al. 2016, Sec. 4.2).
        stem_width: stem output channels (64 ImageNet, 16 CIFAR).
        stem_pool: ``"max"`` (3x3/2 max pool after an ImageNet stem) or ``None``: a
            ``"deep"``/``"tiered"`` stem then strides its last conv instead (timm's
            ``gcresnet33ts``, ``gcresnet50t``).
        shortcut: projection shortcut when the shape changes: ``"projection"`` (1x1 conv +
            BN, option B), ``"avg_down"`` (2x2 average pool + 1x1 conv + BN, ResNet-D) or
            ``"pad"`` (parameter-free subsample + zero channel padding, option A).
        stride_in_1x1: stride on the first 1x1 conv of bottlenecks (original SENet/Caffe).
        zero_init_last: start each block's last BN gamma at 0 (block starts as identity).
        activation: the activation of the stem, the blocks and ``final_conv`` (a Keras
            activation name: ``"relu"``, or ``"silu"`` for timm's ``*ts`` models). Its layers
            are named after it (``stage1_block0_silu1``; the block's last one is ``_out``).
        attention: attention for every residual branch (see ``create_attention``): a
            name (``"se"``, ``"ge"``, ``"gc"``, ``"cbam"``, ``"nam"``, ``"eca"``, ``"bat"``, ...),
            a layer class, a template instance or a callable; ``None`` for plain ResNet.
        attention_kwargs: constructor arguments for the attention (e.g. ``reduction_ratio``).
        attention_stages: 1-based stages that get attention (default: all).
        attention_stage_kwargs: ``{stage: kwargs}`` overriding ``attention_kwargs`` in one
            stage (e.g. the released ECA-Net's kernel size per stage).
        attention_position: where the block's one attention slot is: ``"last"`` (default:
            after the last BN, before the addition, on the block's output width) or
            ``"middle"`` (after the 3x3 conv-BN-activation, on the bottleneck width: timm's
            ByobNet ``attn_last=False``).
        spatial_conv: a layer that replaces each block's 3x3 conv-BN-activation (the
            bottleneck's ``conv2``, the basic block's ``conv1``): ``"sk"`` (Selective Kernel),
            ``"splat"`` (Split attention), a layer class, instance or callable, built with
            ``filters``, ``strides``, ``groups`` and ``spatial_conv_kwargs``; it must apply its
            own normalisation and activation. ``None``: Conv2D + BN + activation. This is not
            the attention slot: SK/Split attention are convolutions with attention inside
            them, and a model can have both.
        spatial_conv_kwargs: constructor arguments for ``spatial_conv``.
        stride_in_pool: strided blocks keep their 3x3 (or ``spatial_conv``) at stride 1 and
            downsample after it with a 3x3 average pool (padding 1, zeros counted): ResNeSt's
            "avd" (``avd=True, avd_first=False``).
        final_conv_width: if set, a 1x1 conv-BN-activation to this many channels after the
            last stage (``final_conv``/``final_bn``; timm ByobNet's ``num_features``, 1280 in
            ``*resnet33ts``).
        after_block: ``f(stage, block) -> layer (or callable) or None``; it is applied to that
            block's output (used e.g. for non-local blocks between residual blocks).
        classifier_activation: ``None`` for logits (default) or ``"softmax"``.
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``(N, H, W, 3)`` float32 images (normalised by the
        pretrained config's mean/std) to ``(N, num_classes)`` float32 logits, or to
        features when ``include_top=False``.

    Raises:
        ValueError: unknown ``block``/``stem``/``stem_pool``/``shortcut``/``attention_position``
            or activation, ``stem_pool=None`` with a one-conv stem, bad ``num_classes``/
            ``input_shape``/``group_size``/``final_conv_width``, ``stage_depths``/
            ``stage_widths`` of different lengths, unknown attention or spatial conv name.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Table 1;
        Sec. 4.2 for CIFAR); Xie et al., "Aggregated Residual Transformations" (ResNeXt),
        CVPR 2017 (Table 1); structure as torchvision.models.resnet / timm.models.resnet;
        the ``*ts``/``*t`` options as timm.models.byobnet (``ByobNet``, ``BottleneckBlock``).
    """
    check_choice("block", block, BLOCKS)
    check_choice("stem", stem, STEMS)
    check_choice("stem_pool", stem_pool, STEM_POOLS)
    check_choice("shortcut", shortcut, SHORTCUTS)
    check_choice("attention_position", attention_position, ATTENTION_POSITIONS)
    check_activation(activation)
    check_positive("group_size", group_size, integer=True, allow_none=True)
    check_positive("final_conv_width", final_conv_width, integer=True, allow_none=True)
    if stem_pool is None and stem not in ("deep", "tiered"):
        raise ValueError(f"`stem_pool=None` needs a three-conv stem ('deep' or 'tiered') whose last conv "
                         f"takes the stride; received stem={stem!r}.")
    input_shape = check_model_args(num_classes, input_shape, include_top)
    if len(stage_depths) != len(stage_widths):
        raise ValueError(f"`stage_depths` {tuple(stage_depths)} and `stage_widths` {tuple(stage_widths)} "
                         "must have the same length.")
    block_fn = basic_block if block == "basic" else bottleneck_block
    spatial = None
    if spatial_conv is not None and spatial_conv is not False:
        def spatial(**kwargs):
            return create_attention(spatial_conv, **{**(spatial_conv_kwargs or {}), **kwargs})

    inputs = keras.Input(shape=input_shape, name="images")
    x = _stem(inputs, stem, stem_width, activation, stem_pool)
    for stage, (depth, width) in enumerate(zip(stage_depths, stage_widths), start=1):
        for b in range(depth):
            prefix = f"stage{stage}_block{b}"
            stride = 2 if (b == 0 and stage > 1) else 1
            attn = _attention(attention, attention_kwargs, attention_stage_kwargs, stage,
                              attention_stages, prefix)
            x = block_fn(x, width, stride, prefix=prefix, attention=attn, groups=groups,
                         base_width=base_width, group_size=group_size, stride_in_1x1=stride_in_1x1,
                         shortcut=shortcut, zero_init_last=zero_init_last, activation=activation,
                         attention_position=attention_position, spatial_conv=spatial,
                         stride_in_pool=stride_in_pool)
            extra = after_block(stage, b) if after_block is not None else None
            if extra is not None:
                x = extra(x)
    if final_conv_width:
        x = conv2d(x, final_conv_width, 1, 1, name="final_conv")
        x = batch_norm("final_bn")(x)
        x = _activation(activation, f"final_{_act_name(activation)}")(x)
    outputs = classifier_head(x, num_classes=num_classes, include_top=include_top, pooling=pooling,
                              classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------------------
# Registry. Each entry: (block, stage depths, extra builder defaults). Attention variants
# add a prefix ("se_", ...) with that family's defaults from ATTENTION_VARIANTS.

IMAGENET_ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2), {}),
    "resnet34": ("basic", (3, 4, 6, 3), {}),
    "resnet50": ("bottleneck", (3, 4, 6, 3), {}),
    "resnet101": ("bottleneck", (3, 4, 23, 3), {}),
    "resnet152": ("bottleneck", (3, 8, 36, 3), {}),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), {"groups": 32, "base_width": 4}),
    "resnext101_32x4d": ("bottleneck", (3, 4, 23, 3), {"groups": 32, "base_width": 4}),
    # ResNet-D (He et al., "Bag of Tricks", 2019, Sec. 4.1-4.2): deep stem + average-pool
    # shortcut, as timm's resnet50d/resnet101d/seresnext26d_32x4d (stem widths 32, 32, 64) and
    # seresnext26t_32x4d (tiered stem, 24, 32, 64).
    "resnet50d": ("bottleneck", (3, 4, 6, 3), {"stem": "deep", "shortcut": "avg_down"}),
    "resnet101d": ("bottleneck", (3, 4, 23, 3), {"stem": "deep", "shortcut": "avg_down"}),
    "resnext26d_32x4d": ("bottleneck", (2, 2, 2, 2), {"groups": 32, "base_width": 4, "stem": "deep",
                                                      "shortcut": "avg_down"}),
    "resnext26t_32x4d": ("bottleneck", (2, 2, 2, 2), {"groups": 32, "base_width": 4, "stem": "tiered",
                                                      "shortcut": "avg_down"}),
}

CIFAR_DEFAULTS = {"stage_widths": (16, 32, 64), "stem": "cifar", "stem_width": 16, "shortcut": "pad",
                  "num_classes": 10, "input_shape": (32, 32, 3)}
CIFAR_ARCHS = {f"resnet{6 * n + 2}": ("basic", (n, n, n), CIFAR_DEFAULTS) for n in (3, 5, 7, 9, 18)}

#: Registered attention variants: name prefix -> (attention, its kwargs, ImageNet archs,
#: builder options for the family's attention on ImageNet archs). Every prefix also gets the
#: CIFAR ResNets. The kwargs and options (and STAGE_KWARGS) belong to the family's attention:
#: they are dropped when a user swaps in another one (see ``_register``).
ATTENTION_VARIANTS = {
    "se": ("se", {}, ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                      "resnext101_32x4d", "resnext26d_32x4d", "resnext26t_32x4d"], {}),
    # Gather-Excite: ge_ = GE-theta-minus (parameter-free, global extent), the other two by name.
    "ge": ("ge", {}, ["resnet50"], {}),
    "ge_theta": ("ge", {"variant": "theta"}, ["resnet50"], {}),
    "ge_theta_plus": ("ge", {"variant": "theta+"}, ["resnet50"], {}),
    # GCNet's ImageNet experiments put GC blocks in c3-c5 (our stages 2-4) only.
    "gc": ("gc", {}, ["resnet50", "resnet101"], {"attention_stages": (2, 3, 4)}),
    "cbam": ("cbam", {}, ["resnet50", "resnet101"], {}),
    "nam": ("nam", {}, ["resnet50"], {}),
    # ECA: the released ImageNet models fix the kernel size per stage (ECA-Net50 "k3557",
    # ECA-Net101 "k3357", official README); the CIFAR ones and timm's ResNet-D variants
    # (ecaresnet50d/101d) use the paper's adaptive k.
    "eca": ("eca", {}, ["resnet50", "resnet101", "resnet50d", "resnet101d"], {}),
}

#: Per-stage attention arguments of specific registered ImageNet models (family options too).
STAGE_KWARGS = {
    "eca_resnet50": {s: {"kernel_size": k} for s, k in zip((1, 2, 3, 4), (3, 5, 5, 7))},
    "eca_resnet101": {s: {"kernel_size": k} for s, k in zip((1, 2, 3, 4), (3, 3, 5, 7))},
}

FAMILY_NAMES = {"se": "SE (Squeeze-and-Excitation)", "ge": "Gather-Excite (GE-theta-minus, global)",
                "ge_theta": "Gather-Excite (GE-theta, global)",
                "ge_theta_plus": "Gather-Excite (GE-theta-plus, global)", "gc": "Global Context",
                "cbam": "CBAM", "nam": "NAM", "eca": "ECA",
                "bat": "BAT (Bilinear Attentional Transform)"}

# timm's ByobNet ResNets (timm.models.byobnet): a tiered stem (3x3 convs 24-32-64), 1x1
# projection shortcuts with the stride on the 3x3, zero-initialised last BN, and the
# attention after the 3x3 conv-BN-activation ("middle"); "ts" models use SiLU, the one "t"
# model ReLU. Their pretrained weights are for 256 px inputs, the default here.
BYOB_DEFAULTS = {"stem": "tiered", "attention_position": "middle", "zero_init_last": True,
                 "input_shape": (256, 256, 3)}
BYOB_ARCHS = {
    # ResNet-33-ts: (2, 3, 3, 2) bottlenecks of 256, 512, 1536, 1536 channels, no stem max pool
    # (the stem's last conv is strided), a 1x1 conv-BN-SiLU to 1280 channels before pooling.
    "resnet33ts": ((2, 3, 3, 2), {"stage_widths": (64, 128, 384, 384), "stem_pool": None, "activation": "silu",
                                  "final_conv_width": 1280}),
    "resnet50t": ((3, 4, 6, 3), {"stem_pool": None}),
    # ResNeXt "ts": groups of 32 channels (2, 4, 8, 16 groups per stage), stem max pool.
    "resnext26ts": ((2, 2, 2, 2), {"group_size": 32, "activation": "silu"}),
    "resnext50ts": ((3, 4, 6, 3), {"group_size": 32, "activation": "silu"}),
}
#: prefix -> (attention, its kwargs in timm's ByobNet models, ByobNet archs). GC is timm's
#: "gca" (add fusion, r = 8, LayerNorm eps 1e-6); SE rounds its width to multiples of 8.
BYOB_VARIANTS = {
    "gc": ("gc", {"reduction_ratio": 8, "epsilon": 1e-6}, ["resnet33ts", "resnet50t", "resnext26ts", "resnext50ts"]),
    "se": ("se", {"reduction_divisor": 8}, ["resnet33ts", "resnext26ts"]),
    "eca": ("eca", {}, ["resnet33ts", "resnext26ts"]),
    "bat": ("bat", {"block_size": 8}, ["resnext26ts"]),
}

# Networks whose 3x3 conv-BN-activation is a convolution with attention inside (the
# `spatial_conv` option): timm's Selective Kernel ResNets (timm.models.sknet) and ResNeSt
# (timm.models.resnest). Entries: (block, depths, builder defaults, summary).
SK_KWARGS = {"spatial_conv": "sk", "spatial_conv_kwargs": {"reduction_ratio": 8, "reduction_divisor": 16}}
RESNEST_KWARGS = {"stem": "deep", "shortcut": "avg_down", "spatial_conv": "splat",
                  "spatial_conv_kwargs": {"radix": 2}, "stride_in_pool": True, "zero_init_last": True}
SPATIAL_CONV_ARCHS = {
    "sk_resnet18": ("basic", (2, 2, 2, 2), SK_KWARGS,
                    "ResNet-18 whose first 3x3 conv is a Selective Kernel (3x3 + dilated 3x3 on halves of "
                    "the input; timm's skresnet18)."),
    "sk_resnet34": ("basic", (3, 4, 6, 3), SK_KWARGS,
                    "ResNet-34 whose first 3x3 conv is a Selective Kernel (3x3 + dilated 3x3 on halves of "
                    "the input; timm's skresnet34)."),
    "sk_resnext50_32x4d": ("bottleneck", (3, 4, 6, 3),
                           {"groups": 32, "base_width": 4, "spatial_conv": "sk",
                            "spatial_conv_kwargs": {"reduction_ratio": 16, "reduction_divisor": 32,
                                                    "split_input": False}},
                           "SKNet-50 (Li et al. 2019): ResNeXt-50 32x4d with Selective Kernel 3x3 convs."),
    "resnest14d": ("bottleneck", (1, 1, 1, 1), RESNEST_KWARGS,
                   "ResNeSt-14d: Split-attention (radix 2) bottlenecks, deep stem, average-pool downsampling."),
    "resnest26d": ("bottleneck", (2, 2, 2, 2), RESNEST_KWARGS,
                   "ResNeSt-26d: Split-attention (radix 2) bottlenecks, deep stem, average-pool downsampling."),
    "resnest50d": ("bottleneck", (3, 4, 6, 3), RESNEST_KWARGS,
                   "ResNeSt-50 (Zhang et al. 2020): Split-attention (radix 2) bottlenecks, deep stem, "
                   "average-pool downsampling."),
}


def _same_attention(spec, family_attention) -> bool:
    """Whether the ``attention=`` a user gave names the family's own attention."""
    return isinstance(spec, str) and spec.lower().replace("-", "_") == family_attention


def _register(name, block, depths, defaults, attention=None, attention_kwargs=None, attention_options=None,
              summary=""):
    """Registers ``name``; a family model gets ``attention`` and its family options.

    ``stage_depths=`` overrides the architecture's depths (a shallower variant of the same
    family, e.g. for tests); every other builder argument overrides its default.

    A ``spatial_conv`` in ``defaults`` (SK, Split attention) keeps its ``spatial_conv_kwargs``
    while it is kept (the user's are merged over them); another ``spatial_conv=`` starts from
    its own defaults plus the user's ``spatial_conv_kwargs``.

    ``attention_kwargs`` (the family's attention arguments) and ``attention_options`` (builder
    options that only make sense for the family's attention: GC's ``attention_stages``, ECA's
    per-stage ``attention_stage_kwargs``) apply while the family's attention is kept: when
    ``attention=`` is not given or names the family's attention again. A different
    ``attention=`` (another name, a class, an instance, a callable or ``None``) starts from
    that attention's own defaults plus the user's ``attention_kwargs``, in every stage; options
    the user passes explicitly (``attention_stages=...``) are always used.
    """
    attention_kwargs, attention_options = dict(attention_kwargs or {}), dict(attention_options or {})

    def builder(**kwargs):
        options = {**defaults, **kwargs}
        if "spatial_conv" in defaults:  # the family's spatial conv keeps its kwargs (the user's merged in)
            kept = kwargs.get("spatial_conv", defaults["spatial_conv"]) == defaults["spatial_conv"]
            options["spatial_conv_kwargs"] = {**(defaults.get("spatial_conv_kwargs") or {} if kept else {}),
                                              **(kwargs.get("spatial_conv_kwargs") or {})}
        if attention is not None and _same_attention(kwargs.get("attention", attention), attention):
            options = {**defaults, **attention_options, **kwargs, "attention": attention,
                       "attention_kwargs": {**attention_kwargs, **(kwargs.get("attention_kwargs") or {})}}
        return build_resnet(block, options.pop("stage_depths", depths), name=options.pop("name", name), **options)

    builder.__name__ = builder.__qualname__ = name
    family = "" if attention is None else (
        f" Family attention: {attention!r}, attention_kwargs {attention_kwargs}, options {attention_options};"
        " a different `attention=` starts from its own defaults instead.")
    builder.__doc__ = f"{summary}\n\nArguments are those of :func:`build_resnet` (defaults: {defaults}).{family}"
    builder.__module__ = __name__
    register_model(builder)


def _register_all():
    for arch, (block, depths, extra) in {**IMAGENET_ARCHS, **CIFAR_ARCHS}.items():
        cifar = arch in CIFAR_ARCHS
        kind = "CIFAR " if cifar else ""
        _register(arch, block, depths, extra, summary=f"{kind}{arch} (He et al. 2016{', Sec. 4.2' if cifar else ''}).")
        for prefix, (attention, attention_kwargs, archs, fam_defaults) in ATTENTION_VARIANTS.items():
            if cifar or arch in archs:
                name = f"{prefix}_{arch}"
                options = {**({} if cifar else fam_defaults)}
                if name in STAGE_KWARGS:
                    options["attention_stage_kwargs"] = STAGE_KWARGS[name]
                _register(name, block, depths, extra, attention=attention, attention_kwargs=attention_kwargs,
                          attention_options=options,
                          summary=f"{kind}{arch} with {FAMILY_NAMES[prefix]} attention in every residual block"
                                  f"{' of stages 2-4' if 'attention_stages' in fam_defaults and not cifar else ''}.")
    for arch, (depths, extra) in BYOB_ARCHS.items():
        defaults = {**BYOB_DEFAULTS, **extra}
        for prefix, (attention, attention_kwargs, archs) in BYOB_VARIANTS.items():
            if arch in archs:
                _register(f"{prefix}_{arch}", "bottleneck", depths, defaults, attention=attention,
                          attention_kwargs=attention_kwargs,
                          summary=f"{arch} as timm's ByobNet builds it (tiered stem) with "
                                  f"{FAMILY_NAMES[prefix]} attention after each 3x3 conv-BN-activation.")
    for arch, (block, depths, defaults, summary) in SPATIAL_CONV_ARCHS.items():
        _register(arch, block, depths, defaults, summary=summary)


_register_all()
