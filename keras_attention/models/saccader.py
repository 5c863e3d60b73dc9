"""Saccader: a hard-attention classifier that looks at T patches and averages their logits.

Structure (official code, google-research ``saccader/visual_attention/saccader.py``):

    images -> representation network (BagNet-77-lowD, :mod:`keras_attention.models.bagnet`)
              -> features2d (N, h, w, 2048), "what" features (N, h, w, 512), patch logits (N, h, w, K)
    features2d -> attention ("where") network: per group i (2 groups), 1x1 convs then a 3x3
              conv with dilation 2, each to 2048 / 2^(i+1) channels, no bias, BN, ReLU
    [where, what] -> 1x1 "mixing" conv (512 channels, bias) -> Saccader cell
              (:class:`keras_attention.layers.SaccaderCell`) -> T cells
    prediction = mean over the T glimpses of the chosen cells' patch logits

Training has three phases (paper Sec. 3.3); the pieces are here, backend-agnostic, in
:meth:`Saccader.compute_loss`, chosen by ``training_phase`` before ``compile`` + ``fit``:

1. the representation network alone, as the classifier ``saccader_bagnet77`` (cross-entropy of
   the mean patch logits; copy its weights in with :meth:`Saccader.load_representation`);
2. ``training_phase="locations"``: the location network (attention network, mixing conv,
   cell) learns to glimpse, in order, the ``ordered_logits`` policy's cells
   (:func:`keras_attention.losses.location_pretraining_loss`, 12 glimpses, the learned
   policy sampling), as the official ``saccader_pretraining_loss``; the representation
   network is frozen (``trainable=False``: no update, no weight decay, BatchNorm moving
   statistics used and kept) and its outputs are stop-gradient. As there, the
   visited-cell state follows the *sampled* glimpses, so a target cell a sample already
   visited is masked: its cross-entropy is about 1e5 (the reported loss jumps by
   1e5 / (N T) per such target) while its gradient stays bounded (softmax - onehot);
3. ``training_phase="saccader"`` (default): the compiled loss (cross-entropy) at every
   glimpsed cell, plus ``reinforce_weight`` times REINFORCE for the learned locations,
   rewarded when the final prediction is correct, baseline the batch mean
   (:func:`keras_attention.losses.reinforce_loss`). The official training script is not
   released; this follows the paper and ``saccader/losses.py``.

``model(images)`` gives the logits; :meth:`Saccader.glimpse` also gives the glimpses
(cells, locations, pixel boxes, per-glimpse logits), for ``predict`` to print.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from keras_attention.layers._common import check_choice, check_positive, serializable
from keras_attention.layers.saccader import (CELL_POLICIES, POLICIES, SaccaderCell, cell_boxes, cell_locations,
                                             gather_cells, ordered_logits_cells, sobel_cells)
from keras_attention.losses import (class_indices, correct_prediction_rewards, location_pretraining_loss,
                                    reinforce_loss)
from keras_attention.models._common import batch_norm, check_model_args, compiled_classification_loss
from keras_attention.models.bagnet import build_bagnet, receptive_field
from keras_attention.registry import register_model

PHASES = ("locations", "saccader")
KERNEL3 = (2, 2, 2, 2)  # Saccader-77 (saccader_config.py: "for ImageNet 224")
STRIDES = (2, 2, 2, 1)


def _channels(channels, width_multiplier):
    return max(1, int(round(channels * width_multiplier)))


def attention_network(features_shape, what_shape, *, groups: int = 2, layers_per_group: int = 2,
                      mixing_channels: int = 512) -> keras.Model:
    """The "where" network and the mixing convolution: ``[features2d, what] -> [where, mixed]``.

    Group ``i`` has ``layers_per_group`` convolutions to ``C / 2^(i+1)`` channels (``C`` the
    input channels): 1x1, and last a 3x3 with dilation 2 ('same'); no bias, BN (TF momentum
    0.9, eps 1e-5), ReLU. The mixing 1x1 conv (with bias) takes ``[where, what]``.
    Names: ``where_group{i}_layer{j}_conv/_bn/_relu`` (official ``features2d_embedding{i}_{j}``),
    ``mixing_conv`` (``mixed_features2d``).
    """
    features = keras.Input(tuple(features_shape), name="features2d")
    what = keras.Input(tuple(what_shape), name="what_features2d")
    x = features
    for i in range(groups):
        filters = features_shape[-1] // 2 ** (i + 1)
        for j in range(layers_per_group):
            last = j == layers_per_group - 1
            prefix = f"where_group{i}_layer{j}"
            x = keras.layers.Conv2D(filters, 3 if last else 1, dilation_rate=2 if last else 1, padding="same",
                                    use_bias=False, name=f"{prefix}_conv")(x)
            x = batch_norm(f"{prefix}_bn")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    mixed = keras.layers.Concatenate(name="mixing_concat")([x, what])
    mixed = keras.layers.Conv2D(mixing_channels, 1, use_bias=True, name="mixing_conv")(mixed)
    return keras.Model([features, what], [x, mixed], name="attention_network")


@serializable
class Saccader(keras.Model):
    """Saccader-77 (Elsayed et al., NeurIPS 2019) as a Keras model.

    Args:
        num_classes: classes (>= 1).
        input_shape: ``(H, W, 3)`` with static H, W >= 77 (the glimpse size); the grid is
            ``((H - 77) // 8 + 1, (W - 77) // 8 + 1)`` (19 x 19 at 224).
        width_multiplier: scales every width (representation, attention network, mixing);
            ``1.0`` is the official model. Glimpse size and grid do not depend on it.
        num_glimpses: ``T``, glimpses per image (6, as the official config); any ``T >= 1``
            may also be passed per call (``model(x, num_glimpses=12)``).
        policy: ``"learned"`` (the cell), ``"random"``, ``"center"``, ``"ordered_logits"``,
            ``"sobel_mean"`` or ``"sobel_var"``; may also be passed per call.
        attention_groups, attention_layers_per_group: the attention network's shape (2, 2).
        mixing_channels: width of the mixing conv at ``width_multiplier=1`` (512).
        pretraining_glimpses: glimpses of the location pretraining (12, as the official loss).
        training_phase: ``"saccader"`` or ``"locations"`` (module docstring); set it before
            ``compile`` (or use :meth:`set_training_phase`).
        reinforce_weight: weight of the REINFORCE loss in the ``"saccader"`` phase (1.0).
        seed: seed of the location sampling.

    Call: ``model(images, training=False, num_glimpses=None, policy=None)`` -> ``(N, K)``
    float32 logits, the mean of the glimpses' patch logits.

    Reference: Elsayed, Kornblith & Le, "Saccader: Improving Accuracy of Hard Attention
    Models for Vision", NeurIPS 2019; google-research ``saccader/visual_attention/saccader.py``
    and ``saccader_config.py``.
    """

    def __init__(self, num_classes: int = 1000, input_shape: Sequence[int] = (224, 224, 3), *,
                 width_multiplier: float = 1.0, num_glimpses: int = 6, policy: str = "learned",
                 attention_groups: int = 2, attention_layers_per_group: int = 2, mixing_channels: int = 512,
                 pretraining_glimpses: int = 12, training_phase: str = "saccader", reinforce_weight: float = 1.0,
                 seed: int | None = None, name: str = "saccader77", **kwargs):
        super().__init__(name=name, **kwargs)
        input_shape = check_model_args(num_classes, input_shape, True)
        if any(s is None for s in input_shape):
            raise ValueError(f"Saccader needs a static `input_shape`, received {input_shape}.")
        check_choice("policy", policy, POLICIES)
        check_choice("training_phase", training_phase, PHASES)
        for arg, value in (("num_glimpses", num_glimpses), ("pretraining_glimpses", pretraining_glimpses),
                           ("attention_groups", attention_groups),
                           ("attention_layers_per_group", attention_layers_per_group),
                           ("mixing_channels", mixing_channels)):
            check_positive(arg, value, integer=True)
        check_positive("width_multiplier", width_multiplier)
        self.num_classes = num_classes
        self.image_shape = tuple(int(s) for s in input_shape)
        self.width_multiplier = width_multiplier
        self.num_glimpses = int(num_glimpses)
        self.policy = policy
        self.attention_groups = attention_groups
        self.attention_layers_per_group = attention_layers_per_group
        self.mixing_channels = mixing_channels
        self.pretraining_glimpses = int(pretraining_glimpses)
        self.training_phase = training_phase
        self.reinforce_weight = float(reinforce_weight)
        self.seed = seed
        self.receptive_field, self.step = receptive_field(KERNEL3, STRIDES)

        base = build_bagnet(KERNEL3, strides=STRIDES, variant="saccader", final_bottleneck=True,
                            width_multiplier=width_multiplier, num_classes=num_classes, input_shape=input_shape,
                            patch_logits=True, name="representation")
        features2d = base.get_layer("stage4_block2_out").output
        what = base.get_layer("bottleneck_relu").output
        self.representation = keras.Model(base.input, [features2d, what, base.output], name="representation")
        self.grid_shape = tuple(base.output.shape[1:3])
        self.attention_network = attention_network(
            features2d.shape[1:], what.shape[1:], groups=attention_groups, layers_per_group=attention_layers_per_group,
            mixing_channels=_channels(mixing_channels, width_multiplier))
        self.cell = SaccaderCell(seed=seed, name="saccader_cell")
        self._freeze_for_phase()
        self.build((None, *self.image_shape))

    def _freeze_for_phase(self) -> None:
        """The ``"locations"`` phase freezes the representation network: no optimizer update, no
        weight decay (``train`` decays trainable kernels only) and BatchNorm in inference mode
        (Keras runs a non-trainable BatchNormalization with its moving statistics, and updates
        them not); the ``"saccader"`` phase trains every part."""
        self.representation.trainable = self.training_phase != "locations"

    def build(self, input_shape=None):
        if not self.cell.built:
            self.cell.build(self.attention_network.outputs[1].shape, self.representation.outputs[2].shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    # ------------------------------------------------------------------ inference
    def call(self, images, training=False, num_glimpses=None, policy=None):
        outputs = self.glimpse(images, training=training, num_glimpses=num_glimpses, policy=policy)
        if training:  # read by compute_loss in the same step (as Keras's own _losses_override)
            policy, _, _ = self._resolve(training, num_glimpses, policy)
            object.__setattr__(self, "_train_outputs", (outputs, policy))
        return outputs["logits"]

    def _resolve(self, training, num_glimpses, policy):
        """(policy, glimpses, location pretraining?) of a call."""
        policy = policy or self.policy
        check_choice("policy", policy, POLICIES)
        if bool(training) and self.training_phase == "locations":
            return "learned", self.pretraining_glimpses, True
        return policy, int(num_glimpses or self.num_glimpses), False

    def glimpse(self, images, training=False, num_glimpses: int | None = None, policy: str | None = None) -> dict:
        """Runs the model and returns every glimpse.

        Returns:
            A dict: ``logits`` ``(N, K)`` (mean over glimpses), ``glimpse_logits``
            ``(N, T, K)``, ``cells`` ``(N, T)`` int32 flat grid indices, ``rows_cols``
            ``(N, T, 2)``, ``boxes`` ``(N, T, 4)`` int32 pixel boxes (top, left, bottom,
            right; exclusive) of the glimpses' patches, ``locations`` ``(N, T, 2)``
            float32 official glimpse centres (``(y, x)`` in [-1, 1] times ``1 - 77 / size``),
            ``representation_logits`` ``(N, K)`` (the BagNet's own prediction), ``logits2d``
            ``(N, h, w, K)``, and for the cell's policies ``location_logits`` ``(N, T, h*w)``.
            Engineered policies give at most ``h * w`` glimpses.
        """
        policy, num_glimpses, pretraining = self._resolve(training, num_glimpses, policy)
        representation = self.representation(images, training=training)
        if pretraining:
            representation = tuple(ops.stop_gradient(t) for t in representation)
        outputs = self.policy_glimpses(images, representation, policy, num_glimpses, training=training)
        logits2d = representation[2]
        h, w = self.image_shape[:2]
        scale = ops.convert_to_tensor([1.0 - self.receptive_field / h, 1.0 - self.receptive_field / w])
        cells = outputs["cells"]
        outputs.update({
            "logits": ops.mean(outputs["glimpse_logits"], axis=1),
            "locations": outputs["locations"] * scale,
            "rows_cols": ops.stack([cells // self.grid_shape[1], cells % self.grid_shape[1]], axis=-1),
            "boxes": cell_boxes(cells, self.grid_shape, self.receptive_field, self.step),
            "representation_logits": ops.mean(ops.cast(logits2d, "float32"), axis=(1, 2)),
            "logits2d": logits2d,
        })
        return outputs

    def policy_glimpses(self, images, representation, policy: str, num_glimpses: int, training=False) -> dict:
        """One policy's glimpses from the representation network's outputs (computed once, then
        shared by several policies, as ``scripts/saccader_glimpses.py`` does).

        Args:
            images: the ``(N, H, W, 3)`` inputs (the Sobel policies read them).
            representation: ``self.representation(images)``: ``(features2d, what, logits2d)``.
            policy: one of :data:`~keras_attention.layers.saccader.POLICIES`.
            num_glimpses: ``T`` (at most ``h * w`` for the engineered policies).

        Returns:
            ``cells`` ``(N, T)``, ``glimpse_logits`` ``(N, T, K)``, ``locations`` ``(N, T, 2)``
            in the cell-grid convention, and for the cell's policies ``location_logits``.
        """
        check_choice("policy", policy, POLICIES)
        features2d, what, logits2d = representation
        if policy in CELL_POLICIES:
            _, mixed = self.attention_network([features2d, what], training=training)
            return self.cell(mixed, logits2d, num_glimpses=num_glimpses, policy=policy, training=training)
        if policy == "ordered_logits":
            cells = ordered_logits_cells(logits2d, num_glimpses)
        else:
            cells = sobel_cells(images, num_glimpses, self.grid_shape, self.receptive_field, self.step,
                                statistic=policy.split("_")[1])
        return {"cells": cells, "glimpse_logits": gather_cells(logits2d, cells),
                "locations": cell_locations(cells, self.grid_shape)}

    # ------------------------------------------------------------------ training
    def set_training_phase(self, phase: str) -> None:
        """Switches the training objective and the frozen parts (module docstring).

        The trainable variables change, so ``compile`` again before ``fit`` (the optimizer is
        built for one list of variables; JAX refuses another). Prefer what ``keras-attention
        train`` does: build the model in its phase (``model_kwargs: {training_phase: ...}``) and
        copy the previous phase's weights in (``init_from``).
        """
        check_choice("training_phase", phase, PHASES)
        self.training_phase = phase
        self._freeze_for_phase()
        self.train_function = None  # the next fit traces the new objective

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The phase's loss (module docstring); outside training, the compiled loss of the logits."""
        outputs, policy = self.__dict__.pop("_train_outputs", (None, None))
        if not training or outputs is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        extra = [self._aggregate_additional_loss(loss) for loss in self.losses]
        if self.training_phase == "locations":
            targets = ordered_logits_cells(ops.stop_gradient(outputs["logits2d"]), self.pretraining_glimpses)
            loss = location_pretraining_loss(outputs["location_logits"], targets)
        else:
            loss = self._glimpse_loss(y, outputs["glimpse_logits"], sample_weight)
            if policy == "learned":  # REINFORCE needs cells sampled from the location logits
                rewards = correct_prediction_rewards(outputs["logits"], class_indices(y, self.num_classes))
                loss = loss + self.reinforce_weight * reinforce_loss(outputs["location_logits"], outputs["cells"],
                                                                     rewards)
        return ops.sum(ops.stack([ops.cast(loss, "float32")] + [ops.cast(e, "float32") for e in extra]))

    def _glimpse_loss(self, y, glimpse_logits, sample_weight):
        """The compiled loss (e.g. cross-entropy) of every glimpse's logits, averaged over glimpses."""
        steps = glimpse_logits.shape[1]
        flat_logits = ops.reshape(glimpse_logits, (-1, glimpse_logits.shape[-1]))
        repeat = lambda t: None if t is None else ops.repeat(t, steps, axis=0)  # noqa: E731
        # example n's T glimpses are rows n*T ... n*T + T - 1, so its labels repeat T times
        return compiled_classification_loss(self, repeat(y), flat_logits, repeat(sample_weight))

    def initialize_from(self, source: keras.Model) -> None:
        """The start of a training phase (``keras-attention train --init-from``): a trained
        ``saccader_bagnet77`` becomes the representation network (phase 1 -> 2); a Saccader
        of the same configuration gives all its weights (phase 2 -> 3)."""
        if not isinstance(source, Saccader):
            self.load_representation(source)
            return
        if [tuple(v.shape) for v in source.weights] != [tuple(v.shape) for v in self.weights]:
            raise ValueError(f"Saccader {source.name!r} does not have this Saccader's weights (another width, "
                             f"input size or number of classes).")
        self.set_weights(source.get_weights())

    def load_representation(self, bagnet: keras.Model) -> None:
        """Copies a trained ``saccader_bagnet77`` classifier into the representation network (phase 1 -> 2)."""
        mine = {layer.name: layer for layer in self.representation.layers if layer.weights}
        theirs = {layer.name: layer for layer in bagnet.layers if layer.weights}
        if set(mine) != set(theirs):
            raise ValueError(f"{bagnet.name!r} is not this Saccader's representation network: layers differ "
                             f"({sorted(set(mine) ^ set(theirs))[:5]} ...).")
        for name, layer in mine.items():
            layer.set_weights(theirs[name].get_weights())

    def get_config(self):
        return {"num_classes": self.num_classes, "input_shape": list(self.image_shape),
                "width_multiplier": self.width_multiplier, "num_glimpses": self.num_glimpses, "policy": self.policy,
                "attention_groups": self.attention_groups,
                "attention_layers_per_group": self.attention_layers_per_group,
                "mixing_channels": self.mixing_channels, "pretraining_glimpses": self.pretraining_glimpses,
                "training_phase": self.training_phase, "reinforce_weight": self.reinforce_weight,
                "seed": self.seed, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def saccader77(num_classes: int = 1000, input_shape: Sequence[int] = (224, 224, 3), include_top: bool = True,
               pooling: str | None = None, **kwargs) -> Saccader:
    """Saccader-77: BagNet-77-lowD and a learned glimpse policy, 6 glimpses (Elsayed et al. 2019).

    Arguments are those of :class:`Saccader`; ``include_top`` must be True (the model is
    a classifier) and ``pooling`` None.
    """
    if not include_top or pooling is not None:
        raise ValueError(f"saccader77 is a classifier: `include_top` must be True and `pooling` None, "
                         f"received include_top={include_top!r}, pooling={pooling!r}.")
    return Saccader(num_classes, input_shape, **kwargs)


register_model(saccader77)
