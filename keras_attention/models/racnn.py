"""RA-CNN: three classification networks at finer and finer scales, linked by attention proposals.

Structure (Fu, Zheng & Mei, CVPR 2017, Fig. 2; released Caffe model, Jianlong-Fu/
Recurrent-Attention-CNN)::

    scale 1: image (S x S)   -> conv stack 1 -> last conv map m1 -> GAP -> FC -> logits 1
             m1 brought to g x g (max pool) -> APN 1: FC 1024 -> tanh -> FC 3 -> sigmoid
             -> box (t_x, t_y, t_l) inside the image (boxes_from_units)
             -> attention crop (:mod:`keras_attention.layers.attention_crop`)
    scale 2: crop 1 (s x s)  -> conv stack 2 -> m2 -> GAP -> FC -> logits 2
             m2 -> APN 2 -> box in crop 1's pixels -> crop of crop 1
    scale 3: crop 2 (s x s)  -> conv stack 3 -> m3 -> GAP -> FC -> logits 3

The three conv stacks and FCs are not shared. ``racnn_vgg19`` is the paper's configuration (VGG-19
``conv5_4`` maps: 28 x 28 at S = 448 max-pooled 2 x 2 to 14 x 14 for APN 1; 14 x 14 at s = 224).

Prediction (``model(images)``): the paper's final result (Sec. 3.4 "multi-scale joint
representation", Table 1-2 "RA-CNN (scale 1+2+3)") normalises and concatenates the scales'
features and trains one more fully-connected layer with softmax on them after RA-CNN is trained.
That layer is not part of the released three-scale model's structure and needs another training
phase; we return instead the mean of the chosen scales' softmax probabilities, as logits
(``log(mean p)``, float32), so that ``scales=1, 2, 3`` evaluate scale 1 alone, 1+2 and 1+2+3 from one
trained model without any extra weights.

Training (paper Sec. 3.3), one ``keras-attention train`` recipe per phase
(``model_kwargs: {training_phase: ...}`` and ``init_from`` the previous phase's run), all in
:meth:`RACNN.compute_loss`:

* ``"pretrain"``: the three classifiers with the compiled cross-entropy (summed over scales);
  the crops come from the heuristic boxes below (the APNs are not trained yet; gradient stopped);
* ``"apn_pretrain"``: classifiers frozen; each APN regresses (mean squared error, in units of the
  side) to a square of half its input's side centred on the strongest response (channel sum) of
  its scale's last conv map (the heuristic boxes, which also make the crops);
* then alternately ``"classifiers"`` (APNs frozen, boxes gradient-stopped: the sum of the three
  cross-entropies) and ``"apn"`` (classifiers frozen: the pairwise ranking loss
  ``sum_s max(0, p_s[y] - p_{s+1}[y] + margin)``, margin 0.05, on the true class's softmax
  probability), until the validation accuracy stops improving;
* ``"joint"`` (default, not the paper's protocol): everything trainable, cross-entropies plus
  ranking loss.

Frozen parts are set ``trainable=False`` (a frozen backbone's BatchNorms run in inference mode).

Box parametrisation (our choice): the paper's APN outputs ``(t_x, t_y, t_l)`` and the released
layer clips them; a clip passes no gradient, and in our first Imagewoof run the first APN left the
range during APN pretraining and never came back (docs/racnn.md). Here the APN's three sigmoid
outputs are mapped into the valid range instead
(:func:`keras_attention.layers.attention_crop.boxes_from_units`): ``t_l`` between
``min_half_side * S`` and ``S / 2``, the centre so that the square lies inside the image. A fresh
APN (outputs near 0.5) proposes the centred square of half side ``S / 3``.

Ranking gradient (our choice, ``ranking_gradient="finer"``; ``"both"`` is the plain gradient of
Eq. 8). APN 1 makes scale 2's crop, so it moves ``p_2`` in two pairs: ``(p_1, p_2)`` asks for a
higher ``p_2``, ``(p_2, p_3)`` for a *lower* one. With both terms active the two cancel and APN 1
can shrink the loss by making scale 2 worse. On Imagewoof this collapsed APN 1 in one ranking phase
(every box the minimum square in one corner; docs/racnn.md). With ``"finer"`` the coarser
probability of each pair is a stop-gradient target: the loss's value is unchanged, and it can only
raise the finer scales' probabilities, which is what the paper asks of the APN (Sec. 3.2: the finer
scale should predict the true class more confidently). It does not make the zoom useful by itself:
in our short Imagewoof run APN 1 then settled on the whole image (docs/racnn.md).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from keras_attention.layers._common import check_choice, check_positive, serializable
from keras_attention.layers.attention_crop import AttentionCrop, boxes_from_units, constrain_boxes
from keras_attention.losses import class_indices
from keras_attention.models._common import check_model_args, compiled_classification_loss
from keras_attention.registry import create_model, register_model

PHASES = ("joint", "pretrain", "apn_pretrain", "classifiers", "apn")
FUSIONS = ("mean_softmax",)
RANKING_GRADIENTS = ("finer", "both")
NUM_SCALES = 3


def _vgg19_stack(size: int, name: str) -> keras.Model:
    """VGG-19's convolutional layers up to ``conv5_4`` (ReLU), without the last max pool."""
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(size, size, 3))
    return keras.Model(vgg.input, vgg.get_layer("block5_conv4").output, name=name)


