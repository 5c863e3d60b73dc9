"""TNet: multi-scale hard attention that processes a few patches of an image at a time.

Structure (official code, github.com/Tpap/TNet ``ImageNet/models.py``; constants of the
ImageNet command in ``README.md`` / ``results_replication.txt``):

    level 1: the whole image, resized (bilinear, no antialias) to the extractor's input
             size S (77 px), -> feature extractor (BagNet-77 of TNet's own form: no BN,
             leaky ReLU 0.2, biases) -> feature grid (N, 5, 5, C) and feature (N, D)
    location module (on stop-gradient inputs): [grid, tiled feature, 2 learned coordinate
             channels] -> 1x1 conv (D, leaky ReLU) -> 1x1 conv (1) -> L2-normalised logits
             over the 5 x 5 candidate patches -> softmax -> the top-k patches
    level l+1: each chosen patch is cropped at full resolution from its parent (a 5 x 5
             grid of overlapping patches: patch round(size * 0.34375), stride
             ceil((size - patch) / 4), the parent zero-padded to 4 * stride + patch,
             more padding at the top/left: 77 px patches, stride 37, 224 -> 225 at level
             2) and resized to S -> the same extractor -> its own grid for the next level
    every feature vector: [feature, sinusoidal encoding of (y, x, level)] -> dense (D)
    prediction: dense classifier of the mean of all feature vectors

Training (``train.py``, ``compute_total_loss``; the official ImageNet run: ``perFReg_ce_weight
0.3``, ``perFReg_reinf_weight 0.3``, ``reinfornce_reg_w 0.1``, ``BL_DECAY = 0.9``, baseline
starting at 0.5), in :meth:`TNet.compute_loss`:

    loss = 0.3 CE(final logits) + 0.7 mean_features CE(classifier(feature))
         + 0.1 * 0.3 * mean_n (r_n - b) * -(sum of log p of image n's chosen patches)
         + 0.1 * 0.7 * mean_{features of levels >= 2} (r_f - b) * -log p(the feature's patch)
    b <- 0.9 b + 0.1 (0.3 mean_n r_n + 0.7 mean_f r_f)

with rewards ``r`` = 1 for a correct top-1 prediction (the final one, or the feature's own
classifier output), ``log p = log(softmax + 1e-10)`` as the official code, the top-k patches
(not samples) as actions, in training too, as the official ``create_boolean_mask``.

Deviations, all documented where they sit: at one level the official loss is ``0.3 CE``
(the per-feature terms are skipped), here ``0.3 CE + 0.7 CE = CE`` (the same up to the
learning rate); the cross-entropy terms use the compiled loss (so a recipe's label
smoothing applies); the official spatial dropout (``num_do_layers 1``: after the last 1x1
conv, ``keep_prob 0.5``) is ``SpatialDropout2D(dropout_rate)``.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_attention.complexity import count_call_macs
from keras_attention.layers._common import check_choice, check_positive, serializable
from keras_attention.losses import class_indices, correct_prediction_rewards
from keras_attention.models._common import check_model_args, compiled_classification_loss
from keras_attention.registry import register_model

STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = 4  # the official ``multi_factor``
#: (kernel, stride, padding) of every bottleneck block, per part (official ``padding_lst``).
PARTS = {
    2: ((3, 2, "same"), (3, 1, "same"), (1, 1, "same")),
    3: ((3, 2, "same"), (3, 1, "same"), (1, 1, "same"), (1, 1, "same")),
    4: ((3, 2, "valid"), (3, 1, "same")) + ((1, 1, "same"),) * 4,
    5: ((3, 1, "valid"), (3, 1, "same"), (1, 1, "same")),
}
LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default alpha, used throughout the official code
LOG_EPS = 1e-10
PHASES = ("tnet",)


def _channels(channels: int, width_multiplier: float) -> int:
    return max(1, int(round(channels * width_multiplier)))


def _conv(filters, kernel, stride=1, padding="same", *, name):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=True,
                               kernel_initializer="glorot_normal", name=name)


def _leaky(name):
    return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name)


def _block(x, planes, kernel, stride, padding, *, prefix):
    """Official ``convolutional_block``: 1x1, kxk (stride, padding), 1x1 (x4), leaky ReLUs, no BN.

    A 'valid' kxk block crops its shortcut by ``(k - 1) / 2`` pixels on every side; the shortcut
    is a strided 1x1 conv (``'same'``) where the stride or the width changes.
    """
    in_channels = x.shape[-1]
    out_channels = EXPANSION * planes
    y = _leaky(f"{prefix}_relu1")(_conv(planes, 1, name=f"{prefix}_conv1")(x))
    y = _leaky(f"{prefix}_relu2")(_conv(planes, kernel, stride, padding, name=f"{prefix}_conv2")(y))
    y = _conv(out_channels, 1, name=f"{prefix}_conv3")(y)
    shortcut = x
    if padding == "valid" and kernel > 1:
        crop = (kernel - 1) // 2, kernel // 2
        shortcut = keras.layers.Cropping2D((crop, crop), name=f"{prefix}_crop")(shortcut)
    if stride > 1 or in_channels != out_channels:
        shortcut = _conv(out_channels, 1, stride, "same", name=f"{prefix}_shortcut")(shortcut)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return _leaky(f"{prefix}_out")(y)


def build_extractor(input_size: Sequence[int] = (77, 77), *, width_multiplier: float = 1.0,
                    feature_dim: int | None = None, dropout_rate: float = 0.0,
                    name: str = "feature_extraction") -> keras.Model:
    """TNet's feature extractor (official ``BagNet_77``): ``images -> [grid features, features]``.

    Args:
        input_size: ``(H, W)`` of the images it sees (77 x 77 in TNet; any size >= 77 for the
            full-resolution baseline).
        width_multiplier: scales the stage widths (64, 128, 256, 512) and the feature size.
        feature_dim: output features (official ``ls_dim`` = 512 = the last stage's planes);
            default ``round(512 * width_multiplier)``.
        dropout_rate: spatial dropout before the pooling (official ``1 - keep_prob``).
        name: model name.

    Returns:
        A functional model: ``(N, H, W, 3)`` -> ``[(N, h, w, 4 * planes3), (N, feature_dim)]``,
        the grid features being part 4's output at stride 2 (5 x 5 at 77 px) and the features
        the global mean of the last 1x1 conv (with leaky ReLU).

    Reference: ``BagNet_77`` and ``convolutional_block`` in Tpap/TNet ``ImageNet/models.py``.
    """
    planes = [_channels(c, width_multiplier) for c in STAGE_PLANES]
    feature_dim = feature_dim or planes[3]
    images = keras.Input((*input_size, 3), name="images")
    x = _leaky("part1_relu")(_conv(planes[0], 3, padding="valid", name="part1_conv")(images))
    grid = None
    for part, blocks in PARTS.items():
        for b, (kernel, stride, padding) in enumerate(blocks, start=1):
            x = _block(x, planes[part - 2], kernel, stride, padding, prefix=f"part{part}_block{b}")
        if part == 4:  # official: tf.strided_slice(features, ..., [1, 2, 2, 1])
            grid = keras.layers.MaxPooling2D(1, strides=2, name="grid_subsample")(x)
    x = _leaky("part6_relu")(_conv(feature_dim, 1, name="part6_conv")(x))
    if dropout_rate:
        x = keras.layers.SpatialDropout2D(dropout_rate, name="part6_dropout")(x)
    features = keras.layers.GlobalAveragePooling2D(name="part7_pool")(x)
    return keras.Model(images, [grid, features], name=name)


@serializable
class CoordinateChannels(keras.layers.Layer):
    """Appends two learned coordinate channels ``a * y + b`` and ``c * x + d`` (y, x in [-1, 1]).

    Official ``meshgrid_positional_encoding``: two ``Dense(1)`` layers (kernel ones, bias zeros)
    applied to the meshgrid. Input ``(N, h, w, C)`` -> ``(N, h, w, C + 2)``.
    """

    def build(self, input_shape):
        self.height_kernel = self.add_weight(shape=(1,), initializer="ones", name="height_kernel")
        self.height_bias = self.add_weight(shape=(1,), initializer="zeros", name="height_bias")
        self.width_kernel = self.add_weight(shape=(1,), initializer="ones", name="width_kernel")
        self.width_bias = self.add_weight(shape=(1,), initializer="zeros", name="width_bias")

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        dtype = self.compute_dtype
        ys = ops.linspace(-1.0, 1.0, h) if h > 1 else ops.convert_to_tensor([-1.0])  # tf.linspace(-1, 1, 1)
        xs = ops.linspace(-1.0, 1.0, w) if w > 1 else ops.convert_to_tensor([-1.0])
        ys = ops.cast(ys, dtype) * ops.cast(self.height_kernel, dtype) + ops.cast(self.height_bias, dtype)
        xs = ops.cast(xs, dtype) * ops.cast(self.width_kernel, dtype) + ops.cast(self.width_bias, dtype)
        grid_y = ops.broadcast_to(ops.reshape(ys, (1, h, 1, 1)), (1, h, w, 1))
        grid_x = ops.broadcast_to(ops.reshape(xs, (1, 1, w, 1)), (1, h, w, 1))
        coords = ops.concatenate([grid_y, grid_x], axis=-1)
        coords = ops.tile(coords, (ops.shape(x)[0], 1, 1, 1))
        return ops.concatenate([x, ops.cast(coords, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


@serializable
class L2Normalize(keras.layers.Layer):
    """``x / ||x||_2`` over the last axis, in float32 (official ``tf.linalg.normalize``)."""

    def call(self, x):
        x = ops.cast(x, "float32")
        return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


def location_network(grid_shape, feature_dim: int, hidden: int, name: str = "location_module") -> keras.Model:
    """Official ``location_module_cls``: ``[grid (N, h, w, C), features (N, D)] -> logits (N, h*w)``.

    The features are tiled over the grid and concatenated to it with two learned coordinate
    channels; a 1x1 conv (``hidden``, leaky ReLU 0.2) and a 1x1 conv (1) give one logit per
    cell, L2-normalised over the cells (float32); the softmax is the caller's.
    """
    h, w, _ = grid_shape
    grid = keras.Input(tuple(grid_shape), name="grid_features")
    features = keras.Input((feature_dim,), name="features")
    tiled = keras.layers.Reshape((1, 1, feature_dim), name="features_2d")(features)
    tiled = keras.layers.UpSampling2D((h, w), name="features_tiled")(tiled)
    x = keras.layers.Concatenate(name="concat")([grid, tiled])
    x = CoordinateChannels(name="coordinates")(x)
    x = _leaky("relu")(_conv(hidden, 1, name="conv")(x))
    x = _conv(1, 1, name="output_linear")(x)
    x = keras.layers.Reshape((h * w,), name="flatten")(x)
    logits = L2Normalize(name="l2_normalize")(x)
    return keras.Model([grid, features], logits, name=name)


def sinusoidal_encoding(pos_y, pos_x, level, channels: int, max_inv_freq: float = 100.0):
    """Sinusoidal encoding of ``(y, x, level)`` triplets (official ``create_positional_vectors``).

    ``F = channels // 6`` frequencies ``exp(-i log(max_inv_freq) / (F - 1))``; the block of
    dimension ``d`` (y, x, level) is ``[sin(p w), cos(p w)]`` at channels ``2 F d ... 2 F (d+1)``;
    the last ``channels - 6 F`` channels are zero.

    Args:
        pos_y, pos_x, level: ``(n,)`` float positions (grid cells at the level's resolution:
            a child of cell ``(y, x)`` at cell ``(i, j)`` of its grid is ``(5 y + i, 5 x + j)``).
        channels: output width (the feature size).

    Returns:
        ``(n, channels)`` float32.
    """
    num_freq = channels // 6
    if num_freq < 2:
        raise ValueError(f"sinusoidal_encoding needs channels >= 12 (2 frequencies), received {channels}.")
    increment = math.log(1.0 / max_inv_freq) / (num_freq - 1)
    freqs = ops.exp(ops.arange(num_freq, dtype="float32") * increment)
    blocks = []
    for p in (pos_y, pos_x, level):
        scaled = ops.cast(ops.reshape(p, (-1, 1)), "float32") * freqs[None, :]
        blocks += [ops.sin(scaled), ops.cos(scaled)]
    out = ops.concatenate(blocks, axis=-1)
    pad = channels - 6 * num_freq
    if pad:
        out = ops.pad(out, ((0, 0), (0, pad)))
    return out


def grid_geometry(size: int, grid: int = 5, overlap: float = 0.34375) -> tuple[int, int, int, int]:
    """``(patch, stride, pad_before, pad_after)`` of a ``grid``-cell row of patches over ``size`` px.

    As the official ``create_masked_batch``: ``patch = round(size * overlap)`` (NumPy
    rounding), ``stride = ceil((size - patch) / (grid - 1))``, padded to
    ``(grid - 1) * stride + patch`` with the extra pixel before. 224 -> (77, 37, 1, 0).
    """
    patch = int(np.round(size * overlap))
    if patch < 1:
        raise ValueError(f"A {size}-px image gives empty patches (overlap {overlap}); use fewer levels.")
    stride = int(math.ceil((size - patch) / (grid - 1))) if grid > 1 else 0
    total = (grid - 1) * stride + patch - size
    before = int(math.ceil(total / 2))
    return patch, stride, before, total - before


def extract_patches(images, cells, grid: int, geometry_y, geometry_x):
    """Crops the chosen cells of a ``grid x grid`` patch grid: ``(n, H, W, C)``, ``(n, k)`` -> ``(n*k, p, p, C)``.

    Official ``create_masked_batch`` (zero padding, then ``extract_patches`` 'VALID'); the
    patches of image ``i`` are rows ``i*k ... i*k + k - 1``, in the order of ``cells``.
    """
    (py, sy, by, ay), (px, sx, bx, ax) = geometry_y, geometry_x
    if by or ay or bx or ax:
        images = ops.pad(images, ((0, 0), (by, ay), (bx, ax), (0, 0)))
    patches = [images[:, i * sy:i * sy + py, j * sx:j * sx + px, :] for i in range(grid) for j in range(grid)]
    patches = ops.stack(patches, axis=1)  # (n, grid*grid, p, p, C)
    n = ops.shape(cells)[0]
    flat = ops.reshape(patches, (-1, py, px, images.shape[-1]))
    index = ops.reshape(ops.arange(n, dtype="int32")[:, None] * (grid * grid) + ops.cast(cells, "int32"), (-1,))
    return ops.take(flat, index, axis=0)


def baseline_reinforce_loss(log_probs, rewards, baseline):
    """REINFORCE with a baseline: ``mean((r - b) * -log p)`` (advantage without gradient).

    Args:
        log_probs: ``(n,)`` log-probabilities of the actions taken (summed per example where
            one reward covers several actions).
        rewards: ``(n,)`` rewards.
        baseline: scalar baseline (the official EMA of the rewards).

    Returns:
        Scalar float32; its gradient is zero when every reward equals the baseline.

    Reference: Tpap/TNet ``ImageNet/train.py`` ``compute_total_loss``; Williams 1992.
    """
    advantage = ops.stop_gradient(ops.cast(rewards, "float32") - ops.cast(baseline, "float32"))
    return ops.mean(advantage * -ops.cast(log_probs, "float32"))


@serializable
class TNet(keras.Model):
    """TNet (Papadopoulos, Korus & Memon, NeurIPS 2021) as a Keras model.

    Args:
        num_classes: classes (>= 1).
        input_shape: ``(H, W, 3)``, static, each side >= the extractor's input size.
        width_multiplier: scales the extractor's widths and the feature size (1.0: official,
            512-d features).
        extractor_size: the extractor's input side S (77, official ``base_res``); it must give
            a ``grid x grid`` feature grid (77 px -> 5 x 5 for the BagNet-77 form).
        grid: patches per side of the location grid (5, official ``num_patches_y/x``).
        overlap: patch side / parent side (0.34375, official ``overlap``).
        num_levels: processing levels (2, official ``num_res_levels``); any number >= 1 per call.
        patches_per_level: patches chosen per location grid at each level transition
            (``num_levels - 1`` entries; official ``loc_per_grid`` [3]); an int means the same
            at every level; per call too.
        dropout_rate: spatial dropout in the extractor (0.5, official ``1 - keep_prob``).
        ce_weight, reinforce_weight, reinforce_final_weight: the loss weights (0.3, 0.1, 0.3:
            official ``perFReg_ce_weight``, ``reinfornce_reg_w``, ``perFReg_reinf_weight``).
        baseline_decay: the reward baseline's EMA decay (0.9, official ``BL_DECAY``).
        training_phase: ``"tnet"`` (the only phase; kept for the recipes' protocol).

    Call: ``model(images, training=False, num_levels=None, patches_per_level=None)`` ->
    ``(N, K)`` float32 logits. :meth:`glimpse` also returns the processed patches.

    Raises:
        ValueError: a bad size, count or weight; an ``extractor_size`` whose grid is not
            ``grid x grid``.

    Reference: Papadopoulos, Korus & Memon, "Hard-Attention for Scalable Image
    Classification", NeurIPS 2021, Sec. 3; Tpap/TNet ``ImageNet/models.py`` (``TNet``) and
    ``ImageNet/train.py`` (``compute_total_loss``).
    """

    def __init__(self, num_classes: int = 1000, input_shape: Sequence[int] = (224, 224, 3), *,
                 width_multiplier: float = 1.0, extractor_size: int = 77, grid: int = 5, overlap: float = 0.34375,
                 num_levels: int = 2, patches_per_level: int | Sequence[int] = (3,), dropout_rate: float = 0.5,
                 ce_weight: float = 0.3, reinforce_weight: float = 0.1, reinforce_final_weight: float = 0.3,
                 baseline_decay: float = 0.9, training_phase: str = "tnet", name: str = "tnet", **kwargs):
        super().__init__(name=name, **kwargs)
        input_shape = check_model_args(num_classes, input_shape, True)
        if any(s is None for s in input_shape):
            raise ValueError(f"TNet needs a static `input_shape`, received {input_shape}.")
        check_positive("width_multiplier", width_multiplier)
        for arg, value in (("extractor_size", extractor_size), ("grid", grid), ("num_levels", num_levels)):
            check_positive(arg, value, integer=True)
        if not 0.0 < overlap <= 1.0:
            raise ValueError(f"`overlap` must be in (0, 1], received {overlap!r}.")
        for arg, value in (("ce_weight", ce_weight), ("reinforce_final_weight", reinforce_final_weight),
                           ("baseline_decay", baseline_decay), ("dropout_rate", dropout_rate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{arg}` must be in [0, 1], received {value!r}.")
        if reinforce_weight < 0:
            raise ValueError(f"`reinforce_weight` must be >= 0, received {reinforce_weight!r}.")
        check_choice("training_phase", training_phase, PHASES)
        self.num_classes = num_classes
        self.image_shape = tuple(int(s) for s in input_shape)
        if min(self.image_shape[:2]) < extractor_size:
            raise ValueError(f"TNet's input must be at least the extractor's size {extractor_size} per side, "
                             f"received {self.image_shape}.")
        self.width_multiplier = width_multiplier
        self.extractor_size = int(extractor_size)
        self.grid = int(grid)
        self.overlap = float(overlap)
        self.num_levels = int(num_levels)
        self.patches_per_level = self._patches(self.num_levels, patches_per_level)
        self.dropout_rate = float(dropout_rate)
        self.ce_weight = float(ce_weight)
        self.reinforce_weight = float(reinforce_weight)
        self.reinforce_final_weight = float(reinforce_final_weight)
        self.baseline_decay = float(baseline_decay)
        self.training_phase = training_phase
        self.feature_dim = _channels(STAGE_PLANES[3], width_multiplier)

        self.extractor = build_extractor((extractor_size, extractor_size), width_multiplier=width_multiplier,
                                         dropout_rate=dropout_rate)
        grid_shape = tuple(self.extractor.outputs[0].shape[1:])
        if grid_shape[:2] != (grid, grid):
            raise ValueError(f"An extractor input of {extractor_size} px gives a {grid_shape[0]} x {grid_shape[1]} "
                             f"feature grid, not the {grid} x {grid} location grid; use extractor_size=77 for grid=5.")
        self.location_module = location_network(grid_shape, self.feature_dim, self.feature_dim)
        self.positional_fusion = keras.layers.Dense(self.feature_dim, kernel_initializer="glorot_normal",
                                                    name="positional_fusion")
        self.classifier = keras.layers.Dense(num_classes, kernel_initializer="glorot_normal", dtype="float32",
                                             name="classifier")
        self.build((None, *self.image_shape))

    def build(self, input_shape=None):
        if not self.positional_fusion.built:
            self.positional_fusion.build((None, 2 * self.feature_dim))
            self.classifier.build((None, self.feature_dim))
            # the reward baseline (official ``baseline_var``, 0.5), updated in compute_loss
            self.baseline = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.5),
                                            trainable=False, name="baseline", dtype="float32")
        self.built = True

    # ------------------------------------------------------------------ geometry
    def _patches(self, num_levels, patches_per_level):
        """The patches chosen at each of the ``num_levels - 1`` transitions (a tuple of ints)."""
        if isinstance(patches_per_level, (int, np.integer)):
            patches = [int(patches_per_level)] * (num_levels - 1)
        else:
            patches = [int(p) for p in patches_per_level]
            if not patches and num_levels > 1:
                raise ValueError(f"`patches_per_level` is empty but num_levels={num_levels}.")
            # fewer entries than transitions: the last one repeats (more levels at inference)
            patches = (patches + patches[-1:] * num_levels)[:num_levels - 1] if patches else []
        cells = self.grid * self.grid if hasattr(self, "grid") else None
        for p in patches:
            if p < 1 or (cells and p > cells):
                raise ValueError(f"`patches_per_level` entries must be in [1, {cells}], received {patches_per_level!r}.")
        return tuple(patches)

    def level_sizes(self, num_levels: int | None = None) -> list[tuple[int, int]]:
        """Pixel size ``(h, w)`` of the images processed at each level (level 1: the input)."""
        sizes = [tuple(self.image_shape[:2])]
        for _ in range((num_levels or self.num_levels) - 1):
            h, w = sizes[-1]
            sizes.append((grid_geometry(h, self.grid, self.overlap)[0], grid_geometry(w, self.grid, self.overlap)[0]))
        return sizes

    # ------------------------------------------------------------------ inference
    def call(self, images, training=False, num_levels=None, patches_per_level=None):
        outputs = self._forward(images, training, num_levels, patches_per_level, per_feature=bool(training))
        if training:  # read by compute_loss in the same step (as Saccader)
            object.__setattr__(self, "_train_outputs", outputs)
        return outputs["logits"]

    def _extract(self, images, training):
        size = (self.extractor_size, self.extractor_size)
        if tuple(images.shape[1:3]) != size:  # official: tf.image.resize bilinear, antialias=False
            images = ops.image.resize(images, size, interpolation="bilinear", antialias=False)
        return self.extractor(images, training=training)

    def glimpse(self, images, training=False, num_levels: int | None = None,
                patches_per_level: int | Sequence[int] | None = None) -> dict:
        """Runs the model and returns every processed patch.

        Args:
            images: ``(N, H, W, 3)`` at the model's input size.
            training: training mode (dropout).
            num_levels: processing levels (default the model's); >= 1.
            patches_per_level: patches chosen per grid at each transition (default the model's;
                its last entry repeats for extra levels).

        Returns:
            A dict: ``logits`` ``(N, K)`` float32; ``glimpse_logits`` ``(N, T, K)`` the classifier
            on each feature vector (``T = 1 + k1 + k1 k2 + ...``, level by level, image-major);
            ``boxes`` ``(N, T, 4)`` float32 pixel boxes (top, left, bottom, right; exclusive)
            of every processed patch in the input's coordinates, clipped to the image (level 1
            is the whole image; the zero padding of a grid is outside it); ``levels`` ``(N, T)``
            int32 (1, 2, ...); ``cells`` ``(N, T)`` int32 the patch's cell in its parent's grid
            (-1 at level 1); ``log_probs`` ``(N, T)`` float32 ``log(p + 1e-10)`` of each chosen
            patch (0 at level 1); ``location_logits``: one ``(N * P_l, grid^2)`` per transition;
            ``features`` ``(N, T, D)``.

        Raises:
            ValueError: a bad ``num_levels`` / ``patches_per_level``.
        """
        return self._forward(images, training, num_levels, patches_per_level, per_feature=True)

    def _forward(self, images, training, num_levels, patches_per_level, per_feature):
        """The glimpse dict; ``glimpse_logits`` only with ``per_feature`` (inference skips them)."""
        num_levels = int(num_levels or self.num_levels)
        check_positive("num_levels", num_levels, integer=True)
        patches = self._patches(num_levels, self.patches_per_level if patches_per_level is None
                                else patches_per_level)
        h, w = self.image_shape[:2]
        level_images = ops.cast(images, self.compute_dtype)
        batch = ops.shape(images)[0]
        zeros = ops.zeros((batch,), "float32")
        pos_y, pos_x = zeros, zeros
        box = ops.stack([zeros, zeros, zeros + h, zeros + w], axis=-1)  # unclipped boxes (n, 4)
        per_level = []  # (features, boxes, cells, log_probs, level) with n = N * P rows, image-major
        cells_cur, logp_cur = zeros - 1.0, zeros
        location_logits = []
        count = 1
        for level in range(num_levels):
            grid_features, features = self._extract(level_images, training)
            encoding = sinusoidal_encoding(pos_y, pos_x, ops.full_like(pos_y, float(level)), self.feature_dim)
            fused = self.positional_fusion(ops.concatenate([features, ops.cast(encoding, features.dtype)], axis=-1))
            per_level.append((fused, box, cells_cur, logp_cur, count))
            if level == num_levels - 1:
                break
            k = patches[level]
            logits = self.location_module([ops.stop_gradient(grid_features), ops.stop_gradient(features)],
                                          training=training)
            location_logits.append(logits)
            probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
            chosen_probs, cells = ops.top_k(probs, k)  # official: top-k in training too
            cells = ops.cast(cells, "int32")
            size_h, size_w = level_images.shape[1], level_images.shape[2]
            gy = grid_geometry(size_h, self.grid, self.overlap)
            gx = grid_geometry(size_w, self.grid, self.overlap)
            level_images = extract_patches(level_images, cells, self.grid, gy, gx)
            rows = ops.cast(cells // self.grid, "float32")
            cols = ops.cast(cells % self.grid, "float32")
            pos_y = ops.reshape(pos_y[:, None] * self.grid + rows, (-1,))
            pos_x = ops.reshape(pos_x[:, None] * self.grid + cols, (-1,))
            top = box[:, 0:1] - gy[2] + rows * gy[1]
            left = box[:, 1:2] - gx[2] + cols * gx[1]
            box = ops.reshape(ops.stack([top, left, top + gy[0], left + gx[0]], axis=-1), (-1, 4))
            cells_cur = ops.reshape(ops.cast(cells, "float32"), (-1,))
            logp_cur = ops.reshape(ops.log(chosen_probs + LOG_EPS), (-1,))
            zeros = ops.zeros_like(pos_y)
            count *= k

        def per_image(t, count, tail):
            return ops.reshape(t, (-1, count, *tail))

        features = ops.concatenate([per_image(f, c, (self.feature_dim,)) for f, _, _, _, c in per_level], axis=1)
        boxes = ops.concatenate([per_image(b, c, (4,)) for _, b, _, _, c in per_level], axis=1)
        cells = ops.concatenate([per_image(x, c, ()) for _, _, x, _, c in per_level], axis=1)
        log_probs = ops.concatenate([per_image(x, c, ()) for _, _, _, x, c in per_level], axis=1)
        levels = np.concatenate([np.full((c,), i + 1, "int32") for i, (*_, c) in enumerate(per_level)])
        limits = ops.convert_to_tensor([h, w, h, w], "float32")
        boxes = ops.minimum(ops.maximum(boxes, 0.0), limits)
        outputs = {
            "logits": self.classifier(ops.mean(ops.cast(features, "float32"), axis=1)),
            "boxes": boxes,
            "levels": ops.broadcast_to(ops.convert_to_tensor(levels)[None, :], ops.shape(cells)),
            "cells": ops.cast(cells, "int32"),
            "log_probs": log_probs,
            "location_logits": location_logits,
            "features": features,
        }
        if per_feature:
            outputs["glimpse_logits"] = self.classifier(features)
        return outputs

    # ------------------------------------------------------------------ training
    def set_training_phase(self, phase: str) -> None:
        """TNet trains in one phase (``"tnet"``); kept for the recipes' protocol."""
        check_choice("training_phase", phase, PHASES)
        self.training_phase = phase
        self.train_function = None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The official TNet loss (module docstring); outside training, the compiled loss of the logits.

        Also updates the reward baseline (an EMA, official ``BL_DECAY``) after using it.
        """
        outputs = self.__dict__.pop("_train_outputs", None)
        if not training or outputs is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        extra = [self._aggregate_additional_loss(loss) for loss in self.losses]
        loss, rewards_mean = tnet_loss(
            outputs, y, self.num_classes, self.baseline, ce=functools.partial(compiled_classification_loss, self),
            sample_weight=sample_weight, ce_weight=self.ce_weight, reinforce_weight=self.reinforce_weight,
            reinforce_final_weight=self.reinforce_final_weight)
        if rewards_mean is not None:
            self.baseline.assign(self.baseline * self.baseline_decay + rewards_mean * (1.0 - self.baseline_decay))
        return ops.sum(ops.stack([ops.cast(loss, "float32")] + [ops.cast(e, "float32") for e in extra]))

    def initialize_from(self, source: keras.Model) -> None:
        """Takes all weights of a TNet of the same configuration (``train --init-from``)."""
        if not isinstance(source, TNet) or [tuple(v.shape) for v in source.weights] != \
                [tuple(v.shape) for v in self.weights]:
            raise ValueError(f"{source.name!r} is not a TNet of this configuration (width, classes).")
        self.set_weights(source.get_weights())

    def get_config(self):
        return {"num_classes": self.num_classes, "input_shape": list(self.image_shape),
                "width_multiplier": self.width_multiplier, "extractor_size": self.extractor_size,
                "grid": self.grid, "overlap": self.overlap, "num_levels": self.num_levels,
                "patches_per_level": list(self.patches_per_level), "dropout_rate": self.dropout_rate,
                "ce_weight": self.ce_weight, "reinforce_weight": self.reinforce_weight,
                "reinforce_final_weight": self.reinforce_final_weight, "baseline_decay": self.baseline_decay,
                "training_phase": self.training_phase, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def tnet_loss(outputs: dict, y, num_classes: int, baseline, *, ce=None, sample_weight=None, ce_weight: float = 0.3,
              reinforce_weight: float = 0.1, reinforce_final_weight: float = 0.3):
    """The official TNet loss of one batch (module docstring).

    Args:
        outputs: :meth:`TNet.glimpse`'s dict (``logits``, ``glimpse_logits``, ``log_probs``).
        y: labels, sparse ``(N,)`` or one-hot ``(N, K)``.
        num_classes: K.
        baseline: scalar reward baseline.
        ce: ``ce(y, logits, sample_weight) -> scalar`` (default sparse cross-entropy of the labels).
        sample_weight: ``(N,)`` or None (cross-entropy terms only).
        ce_weight, reinforce_weight, reinforce_final_weight: official ``perFReg_ce_weight``,
            ``reinfornce_reg_w``, ``perFReg_reinf_weight``.

    Returns:
        ``(loss, reward_mean)``: the scalar float32 loss and the baseline's EMA target
        ``reinforce_final_weight * mean(r_final) + (1 - reinforce_final_weight) * mean(r_features)``
        (None with one level: no locations, no baseline step).
    """
    labels = class_indices(y, num_classes)
    if ce is None:
        ce = lambda yy, lg, sw: ops.mean(keras.losses.sparse_categorical_crossentropy(  # noqa: E731
            class_indices(yy, num_classes), lg, from_logits=True))
    logits, glimpse_logits, log_probs = outputs["logits"], outputs["glimpse_logits"], outputs["log_probs"]
    steps = glimpse_logits.shape[1]
    repeat = lambda t: None if t is None else ops.repeat(t, steps, axis=0)  # noqa: E731
    flat_logits = ops.reshape(glimpse_logits, (-1, num_classes))
    loss = ce_weight * ce(y, logits, sample_weight) + (1.0 - ce_weight) * ce(repeat(y), flat_logits,
                                                                              repeat(sample_weight))
    if steps == 1:
        return loss, None
    rewards = correct_prediction_rewards(logits, labels)
    feature_rewards = correct_prediction_rewards(flat_logits, repeat(labels))
    feature_rewards = ops.reshape(feature_rewards, (-1, steps))[:, 1:]
    feature_log_probs = log_probs[:, 1:]
    final_term = baseline_reinforce_loss(ops.sum(feature_log_probs, axis=1), rewards, baseline)
    feature_term = baseline_reinforce_loss(ops.reshape(feature_log_probs, (-1,)),
                                           ops.reshape(feature_rewards, (-1,)), baseline)
    loss = loss + reinforce_weight * (reinforce_final_weight * final_term + (1.0 - reinforce_final_weight) * feature_term)
    reward_mean = reinforce_final_weight * ops.mean(rewards) + (1.0 - reinforce_final_weight) * ops.mean(feature_rewards)
    return loss, ops.stop_gradient(reward_mean)


# ---------------------------------------------------------------------- complexity
def tnet_macs(model: TNet, num_levels: int | None = None, patches_per_level=None) -> dict:
    """Multiply-accumulates per image actually spent by TNet, and by the extractor on the full image.

    Args:
        model: a TNet.
        num_levels, patches_per_level: as :meth:`TNet.glimpse` (default the model's).

    Returns:
        A dict of ints: ``total`` (every conv / dense of one forward pass of one image, counted
        by running it), ``extractor`` (one extractor pass at its input size), ``passes``
        (``1 + k1 + k1 k2 + ...``), ``location`` (one location module), ``fusion_and_head``
        (the positional fusion of every feature and the classifier) and ``full_resolution``
        (the same extractor and a classifier on the whole image at the input resolution: the
        paper's baseline CNN, official ``Baseline_CNN``). ``total == passes * extractor +
        (levels' grids) * location + fusion_and_head``.
    """
    num_levels = int(num_levels or model.num_levels)
    patches = model._patches(num_levels, model.patches_per_level if patches_per_level is None else patches_per_level)
    image = np.zeros((1, *model.image_shape), "float32")
    total = count_call_macs(lambda: model(image, num_levels=num_levels, patches_per_level=patches))
    passes = sum(math.prod(patches[:i]) for i in range(num_levels))
    extractor = count_call_macs(lambda: model.extractor(np.zeros((1, model.extractor_size, model.extractor_size, 3),
                                                                   "float32")))
    grid_shape = model.location_module.inputs[0].shape[1:]
    location = count_call_macs(lambda: model.location_module(
        [np.zeros((1, *grid_shape), "float32"), np.zeros((1, model.feature_dim), "float32")]))
    grids = passes - math.prod(patches) if num_levels > 1 else 0  # every level but the last has grids
    full = build_extractor(model.image_shape[:2], width_multiplier=model.width_multiplier, name="full_resolution")
    head = model.feature_dim * model.num_classes
    full_macs = count_call_macs(lambda: full(np.zeros((1, *model.image_shape), "float32"))) + head
    return {"total": total, "extractor": extractor, "passes": passes, "location": location,
            "fusion_and_head": total - passes * extractor - grids * location, "full_resolution": full_macs}


def tnet_bagnet77(num_classes: int = 1000, input_shape: Sequence[int] = (224, 224, 3), include_top: bool = True,
                  pooling: str | None = None, **kwargs) -> TNet:
    """TNet with the official BagNet-77 extractor at 77 px, 5 x 5 grid, 2 levels, 3 patches (ImageNet, 224 px).

    Arguments are those of :class:`TNet`; ``include_top`` must be True and ``pooling`` None.
    """
    if not include_top or pooling is not None:
        raise ValueError(f"TNet is a classifier: `include_top` must be True and `pooling` None, "
                         f"received include_top={include_top!r}, pooling={pooling!r}.")
    return TNet(num_classes, input_shape, **kwargs)


def tnet_bagnet77_small(num_classes: int = 10, input_shape: Sequence[int] = (128, 128, 3), include_top: bool = True,
                        pooling: str | None = None, **kwargs) -> TNet:
    """CPU-size TNet: width 0.125 (64-d features), 128 px input, no dropout; otherwise the official TNet.

    The extractor still sees 77 px (its 5 x 5 grid needs it), so level-2 patches (44 px at a
    128 px input) are upsampled to 77 px; arguments are those of :class:`TNet`.
    """
    kwargs.setdefault("width_multiplier", 0.125)
    kwargs.setdefault("dropout_rate", 0.0)
    kwargs.setdefault("name", "tnet_small")
    return tnet_bagnet77(num_classes, input_shape, include_top, pooling, **kwargs)


register_model(tnet_bagnet77)
register_model(tnet_bagnet77_small)
