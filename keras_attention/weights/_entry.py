"""Writing registry entries: the one ``pretrained.json`` builder and the table of papers.

Every ``pretrained.json`` the package writes (a training run's, a timm checkpoint's entry,
the ``pretrained_cfg`` of a converted folder) comes from :func:`pretrained_entry`, in the
field order of ``weights/README.md``, citing the paper that :func:`paper_for` finds for the
architecture.
"""

from __future__ import annotations

import re

from keras_attention.weights._registry import (DEFAULT_CLASSIFIER, KERAS_WEIGHTS_FILENAME, SCHEMA_VERSION,
                                               validate_pretrained_cfg)

#: The papers of the attention prefixes and model families (the first lowercase word of an
#: architecture name: ``se_resnet20`` -> ``se``, ``resnext26d_32x4d`` -> ``resnext``).
PAPERS: dict[str, dict] = {
    "se": {"title": "Squeeze-and-Excitation Networks", "arxiv": "1709.01507"},
    "ge": {"title": "Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks",
           "arxiv": "1810.12348"},
    "gc": {"title": "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
           "arxiv": "1904.11492"},
    "cbam": {"title": "CBAM: Convolutional Block Attention Module", "arxiv": "1807.06521"},
    "nam": {"title": "NAM: Normalization-based Attention Module", "arxiv": "2111.12419"},
    "eca": {"title": "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
            "arxiv": "1910.03151"},
    "resnet": {"title": "Deep Residual Learning for Image Recognition", "arxiv": "1512.03385"},
    "resnext": {"title": "Aggregated Residual Transformations for Deep Neural Networks",
                "arxiv": "1611.05431"},
    "densenet": {"title": "Densely Connected Convolutional Networks", "arxiv": "1608.06993"},
    "colornet": {"title": "ColorNet: Investigating the importance of color spaces for image "
                          "classification", "arxiv": "1902.00267"},
    "nl": {"title": "Non-local Neural Networks", "arxiv": "1711.07971"},
    "attention": {"title": "Residual Attention Network for Image Classification", "arxiv": "1704.06904"},
    "sk": {"title": "Selective Kernel Networks", "arxiv": "1903.06586"},
    "resnest": {"title": "ResNeSt: Split-Attention Networks", "arxiv": "2004.08955"},
    "bagnet": {"title": "Approximating CNNs with Bag-of-local-Features models works surprisingly well on "
                        "ImageNet", "arxiv": "1904.00760"},
    "saccader": {"title": "Saccader: Improving Accuracy of Hard Attention Models for Vision", "arxiv": "1908.07644"},
    "tnet": {"title": "Hard-Attention for Scalable Image Classification", "arxiv": "2102.10212"},
    "racnn": {"title": "Look Closer to See Better: Recurrent Attention Convolutional Neural Network for "
                       "Fine-grained Image Recognition",
              "url": "https://openaccess.thecvf.com/content_cvpr_2017/html/Fu_Look_Closer_to_CVPR_2017_paper.html"},
    "multi": {"title": "Multiple Granularity Descriptors for Fine-grained Categorization",
              "url": "https://openaccess.thecvf.com/content_iccv_2015/html/Wang_Multiple_Granularity_Descriptors_ICCV_2015_paper.html"},
    "bat": {"title": "Non-Local Neural Networks With Grouped Bilinear Attentional Transforms",
            "url": "https://openaccess.thecvf.com/content_CVPR_2020/html/Chi_Non-Local_Neural_Networks_With_"
                   "Grouped_Bilinear_Attentional_Transforms_CVPR_2020_paper.html"},
}

#: ResNet-D/-T (deep or tiered stem, average-pool shortcut; timm's "ts" models: tiered stem, SiLU):
#: cited next to the family's paper.
RESNET_D_PAPER = {"title": "Bag of Tricks for Image Classification with Convolutional Neural Networks",
                  "arxiv": "1812.01187"}
_RESNET_D = re.compile(r"resne(t|xt)\d+([dt]|ts)(_|$)")


def paper_for(arch: str) -> dict:
    """The paper of an architecture's attention prefix or family.

    Args:
        arch: a registered architecture (``se_resnet20`` -> SENet, ``resnet50d`` -> ResNet,
            ``resnext26d_32x4d`` -> ResNeXt, ``colornet40_12_lab`` -> ColorNet).

    Returns:
        A new ``{"title", "arxiv"}`` dict (``{"title": arch}`` for an unknown family).
    """
    family = re.match(r"[a-z]*", arch).group()
    paper = PAPERS.get(family) or (PAPERS["resnet"] if "resnet" in arch else {"title": arch})
    return dict(paper)


