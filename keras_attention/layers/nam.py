"""Normalization-based Attention Module (NAM) and its L1 sparsity penalty."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from keras_attention.layers._common import check_image_shape, serializable, spatial_mean, sublayer_kwargs
from keras_attention.layers.factory import register_attention

DEFAULT_SPARSITY = 1e-4  # the official train_cifar100.py: --s, "scale sparse rate", 0.0001

# BatchNorm settings of the official code: PyTorch defaults (eps 1e-5, momentum 0.1).
_BN_KWARGS = {"epsilon": 1e-5, "momentum": 0.9}


def _check_sparsity(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`sparsity` must be a number >= 0 or None, received {value!r} "
                        f"of type {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"`sparsity` must be >= 0 (0 or None: no penalty), received {value!r}.")
    return value


@serializable
class NAMSparsity(keras.regularizers.Regularizer):
    """L1 sparsity penalty on BatchNorm scale factors: ``λ Σ_i |γ_i|`` (NAM paper Eq. 4).

    The official training script adds the subgradient ``λ sign(γ)`` to the gradient of
    every NAM BatchNorm weight (``updateBN``), which is the gradient of this penalty.
    Computed in float32.

    Args:
        l1: λ >= 0, the penalty's weight (1e-4 in the official code).
    """

    def __init__(self, l1: float = DEFAULT_SPARSITY):
        if isinstance(l1, bool) or not isinstance(l1, numbers.Real) or l1 < 0:
            raise ValueError(f"`l1` must be a number >= 0, received {l1!r}.")
        self.l1 = float(l1)

    def __call__(self, x):
        return self.l1 * ops.sum(ops.abs(ops.cast(x, "float32")))

    def get_config(self):
        return {"l1": self.l1}


def _importance(gamma, dtype):
    """``|γ| / Σ|γ|`` without gradient (the official code reads ``bn.weight.data``)."""
    weights = ops.abs(ops.cast(gamma, "float32"))
    return ops.cast(ops.stop_gradient(weights / ops.sum(weights)), dtype)


@register_attention("nam")
class NAM(keras.layers.Layer):
    """NAM: attention weights from the scale factors of the layer's own BatchNorm.

    Channel branch (paper Eq. 1-2, official ``Channel_Att``):
    ``M_c = sigmoid(w ⊙ BN(x)) ⊙ x`` with ``BN(x) = γ x̂ + β`` over channels and
    ``w_i = |γ_i| / Σ_j |γ_j|`` (no gradient flows through w; γ still learns through
    ``BN(x)``). The gate multiplies the block's input x, as the official code's
    ``torch.sigmoid(x) * residual``.

    Optional pixel branch (``spatial=True``; paper v1 Eq. 3, official ``Spatial_Att`` in
    the first commits of MODELS/attention.py, removed later): the same on the spatial
    positions: each of the H*W positions is one BatchNorm "feature" with its own λ,
    normalised over the batch and the channels, ``w_j = |λ_j| / Σ|λ|``, and
    ``M_s = sigmoid(w ⊙ BN_s(M_c)) ⊙ M_c``. It has one weight per position, so it needs H
    and W at build time and only accepts that input size.

    The L1 sparsity penalty ``sparsity * Σ|γ|`` (paper Eq. 4) is attached to the
    BatchNorm scale(s) as a :class:`NAMSparsity` regularizer, so ``model.fit`` adds it to
    the loss (``layer.losses`` holds it). The paper penalises both γ and λ; the official
    code (which kept only the channel branch) penalises γ.

    Differences from the official code's history: one revision had a ReLU before the
    sigmoid; the final code (and this layer) has none.

    Args:
        spatial: also apply the pixel branch (False, as the official final code and the
            paper's ImageNet/CIFAR results).
        sparsity: λ >= 0 of the L1 penalty on the BatchNorm scales (1e-4 as the official
            code); 0 or None: no penalty.
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Input: ``(N, H, W, C)`` float tensor, any H and W (``spatial=True``: the H, W seen at
    build time). Output: same shape and dtype (the layer's compute dtype).

    Maps (``call_with_maps``): ``"channel_weights"`` ``(N, C)``, the channel weights
    ``w = |γ| / Σ|γ|`` (the same for every image; they sum to 1), and ``"mean_gate"``
    ``(N, C)``, the channel gate ``sigmoid(w ⊙ BN(x))`` averaged over H and W, in (0, 1);
    with ``spatial=True`` also ``"pixel_weights"`` ``(N, H, W)`` (``|λ| / Σ|λ|``, the same
    for every image) and ``"mean_pixel_gate"`` ``(N, H, W)`` (the pixel gate averaged over
    the channels).

    Raises:
        ValueError: negative ``sparsity``; input not 4D or with unknown channels; unknown
            H or W with ``spatial=True``. TypeError: ``sparsity`` or ``spatial`` of a wrong
            type; reduction arguments (NAM has no bottleneck).

    Reference:
        Liu, Shao, Zhang, Cai, Zhang. "NAM: Normalization-based Attention Module", NeurIPS
        2021 Workshop (arXiv:2111.12419), Sec. 3, Eq. 1-4; official code
        github.com/Christian-lyc/NAM, MODELS/attention.py and train_cifar100.py (updateBN).
    """

    MAPS = {"channel_weights": "(N, C) |gamma| / sum |gamma| (image-independent)",
            "mean_gate": "(N, C) channel gate averaged over H, W, in (0, 1)",
            "pixel_weights": "(N, H, W) |lambda| / sum |lambda| (spatial=True only)",
            "mean_pixel_gate": "(N, H, W) pixel gate averaged over C, in (0, 1) (spatial=True only)"}

    def __init__(self, spatial: bool = False, sparsity: float | None = DEFAULT_SPARSITY, **kwargs):
        for key in ("reduction_ratio", "reduction_channels", "reduction_divisor"):
            if key in kwargs:
                raise TypeError(f"NAM has no bottleneck and takes no `{key}`; received {key}="
                                f"{kwargs[key]!r}. Do not pass reduction arguments to NAM.")
        super().__init__(**kwargs)
        if not isinstance(spatial, bool):
            raise TypeError(f"`spatial` must be a bool, received {spatial!r}.")
        self.spatial = spatial
        self.sparsity = _check_sparsity(sparsity)

    def _regularizer(self):
        return NAMSparsity(self.sparsity) if self.sparsity else None

    def build(self, input_shape):
        channels = check_image_shape(type(self).__name__, input_shape)
        self.channel_norm = keras.layers.BatchNormalization(
            axis=-1, gamma_regularizer=self._regularizer(), **_BN_KWARGS,
            **sublayer_kwargs(self, "channel_bn"))
        self.channel_norm.build(tuple(input_shape))
        self.pixel_norm = None
        if self.spatial:
            height, width = input_shape[1], input_shape[2]
            if height is None or width is None:
                raise ValueError(
                    "NAM(spatial=True) has one BatchNorm scale per spatial position, so it needs "
                    f"the height and width when it is built; received input shape "
                    f"{tuple(input_shape)}. Give the model a fixed input size or use spatial=False.")
            self.pixel_norm = keras.layers.BatchNormalization(
                axis=1, gamma_regularizer=self._regularizer(), **_BN_KWARGS,
                **sublayer_kwargs(self, "pixel_bn"))
            self.pixel_norm.build((None, int(height) * int(width), channels))
            self.input_spec = keras.InputSpec(ndim=4, axes={1: int(height), 2: int(width),
                                                            -1: channels})
        self.built = True

    def call(self, inputs, training=None):
        return self.call_with_maps(inputs, training)[0]

    def call_with_maps(self, inputs, training=None, queries=None):
        """``(outputs, {"channel_weights", "mean_gate"[, "pixel_weights", "mean_pixel_gate"]})``;
        see :mod:`keras_attention.layers._common`."""
        normed = self.channel_norm(inputs, training=training)
        channel_weights = _importance(self.channel_norm.gamma, normed.dtype)
        channel_gate = ops.sigmoid(normed * channel_weights)
        out = channel_gate * inputs
        batch = ops.shape(inputs)[0]
        maps = {"channel_weights": ops.broadcast_to(channel_weights[None], (batch, inputs.shape[-1])),
                "mean_gate": spatial_mean(channel_gate)}
        if self.pixel_norm is not None:
            _, height, width, channels = inputs.shape
            pixels = ops.reshape(out, (-1, height * width, channels))
            normed = self.pixel_norm(pixels, training=training)
            weights = _importance(self.pixel_norm.gamma, normed.dtype)[None, :, None]
            gate = ops.reshape(ops.sigmoid(normed * weights), (-1, height, width, channels))
            out = gate * out
            maps["pixel_weights"] = ops.broadcast_to(ops.reshape(weights, (1, height, width)),
                                                     (batch, height, width))
            maps["mean_pixel_gate"] = ops.mean(ops.cast(gate, "float32"), axis=-1)
        return out, maps

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "spatial": self.spatial, "sparsity": self.sparsity}
