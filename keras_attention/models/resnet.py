"""ResNet, ResNeXt and CIFAR ResNets with one pluggable attention slot per residual block.

The attention module sits on the residual branch after the block's last BatchNorm
and before the addition (SENet Fig. 3, CBAM Fig. 3, GCNet Fig. 4, GENet Sec. 3),
so every attention family is compared on the same backbone.

Layer names are deterministic and mirror torchvision/timm's module paths, which
makes weight conversion a table: ``layer{i}.{j}.conv1`` <-> ``stage{i}_block{j}_conv1``,
``conv1``/``bn1`` <-> ``stem_conv``/``stem_bn``, ``fc`` <-> ``head_fc``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras

from keras_attention.layers.factory import AttentionSpec, create_attention
from keras_attention.models._common import (ChannelPadShortcut, batch_norm, check_model_args,
                                            classifier_head, conv2d)
from keras_attention.layers._common import check_choice
from keras_attention.registry import register_model

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "deep", "tiered", "cifar")
SHORTCUTS = ("projection", "avg_down", "pad")


def _attention(spec, kwargs, stage_kwargs, stage, attention_stages, prefix):
    if attention_stages is not None and stage not in attention_stages:
        return None
    kwargs = {**(kwargs or {}), **((stage_kwargs or {}).get(stage) or {})}
    return create_attention(spec, name=f"{prefix}_attention", **kwargs)


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


def _residual_tail(y, shortcut_x, attention, prefix):
    """The block's attention on the residual branch (before the addition, as SENet places
    it), the identity/projection addition and the final ReLU."""
    if attention is not None:
        y = attention(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut_x])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def basic_block(x, filters, stride, *, prefix, attention, shortcut="projection", zero_init_last=False,
                **_):
    """Two 3x3 conv-BN layers (ResNet-18/34 and the CIFAR ResNets); output has ``filters`` channels."""
    shortcut_x = _shortcut(x, filters, stride, shortcut, prefix)
    y = conv2d(x, filters, 3, stride, name=f"{prefix}_conv1")
    y = batch_norm(f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = conv2d(y, filters, 3, 1, name=f"{prefix}_conv2")
    y = batch_norm(f"{prefix}_bn2", zero_init=zero_init_last)(y)
    return _residual_tail(y, shortcut_x, attention, prefix)


def bottleneck_block(x, filters, stride, *, prefix, attention, groups=1, base_width=64,
                     stride_in_1x1=False, shortcut="projection", zero_init_last=False):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 bottleneck; output has ``4 * filters`` channels.

    ``stride_in_1x1`` puts the stride on the first 1x1 convolution, as in the original
    Caffe ResNet and the official SENet release; by default it is on the 3x3 (torchvision,
    timm, "ResNet v1.5").
    """
    width = int(filters * base_width / 64) * groups
    out_channels = filters * 4
    shortcut_x = _shortcut(x, out_channels, stride, shortcut, prefix)
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    y = conv2d(x, width, 1, s1, name=f"{prefix}_conv1")
    y = batch_norm(f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = conv2d(y, width, 3, s3, groups=groups, name=f"{prefix}_conv2")
    y = batch_norm(f"{prefix}_bn2")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    y = conv2d(y, out_channels, 1, 1, name=f"{prefix}_conv3")
    y = batch_norm(f"{prefix}_bn3", zero_init=zero_init_last)(y)
    return _residual_tail(y, shortcut_x, attention, prefix)


def _stem(x, stem, stem_width):
    if stem == "cifar":
        x = conv2d(x, stem_width, 3, 1, name="stem_conv")
        x = batch_norm("stem_bn")(x)
        return keras.layers.ReLU(name="stem_relu")(x)
    if stem in ("deep", "tiered"):
        # ResNet-C/D deep stem (timm "deep"): 3x3/2 (w/2) -> 3x3 (w/2) -> 3x3 (w), BN-ReLU after each;
        # timm's "deep_tiered" (the *t models) narrows the first conv to 3w/8 (24, 32, 64).
        first = stem_width // 2 if stem == "deep" else 3 * (stem_width // 8)
        widths = (first, stem_width // 2, stem_width)
        for i, (w, s) in enumerate(zip(widths, (2, 1, 1)), start=1):
            x = conv2d(x, w, 3, s, name=f"stem_conv{i}")
            x = batch_norm(f"stem_bn{i}")(x)
            x = keras.layers.ReLU(name=f"stem_relu{i}")(x)
    else:
        x = conv2d(x, stem_width, 7, 2, name="stem_conv")
        x = batch_norm("stem_bn")(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)  # zeros are safe after ReLU
    return keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def build_resnet(block: str, stage_depths: Sequence[int], *, stage_widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 1000, input_shape: Sequence[int | None] = (224, 224, 3),
                 include_top: bool = True, pooling: str | None = None,
                 groups: int = 1, base_width: int = 64, stem: str = "imagenet", stem_width: int = 64,
                 shortcut: str = "projection", stride_in_1x1: bool = False, zero_init_last: bool = False,
                 attention: AttentionSpec = None, attention_kwargs: dict | None = None,
                 attention_stages: Sequence[int] | None = None,
                 attention_stage_kwargs: dict[int, dict] | None = None,
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
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool), ``"deep"`` (three 3x3 convs,
            ResNet-C/D), ``"tiered"`` (deep stem with widths 3w/8, w/2, w, timm's *t models)
            or ``"cifar"`` (one 3x3 conv, no pooling; He et al. 2016, Sec. 4.2).
        stem_width: stem output channels (64 ImageNet, 16 CIFAR).
        shortcut: projection shortcut when the shape changes: ``"projection"`` (1x1 conv +
            BN, option B), ``"avg_down"`` (2x2 average pool + 1x1 conv + BN, ResNet-D) or
            ``"pad"`` (parameter-free subsample + zero channel padding, option A).
        stride_in_1x1: stride on the first 1x1 conv of bottlenecks (original SENet/Caffe).
        zero_init_last: start each block's last BN gamma at 0 (block starts as identity).
        attention: attention for every residual branch (see ``create_attention``): a
            name (``"se"``, ``"ge"``, ``"gc"``, ``"cbam"``, ``"nam"``, ``"eca"``), a layer
            class, a template instance or a callable; ``None`` for plain ResNet.
        attention_kwargs: constructor arguments for the attention (e.g. ``reduction_ratio``).
        attention_stages: 1-based stages that get attention (default: all).
        attention_stage_kwargs: ``{stage: kwargs}`` overriding ``attention_kwargs`` in one
            stage (e.g. the released ECA-Net's kernel size per stage).
        after_block: ``f(stage, block) -> layer (or callable) or None``; it is applied to that
            block's output (used e.g. for non-local blocks between residual blocks).
        classifier_activation: ``None`` for logits (default) or ``"softmax"``.
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``(N, H, W, 3)`` float32 images (normalised by the
        pretrained config's mean/std) to ``(N, num_classes)`` float32 logits, or to
        features when ``include_top=False``.

    Raises:
        ValueError: unknown ``block``/``stem``/``shortcut``, bad ``num_classes``/``input_shape``,
            ``stage_depths``/``stage_widths`` of different lengths, unknown attention name.

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Table 1;
        Sec. 4.2 for CIFAR); Xie et al., "Aggregated Residual Transformations" (ResNeXt),
        CVPR 2017 (Table 1); structure as torchvision.models.resnet / timm.models.resnet.
    """
    check_choice("block", block, BLOCKS)
    check_choice("stem", stem, STEMS)
    check_choice("shortcut", shortcut, SHORTCUTS)
    input_shape = check_model_args(num_classes, input_shape, include_top)
    if len(stage_depths) != len(stage_widths):
        raise ValueError(f"`stage_depths` {tuple(stage_depths)} and `stage_widths` {tuple(stage_widths)} "
                         "must have the same length.")
    block_fn = basic_block if block == "basic" else bottleneck_block

    inputs = keras.Input(shape=input_shape, name="images")
    x = _stem(inputs, stem, stem_width)
    for stage, (depth, width) in enumerate(zip(stage_depths, stage_widths), start=1):
        for b in range(depth):
            prefix = f"stage{stage}_block{b}"
            stride = 2 if (b == 0 and stage > 1) else 1
            attn = _attention(attention, attention_kwargs, attention_stage_kwargs, stage,
                              attention_stages, prefix)
            x = block_fn(x, width, stride, prefix=prefix, attention=attn, groups=groups,
                         base_width=base_width, stride_in_1x1=stride_in_1x1, shortcut=shortcut,
                         zero_init_last=zero_init_last)
            extra = after_block(stage, b) if after_block is not None else None
            if extra is not None:
                x = extra(x)
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
                "cbam": "CBAM", "nam": "NAM", "eca": "ECA"}


def _same_attention(spec, family_attention) -> bool:
    """Whether the ``attention=`` a user gave names the family's own attention."""
    return isinstance(spec, str) and spec.lower().replace("-", "_") == family_attention


def _register(name, block, depths, defaults, attention=None, attention_kwargs=None, attention_options=None,
              summary=""):
    """Registers ``name``; a family model gets ``attention`` and its family options.

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
        if attention is not None and _same_attention(kwargs.get("attention", attention), attention):
            options = {**defaults, **attention_options, **kwargs, "attention": attention,
                       "attention_kwargs": {**attention_kwargs, **(kwargs.get("attention_kwargs") or {})}}
        return build_resnet(block, depths, name=options.pop("name", name), **options)

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


_register_all()
