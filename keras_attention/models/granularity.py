"""Multiple granularity descriptors (Wang et al., ICCV 2015): one detect -> discover -> describe
pipeline per level of a label hierarchy, the levels' descriptors concatenated for the fine class.

Structure (no official code exists; the paper's text available to us was its abstract, so the
parts marked "reconstructed" are our choices, documented in ``docs/granularity.md``)::

    label hierarchy (keras_attention.data.hierarchy): fine class -> one parent per coarser level
    for each level l (coarsest first, the fine level last):
        detector_l   = backbone (include_top=False) -> GAP -> Dense(K_l)       [whole image]
                       trained with cross-entropy on level l's labels ("free" labels of the
                       ontology, abstract: "a series of CNN-based classifiers, each specialized
                       at one grain level")
        region_l     = box of the cells whose class-activation energy (CAM, Zhou et al. 2016, of
                       the detector's predicted class) is >= threshold x its maximum
                       (reconstructed: the abstract's "internal representations ... have
                       different regions of interest", image-level labels only)
        describer_l  = backbone -> GAP on the region, cropped and resized to region_size
                       (bilinear), -> descriptor d_l (C channels), trained with Dense(K_l)
                       cross-entropy on level l's labels
    fine logits = Dense(K_fine)(concat_l d_l)           ("multi-grained descriptors")

Training is two ``keras-attention train`` phases (``training_phase`` in the recipe's
``model_kwargs``, the second with ``init_from`` the first's run folder):

1. ``"branches"``: every detector on the whole image, loss ``sum_l CE(y @ M_l, detector_l)``
   where ``M_l`` is the hierarchy's constant ``(K_fine, K_l)`` mapping (a level's label is
   derived from the fine one-hot label inside :meth:`MultiGranularity.compute_loss`, so the
   class-folder pipeline is unchanged). Describers and classifiers are frozen (unused).
2. ``"descriptors"`` (default): detectors frozen (inference mode); each describer starts from its
   level's detector (:meth:`MultiGranularity.initialize_from`) and is fine-tuned on its region
   with its level's cross-entropy; the concatenated-descriptor classifier and one linear probe
   per level (fine classes from that level's descriptor alone, the single-level comparison) are
   trained on stop-gradient descriptors: a linear classifier on fixed features, as the paper's
   final stage (reconstructed: the abstract does not say which classifier).

``model(images)`` returns ``(N, K_fine)`` float32 logits of ``classify_with``: ``"all"`` (the
concatenated descriptors), a level's name (that level's probe), or ``"detector"`` (the fine
detector on the whole image: the plain-CNN baseline). In the ``"branches"`` phase it is always
the fine detector's. :meth:`MultiGranularity.glimpse` also gives the discovered ``boxes``
``(N, L, 4)`` (top, left, bottom, right; exclusive, input pixels).

Reference: Wang, Shen, Shao, Zhang, Xue & Zhang, "Multiple Granularity Descriptors for
Fine-grained Categorization", ICCV 2015 (doi:10.1109/ICCV.2015.276); no official code.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from keras_attention.data.hierarchy import load_hierarchy
from keras_attention.layers._common import check_choice, check_positive, serializable
from keras_attention.layers.spatial_transformer import bilinear_sample
from keras_attention.models._common import check_model_args
from keras_attention.registry import get_model_entry, register_model

PHASES = ("branches", "descriptors")


def region_boxes(energy, image_size: Sequence[int], threshold: float = 0.5):
    """The box of the cells whose energy is at least ``threshold`` of the map's range above its minimum.

    Args:
        energy: ``(N, h, w)`` activation energy (any float dtype).
        image_size: ``(H, W)`` of the image the ``h x w`` grid covers (cell ``(i, j)`` is pixels
            ``[i H/h, (i+1) H/h) x [j W/w, (j+1) W/w)``).
        threshold: in ``[0, 1]``: a cell is kept where ``(e - min) >= threshold (max - min)``; the
            box is the tightest one around every kept cell (a flat map keeps the whole image).

    Returns:
        ``(N, 4)`` float32 pixel boxes ``(top, left, bottom, right)``, bottom/right exclusive.

    Reference: reconstructed (module docstring); the thresholded-CAM box of Zhou et al., CVPR 2016, Sec. 2.
    """
    energy = ops.cast(energy, "float32")
    h, w = energy.shape[1], energy.shape[2]
    low = ops.min(energy, axis=(1, 2), keepdims=True)
    high = ops.max(energy, axis=(1, 2), keepdims=True)
    kept = (energy - low) >= threshold * (high - low)  # the maximum always counts

    def span(any_kept, size):  # first kept index, one past the last kept index
        any_kept = ops.cast(any_kept, "int32")
        first = ops.argmax(any_kept, axis=-1)
        last = size - ops.argmax(ops.flip(any_kept, axis=-1), axis=-1)
        return ops.cast(first, "float32"), ops.cast(last, "float32")

    top, bottom = span(ops.any(kept, axis=2), h)
    left, right = span(ops.any(kept, axis=1), w)
    scale_y, scale_x = float(image_size[0]) / h, float(image_size[1]) / w
    return ops.stack([top * scale_y, left * scale_x, bottom * scale_y, right * scale_x], axis=-1)


def crop_and_resize(images, boxes, size: Sequence[int]):
    """Bilinear crops of ``images`` ``(N, H, W, C)`` to pixel ``boxes`` ``(N, 4)``, each resized to ``size``.

    Output pixel ``(i, j)`` samples the box at ``top + (i + 0.5) (bottom - top) / size_h - 0.5``
    (pixel centres; likewise for x), clamped to the image (the border pixels repeat), so a
    whole-image box resized to the image size is the identity.
    Returns float32 ``(N, size_h, size_w, C)``.
    """
    boxes = ops.cast(boxes, "float32")
    height, width = int(images.shape[1]), int(images.shape[2])
    out_h, out_w = int(size[0]), int(size[1])
    steps_y = (ops.arange(out_h, dtype="float32") + 0.5) / out_h
    steps_x = (ops.arange(out_w, dtype="float32") + 0.5) / out_w
    ys = boxes[:, 0:1] + steps_y[None] * (boxes[:, 2:3] - boxes[:, 0:1]) - 0.5  # (N, out_h)
    xs = boxes[:, 1:2] + steps_x[None] * (boxes[:, 3:4] - boxes[:, 1:2]) - 0.5  # (N, out_w)
    ys = 2.0 * ops.clip(ys, 0.0, height - 1.0) / max(height - 1, 1) - 1.0  # border pixels repeat outside
    xs = 2.0 * ops.clip(xs, 0.0, width - 1.0) / max(width - 1, 1) - 1.0
    grid_y = ops.broadcast_to(ys[:, :, None], (ops.shape(ys)[0], out_h, out_w))
    grid_x = ops.broadcast_to(xs[:, None, :], (ops.shape(xs)[0], out_h, out_w))
    coords = ops.reshape(ops.stack([grid_x, grid_y], axis=-1), (-1, out_h * out_w, 2))
    return bilinear_sample(images, coords, out_h, out_w)


@serializable
class MultiGranularity(keras.Model):
    """Multiple granularity descriptors (Wang et al., ICCV 2015) over any registered backbone.

    Args:
        num_classes: fine classes; must equal the hierarchy's.
        input_shape: ``(H, W, 3)``, static.
        hierarchy: a built-in hierarchy name (``"imagewoof"``), a JSON path, or the mapping
            (:mod:`keras_attention.data.hierarchy`); stored resolved in the config.
        backbone: a registered architecture built with ``include_top=False`` (``"resnet18"``);
            one copy per level for detection and one for description.
        backbone_kwargs: its builder arguments (e.g. ``{"stage_widths": [16, 32, 64, 128],
            "stem_width": 16}`` for a quarter-width ResNet-18).
        region_size: ``(h, w)`` the regions are resized to (default the input size).
        threshold: region discovery threshold in ``[0, 1)`` (:func:`region_boxes`).
        classify_with: ``"all"``, a level's name (that level's descriptor alone) or ``"detector"``.
        training_phase: ``"branches"`` or ``"descriptors"`` (module docstring).

    Call: ``model(images, training=False, classify_with=None)`` -> ``(N, K_fine)`` float32 logits.

    Raises:
        ValueError: invalid arguments (names what was received), or a hierarchy whose fine
            classes number other than ``num_classes``.

    Reference: Wang et al., "Multiple Granularity Descriptors for Fine-grained Categorization",
    ICCV 2015; no official code (see the module docstring for what is reconstructed).
    """

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (128, 128, 3), *,
                 hierarchy="imagewoof", backbone: str = "resnet18", backbone_kwargs: dict | None = None,
                 region_size: Sequence[int] | None = None, threshold: float = 0.5, classify_with: str = "all",
                 training_phase: str = "descriptors", name: str = "multi_granularity", **kwargs):
        super().__init__(name=name, **kwargs)
        input_shape = check_model_args(num_classes, input_shape, True)
        if any(s is None for s in input_shape):
            raise ValueError(f"MultiGranularity needs a static `input_shape`, received {input_shape}.")
        check_choice("training_phase", training_phase, PHASES)
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"`threshold` must be in [0, 1), received {threshold!r}.")
        self.hierarchy = load_hierarchy(hierarchy)
        if len(self.hierarchy.classes) != num_classes:
            raise ValueError(f"The hierarchy has {len(self.hierarchy.classes)} fine classes, the model "
                             f"num_classes={num_classes}.")
        self.levels = self.hierarchy.all_levels
        check_choice("classify_with", classify_with, self._classify_choices())
        self.num_classes = num_classes
        self.image_shape = tuple(int(s) for s in input_shape)
        self.region_size = tuple(int(s) for s in (region_size or self.image_shape[:2]))
        if len(self.region_size) != 2:
            raise ValueError(f"`region_size` must be (height, width), received {region_size!r}.")
        for s in self.region_size:
            check_positive("region_size", s, integer=True)
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.threshold = float(threshold)
        self.classify_with = classify_with
        self.training_phase = training_phase
        self.mappings = [self.hierarchy.mapping_matrix(level) for level in self.levels]

        builder = get_model_entry(backbone).builder

        def make_backbone(shape, name):
            return builder(include_top=False, pooling=None, input_shape=shape, name=name, **self.backbone_kwargs)

        region_shape = (*self.region_size, self.image_shape[2])
        self.detectors, self.detector_heads, self.describers, self.describer_heads, self.probes = [], [], [], [], []
        for i, mapping in enumerate(self.mappings):
            classes = mapping.shape[1]
            self.detectors.append(make_backbone(self.image_shape, f"detector{i}"))
            self.detector_heads.append(keras.layers.Dense(classes, dtype="float32", name=f"detector{i}_fc"))
            self.describers.append(make_backbone(region_shape, f"describer{i}"))
            self.describer_heads.append(keras.layers.Dense(classes, dtype="float32", name=f"describer{i}_fc"))
            self.probes.append(keras.layers.Dense(num_classes, dtype="float32", name=f"probe{i}_fc"))
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier_fc")
        channels = [int(d.output.shape[-1]) for d in self.detectors]
        self.descriptor_channels = [int(d.output.shape[-1]) for d in self.describers]
        self.feature_shape = tuple(self.detectors[0].output.shape[1:3])
        for i in range(len(self.levels)):
            self.detector_heads[i].build((None, channels[i]))
            self.describer_heads[i].build((None, self.descriptor_channels[i]))
            self.probes[i].build((None, self.descriptor_channels[i]))
        self.classifier.build((None, sum(self.descriptor_channels)))
        self._apply_phase()
        self.built = True

    def _classify_choices(self):
        return ("all", "detector", *self.levels)

    # ------------------------------------------------------------------ inference
    def call(self, images, training=False, classify_with=None):
        classify_with = classify_with or self.classify_with
        if not training and (self.training_phase == "branches" or classify_with == "detector"):
            # only the fine detector's logits are asked for: run that network alone
            features = ops.cast(self.detectors[-1](images, training=False), "float32")
            return self.detector_heads[-1](ops.mean(features, axis=(1, 2)))
        outputs = self.glimpse(images, training=training, classify_with=classify_with)
        if training:  # read by compute_loss in the same step (as Saccader)
            object.__setattr__(self, "_train_outputs", outputs)
        return outputs["logits"]

    def _detect(self, images, training):
        """Per level: (logits (N, K_l) float32, energy (N, h, w) float32: the predicted class's CAM)."""
        results = []
        for detector, head in zip(self.detectors, self.detector_heads):
            features = ops.cast(detector(images, training=training), "float32")
            logits = head(ops.mean(features, axis=(1, 2)))
            kernel = ops.cast(head.kernel, "float32")  # (C, K_l)
            predicted = ops.one_hot(ops.argmax(logits, axis=-1), kernel.shape[-1], dtype="float32")
            weights = ops.matmul(predicted, ops.transpose(kernel))  # (N, C): the predicted class's row
            energy = ops.einsum("nhwc,nc->nhw", features, ops.stop_gradient(weights))
            results.append((logits, energy))
        return results

    def glimpse(self, images, training=False, classify_with: str | None = None) -> dict:
        """Runs the whole pipeline.

        Args:
            images: ``(N, H, W, 3)`` preprocessed images (the model's input size).
            training: training mode (the detectors always run in inference mode in the
                ``"descriptors"`` phase, as they are frozen then).
            classify_with: overrides the constructor's (``"all"``, a level name, ``"detector"``).

        Returns:
            A dict: ``logits`` ``(N, K_fine)`` float32 (``classify_with``'s); ``boxes``
            ``(N, L, 4)`` float32 discovered regions (top, left, bottom, right; exclusive) in input
            pixels, one per level, coarsest first; ``energy`` ``(N, L, h, w)`` float32 the CAMs
            the boxes come from; ``glimpse_logits`` ``(N, L, K_fine)`` each level's probe (fine
            classes from that level's descriptor alone); ``detector_logits`` and ``level_logits``
            (lists of ``(N, K_l)``: each level's detector on the whole image and describer on its
            region, for that level's classes); ``descriptors`` ``(N, sum C)``; ``levels``
            (the level names). In the ``"branches"`` phase during training only the
            detectors run (``logits`` the fine detector's).
        """
        classify_with = classify_with or self.classify_with
        check_choice("classify_with", classify_with, self._classify_choices())
        branches = self.training_phase == "branches"
        detected = self._detect(images, training=bool(training) and branches)
        detector_logits = [logits for logits, _ in detected]
        outputs = {"detector_logits": detector_logits, "levels": list(self.levels)}
        if branches and training:
            outputs["logits"] = detector_logits[-1]
            return outputs
        energy = ops.stack([ops.stop_gradient(e) for _, e in detected], axis=1)
        boxes = ops.stack([region_boxes(energy[:, i], self.image_shape[:2], self.threshold)
                           for i in range(len(self.levels))], axis=1)
        descriptors, level_logits, probe_logits = [], [], []
        describe_training = bool(training) and not branches
        for i, (describer, head, probe) in enumerate(zip(self.describers, self.describer_heads, self.probes)):
            region = crop_and_resize(images, boxes[:, i], self.region_size)
            region = ops.cast(region, describer.compute_dtype)
            descriptor = ops.mean(ops.cast(describer(region, training=describe_training), "float32"), axis=(1, 2))
            descriptors.append(descriptor)
            level_logits.append(head(descriptor))
            probe_logits.append(probe(ops.stop_gradient(descriptor)))
        concat = ops.concatenate(descriptors, axis=-1)
        final = self.classifier(ops.stop_gradient(concat))
        if branches or classify_with == "detector":
            logits = detector_logits[-1]
        elif classify_with == "all":
            logits = final
        else:
            logits = probe_logits[self.levels.index(classify_with)]
        outputs.update({"logits": logits, "boxes": boxes, "energy": energy, "descriptors": concat,
                        "glimpse_logits": ops.stack(probe_logits, axis=1), "level_logits": level_logits,
                        "all_logits": final})
        return outputs

    # ------------------------------------------------------------------ training
    def level_labels(self, y):
        """Each level's labels ``(N, K_l)`` float32 from fine labels: one-hot/smoothed ``(N, K)`` or integer ``(N,)``.

        ``y_l = y @ M_l`` with :meth:`Hierarchy.mapping_matrix` (a one-hot fine label gives the
        one-hot parent; a smoothed one keeps its mass on the parents).
        """
        y = ops.convert_to_tensor(y)
        if len(y.shape) < 2 or y.shape[-1] != self.num_classes or self.num_classes == 1:
            y = ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), self.num_classes, dtype="float32")
        y = ops.cast(y, "float32")
        return [ops.matmul(y, ops.convert_to_tensor(m)) for m in self.mappings]

    def set_training_phase(self, phase: str) -> None:
        """Switches the phase (module docstring): what trains and what the loss is; recompile after."""
        check_choice("training_phase", phase, PHASES)
        self.training_phase = phase
        self._apply_phase()
        self.train_function = None

    def _apply_phase(self):
        branches = self.training_phase == "branches"
        for layer in (*self.detectors, *self.detector_heads):
            layer.trainable = branches
        for layer in (*self.describers, *self.describer_heads, *self.probes, self.classifier):
            layer.trainable = not branches

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The phase's loss (module docstring); outside training, the compiled loss of the logits.

        ``"branches"``: ``sum_l CE(y_l, detector_l)``. ``"descriptors"``: ``sum_l CE(y_l,
        describer_l) + CE(y, classifier(concat)) + sum_l CE(y, probe_l)`` (the last two on
        stop-gradient descriptors). Cross-entropies are batch means; sample weights are not used.
        """
        outputs = self.__dict__.pop("_train_outputs", None)
        if not training or outputs is None or y is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        labels = self.level_labels(y)
        ce = lambda target, logits: ops.mean(keras.losses.categorical_crossentropy(  # noqa: E731
            target, ops.cast(logits, "float32"), from_logits=True))
        if self.training_phase == "branches":
            terms = [ce(t, logits) for t, logits in zip(labels, outputs["detector_logits"])]
        else:
            terms = [ce(t, logits) for t, logits in zip(labels, outputs["level_logits"])]
            terms.append(ce(labels[-1], outputs["all_logits"]))
            terms += [ce(labels[-1], outputs["glimpse_logits"][:, i]) for i in range(len(self.levels))]
        terms += [ops.cast(self._aggregate_additional_loss(loss), "float32") for loss in self.losses]
        return ops.sum(ops.stack(terms))

    def initialize_from(self, source: keras.Model) -> None:
        """The start of a phase (``init_from``): takes every weight of a MultiGranularity of the same
        configuration; from a ``"branches"``-phase one, each describer (and its head) also starts as its
        level's trained detector (same backbone, any region size)."""
        if not isinstance(source, MultiGranularity):
            raise ValueError(f"init_from must be a MultiGranularity model (a previous phase), received "
                             f"{type(source).__name__} {source.name!r}.")
        if [tuple(v.shape) for v in source.weights] != [tuple(v.shape) for v in self.weights]:
            raise ValueError(f"MultiGranularity {source.name!r} does not have this model's weights (another "
                             f"backbone, hierarchy, region size or number of classes).")
        self.set_weights(source.get_weights())
        if source.training_phase == "branches":
            for detector, head, describer, describer_head in zip(self.detectors, self.detector_heads,
                                                                 self.describers, self.describer_heads):
                describer.set_weights(detector.get_weights())
                describer_head.set_weights(head.get_weights())

    def get_config(self):
        return {"num_classes": self.num_classes, "input_shape": list(self.image_shape),
                "hierarchy": self.hierarchy.to_dict(), "backbone": self.backbone,
                "backbone_kwargs": dict(self.backbone_kwargs), "region_size": list(self.region_size),
                "threshold": self.threshold, "classify_with": self.classify_with,
                "training_phase": self.training_phase, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def multi_granularity(num_classes: int = 10, input_shape: Sequence[int] = (128, 128, 3), include_top: bool = True,
                      pooling: str | None = None, **kwargs) -> MultiGranularity:
    """Multiple granularity descriptors over a label hierarchy (Wang et al., ICCV 2015).

    Arguments are those of :class:`MultiGranularity`; ``include_top`` must be True (the model
    is a classifier) and ``pooling`` None.
    """
    if not include_top or pooling is not None:
        raise ValueError(f"multi_granularity is a classifier: `include_top` must be True and `pooling` None, "
                         f"received include_top={include_top!r}, pooling={pooling!r}.")
    return MultiGranularity(num_classes, input_shape, **kwargs)


register_model(multi_granularity)
