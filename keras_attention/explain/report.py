"""Explanations written to files: one PNG per image, and the per-class excitation figure.

What ``keras-attention explain`` and the docs gallery run; the model is anything
:func:`keras_attention.evaluation.load_for_inference` loads (its preprocessing and label
names come with it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keras_attention._files import write_json
from keras_attention.data import transforms
from keras_attention.evaluation import LoadedModel, load_for_inference, load_image_file
from keras_attention.explain._gradcam import grad_cam
from keras_attention.explain._maps import attention_maps, excitation_per_class
from keras_attention.explain._probe import DEFAULT_QUERIES
from keras_attention.explain.figures import plot_excitation_per_class, plot_explanation, save_figure


def display_view(image: np.ndarray, preprocessing) -> np.ndarray:
    """The model's view of a raw uint8 image (resize, centre crop), as uint8 for display."""
    view = transforms.eval_view(image, preprocessing.size, preprocessing.crop_pct, preprocessing.interpolation)
    return np.clip(np.round(view), 0, 255).astype(np.uint8)


def softmax(outputs: np.ndarray, is_probability: bool) -> np.ndarray:
    """Class probabilities from a model's outputs (logits unless ``is_probability``)."""
    if is_probability:
        return outputs
    z = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _loaded(model) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_for_inference(model)


def explain_images(model, images, *, layers=None, queries=DEFAULT_QUERIES, gradcam: bool = True,
                   gradcam_layer: str | None = None, class_index=None, true_labels=None,
                   title: str | None = None):
    """Figures explaining raw images: one :func:`~keras_attention.explain.figures.plot_explanation` each.

    Args:
        model: a :class:`~keras_attention.evaluation.LoadedModel` or anything
            ``load_for_inference`` takes (``"se_resnet20.cifar10"``, a run folder, ...).
        images: uint8 ``(H, W, 3)`` images (any sizes).
        layers, queries: see :func:`~keras_attention.explain.attention_maps` (``layers=[]``:
            no attention maps).
        gradcam, gradcam_layer, class_index: Grad-CAM on or off, its layer and class
            (see :func:`~keras_attention.explain.grad_cam`).
        true_labels: the images' true class names, if known.
        title: figure title (default: the model's name).

    Returns:
        The figures, in order.
    """
    loaded = _loaded(model)
    pre = loaded.preprocessing
    maps = attention_maps(loaded.model, list(images), layers=layers, queries=queries, preprocessing=pre) \
        if layers != [] else None
    cam = grad_cam(loaded.model, list(images), layer=gradcam_layer, class_index=class_index,
                   preprocessing=pre) if gradcam else None
    outputs = maps.outputs if maps is not None else (cam.outputs if cam is not None else None)
    probabilities = softmax(outputs, loaded.outputs_probabilities) if outputs is not None else None
    figures = []
    for i, image in enumerate(images):
        figures.append(plot_explanation(display_view(image, pre), maps, cam, i, label_names=loaded.label_names,
                                        probabilities=probabilities,
                                        true_label=None if true_labels is None else true_labels[i],
                                        title=title or loaded.name))
    return figures


def explain_files(model, image_paths, output, *, dpi: int = 100, **kwargs) -> list[Path]:
    """Writes ``output/<image name>.png`` for every image file (see :func:`explain_images`).

    Two files with the same name get ``_1``, ``_2``, ... suffixes.

    Returns:
        The PNG paths, in the order of ``image_paths``.

    Raises:
        InvalidInputError: an image file that is missing or cannot be decoded (named).
    """
    paths = [os.fspath(p) for p in image_paths]
    images = [load_image_file(p) for p in paths]
    figures = explain_images(model, images, **kwargs)
    written, seen = [], {}
    for path, figure in zip(paths, figures):
        stem = Path(path).stem
        seen[stem] = seen.get(stem, -1) + 1
        name = stem if seen[stem] == 0 else f"{stem}_{seen[stem]}"
        written.append(save_figure(figure, Path(output) / f"{name}.png", dpi=dpi))
    return written


def excitation_files(model, dataset: str, split: str, output, *, data_dir: str | None = None,
                     layers=None, batch_size: int = 100, progress: bool = False, dpi: int = 100,
                     figure_layers=None, classes=None) -> tuple[Path, Path]:
    """Writes ``excitation_per_class.png`` (SENet Fig. 6) and ``.json`` (the numbers) to ``output``.

    Args:
        model: as for :func:`explain_images`.
        dataset, split, data_dir: any dataset :func:`keras_attention.data.load_source` reads.
        layers: the attention layers averaged (default: all with a channel gate).
        figure_layers: the layers plotted (default: several depths, see
            :func:`~keras_attention.explain.figures.default_depths`).
        classes: the classes plotted (default: all).

    Returns:
        ``(png path, json path)``.
    """
    from keras_attention.data import load_source
    loaded = _loaded(model)
    source = load_source(dataset, split, data_dir=data_dir, label_names=loaded.label_names)
    result = excitation_per_class(loaded.model, source, loaded.preprocessing, layers=layers,
                                  batch_size=batch_size, progress=progress)
    figure = plot_excitation_per_class(result, layers=figure_layers, classes=classes,
                                       title=f"{loaded.name}: mean excitation per class, {result.dataset}")
    output = Path(output)
    png = save_figure(figure, output / "excitation_per_class.png", dpi=dpi)
    numbers = {"model": loaded.name, "dataset": result.dataset, "label_names": result.label_names,
               "counts": result.counts.tolist(),
               "layers": [{"layer": name, "stage": stage, "block": block, "map": result.map_name[name],
                           "overall": result.overall[name].tolist(),
                           "per_class": [[None if np.isnan(v) else float(v) for v in row]
                                         for row in result.per_class[name]]}
                          for name, stage, block in zip(result.layers, result.stages, result.blocks)]}
    return png, write_json(output / "excitation_per_class.json", numbers)