def _registry_stack(backbone: str, size: int, name: str, backbone_kwargs: dict) -> keras.Model:
    base = create_model(backbone, include_top=False, input_shape=(size, size, 3), **backbone_kwargs)
    return keras.Model(base.input, base.output, name=name)


def attention_proposal_network(features_shape, grid: int, units: int, name: str) -> keras.Model:
    """APN: ``(N, h, w, C)`` map -> max pool to ``grid x grid`` -> FC ``units`` -> tanh -> FC 3 ->
    sigmoid -> ``(N, 3)`` float32 in ``(0, 1)``, made a box ``(t_x, t_y, t_l)`` in the input's
    pixels by ``boxes_from_units`` (module docstring).

    Raises:
        ValueError: the map's side is not a multiple of ``grid``.
    """
    h, w = features_shape[0], features_shape[1]
    if h != w or h % grid:
        raise ValueError(f"The APN needs a square map whose side is a multiple of `apn_grid` {grid}, "
                         f"received a {h} x {w} map.")
    inputs = keras.Input(tuple(features_shape), name=f"{name}_features")
    x = inputs
    if h != grid:
        x = keras.layers.MaxPooling2D(h // grid, name=f"{name}_pool")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(units, activation="tanh", name=f"{name}_fc1")(x)
    x = keras.layers.Dense(3, activation="sigmoid", dtype="float32", name=f"{name}_fc2")(x)
    return keras.Model(inputs, x, name=name)


def response_boxes(features, side: int):
    """The APN pretraining targets: squares of half the side (``t_l = side / 4``) centred on the
    strongest response (channel sum) of ``features`` ``(N, h, w, C)``; ``(N, 3)`` float32 pixels,
    kept inside the image."""
    features = ops.cast(features, "float32")
    h, w = features.shape[1], features.shape[2]
    flat = ops.argmax(ops.reshape(ops.sum(features, axis=-1), (-1, h * w)), axis=-1)
    rows, cols = ops.cast(flat // w, "float32"), ops.cast(flat % w, "float32")
    cx, cy = (cols + 0.5) * side / w, (rows + 0.5) * side / h
    half = ops.full_like(cx, side / 4.0)
    return constrain_boxes(ops.stack([cx, cy, half], axis=-1), float(side), 0.25)


def ranking_loss(probabilities, margin: float = 0.05, coarser_as_target: bool = False):
    """Pairwise ranking loss (paper Eq. 8): ``mean_n sum_s max(0, p_s - p_{s+1} + margin)``.

    Args:
        probabilities: ``(N, T)`` the true class's softmax probability at each scale.
        margin: 0.05 as the paper.
        coarser_as_target: stop the gradient through ``p_s`` in each pair, so that the loss can only
            raise the finer scale's ``p_{s+1}`` (the value is the same). With the plain gradient, the
            APN that makes scale ``s``'s crop also lowers the pair ``(s, s+1)`` by making ``p_s``
            *worse*; :class:`RACNN` module docstring.
    """
    p = ops.cast(probabilities, "float32")
    coarser = ops.stop_gradient(p[:, :-1]) if coarser_as_target else p[:, :-1]
    return ops.mean(ops.sum(ops.relu(coarser - p[:, 1:] + margin), axis=-1))


def boxes_to_input(boxes, parents, crop_size: int):
    """Boxes ``(N, 3)`` in a crop's pixels -> the same boxes in the pixels of the image the crop was
    cut from; ``parents`` ``(N, 3)`` the crop's own box there (pixels), ``crop_size`` its zoomed side."""
    scale = 2.0 * parents[:, 2:3] / crop_size
    origin = parents[:, 0:2] - parents[:, 2:3]
    return ops.concatenate([origin + boxes[:, 0:2] * scale, boxes[:, 2:3] * scale], axis=-1)


def corner_boxes(boxes):
    """``(t_x, t_y, t_l)`` -> ``(top, left, bottom, right)`` (exclusive), float32."""
    cx, cy, half = boxes[..., 0], boxes[..., 1], boxes[..., 2]
    return ops.stack([cy - half, cx - half, cy + half, cx + half], axis=-1)


@serializable
class RACNN(keras.Model):
    """Recurrent Attention CNN (Fu, Zheng & Mei, CVPR 2017) with three scales.

    Args:
        num_classes: classes (>= 1).
        input_shape: ``(S, S, 3)``, the first scale's square, static input (448 in the paper).
        backbone: ``"vgg19"`` (``keras.applications.VGG19``'s layers to ``conv5_4``, as the paper)
            or any registered architecture built with ``include_top=False`` (e.g. ``"resnet18"``,
            ``"se_resnet50"``); each scale has its own, unshared copy. No pretrained weights
            (the paper starts from ImageNet VGG-19).
        backbone_kwargs: extra arguments of the registry backbone (e.g. ``stage_widths``).
        crop_size: side of the zoomed crops fed to scales 2 and 3 (default ``S // 2``: 224 at 448).
        apn_grid: side the last conv map is max-pooled to before the APN (default: the side of
            scale 2's map, 14 for VGG-19 at 224); every scale's map side must be a multiple of it.
        apn_units: width of the APN's hidden FC (1024).
        k: slope of the crop's boxcar mask per input pixel (10; see
            :mod:`keras_attention.layers.attention_crop` for the released layer's choice).
        min_half_side: lower bound of ``t_l`` as a fraction of the side (1/6: a crop is at least
            a third of its input's side).
        margin: margin of the ranking loss (0.05).
        ranking_gradient: ``"finer"`` (default): each pair's loss only raises the finer scale's
            probability (the coarser one is a stop-gradient target); ``"both"``: the plain
            gradient of Eq. 8 (module docstring, "Ranking gradient").
        scales: how many scales the prediction uses (1, 2 or 3); may be passed per call.
        fusion: ``"mean_softmax"``: logits ``log(mean_s softmax(logits_s))`` (module docstring).
        training_phase: one of ``"joint"``, ``"pretrain"``, ``"apn_pretrain"``, ``"classifiers"``,
            ``"apn"`` (module docstring); set it before ``compile`` (or :meth:`set_training_phase`).

    Call: ``model(images, training=False, scales=None)`` -> ``(N, K)`` float32 logits (fused over
    the first ``scales`` scales; a training call runs all three, which the losses need).

    Raises:
        ValueError: invalid arguments (a non-square or dynamic input, a backbone whose maps do not
            fit ``apn_grid``, an unknown phase, ``scales`` outside 1..3).

    Reference: Fu, Zheng & Mei, "Look Closer to See Better: Recurrent Attention Convolutional Neural
    Network for Fine-grained Image Recognition", CVPR 2017, Sec. 3 (Eq. 1-8), Sec. 4.1;
    github.com/Jianlong-Fu/Recurrent-Attention-CNN.
    """

    def __init__(self, num_classes: int = 200, input_shape: Sequence[int] = (448, 448, 3), *,
                 backbone: str = "vgg19", backbone_kwargs: dict | None = None, crop_size: int | None = None,
                 apn_grid: int | None = None, apn_units: int = 1024, k: float = 10.0,
                 min_half_side: float = 1 / 6, margin: float = 0.05, ranking_gradient: str = "finer",
                 scales: int = 3, fusion: str = "mean_softmax", training_phase: str = "joint", name: str = "racnn",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        input_shape = check_model_args(num_classes, input_shape, True)
        if input_shape[0] is None or input_shape[0] != input_shape[1]:
            raise ValueError(f"RA-CNN needs a square, static `input_shape`, received {input_shape}.")
        check_choice("training_phase", training_phase, PHASES)
        check_choice("fusion", fusion, FUSIONS)
        self._check_scales(scales)
        check_positive("apn_units", apn_units, integer=True)
        check_positive("margin", margin)
        check_choice("ranking_gradient", ranking_gradient, RANKING_GRADIENTS)
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(s) for s in input_shape)
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.crop_size = int(crop_size or self.image_shape[0] // 2)
        check_positive("crop_size", self.crop_size, integer=True)
        self.apn_units = int(apn_units)
        self.k = float(k)
        self.min_half_side = float(min_half_side)
        self.margin = float(margin)
        self.ranking_gradient = ranking_gradient
        self.scales = int(scales)
        self.fusion = fusion
        self.training_phase = training_phase

        sizes = [self.image_shape[0]] + [self.crop_size] * (NUM_SCALES - 1)
        self.stacks, self.classifiers = [], []
        for s, size in enumerate(sizes, start=1):
            stack = (_vgg19_stack(size, f"scale{s}_convs") if backbone == "vgg19"
                     else _registry_stack(backbone, size, f"scale{s}_convs", self.backbone_kwargs))
            if len(stack.output.shape) != 4:
                raise ValueError(f"The backbone {backbone!r} must give a 4D map, received {stack.output.shape}.")
            self.stacks.append(stack)
            self.classifiers.append(keras.Sequential([
                keras.layers.GlobalAveragePooling2D(name=f"scale{s}_gap"),
                keras.layers.Dense(self.num_classes, dtype="float32", name=f"scale{s}_fc")], name=f"scale{s}_head"))
        self.apn_grid = int(apn_grid or self.stacks[1].output.shape[1])
        self.apns, self.crops = [], []
        for s in range(1, NUM_SCALES):
            self.apns.append(attention_proposal_network(self.stacks[s - 1].output.shape[1:], self.apn_grid,
                                                        self.apn_units, f"apn{s}"))
            self.crops.append(AttentionCrop((self.crop_size, self.crop_size), k=self.k,
                                            min_half_side=self.min_half_side, name=f"crop{s}"))
        for s, stack in enumerate(self.stacks):
            self.classifiers[s].build(stack.output.shape)
        self._apply_phase()
        self.build((None, *self.image_shape))

    @staticmethod
    def _check_scales(scales):
        if scales not in (1, 2, 3) or isinstance(scales, bool):
            raise ValueError(f"`scales` must be 1, 2 or 3, received {scales!r}.")

    def build(self, input_shape=None):
        self.built = True

    # ------------------------------------------------------------------ inference
    def call(self, images, training=False, scales=None):
        phase = self.training_phase if training else None
        outputs = self._forward(images, training=training, scales=NUM_SCALES if training else scales,
                                phase=phase)
        if training:  # read by compute_loss in the same step (as Saccader)
            object.__setattr__(self, "_train_outputs", outputs)
        return outputs["logits"]

    def glimpse(self, images, training=False, scales: int | None = None) -> dict:
        """Runs the scales and returns the proposals.

        Returns:
            A dict: ``logits`` ``(N, K)`` float32 (fused over ``scales``), ``boxes`` ``(N, 2, 4)``
            float32 pixel boxes (top, left, bottom, right; exclusive) of the two proposed crops in
            the input image's coordinates (scale 3's box composed through scale 2's crop),
            ``scale_logits`` ``(N, 3, K)`` (every scale, whatever ``scales``), ``apn_boxes``
            ``(N, 2, 3)`` the constrained ``(t_x, t_y, t_l)`` in each APN's own input pixels,
            ``glimpse_logits`` ``(N, 2, K)`` the predictions made from each proposed crop (scales 2
            and 3), and ``crops``: the two zoomed crops ``(N, s, s, 3)``.
        """
        outputs = self._forward(images, training=training, scales=NUM_SCALES, phase=None)
        scales = self.scales if scales is None else scales
        self._check_scales(scales)
        return {"logits": self._fuse(outputs["scale_logits"][:scales]),
                "scale_logits": ops.stack(outputs["scale_logits"], axis=1),
                "glimpse_logits": ops.stack(outputs["scale_logits"][1:], axis=1),
                "boxes": ops.stack([corner_boxes(b) for b in outputs["input_boxes"]], axis=1),
                "apn_boxes": ops.stack(outputs["boxes"], axis=1), "crops": outputs["crops"]}

    def _forward(self, images, training, scales, phase):
        scales = self.scales if scales is None else scales
        self._check_scales(scales)
        heuristic = phase in ("pretrain", "apn_pretrain")
        x = images
        logits, boxes, predicted, targets, crops, input_boxes = [], [], [], [], [], []
        for s in range(scales):
            features = self.stacks[s](x, training=training)
            logits.append(ops.cast(self.classifiers[s](features, training=training), "float32"))
            if s == scales - 1:
                break
            side = x.shape[1]
            box = boxes_from_units(self.apns[s](features, training=training), float(side), self.min_half_side)
            predicted.append(box)
            if heuristic:
                target = ops.stop_gradient(response_boxes(features, side))
                targets.append(target)
                box = target
            elif phase == "classifiers":
                box = ops.stop_gradient(box)
            x, box = self.crops[s](x, box)
            boxes.append(box)
            crops.append(x)
            input_boxes.append(box if s == 0 else boxes_to_input(box, input_boxes[-1], self.crop_size))
        return {"logits": self._fuse(logits), "scale_logits": logits, "boxes": boxes, "predicted": predicted,
                "targets": targets, "crops": crops, "input_boxes": input_boxes}

    def _fuse(self, scale_logits):
        if len(scale_logits) == 1:
            return scale_logits[0]
        probs = ops.mean(ops.stack([ops.softmax(l, axis=-1) for l in scale_logits], axis=0), axis=0)
        return ops.log(ops.maximum(probs, 1e-12))

    # ------------------------------------------------------------------ training
    def _apply_phase(self):
        phase = self.training_phase
        for part in self.stacks + self.classifiers:
            part.trainable = phase not in ("apn_pretrain", "apn")
        for apn in self.apns:
            apn.trainable = phase not in ("pretrain", "classifiers")

    def set_training_phase(self, phase: str) -> None:
        """Switches the objective and the frozen parts (module docstring); recompile before ``fit``."""
        check_choice("training_phase", phase, PHASES)
        self.training_phase = phase
        self._apply_phase()
        self.train_function = None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The phase's loss (module docstring); outside training, the compiled loss of the logits."""
        outputs = self.__dict__.pop("_train_outputs", None)
        if not training or outputs is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        phase = self.training_phase
        terms = [ops.cast(self._aggregate_additional_loss(loss), "float32") for loss in self.losses]
        if phase in ("joint", "pretrain", "classifiers"):
            terms += [compiled_classification_loss(self, y, logits, sample_weight) for logits in outputs["scale_logits"]]
        if phase in ("joint", "apn"):
            terms.append(self.ranking_loss(y, outputs["scale_logits"]))
        if phase == "apn_pretrain":
            sides = [self.image_shape[0], self.crop_size]
            terms += [ops.mean(ops.square((p - ops.stop_gradient(t)) / side))
                      for p, t, side in zip(outputs["predicted"], outputs["targets"], sides)]
        return ops.sum(ops.stack(terms))

    def ranking_loss(self, y, scale_logits):
        """The inter-scale ranking loss on the true class's probabilities (paper Eq. 8)."""
        labels = class_indices(y, self.num_classes)
        onehot = ops.one_hot(labels, self.num_classes, dtype="float32")
        probs = ops.stack([ops.sum(ops.softmax(l, axis=-1) * onehot, axis=-1) for l in scale_logits], axis=-1)
        return ranking_loss(probs, self.margin, coarser_as_target=self.ranking_gradient == "finer")

    def initialize_from(self, source: keras.Model) -> None:
        """The start of a training phase (``init_from``): an RA-CNN of the same configuration gives all
        its weights (whatever its phase)."""
        if not isinstance(source, RACNN):
            raise ValueError(f"init_from for RA-CNN takes an RA-CNN (a previous phase), received {source.name!r}.")
        mine, theirs = self._parts(), source._parts()
        for a, b in zip(mine, theirs):
            if [tuple(v.shape) for v in a.weights] != [tuple(v.shape) for v in b.weights]:
                raise ValueError(f"RA-CNN {source.name!r} does not have this RA-CNN's weights ({b.name} differs: "
                                 f"another backbone, input size or number of classes).")
        for a, b in zip(mine, theirs):
            a.set_weights(b.get_weights())

    def _parts(self):
        return self.stacks + self.classifiers + self.apns

    def get_config(self):
        return {"num_classes": self.num_classes, "input_shape": list(self.image_shape), "backbone": self.backbone,
                "backbone_kwargs": self.backbone_kwargs, "crop_size": self.crop_size, "apn_grid": self.apn_grid,
                "apn_units": self.apn_units, "k": self.k, "min_half_side": self.min_half_side,
                "margin": self.margin, "ranking_gradient": self.ranking_gradient, "scales": self.scales,
                "fusion": self.fusion, "training_phase": self.training_phase, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_classifier(include_top, pooling):
    if not include_top or pooling is not None:
        raise ValueError(f"RA-CNN is a classifier: `include_top` must be True and `pooling` None, "
                         f"received include_top={include_top!r}, pooling={pooling!r}.")


def racnn_vgg19(num_classes: int = 200, input_shape: Sequence[int] = (448, 448, 3), include_top: bool = True,
                pooling: str | None = None, **kwargs) -> RACNN:
    """RA-CNN, the paper's configuration: three VGG-19 conv stacks, 448 px then 224 px crops, 14 x 14 APNs.

    Arguments are those of :class:`RACNN`; ``include_top`` must be True and ``pooling`` None.
    """
    _check_classifier(include_top, pooling)
    return RACNN(num_classes, input_shape, **{"backbone": "vgg19", "name": "racnn_vgg19", **kwargs})


def racnn_resnet18(num_classes: int = 200, input_shape: Sequence[int] = (128, 128, 3), include_top: bool = True,
                   pooling: str | None = None, **kwargs) -> RACNN:
    """RA-CNN on three ResNet-18 stacks, a CPU-trainable configuration: 128 px, then 64 px crops.

    Arguments are those of :class:`RACNN` (``backbone_kwargs`` go to ``resnet18``, e.g.
    ``{"stage_widths": [16, 32, 64, 128], "stem_width": 16}``); ``include_top`` must be True and
    ``pooling`` None. At 128 px the maps are 4 x 4 (scale 1) and 2 x 2 (scales 2, 3): the APN sees
    scale 1's map max-pooled to 2 x 2 (the paper's 28 -> 14 analogue).
    """
    _check_classifier(include_top, pooling)
    return RACNN(num_classes, input_shape, **{"backbone": "resnet18", "name": "racnn_resnet18", **kwargs})


register_model(racnn_vgg19)
register_model(racnn_resnet18)
