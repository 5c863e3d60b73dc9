"""Residual Attention Networks: Attention-56/92 (ImageNet) and CIFAR variants (Wang et al., CVPR 2017).

ImageNet structure (paper Table 2; official ``Attention-56-deploy.prototxt`` and
``Attention-92-deploy.prototxt``, github.com/fwang91/residual-attention-network):

=========  ======  ===========================================================
stage      output  layers
=========  ======  ===========================================================
stem       112     7x7/2 conv 64 (no bias), BN, ReLU
           56      3x3/2 max pool (Caffe ceil mode)
1          56      pre-act bottleneck 256; attention module (3 pools) x m1
2          28      pre-act bottleneck 512 (stride 2); attention module (2 pools) x m2
3          14      pre-act bottleneck 1024 (stride 2); attention module (1 pool) x m3
4          7       pre-act bottleneck 2048 (stride 2), x3
head       1       BN, ReLU, global average pool, FC 1000
=========  ======  ===========================================================

with (m1, m2, m3) = (1, 1, 1) for Attention-56 and (1, 2, 3) for Attention-92.

Parameter counts (trainable, 1000 classes), counted from the official prototxts by
summing convolution weights (no biases), 2 trainable values (scale, shift) per channel
of every ``BN`` layer and the 2048x1000 + 1000 classifier:
``attention56`` 31,810,728 and ``attention92`` 52,466,344 -- which our builders match
exactly. Counting also the BN layers' moving mean and variance (4 blobs per channel in
the Caffe ``BN`` layer used by the release) gives 31,883,432 and 52,599,976. The paper
reports 31.9M (Attention-56; matches the count with BN statistics) and 51.3M
(Attention-92). The released Attention-92 prototxt is Attention-56 plus one more
stage-2 and two more stage-3 modules built exactly like Attention-56's
(3,046,912 + 2 x 8,804,352 = 20,655,616 parameters), so 51.3M cannot be reached with
modules as released; we follow the released prototxt.

CIFAR variants (``attention56_cifar``, ``attention92_cifar``): the paper gives no CIFAR
architecture table and the official release has no CIFAR model, so these are ours: the
ImageNet networks with the stem replaced by a 3x3 stride-1 convolution (no max pool),
so stages 1-4 run at 32, 16, 8, 4 for 32x32 inputs and the mask branches still reach
4x4 at their lowest level; widths unchanged (``base_width=64``; the paper: "the number
of channels in each stage is the same as ResNet"). Use ``base_width=16`` for the narrow
CIFAR ResNet-164-like widths (64/128/256/512 outputs).

Each attention module is a :class:`~keras_attention.layers.ResidualAttentionModule`
named ``stage{i}_attention{j}``; its soft mask is ``model.get_layer(name).output[1]``,
and ``return_attention=True`` adds every mask to the model outputs.
"""

from __future__ import annotations

from typing import Sequence

import keras

from keras_attention.layers._common import check_choice, check_positive
from keras_attention.layers.residual_attention import (CaffeMaxPool2D, PreActBottleneck,
                                                       ResidualAttentionModule)
from keras_attention.models._common import batch_norm, check_model_args, classifier_head, conv2d
from keras_attention.registry import register_model

STEMS = ("imagenet", "cifar")


