"""ColorNet (Gowda & Yuan, ACCV 2018): one DenseNet-BC per colour space, combined by a dense layer.

The model takes an RGB image, converts it inside the network to each colour space
(:class:`~keras_attention.layers.ColorSpaceConversion`, normalised to [-1, 1] per channel),
runs one CIFAR-style DenseNet-BC branch per space, concatenates the branches' class
logits and maps them to the final logits with one fully connected layer. All branches and
the combiner form one functional model trained end to end with one optimizer.

Registered names (``L`` = depth, ``k`` = growth rate of every branch):

* ``colornet40_12``: the seven spaces (rgb, hsv, lab, yuv, ycbcr, yiq, hed), each a
  DenseNet-BC-40-12 (176,122 parameters for 10 classes); 1,233,564 parameters in all.
* ``colornet40_48``: the seven spaces, each a Wide-DenseNet-BC-40-48 (2,733,130);
  19,132,620 parameters in all.
* ``colornet40_12_<space>`` and ``colornet40_48_<space>`` for each of the seven spaces:
  single-space baselines from the same builder. With one space there is no combiner:
  the model is exactly that DenseNet-BC on the (normalised) converted input, e.g.
  ``colornet40_12_rgb`` is ``densenet_bc_40_12`` on ``2 x - 1``.

Any subset of spaces: ``create_model("colornet40_12", spaces=("rgb", "lab"))``, or call
:func:`colornet` with any depth and growth rate.

Pretrained: ``colornet40_12.cifar10`` and ``colornet40_12_<space>.cifar10`` for the seven
spaces, all from one short (1-epoch) CPU recipe, measured in docs/results.md.

Relation to the paper: its abstract gives seven colour spaces converted from the RGB
input, individual "small and wide" DenseNets, and 1.75M parameters for the model it
highlights. ``colornet40_48`` (7 x 2,733,130 + 710 = 19.1M) has seven Wide-DenseNet-BC-40-48
branches, the wide model the official DenseNet README recommends; ``colornet40_12`` has
seven DenseNet-BC-40-12 branches, 1.23M parameters: fewer than 1.75M, which is what seven
DenseNet-B-40-12 branches *without* compression give (1,750,332 with the combiner;
``colornet(compression=1.0)``). The per-space scaling to [-1, 1] is our choice
(documented constants, :data:`keras_attention.layers.color.CHANNEL_RANGES`).
"""

from __future__ import annotations

import keras

from keras_attention._errors import did_you_mean
from keras_attention.layers.color import COLOR_SPACES, ColorSpaceConversion
from keras_attention.models._common import check_model_args
from keras_attention.models.densenet import cifar_blocks, densenet_features
from keras_attention.registry import register_model


def _branch_head(x, *, num_classes, include_top, pooling, prefix):
    """A branch's global pooling + FC (float32 logits), or its (pooled) features;
    the shared head of ``models._common`` with the branch's name prefix."""
    if include_top:
        pooling = pooling or "avg"
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}head_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name=f"{prefix}head_pool")(x)
    elif pooling is not None:
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', received {pooling!r}.")
    if include_top:
        x = keras.layers.Dense(num_classes, dtype="float32", name=f"{prefix}head_fc")(x)
    return x


def _check_spaces(spaces) -> tuple[str, ...]:
    if isinstance(spaces, str):
        spaces = (spaces,)
    if not isinstance(spaces, (list, tuple)) or not spaces:
        raise ValueError(f"`spaces` must be a non-empty list of colour spaces from {COLOR_SPACES}, "
                         f"received {spaces!r}.")
    for space in spaces:
        if space not in COLOR_SPACES:
            hint = did_you_mean(space, COLOR_SPACES, n=2, cutoff=0.3)
            raise ValueError(f"Unknown colour space {space!r} in `spaces`.{hint} "
                             f"Valid spaces: {', '.join(COLOR_SPACES)}.")
    if len(set(spaces)) != len(spaces):
        raise ValueError(f"`spaces` must not repeat a colour space, received {spaces!r}.")
    return tuple(spaces)