def related_papers_for(arch: str) -> list[dict]:
    """Papers of design details beyond the family's (the ResNet-D tricks paper for ``*d``/``*t``/``*ts``)."""
    return [dict(RESNET_D_PAPER)] if _RESNET_D.search(arch) else []


#: Optional fields placed right after the field they refine (as timm's configs pair them).
_AFTER = {"test_input_size": "input_size", "test_crop_pct": "crop_pct", "crop_mode": "interpolation",
          "related_papers": "paper"}


def pretrained_entry(*, architecture: str, tag: str | None, fmt: str = "keras", files: dict | None = None,
                     repo_id: str | None = None, revision: str | None = None, default: bool = True,
                     model_kwargs: dict, input_size, crop_pct: float, interpolation: str, mean, std,
                     num_classes: int | None = None, label_names=None, labels_file: str | None = None,
                     license: str | None = None, paper: dict | None = None, dataset: str | None = None,
                     metrics: dict | None = None, source: dict | None = None,
                     classifier: str = DEFAULT_CLASSIFIER, validate: bool = True, **extra) -> dict:
    """A ``pretrained.json`` entry (schema in ``weights/README.md``), fields in schema order.

    Args:
        architecture: registered builder name (``"se_resnet20"``).
        tag: the tag (``"cifar10"``); ``None`` for a converted folder with no tag (no ``name``).
        fmt: ``"keras"`` or ``"timm"``.
        files: ``{filename: {"sha256", "size"}}``; default ``{"model.weights.h5": null hash}``
            (filled in by the Hub-folder writer).
        repo_id, revision: where the files are published (``hub``); no ``hub`` field when
            ``repo_id`` is ``None``.
        default: whether ``load(architecture)`` picks this tag.
        model_kwargs: builder arguments of the weights (``num_classes``, ``input_shape``, ...).
        input_size: ``[H, W, C]`` evaluation input size.
        crop_pct: evaluation crop fraction in (0, 1].
        interpolation: resize method (``"bilinear"``, ``"bicubic"``, ...).
        mean, std: per-channel normalisation of [0, 1] RGB, one number per channel.
        num_classes: classifier width (default: ``len(label_names)`` or ``model_kwargs``).
        label_names: class names in output order; or ``labels_file`` (relative to ``weights/``).
        license: SPDX-style id (``"apache-2.0"``).
        paper: default :func:`paper_for` ``(architecture)``.
        dataset: training data name (``"cifar10"``, ``"imagenet-1k"``).
        metrics: ``{"top1", "top5", "split", "dataset", "command", ...}`` in percent.
        source: where the weights come from (recipe, command, hardware / timm model).
        classifier: the classifier layer replaced by a new head.
        validate: check the result against the schema (a complete registry entry).
        **extra: further fields (``test_input_size``, ``crop_mode``, ``related_papers``,
            ``notes``, ...), kept in the entry.

    Returns:
        The entry as a new dict.

    Raises:
        RegistryError: ``validate`` and the entry breaks the schema (the field is named).
    """
    if num_classes is None:
        num_classes = len(label_names) if label_names is not None else model_kwargs.get("num_classes")
    entry = {"schema_version": SCHEMA_VERSION}
    if tag is not None:
        entry.update(name=f"{architecture}.{tag}", architecture=architecture, tag=tag, default=default)
    else:
        entry["architecture"] = architecture
    entry.update(format=fmt, files=files if files is not None else
                 {KERAS_WEIGHTS_FILENAME: {"sha256": None, "size": None}})
    if repo_id is not None:
        entry["hub"] = {"repo_id": repo_id, "revision": revision}
    entry.update(model_kwargs=model_kwargs, classifier=classifier, input_size=list(input_size),
                 crop_pct=crop_pct, interpolation=interpolation, mean=list(mean), std=list(std),
                 num_classes=num_classes)
    if label_names is not None:
        entry["label_names"] = list(label_names)
    elif labels_file is not None:
        entry["labels_file"] = labels_file
    optional = {"license": license, "paper": paper if paper is not None else paper_for(architecture),
                "dataset": dataset, "metrics": metrics, "source": source}
    entry.update({k: v for k, v in optional.items() if v is not None})
    placed = {}
    for key, value in entry.items():
        placed[key] = value
        placed.update({k: v for k, v in extra.items() if _AFTER.get(k) == key})
    placed.update({k: v for k, v in extra.items() if k not in placed})
    if validate:
        validate_pretrained_cfg(placed, f"pretrained.json of {placed.get('name', architecture)}")
    return placed
