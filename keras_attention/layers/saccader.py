"""The Saccader's hard attention: the Saccader cell and the engineered glimpse policies.

Glimpses are cells of the representation network's ``h x w`` grid (one cell = one
``rf x rf`` image patch); a glimpse's class logits are that cell's logits. Cells are flat
indices ``row * w + col``; locations follow the official convention, ``(y, x)`` in
``[-1, 1]`` (``linspace(-1, 1, h)`` over the rows, the same over the columns).

Reference: Elsayed, Kornblith & Le, "Saccader: Improving Accuracy of Hard Attention
Models for Vision", NeurIPS 2019 (Sec. 3.1-3.2, Fig. 2); google-research
``saccader/visual_attention/saccader.py`` (``SaccaderCell``, ``engineered_policies``,
``sobel_edges``) and ``saccader/utils.py`` (``position_channels``, ``onehot2d``,
``normalized_locations_to_indices``, ``sort2d``).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_attention.layers._common import check_choice, check_positive, serializable

CELL_POLICIES = ("learned", "random", "center")
ENGINEERED_POLICIES = ("ordered_logits", "sobel_mean", "sobel_var")
POLICIES = CELL_POLICIES + ENGINEERED_POLICIES
#: Added to the logits of visited cells (times the visited-cell state) before each softmax.
VISITED_LOGIT = -1e5


def cell_locations(cells, grid_shape):
    """Flat cell indices ``(...)`` -> ``(..., 2)`` float32 ``(y, x)`` grid positions in [-1, 1]."""
    h, w = grid_shape
    cells = ops.cast(cells, "int32")
    rows, cols = ops.cast(cells // w, "float32"), ops.cast(cells % w, "float32")
    y = rows * (2.0 / (h - 1)) - 1.0 if h > 1 else rows - 1.0
    x = cols * (2.0 / (w - 1)) - 1.0 if w > 1 else cols - 1.0
    return ops.stack([y, x], axis=-1)


def locations_to_cells(locations, grid_shape):
    """``(..., 2)`` ``(y, x)`` in [-1, 1] -> nearest flat cell indices (official rounding, clipped)."""
    h, w = grid_shape
    locations = ops.cast(locations, "float32")
    rows = ops.clip(ops.round((h - 1.0) * (locations[..., 0] + 1.0) / 2.0), 0, h - 1)
    cols = ops.clip(ops.round((w - 1.0) * (locations[..., 1] + 1.0) / 2.0), 0, w - 1)
    return ops.cast(rows, "int32") * w + ops.cast(cols, "int32")


def cell_boxes(cells, grid_shape, receptive_field: int, step: int):
    """Flat cell indices ``(...)`` -> ``(..., 4)`` int32 pixel boxes ``(top, left, bottom, right)``.

    The box is the cell's receptive field (bottom/right exclusive): exactly the pixels its
    logits depend on, for networks of 'valid' convolutions such as the BagNets.
    """
    w = grid_shape[1]
    cells = ops.cast(cells, "int32")
    top, left = (cells // w) * step, (cells % w) * step
    return ops.stack([top, left, top + receptive_field, left + receptive_field], axis=-1)


def gather_cells(maps, cells):
    """Values of ``maps`` ``(N, h, w, C)`` at flat cells ``(N, T)`` -> ``(N, T, C)`` (float32)."""
    _, h, w, c = maps.shape
    flat = ops.reshape(ops.cast(maps, "float32"), (-1, h * w, c))
    return ops.einsum("nts,nsc->ntc", ops.one_hot(cells, h * w, dtype="float32"), flat)


def ordered_logits_cells(logits2d, num_glimpses: int):
    """The ``ordered_logits`` policy: the top cells of the predicted class's logit map.

    The predicted class is the argmax of the spatially averaged logits; the cells are
    sorted by that class's logit, highest first.

    Args:
        logits2d: ``(N, h, w, K)`` patch logits.
        num_glimpses: ``T``; at most ``h * w`` cells are returned (as the official ``sort2d``).

    Returns:
        ``(N, min(T, h*w))`` int32 flat cell indices.
    """
    _, h, w, k = logits2d.shape
    flat = ops.reshape(ops.cast(logits2d, "float32"), (-1, h * w, k))
    predicted = ops.argmax(ops.mean(flat, axis=1), axis=-1)
    metric = ops.einsum("nsk,nk->ns", flat, ops.one_hot(predicted, k, dtype="float32"))
    _, cells = ops.top_k(metric, min(int(num_glimpses), h * w), sorted=True)
    return ops.cast(cells, "int32")


#: ``tf.image.sobel_edges``'s kernels (d/dy, d/dx), as a (3, 3, 1, 2) convolution kernel.
_SOBEL = np.stack([np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], "float32"),
                   np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "float32")], axis=-1)[:, :, None, :]
#: ``tf.image.rgb_to_grayscale``'s weights.
_GRAY = np.array([0.2989, 0.5870, 0.1140], "float32")


def sobel_cells(images, num_glimpses: int, grid_shape, receptive_field: int, step: int,
                statistic: str = "mean"):
    """The ``sobel_mean`` / ``sobel_var`` policies: the cells whose patches have the most edges.

    Edge intensity is the Euclidean norm of the two Sobel responses of the grayscale image
    (reflect padding, as ``tf.image.sobel_edges``); each cell scores the mean (or the
    unbiased variance) of the intensity over its ``rf x rf`` patch.

    The official code pools with window ``rf`` and stride ``ceil((H - rf + 1) / h)``, which
    is the network's step (8) at 224 x 224 but drifts from the cells' patches at other
    sizes; here the window is each cell's own patch (stride = the network's step), which is
    the same at 224 and exact at every size.

    Returns:
        ``(N, min(T, h*w))`` int32 flat cell indices, highest score first.
    """
    check_choice("statistic", statistic, ("mean", "var"))
    h, w = grid_shape
    x = ops.cast(images, "float32")
    gray = ops.sum(x * ops.convert_to_tensor(_GRAY), axis=-1, keepdims=True)
    gray = ops.pad(gray, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
    edges = ops.conv(gray, ops.convert_to_tensor(_SOBEL), strides=1, padding="valid")
    intensity = ops.sqrt(ops.sum(ops.square(edges), axis=-1, keepdims=True))
    mean = ops.average_pool(intensity, receptive_field, strides=step, padding="valid")
    if statistic == "mean":
        metric = mean
    else:
        n = receptive_field * receptive_field
        metric = (n / (n - 1.0)) * (ops.average_pool(ops.square(intensity), receptive_field, strides=step,
                                                     padding="valid") - ops.square(mean))
    if tuple(metric.shape[1:3]) != (h, w):
        raise ValueError(f"The Sobel scores have a {tuple(metric.shape[1:3])} grid but the logits a {(h, w)} "
                         f"grid: receptive field {receptive_field} / step {step} do not match the network.")
    _, cells = ops.top_k(ops.reshape(metric, (-1, h * w)), min(int(num_glimpses), h * w), sorted=True)
    return ops.cast(cells, "int32")


@serializable
class SaccaderCell(keras.layers.Layer):
    """The Saccader cell: T glimpse locations from mixed "what/where" features, no cell twice.

    At each step ``t``, with ``C_t`` the visited-cell state (1 where a glimpse has been):

    1. spatial logits ``s = (F w) / sqrt(channels) - 1e5 C_t``; ``a = softmax`` over the ``h*w`` cells;
    2. channel weights ``b = softmax_c(sum_cells a F)``;
    3. location logits ``l = sum_c b F - 1e5 C_t``; the location is sampled from
       ``Categorical(l)`` in training and is its argmax at inference (``policy="learned"``),
       uniform in [-1, 1]^2 (``"random"``) or the centre (``"center"``), snapped to the grid;
    4. the glimpse's class logits are the chosen cell's patch logits; ``C_{t+1} = min(C_t + onehot, 1)``.

    The learned policy never revisits a cell while ``T <= h*w`` (a visited cell's probability
    is ``exp(-1e5)`` = 0). The cell computes in float32 whatever the dtype policy (its
    own policy is float32; inputs are cast): in float16 the -1e5 mask is -inf and
    ``0 * -inf`` is NaN.

    Args:
        seed: seed of the location sampling (learned policy in training, random policy).

    Call arguments:
        features: ``(N, h, w, C)`` mixed features (static h, w, C).
        logits2d: ``(N, h, w, K)`` patch logits.
        num_glimpses: ``T`` (Python int >= 1).
        policy: ``"learned"``, ``"random"`` or ``"center"``.
        training: sample (learned policy) instead of taking the argmax.

    Returns:
        A dict of float32/int32 tensors: ``glimpse_logits`` ``(N, T, K)``, ``cells`` ``(N, T)``
        (flat indices), ``locations`` ``(N, T, 2)`` (official normalised ``(y, x)``, before the
        model's location scale), ``location_logits`` ``(N, T, h*w)`` (masked logits ``l`` of
        each step, those of the learned distribution).

    Reference: ``SaccaderCell`` in google-research ``saccader/visual_attention/saccader.py``.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, features_shape, logits2d_shape=None):
        channels = features_shape[-1]
        if channels is None:
            raise ValueError("SaccaderCell needs a known number of feature channels.")
        # tf.layers.dense(units=1, use_bias=False): Glorot uniform.
        self.kernel = self.add_weight(name="attention_weights", shape=(channels, 1),
                                      initializer="glorot_uniform")

    def call(self, features, logits2d, num_glimpses: int = 6, policy: str = "learned", training=False):
        check_choice("policy", policy, CELL_POLICIES)
        check_positive("num_glimpses", num_glimpses, integer=True)
        _, h, w, c = features.shape
        k = logits2d.shape[-1]
        cells_total = h * w
        f = ops.reshape(ops.cast(features, "float32"), (-1, cells_total, c))
        patch_logits = ops.reshape(ops.cast(logits2d, "float32"), (-1, cells_total, k))
        space_logits = ops.matmul(f, ops.cast(self.kernel, "float32"))[..., 0] / math.sqrt(c)
        state = ops.zeros_like(space_logits)
        outputs = {"glimpse_logits": [], "cells": [], "locations": [], "location_logits": []}
        for _ in range(int(num_glimpses)):
            mask = state * VISITED_LOGIT
            space_weights = ops.softmax(space_logits + mask, axis=-1)
            channel_weights = ops.softmax(ops.einsum("ns,nsc->nc", space_weights, f), axis=-1)
            location_logits = ops.einsum("nsc,nc->ns", f, channel_weights) + mask
            if policy == "learned":
                if training:
                    cells = keras.random.categorical(location_logits, 1, seed=self.seed_generator)[:, 0]
                else:
                    cells = ops.argmax(location_logits, axis=-1)
                cells = ops.cast(cells, "int32")
                locations = cell_locations(cells, (h, w))
            else:
                if policy == "random":
                    locations = keras.random.uniform(ops.shape(space_logits)[:1] + (2,), -1.0, 1.0,
                                                     seed=self.seed_generator)
                else:
                    locations = ops.zeros_like(ops.concatenate([space_logits[:, :1]] * 2, axis=-1))
                cells = locations_to_cells(locations, (h, w))
            onehot = ops.one_hot(cells, cells_total, dtype="float32")
            state = ops.minimum(state + onehot, 1.0)
            outputs["glimpse_logits"].append(ops.einsum("ns,nsk->nk", onehot, patch_logits))
            outputs["cells"].append(cells)
            outputs["locations"].append(locations)
            outputs["location_logits"].append(location_logits)
        return {key: ops.stack(values, axis=1) for key, values in outputs.items()}

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
