"""The ``pretrained.json`` entry of a finished run (moves to the weights package)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from keras_attention._files import sha256_file
from keras_attention.registry import split_model_name

# Papers of the attention prefixes and model families, for the pretrained config of a trained model.
_PAPERS = {
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
}


def _paper_for(arch: str):
    """The paper of an architecture's attention prefix or family (``se_resnet20`` -> SENet,
    ``resnet20`` -> ResNet, ``colornet40_12_lab`` -> ColorNet)."""
    family = arch.split("_", 1)[0].rstrip("0123456789")
    return _PAPERS.get(family, _PAPERS["resnet"] if "resnet" in arch else {"title": arch})


def pretrained_config(cfg, label_names, model_kwargs, weights_path: Path,
                      metrics: dict | None, command: str | None, hardware: str | None) -> dict:
    """The ``pretrained.json`` entry (schema in ``weights/README.md``) for a trained model."""
    arch = split_model_name(cfg.model)[0]
    tag = cfg.tag or re.sub(r"[^A-Za-z0-9_]+", "_", Path(cfg.dataset).name.split(":")[0]).strip("_")
    top = metrics or {}
    return {
        "schema_version": 1,
        "name": f"{arch}.{tag}",
        "architecture": arch,
        "tag": tag,
        "default": True,
        "format": "keras",
        "files": {"model.weights.h5": {"sha256": sha256_file(weights_path),
                                       "size": weights_path.stat().st_size}},
        "hub": {"repo_id": f"keras-attention/{arch}.{tag}", "revision": None},
        "model_kwargs": model_kwargs,
        "classifier": "head_fc",
        "input_size": list(cfg.input_size),
        "crop_pct": cfg.crop_pct,
        "interpolation": cfg.interpolation,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "num_classes": len(label_names),
        "label_names": list(label_names),
        "license": "apache-2.0",
        "paper": _paper_for(arch),
        "dataset": cfg.dataset if not os.path.isdir(cfg.dataset) else Path(cfg.dataset).name,
        "metrics": {"top1": top.get("top1"), "top5": top.get("top5"),
                    "per_class_top1": top.get("per_class_top1"),
                    "split": cfg.val_split, "dataset": cfg.dataset,
                    "command": f"keras-attention evaluate {arch}.{tag} --dataset {cfg.dataset} "
                               f"--split {cfg.val_split}" if cfg.val_split else None},
        "source": {"recipe": _recipe_ref(cfg.recipe), "command": command, "hardware": hardware,
                   "epochs": cfg.epochs},
    }


def _recipe_ref(recipe: str | None) -> str | None:
    """A recipe path as ``weights/README.md`` writes it: relative to ``weights/`` if inside."""
    if not recipe:
        return None
    parts = Path(recipe).as_posix().split("/")
    if "weights" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("weights") + 1:])
    return recipe
