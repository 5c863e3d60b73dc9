"""BagNets: ResNet-50-like networks whose every output position sees one small image patch.

A BagNet replaces most 3x3 convolutions of a ResNet-50 by 1x1 convolutions and pads
nothing, so each position of the last feature map depends on exactly one
``rf x rf`` patch of the image (9, 17 or 33 pixels, one step of 8 pixels apart). The
classifier is linear, so the image logits (spatial mean, then the dense layer) are the
mean of the per-patch logits (the dense layer at every position): the patch-logit map
(``patch_logits=True``) is the evidence each patch gives for each class.

Two official implementations, both built here (``variant``):

* ``"brendel"`` (Brendel & Bethge, ICLR 2019, ``bagnets/pytorchnet.py``): stem 1x1
  conv 3->64 (no bias), 3x3 'valid' conv, BN (PyTorch momentum 0.001), ReLU; bottleneck
  stride on the kxk convolution; the shortcut (projected by a strided 1x1 conv + BN where
  the shape changes) is cropped at the bottom/right to the branch's size; PyTorch's
  initialisation (He normal, fan-out, for convolutions; ``nn.Linear``'s uniform
  +-1/sqrt(fan_in) for the classifier). Registered as ``bagnet9/17/33``.
* ``"saccader"`` (Elsayed et al., NeurIPS 2019, google-research ``saccader/feedforward/
  bagnet_model.py``): stem one 3x3 'valid' conv + BN + ReLU; a 3x3 block crops its
  shortcut by one pixel on every side *before* the projection; the last BN of each
  block starts at gamma = 0; an optional 1x1 "final bottleneck" (2048 -> 512, BN,
  ReLU) before the classifier; TensorFlow's initialisation (Glorot uniform). The
  official code applies the projection shortcut's BatchNorm to the residual branch
  instead of the projected shortcut (``net = batch_normalization(net)`` in the
  ``downsample`` scope), which renormalises the zero-initialised branch and leaves the
  projection unnormalised; we normalise the projection (``{prefix}_downsample_bn``), the
  evident intent and what every ResNet does. The parameter count is the same either way.
  Registered as ``saccader_bagnet77`` (the Saccader's representation network, "BagNet-77-lowD").

Layer names are deterministic, so converting the official checkpoints is a table:
PyTorch ``conv1``/``conv2``/``bn1`` <-> ``stem_conv1``/``stem_conv2``/``stem_bn``,
``layer{i}.{j}.conv{k}``/``.bn{k}`` <-> ``stage{i}_block{j}_conv{k}``/``_bn{k}``,
``layer{i}.0.downsample.0``/``.1`` <-> ``stage{i}_block0_downsample_conv``/``_bn``,
``fc`` <-> ``head_fc``; TensorFlow ``pre_groups`` <-> ``stem_conv``/``stem_bn``,
``group{i}/block{j}/a|b|c`` <-> ``stage{i+1}_block{j}_conv1|2|3`` (and ``_bn1|2|3``),
``downsample`` <-> ``_downsample_conv``/``_bn``, ``final_bottleneck`` <->
``bottleneck_conv``/``bottleneck_bn``, ``logits2d`` <-> ``head_fc``.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras

from keras_attention.layers._common import check_choice, check_positive
from keras_attention.layers.factory import AttentionSpec, create_attention
from keras_attention.models._common import batch_norm, check_model_args, he_fan_out
from keras_attention.registry import register_model

VARIANTS = ("brendel", "saccader")
STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = 4


def receptive_field(kernel3: Sequence[int], strides: Sequence[int] = (2, 2, 2, 1),
                    stage_depths: Sequence[int] = (3, 4, 6, 3)) -> tuple[int, int]:
    """Receptive field and step (both in pixels) of one position of a BagNet's last feature map.

    Both stems see 3x3 pixels (the Brendel stem's first convolution is 1x1). Each 3x3
    convolution widens the field by twice the current step; each stride multiplies the step.
    Output position ``(i, j)`` sees rows ``i*step ... i*step + rf - 1`` and the same columns.

    Reference: ``receptive_field_size`` in google-research ``saccader/feedforward/bagnet_model.py``.
    """
    rf, step = 3, 1
    for depth, k3, stride in zip(stage_depths, kernel3, strides):
        for i in range(depth):
            rf += (2 if i < k3 else 0) * step
            step *= stride if i == 0 else 1
    return rf, step


def _channels(channels: int, width_multiplier: float) -> int:
    return max(1, int(round(channels * width_multiplier)))


def _conv(x, filters, kernel_size, stride, *, name, variant, use_bias=False):
    init = he_fan_out() if variant == "brendel" else "glorot_uniform"
    return keras.layers.Conv2D(filters, kernel_size, strides=stride, padding="valid", use_bias=use_bias,
                               kernel_initializer=init, name=name)(x)


def bagnet_block(x, planes: int, kernel_size: int, stride: int, *, prefix: str, variant: str,
                 attention: keras.layers.Layer | None = None):
    """One BagNet bottleneck: 1x1 -> kxk ('valid', strided) -> 1x1 (``4 * planes`` channels).

    The shortcut is projected (1x1 conv with the block's stride + BN) when the stride or the
    width changes, and cropped to the branch's size: at the bottom/right after the projection
    (``"brendel"``: ``residual[:, :, :-d, :-d]``) or by one pixel on every side before it
    (``"saccader"``: ``residual[:, 1:-1, 1:-1]`` for a 3x3 block). ``attention`` sits on the
    branch after its last BN, before the addition, as in our ResNets.
    """
    out_channels = EXPANSION * planes
    project = stride != 1 or x.shape[-1] != out_channels
    shortcut = x
    y = _conv(x, planes, 1, 1, name=f"{prefix}_conv1", variant=variant)
    y = batch_norm(f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv(y, planes, kernel_size, stride, name=f"{prefix}_conv2", variant=variant)
    y = batch_norm(f"{prefix}_bn2")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    y = _conv(y, out_channels, 1, 1, name=f"{prefix}_conv3", variant=variant)
    y = batch_norm(f"{prefix}_bn3", zero_init=variant == "saccader")(y)
    if attention is not None:
        y = attention(y)
    if variant == "saccader" and kernel_size == 3:
        shortcut = keras.layers.Cropping2D(1, name=f"{prefix}_crop")(shortcut)
    if project:
        shortcut = _conv(shortcut, out_channels, 1, stride, name=f"{prefix}_downsample_conv", variant=variant)
        shortcut = batch_norm(f"{prefix}_downsample_bn")(shortcut)
    if variant == "brendel":
        # branch: floor((H - k) / s) + 1 rows; shortcut: floor((H - 1) / s) + 1 (H when s = 1).
        # Their difference is k - 1 for s = 1 and (k - 1) // 2 for s = 2, whatever H is.
        crop = (kernel_size - 1) // stride
        if crop:
            shortcut = keras.layers.Cropping2D(((0, crop), (0, crop)), name=f"{prefix}_crop")(shortcut)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def _stem(x, width, variant):
    if variant == "brendel":
        x = _conv(x, width, 1, 1, name="stem_conv1", variant=variant)
        x = _conv(x, width, 3, 1, name="stem_conv2", variant=variant)
        x = batch_norm("stem_bn", momentum=0.999)(x)  # nn.BatchNorm2d(64, momentum=0.001)
    else:
        x = _conv(x, width, 3, 1, name="stem_conv", variant=variant)
        x = batch_norm("stem_bn")(x)
    return keras.layers.ReLU(name="stem_relu")(x)


def _classifier(num_classes, in_channels, variant, classifier_activation):
    if variant == "brendel":  # torch.nn.Linear's default initialisation
        bound = 1.0 / math.sqrt(in_channels)
        init = dict(kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
                    bias_initializer=keras.initializers.RandomUniform(-bound, bound))
    else:  # tf.layers.conv2d's defaults: Glorot uniform kernel, zero bias
        init = {}
    return keras.layers.Dense(num_classes, activation=classifier_activation, dtype="float32",
                              name="head_fc", **init)


def build_bagnet(kernel3: Sequence[int], *, stage_depths: Sequence[int] = (3, 4, 6, 3),
                 strides: Sequence[int] = (2, 2, 2, 1), variant: str = "brendel",
                 final_bottleneck: bool = False, width_multiplier: float = 1.0,
                 num_classes: int = 1000, input_shape: Sequence[int | None] = (224, 224, 3),
                 include_top: bool = True, pooling: str | None = None, patch_logits: bool = False,
                 attention: AttentionSpec = None, attention_kwargs: dict | None = None,
                 classifier_activation=None, name: str = "bagnet") -> keras.Model:
    """Builds a BagNet as a functional ``keras.Model``.

    Args:
        kernel3: per stage, how many of its first blocks use a 3x3 convolution (the others
            use 1x1): ``(1, 1, 0, 0)`` BagNet-9, ``(1, 1, 1, 0)`` BagNet-17, ``(1, 1, 1, 1)``
            BagNet-33, ``(2, 2, 2, 2)`` the Saccader's BagNet-77.
        stage_depths: blocks per stage (ResNet-50: ``(3, 4, 6, 3)``).
        strides: stride of each stage's first block, 1 or 2 (official: ``(2, 2, 2, 1)``).
        variant: ``"brendel"`` (Brendel & Bethge's PyTorch code) or ``"saccader"``
            (google-research's BagNet); see the module docstring for the differences.
        final_bottleneck: add the 1x1 conv + BN + ReLU to a quarter of the channels before
            the classifier (Saccader's "lowD" features, ``bottleneck_relu``).
        width_multiplier: scales every width (stem, planes); ``1.0`` is the official
            network. The receptive field does not depend on it (small widths train on CPUs).
        num_classes: classifier outputs (with ``include_top``).
        input_shape: ``(H, W, 3)``; H and W may be ``None``; when given, at least the
            receptive field.
        include_top: add the float32 classifier ``head_fc``.
        pooling: with ``include_top=False``: ``None`` (4D features), ``"avg"`` or ``"max"``.
        patch_logits: with ``include_top``: return the patch-logit map ``(N, h, w,
            num_classes)`` (``head_fc`` at every position, the official ``avg_pool=False``)
            instead of the image logits (spatial mean, then ``head_fc``); same weights.
        attention: attention on every block's residual branch (see ``create_attention``);
            ``None`` (default) for the official BagNets. A global one (SE, GC, ...) makes
            every output depend on the whole image, i.e. no longer a bag of local features.
        attention_kwargs: constructor arguments of the attention.
        classifier_activation: ``None`` for logits (default) or ``"softmax"``.
        name: model name.

    Returns:
        A ``keras.Model`` from ``(N, H, W, 3)`` float32 images to ``(N, num_classes)``
        float32 logits, ``(N, h, w, num_classes)`` patch logits, or features
        (``include_top=False``), where ``h = (H - rf) // step + 1`` (see :func:`receptive_field`).

    Raises:
        ValueError: unknown ``variant``, bad ``width_multiplier``/``strides``/lengths,
            ``patch_logits`` without ``include_top``, an input smaller than the receptive field.

    Reference:
        Brendel & Bethge, "Approximating CNNs with Bag-of-local-Features models works
        surprisingly well on ImageNet", ICLR 2019 (Sec. 3, Fig. 1);
        github.com/wielandbrendel/bag-of-local-features-models ``bagnets/pytorchnet.py``;
        Elsayed, Kornblith & Le, "Saccader", NeurIPS 2019 (Sec. 3.1, BagNet-77-lowD);
        github.com/google-research/google-research ``saccader/feedforward/bagnet_model.py``.
    """
    check_choice("variant", variant, VARIANTS)
    check_positive("width_multiplier", width_multiplier)
    input_shape = check_model_args(num_classes, input_shape, include_top)
    if not len(kernel3) == len(stage_depths) == len(strides):
        raise ValueError(f"`kernel3` {tuple(kernel3)}, `stage_depths` {tuple(stage_depths)} and `strides` "
                         f"{tuple(strides)} must have the same length.")
    if len(stage_depths) > len(STAGE_PLANES):
        raise ValueError(f"At most {len(STAGE_PLANES)} stages, received {len(stage_depths)}.")
    if any(s not in (1, 2) for s in strides):
        raise ValueError(f"`strides` must be 1 or 2, received {tuple(strides)}.")
    if patch_logits and not include_top:
        raise ValueError("`patch_logits=True` needs `include_top=True` (the classifier gives the patch logits).")
    rf, _ = receptive_field(kernel3, strides, stage_depths)
    for size in input_shape[:2]:
        if size is not None and size < rf:
            raise ValueError(f"`input_shape` {input_shape} is smaller than the receptive field ({rf} pixels).")

    inputs = keras.Input(shape=input_shape, name="images")
    x = _stem(inputs, _channels(64, width_multiplier), variant)
    for stage, (depth, k3, stride, planes) in enumerate(zip(stage_depths, kernel3, strides, STAGE_PLANES),
                                                        start=1):
        for b in range(depth):
            prefix = f"stage{stage}_block{b}"
            attn = create_attention(attention, name=f"{prefix}_attention", **(attention_kwargs or {}))
            x = bagnet_block(x, _channels(planes, width_multiplier), 3 if b < k3 else 1, stride if b == 0 else 1,
                             prefix=prefix, variant=variant, attention=attn)
    if final_bottleneck:
        x = _conv(x, x.shape[-1] // 4, 1, 1, name="bottleneck_conv", variant=variant)
        x = batch_norm("bottleneck_bn")(x)
        x = keras.layers.ReLU(name="bottleneck_relu")(x)
    if include_top:
        fc = _classifier(num_classes, x.shape[-1], variant, classifier_activation)
        if not patch_logits:
            x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
        x = fc(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="head_pool")(x)
    elif pooling is not None:
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', received {pooling!r}.")
    return keras.Model(inputs, x, name=name)


# --------------------------------------------------------------------------------------
# Registry: name -> (kernel3, builder defaults, summary).

BAGNETS = {
    "bagnet9": ((1, 1, 0, 0), {}, "BagNet-9: every logit sees one 9x9 patch (Brendel & Bethge 2019)."),
    "bagnet17": ((1, 1, 1, 0), {}, "BagNet-17: every logit sees one 17x17 patch (Brendel & Bethge 2019)."),
    "bagnet33": ((1, 1, 1, 1), {}, "BagNet-33: every logit sees one 33x33 patch (Brendel & Bethge 2019)."),
    "saccader_bagnet77": ((2, 2, 2, 2), {"variant": "saccader", "final_bottleneck": True},
                          "BagNet-77-lowD, the Saccader's representation network (Elsayed et al. 2019)."),
}


def _register(name, kernel3, defaults, summary):
    def builder(**kwargs):
        options = {**defaults, **kwargs}
        return build_bagnet(kernel3, name=options.pop("name", name), **options)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{summary}\n\nArguments are those of :func:`build_bagnet` (kernel3={kernel3}, "
                       f"defaults: {defaults}).")
    builder.__module__ = __name__
    register_model(builder)


for _name, (_kernel3, _defaults, _summary) in BAGNETS.items():
    _register(_name, _kernel3, _defaults, _summary)