def build_residual_attention_network(modules_per_stage: Sequence[int], *, num_classes: int = 1000,
                                     input_shape: Sequence[int] = (224, 224, 3), include_top: bool = True,
                                     pooling: str | None = None, stem: str = "imagenet",
                                     base_width: int = 64, mask_pools: Sequence[int] = (3, 2, 1),
                                     stage4_units: int = 3, return_attention: bool = False,
                                     classifier_activation=None, name: str = "residual_attention"):
    """Builds a Residual Attention Network as a functional ``keras.Model``.

    Args:
        modules_per_stage: attention modules in stages 1-3, e.g. ``(1, 1, 1)`` (Attention-56)
            or ``(1, 2, 3)`` (Attention-92).
        num_classes, input_shape, include_top, pooling, classifier_activation: as for every
            builder (``input_shape`` needs static H and W: the mask branches pool and
            upsample to fixed sizes).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3/1 conv).
        base_width: stem width and bottleneck width of stage 1 (64); stage outputs are
            ``4 * base_width * 2**(i - 1)``.
        mask_pools: pooling levels of the mask branch in stages 1-3 ((3, 2, 1)).
        stage4_units: pre-activation units in stage 4 (3).
        return_attention: add every module's soft mask to the outputs
            (``[logits, mask_stage1_0, ...]``).
        name: model name.

    Returns:
        ``keras.Model``: ``(N, H, W, 3)`` float32 images -> ``(N, num_classes)`` float32
        logits (or features with ``include_top=False``).

    Raises:
        ValueError: bad ``stem``, counts, ``num_classes``, ``input_shape`` (unknown H or W).
    """
    check_choice("stem", stem, STEMS)
    input_shape = check_model_args(num_classes, input_shape, include_top)
    if input_shape[0] is None or input_shape[1] is None:
        raise ValueError(f"Residual attention networks need a static input size, received {input_shape}.")
    modules = tuple(check_positive("modules_per_stage", int(m), integer=True) if m else 0
                    for m in modules_per_stage)
    if len(modules) != 3 or len(tuple(mask_pools)) != 3:
        raise ValueError("`modules_per_stage` and `mask_pools` need one entry per stage 1-3, received "
                         f"{tuple(modules_per_stage)} and {tuple(mask_pools)}.")
    base_width = check_positive("base_width", base_width, integer=True)

    inputs = keras.Input(shape=input_shape, name="images")
    if stem == "imagenet":
        x = conv2d(inputs, base_width, 7, 2, name="stem_conv", kernel_initializer="he_normal")
        x = batch_norm("stem_bn")(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
        x = CaffeMaxPool2D(name="stem_pool")(x)
    else:
        x = conv2d(inputs, base_width, 3, 1, name="stem_conv", kernel_initializer="he_normal")
        x = batch_norm("stem_bn")(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
    masks = []
    for stage, (count, pools) in enumerate(zip(modules, mask_pools), start=1):
        filters = 4 * base_width * 2 ** (stage - 1)
        x = PreActBottleneck(filters, stride=1 if stage == 1 else 2, name=f"stage{stage}_unit0")(x)
        for j in range(count):
            x, mask = ResidualAttentionModule(num_pools=pools, return_attention=True,
                                              name=f"stage{stage}_attention{j}")(x)
            masks.append(mask)
    for j in range(stage4_units):
        x = PreActBottleneck(32 * base_width, stride=2 if j == 0 else 1, name=f"stage4_unit{j}")(x)
    x = batch_norm("head_bn")(x)
    x = keras.layers.ReLU(name="head_relu")(x)
    outputs = classifier_head(x, num_classes=num_classes, include_top=include_top, pooling=pooling,
                              classifier_activation=classifier_activation)
    if return_attention:
        outputs = [outputs, *masks]
    return keras.Model(inputs, outputs, name=name)


@register_model
def attention56(**kwargs):
    """Attention-56 (Wang et al. 2017, Table 2): one attention module per stage 1-3; 31.8M parameters."""
    kwargs.setdefault("name", "attention56")
    return build_residual_attention_network((1, 1, 1), **kwargs)


@register_model
def attention92(**kwargs):
    """Attention-92 (Wang et al. 2017, Table 2): 1, 2, 3 attention modules in stages 1-3; 52.5M parameters."""
    kwargs.setdefault("name", "attention92")
    return build_residual_attention_network((1, 2, 3), **kwargs)


def _cifar(kwargs, name):
    kwargs.setdefault("name", name)
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("input_shape", (32, 32, 3))
    kwargs.setdefault("stem", "cifar")
    return kwargs


@register_model
def attention56_cifar(**kwargs):
    """Attention-56 for 32x32 inputs (ours: 3x3 stride-1 stem, no max pool; see module docstring)."""
    return build_residual_attention_network((1, 1, 1), **_cifar(kwargs, "attention56_cifar"))


@register_model
def attention92_cifar(**kwargs):
    """Attention-92 for 32x32 inputs (ours: 3x3 stride-1 stem, no max pool; see module docstring)."""
    return build_residual_attention_network((1, 2, 3), **_cifar(kwargs, "attention92_cifar"))
