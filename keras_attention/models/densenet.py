"""DenseNet and DenseNet-BC (Huang, Liu, van der Maaten, Weinberger, CVPR 2017).

Built like the official Torch code (github.com/liuzhuang13/DenseNet, ``models/densenet.lua``
and ``models/DenseConnectLayer.lua``), which torchvision's ``densenet.py`` follows for the
ImageNet models:

* dense layer (bottleneck, "B"): BN-ReLU-Conv1x1 (``4k`` channels)-BN-ReLU-Conv3x3 (``k``
  channels), its output concatenated to its input; without bottleneck BN-ReLU-Conv3x3;
* transition: BN-ReLU-Conv1x1 (``floor(C * compression)`` channels, "C" = 0.5)-AvgPool 2x2/2;
* ImageNet stem (``stem="imagenet"``): Conv7x7/2 with ``2k`` channels-BN-ReLU-MaxPool3x3/2,
  four dense blocks, three transitions;
* CIFAR stem (``stem="cifar"``): Conv3x3 with ``2k`` channels (BC; 16 without bottleneck),
  three dense blocks of ``(L - 4) / 6`` bottleneck layers (``(L - 4) / 3`` plain layers);
* head: BN-ReLU-global average pool-FC (with bias).

Convolutions have no bias (the official code deletes them) and are initialised
``N(0, 2 / (k * k * out_channels))`` (He, fan-out) as in the official code; BatchNorm has
epsilon 1e-5 and momentum 0.1 in PyTorch's convention (0.9 in Keras's), gamma 1 and beta 0;
the classifier has a zero bias (the shared head of :mod:`keras_attention.models._common`).
Strided layers are padded explicitly (``ZeroPadding2D`` then a ``"valid"`` convolution /
pooling) so they see the same pixels as PyTorch's, which makes torchvision weights
loadable; stride-1 3x3 convolutions use ``"same"`` (symmetric, equal to PyTorch's pad 1).
Dropout (after every convolution but the first, as in the official code) is off by default,
as in the paper's DenseNet-BC runs with data augmentation.

Layer names are deterministic and map one to one onto torchvision's module paths:
``stem_conv``/``stem_bn`` <-> ``features.conv0``/``norm0``,
``block{b}_layer{l}_bn1``/``_conv1``/``_bn2``/``_conv2`` <->
``features.denseblock{b}.denselayer{l}.norm1``/``conv1``/``norm2``/``conv2``,
``transition{b}_bn``/``_conv`` <-> ``features.transition{b}.norm``/``conv``,
``final_bn`` <-> ``features.norm5``, ``head_fc`` <-> ``classifier``; all optionally behind
a ``prefix`` (ColorNet's branches).
"""

from __future__ import annotations

import math
import numbers

import keras

from keras_attention.models._common import batch_norm, check_model_args, classifier_head, conv2d
from keras_attention.registry import register_model

#: Dense layers per block of the ImageNet models (paper Table 1; official densenet.lua).
IMAGENET_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32),
                   161: (6, 12, 36, 24)}


def _dropout(x, rate, name):
    return keras.layers.Dropout(rate, name=name)(x) if rate > 0 else x


def dense_layer(x, growth_rate: int, name: str, *, bottleneck: bool = True,
                bottleneck_width: int = 4, dropout_rate: float = 0.0):
    """One dense layer: ``concat([x, H(x)])`` with H = BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)."""
    y = batch_norm(f"{name}_bn1")(x)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    if bottleneck:
        y = conv2d(y, bottleneck_width * growth_rate, 1, name=f"{name}_conv1")
        y = _dropout(y, dropout_rate, f"{name}_drop1")
        y = batch_norm(f"{name}_bn2")(y)
        y = keras.layers.ReLU(name=f"{name}_relu2")(y)
        y = conv2d(y, growth_rate, 3, name=f"{name}_conv2")
        y = _dropout(y, dropout_rate, f"{name}_drop2")
    else:
        y = conv2d(y, growth_rate, 3, name=f"{name}_conv1")
        y = _dropout(y, dropout_rate, f"{name}_drop1")
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([x, y])