def colornet(*, spaces=COLOR_SPACES, depth: int = 40, growth_rate: int = 12,
             compression: float = 0.5, bottleneck: bool = True, dropout_rate: float = 0.0,
             normalize: bool = True, num_classes: int = 10, input_shape=(32, 32, 3),
             include_top: bool = True, pooling: str | None = None,
             name: str | None = None) -> keras.Model:
    """Builds a ColorNet: per colour space a conversion and a CIFAR DenseNet-BC branch.

    ``rgb -> [convert_s -> DenseNet-BC-L-k_s -> FC_s (class logits)]_s -> concat -> FC``.

    Args:
        spaces: the colour spaces, a subset of ``("rgb", "hsv", "lab", "yuv", "ycbcr",
            "yiq", "hed")`` (all seven by default), in the order of their branches.
        depth: L of every branch (``6 n + 4`` with bottleneck); 40 by default.
        growth_rate: k of every branch; 12 by default.
        compression, bottleneck, dropout_rate: the branches' DenseNet options
            (see :func:`keras_attention.models.densenet.densenet_features`); BC, no dropout.
        normalize: scale each converted channel's documented range to [-1, 1] (the
            raw ranges differ by a factor of 200 between spaces, e.g. YCbCr in [16, 240]).
        num_classes: number of classes; every branch and the combiner output this many
            logits (float32).
        input_shape: HWC; the model takes **RGB floats in [0, 1]** (no mean/std
            normalisation: the conversions need the raw colours).
        include_top: with ``False`` the model returns the branches' final feature maps
            concatenated on the channel axis (``pooling=None``) or their pooled features
            concatenated (``"avg"``/``"max"``).
        pooling: see ``include_top``; with the top, the branches' global pooling
            (``None``: average).
        name: model name; default ``colornet{L}_{k}`` (plus ``_<spaces>`` for a subset).

    Returns:
        A functional ``keras.Model``. Layer names: ``{space}_convert``, ``{space}_stem_conv``,
        ``{space}_block{b}_layer{l}_conv2``, ..., ``{space}_head_fc`` (the branch's
        logits; with several spaces they are trained only through the combiner and are
        not a classifier on their own: 5-16% top-1 each in the trained
        ``colornet40_12.cifar10``, see docs/results.md), ``branch_logits`` (their
        concatenation) and ``head_fc`` (the combiner; absent with a single space, whose
        ``{space}_head_fc`` is then the output).

    Raises:
        ValueError: unknown or repeated spaces, invalid depth or other DenseNet options.

    Reference:
        Gowda & Yuan, "ColorNet: Investigating the importance of color spaces for image
        classification", ACCV 2018, arXiv:1902.00267. Branches: Huang et al., "Densely
        Connected Convolutional Networks", CVPR 2017 (github.com/liuzhuang13/DenseNet).
    """
    spaces = _check_spaces(spaces)
    input_shape = check_model_args(num_classes, input_shape, include_top)
    blocks = cifar_blocks(depth, bottleneck)
    if name is None:
        name = f"colornet{depth}_{growth_rate}"
        if spaces != COLOR_SPACES:
            name += "_" + "_".join(spaces)
    inputs = keras.Input(shape=input_shape, name="images")
    outputs = []
    for space in spaces:
        x = ColorSpaceConversion(space=space, normalize=normalize, name=f"{space}_convert")(inputs)
        x = densenet_features(x, blocks=blocks, growth_rate=growth_rate, stem="cifar",
                              bottleneck=bottleneck, compression=compression,
                              dropout_rate=dropout_rate, prefix=f"{space}_")
        outputs.append(_branch_head(x, num_classes=num_classes, include_top=include_top,
                                    pooling=pooling, prefix=f"{space}_"))
    if len(outputs) == 1:
        output = outputs[0]
    elif include_top:
        logits = keras.layers.Concatenate(axis=-1, name="branch_logits")(outputs)
        output = keras.layers.Dense(num_classes, dtype="float32", name="head_fc")(logits)
    else:
        output = keras.layers.Concatenate(axis=-1, name="branch_features")(outputs)
    return keras.Model(inputs, output, name=name)


def _register(depth: int, growth_rate: int, space: str | None):
    name = f"colornet{depth}_{growth_rate}" + (f"_{space}" if space else "")
    branch = "Wide-DenseNet-BC" if growth_rate > 12 else "DenseNet-BC"
    if space is None:
        summary = (f"ColorNet-{depth}-{growth_rate}: seven colour spaces, one {branch}-{depth}-"
                   f"{growth_rate} each, logits combined by a dense layer (CIFAR).")
    else:
        summary = (f"ColorNet single-space baseline: {branch}-{depth}-{growth_rate} on the "
                   f"{space.upper()} conversion of the input (CIFAR).")

    def builder(**kwargs) -> keras.Model:
        if space is not None and "spaces" in kwargs:
            raise ValueError(f"{name} is the single-space {space!r} model; use "
                             f"colornet{depth}_{growth_rate}(spaces=...) for other spaces.")
        config = {"depth": depth, "growth_rate": growth_rate, "spaces": (space,) if space else COLOR_SPACES,
                  **kwargs}
        if "name" not in config:
            config["name"] = name if "spaces" not in kwargs else None
        return colornet(**config)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"""{summary}

    Input: RGB floats in [0, 1], default 32x32; 10 classes by default. Keyword arguments
    are those of :func:`keras_attention.models.colornet.colornet`. See the module docstring
    for how this model relates to the paper's.
    """
    globals()[name] = register_model(builder)


for _depth, _growth in ((40, 12), (40, 48)):
    for _space in (None, *COLOR_SPACES):
        _register(_depth, _growth, _space)