def transition(x, out_channels: int, name: str, *, dropout_rate: float = 0.0):
    """Transition layer: BN-ReLU-Conv1x1(out_channels)-AvgPool 2x2 stride 2."""
    x = batch_norm(f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = conv2d(x, out_channels, 1, name=f"{name}_conv")
    x = _dropout(x, dropout_rate, f"{name}_drop")
    return keras.layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def densenet_features(x, *, blocks, growth_rate: int, stem: str = "imagenet",
                      init_channels: int | None = None, bottleneck: bool = True,
                      bottleneck_width: int = 4, compression: float = 0.5,
                      dropout_rate: float = 0.0, prefix: str = ""):
    """Applies a DenseNet trunk to ``x``: stem, dense blocks and transitions, final BN-ReLU.

    Args:
        x: NHWC tensor (a ``keras.Input`` or any symbolic tensor).
        blocks: dense layers per block, e.g. ``(6, 12, 24, 16)``.
        growth_rate: k, channels each dense layer adds.
        stem: ``"imagenet"`` (Conv7x7/2-BN-ReLU-MaxPool3x3/2) or ``"cifar"`` (Conv3x3).
        init_channels: channels of the stem convolution; default ``2k`` (16 for a CIFAR
            DenseNet without bottleneck, as in the official code).
        bottleneck: use the 1x1 bottleneck convolution ("B").
        bottleneck_width: the bottleneck has ``bottleneck_width * k`` channels (4).
        compression: theta in (0, 1]; transitions output ``floor(theta * C)`` channels ("C").
        dropout_rate: dropout after each convolution but the stem's (0 = none).
        prefix: prepended to every layer name (ColorNet's branches use ``"lab_"`` ...).

    Returns:
        The feature map after the final BN-ReLU, ``(N, H / 32, W / 32, C)`` for the
        ImageNet stem, ``(N, H / 4, W / 4, C)`` for the CIFAR stem.
    """
    _check_trunk_args(blocks, growth_rate, stem, init_channels, bottleneck_width, compression,
                      dropout_rate)
    p = prefix
    if init_channels is None:
        init_channels = 2 * growth_rate if (bottleneck or stem == "imagenet") else 16
    if stem == "imagenet":
        x = conv2d(x, init_channels, 7, 2, name=f"{p}stem_conv")  # padded 3 on each side
        x = batch_norm(f"{p}stem_bn")(x)
        x = keras.layers.ReLU(name=f"{p}stem_relu")(x)
        # zero padding equals -inf padding here: the input is non-negative after the ReLU
        x = keras.layers.ZeroPadding2D(1, name=f"{p}stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name=f"{p}stem_pool")(x)
    else:
        x = conv2d(x, init_channels, 3, name=f"{p}stem_conv")
    channels = init_channels
    for b, num_layers in enumerate(blocks, start=1):
        for layer in range(1, num_layers + 1):
            x = dense_layer(x, growth_rate, f"{p}block{b}_layer{layer}", bottleneck=bottleneck,
                            bottleneck_width=bottleneck_width, dropout_rate=dropout_rate)
            channels += growth_rate
        if b < len(blocks):
            channels = int(math.floor(channels * compression))
            x = transition(x, channels, f"{p}transition{b}", dropout_rate=dropout_rate)
    x = batch_norm(f"{p}final_bn")(x)
    return keras.layers.ReLU(name=f"{p}final_relu")(x)


def build_densenet(*, blocks, growth_rate: int, stem: str = "imagenet", num_classes: int = 1000,
                   input_shape=(224, 224, 3), include_top: bool = True, pooling: str | None = None,
                   init_channels: int | None = None, bottleneck: bool = True,
                   bottleneck_width: int = 4, compression: float = 0.5, dropout_rate: float = 0.0,
                   name: str = "densenet") -> keras.Model:
    """Builds a DenseNet(-BC) classifier or feature extractor as a functional model.

    Args:
        blocks, growth_rate, stem, init_channels, bottleneck, bottleneck_width, compression,
        dropout_rate: see :func:`densenet_features`.
        num_classes: classifier outputs (with ``include_top``); logits, float32.
        input_shape: HWC input shape; H and W may be ``None``.
        include_top: add global pooling (``head_pool``) and the FC classifier (``head_fc``).
        pooling: ``None`` (without the top: the 4D feature map after the final BN-ReLU;
            with the top: average), ``"avg"`` or ``"max"``.
        name: the model's name.

    Raises:
        ValueError: invalid configuration (non-positive sizes, compression outside (0, 1],
            dropout outside [0, 1), unknown stem or pooling).
    """
    input_shape = check_model_args(num_classes, input_shape, include_top)
    inputs = keras.Input(shape=input_shape, name="images")
    x = densenet_features(inputs, blocks=blocks, growth_rate=growth_rate, stem=stem,
                          init_channels=init_channels, bottleneck=bottleneck,
                          bottleneck_width=bottleneck_width, compression=compression,
                          dropout_rate=dropout_rate)
    x = classifier_head(x, num_classes=num_classes, include_top=include_top, pooling=pooling)
    return keras.Model(inputs, x, name=name)


def cifar_blocks(depth: int, bottleneck: bool = True) -> tuple[int, int, int]:
    """Layers per block of a CIFAR DenseNet of depth L: three blocks of ``(L - 4) / 6``
    bottleneck layers (``(L - 4) / 3`` without bottleneck); L counts the convolutions and
    the FC layer (stem + 2 per bottleneck layer + 2 transitions + FC).

    Raises:
        ValueError: ``L - 4`` not divisible by 6 (by 3 without bottleneck).
    """
    _check_int("depth", depth)
    per = 6 if bottleneck else 3
    if depth < 4 + per or (depth - 4) % per:
        raise ValueError(f"A CIFAR DenseNet{'-BC' if bottleneck else ''} needs depth = {per} n + 4 "
                         f"(n >= 1), received depth={depth}.")
    n = (depth - 4) // per
    return (n, n, n)


def densenet_cifar(depth: int, growth_rate: int, *, num_classes: int = 10, input_shape=(32, 32, 3),
                   include_top: bool = True, pooling: str | None = None, bottleneck: bool = True,
                   compression: float = 0.5, dropout_rate: float = 0.0, name: str | None = None,
                   **kwargs) -> keras.Model:
    """CIFAR DenseNet-BC-L-k (or plain DenseNet with ``bottleneck=False, compression=1``).

    Three dense blocks on 32x32, 16x16 and 8x8 maps (paper Sec. 4 "Implementation details";
    official densenet.lua). See :func:`build_densenet` for the arguments.
    """
    if name is None:  # densenet_bc_100_12, densenet_40_12 (plain), densenet_b_..., densenet_c_...
        kind = ("b" if bottleneck else "") + ("c" if compression < 1 else "")
        name = f"densenet_{kind + '_' if kind else ''}{depth}_{growth_rate}"
    return build_densenet(blocks=cifar_blocks(depth, bottleneck), growth_rate=growth_rate, stem="cifar",
                          num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                          pooling=pooling, bottleneck=bottleneck, compression=compression,
                          dropout_rate=dropout_rate, name=name, **kwargs)


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, received {value!r}.")
    return int(value)


def _check_trunk_args(blocks, growth_rate, stem, init_channels, bottleneck_width, compression,
                      dropout_rate):
    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"`stem` must be 'imagenet' or 'cifar', received {stem!r}.")
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(f"`blocks` must be a non-empty list of layer counts, received {blocks!r}.")
    for count in blocks:
        _check_int("blocks[i]", count)
    _check_int("growth_rate", growth_rate)
    _check_int("bottleneck_width", bottleneck_width)
    if init_channels is not None:
        _check_int("init_channels", init_channels)
    if not isinstance(compression, numbers.Real) or not 0 < compression <= 1:
        raise ValueError(f"`compression` must be in (0, 1], received {compression!r}.")
    if not isinstance(dropout_rate, numbers.Real) or not 0 <= dropout_rate < 1:
        raise ValueError(f"`dropout_rate` must be in [0, 1), received {dropout_rate!r}.")


def _imagenet(depth, growth_rate):
    def builder(*, num_classes: int = 1000, input_shape=(224, 224, 3), include_top: bool = True,
                pooling: str | None = None, **kwargs) -> keras.Model:
        return build_densenet(blocks=IMAGENET_BLOCKS[depth], growth_rate=growth_rate, stem="imagenet",
                              num_classes=num_classes, input_shape=input_shape,
                              include_top=include_top, pooling=pooling,
                              **{"name": f"densenet{depth}", **kwargs})
    return builder


@register_model
def densenet121(**kwargs) -> keras.Model:
    """DenseNet-121 (DenseNet-BC, k=32, blocks 6-12-24-16), ImageNet; 7,978,856 parameters.

    Paper Table 1; official Torch model 25.0% top-1 error (1-crop 224, official README).
    Parameter count equal to torchvision's ``densenet121`` and ``keras.applications.DenseNet121``
    (trainable). Arguments: see :func:`build_densenet`.
    """
    return _imagenet(121, 32)(**kwargs)


@register_model
def densenet169(**kwargs) -> keras.Model:
    """DenseNet-169 (DenseNet-BC, k=32, blocks 6-12-32-32), ImageNet; 14,149,480 parameters."""
    return _imagenet(169, 32)(**kwargs)


@register_model
def densenet201(**kwargs) -> keras.Model:
    """DenseNet-201 (DenseNet-BC, k=32, blocks 6-12-48-32), ImageNet; 20,013,928 parameters."""
    return _imagenet(201, 32)(**kwargs)


@register_model
def densenet161(**kwargs) -> keras.Model:
    """DenseNet-161 (DenseNet-BC, k=48, blocks 6-12-36-24, 96 stem channels), ImageNet; 28,681,000 parameters."""
    return _imagenet(161, 48)(**kwargs)


def _cifar(depth, growth_rate):
    def builder(*, num_classes: int = 10, input_shape=(32, 32, 3), include_top: bool = True,
                pooling: str | None = None, **kwargs) -> keras.Model:
        return densenet_cifar(depth, growth_rate, num_classes=num_classes, input_shape=input_shape,
                              include_top=include_top, pooling=pooling, **kwargs)
    return builder


@register_model
def densenet_bc_40_12(**kwargs) -> keras.Model:
    """DenseNet-BC (L=40, k=12), CIFAR: 3 blocks of 6 bottleneck layers; 176,122 parameters (C10).

    ColorNet-40-12's branch network. Arguments: see :func:`densenet_cifar`.
    """
    return _cifar(40, 12)(**kwargs)


@register_model
def densenet_bc_40_48(**kwargs) -> keras.Model:
    """Wide-DenseNet-BC (L=40, k=48), CIFAR; 2,733,130 parameters (C10; official README: 2.7M)."""
    return _cifar(40, 48)(**kwargs)


@register_model
def densenet_bc_100_12(**kwargs) -> keras.Model:
    """DenseNet-BC (L=100, k=12), CIFAR: 3 blocks of 16 bottleneck layers; 769,162 parameters (C10; paper: 0.8M)."""
    return _cifar(100, 12)(**kwargs)


@register_model
def densenet_bc_250_24(**kwargs) -> keras.Model:
    """DenseNet-BC (L=250, k=24), CIFAR: 3 blocks of 41 bottleneck layers (paper Table 2: 15.3M)."""
    return _cifar(250, 24)(**kwargs)


@register_model
def densenet_bc_190_40(**kwargs) -> keras.Model:
    """DenseNet-BC (L=190, k=40), CIFAR: 3 blocks of 31 bottleneck layers (paper Table 2: 25.6M)."""
    return _cifar(190, 40)(**kwargs)
