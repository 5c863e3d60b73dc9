"""Building a model with weights: :func:`load`, the weight-format loaders and the head swap.

:func:`load` resolves its argument with :func:`~keras_attention.weights._resolve.resolve_source`
(registry name, ``hf://`` address, published folder, training run, ``.keras`` /
``.weights.h5`` file), builds the registered architecture or reads the Keras file, loads
the verified weights with the loader of the entry's format (``"keras"``: Keras's
``load_weights``; ``"timm"``: :func:`keras_attention.convert.timm.load_timm_files`), and,
when another ``num_classes``, ``input_shape`` or ``include_top=False`` is asked for, copies
every weight by layer name into the requested model except the classifier's
(:func:`transfer_weights`). ``keras.saving.load_model("hf://org/repo")`` works too once
``keras_attention`` is imported (our layers are registered as serializable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import keras

from keras_attention._errors import InvalidInputError
from keras_attention._files import sha256_file
from keras_attention.convert.timm import load_timm_files
from keras_attention.registry import create_model, split_model_name
from keras_attention.weights._download import download, fetch_verified, resolve_files, snapshot_commit
from keras_attention.weights._registry import (DEFAULT_CLASSIFIER, KERAS_WEIGHTS_FILENAME, ChecksumError,
                                               WeightsError, WeightsNotFoundError)
from keras_attention.weights._resolve import (FOLDER, HUB, REGISTRY, ModelSource, find_entry, metadata_cfg,
                                              resolve_source, source_cfg)

WeightsLoader = Callable[[keras.Model, dict, dict], None]


def _load_keras_weights(model: keras.Model, files: dict, cfg: dict) -> None:
    model.load_weights(str(files[KERAS_WEIGHTS_FILENAME]))


#: Registry format -> ``loader(model, files, cfg)`` (``files``: ``{file name: verified path}``).
FORMAT_LOADERS: dict[str, WeightsLoader] = {"keras": _load_keras_weights, "timm": load_timm_files}


def register_weights_format(fmt: str, loader: WeightsLoader) -> None:
    """Registers ``loader(model, files, cfg)`` that loads weights of registry format ``fmt``.

    Args:
        fmt: the ``format`` value of ``pretrained.json`` entries it loads.
        loader: called with the model built by ``create_model(cfg["architecture"],
            **cfg["model_kwargs"])``, ``{file name: verified local path}`` and the entry.
    """
    FORMAT_LOADERS[fmt] = loader


def format_loader(fmt: str) -> WeightsLoader:
    """The loader of registry format ``fmt``.

    Raises:
        WeightsError: no loader for ``fmt`` (the known formats are listed).
    """
    if fmt not in FORMAT_LOADERS:
        raise WeightsError(f"No loader for weights format {fmt!r}; known: {sorted(FORMAT_LOADERS)}.")
    return FORMAT_LOADERS[fmt]


def transfer_weights(source: keras.Model, target: keras.Model, skip=()) -> list[str]:
    """Copies weights layer by layer, matched by name, from ``source`` into ``target``.

    Every layer of ``target`` that has weights and is not in ``skip`` must exist in
    ``source`` with the same weight shapes. Layers only in ``source`` (e.g. a classifier
    ``target`` does not have) are ignored.

    Args:
        source: the model with the pretrained weights.
        target: the model to fill (built for the requested classes / input size / top).
        skip: names of ``target`` layers left as initialised (the new classifier).

    Returns:
        Names of the layers whose weights were copied.

    Raises:
        InvalidInputError: a layer is missing from ``source`` or its weight shapes differ.

    (Own code: Keras's ``load_weights(skip_mismatch=True)`` skips mismatched layers silently;
    here only the named classifier is skipped and anything else that does not fit is an error.)
    """
    by_name = {layer.name: layer for layer in source.layers}
    skip = set(skip)
    moved = []
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        if layer.name not in by_name:
            raise InvalidInputError(f"Cannot transfer weights: layer {layer.name!r} of the new model is not "
                                    f"in the pretrained model.")
        src = by_name[layer.name].get_weights()
        dst = layer.get_weights()
        if [w.shape for w in src] != [w.shape for w in dst]:
            raise InvalidInputError(f"Cannot transfer weights of layer {layer.name!r}: pretrained shapes "
                                    f"{[w.shape for w in src]}, new model shapes {[w.shape for w in dst]}.")
        layer.set_weights(src)
        moved.append(layer.name)
    return moved


def _requested_kwargs(base: dict, num_classes=None, input_shape=None, include_top=True,
                      extra: dict | None = None) -> dict:
    kwargs = dict(base)
    if kwargs.get("input_shape") is not None:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if not include_top:
        kwargs["include_top"] = False
    kwargs.update(extra or {})
    return kwargs


def _adapt(source: keras.Model, cfg: dict, base_kwargs: dict, kwargs: dict, what: str) -> keras.Model:
    """``source`` if ``kwargs`` asks for nothing new, else a new model with its weights (fresh head)."""
    if kwargs == base_kwargs:
        return source
    if "architecture" not in cfg:
        raise WeightsError(f"{what}: changing num_classes/input_shape/include_top needs the architecture, "
                           f"but the model has no keras_attention pretrained config.")
    target = create_model(cfg["architecture"], **kwargs)
    classifier = cfg.get("classifier", DEFAULT_CLASSIFIER)
    new_head = kwargs.get("num_classes", base_kwargs.get("num_classes")) != base_kwargs.get("num_classes")
    try:
        transfer_weights(source, target, skip=(classifier,) if new_head else ())
    except InvalidInputError as e:
        raise InvalidInputError(f"{what}: {e}") from e
    return target


def _check_sha256(path: Path, expected: str | None, origin: str) -> None:
    if expected:
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumError(f"{path} has the wrong SHA-256: expected {expected} ({origin}), got {actual}.")


def _load_registry(source: ModelSource, pretrained, wanted: dict, revision, cache_dir) -> keras.Model:
    if not pretrained:
        arch, tag = split_model_name(source.name)
        base = find_entry(source).cfg["model_kwargs"] if tag else {}
        return create_model(arch, **_requested_kwargs(base, extra=wanted))
    entry = find_entry(source)
    cfg = entry.cfg
    files = resolve_files(entry, revision=revision, cache_dir=cache_dir)
    base_kwargs = _requested_kwargs(cfg["model_kwargs"])
    model = create_model(cfg["architecture"], **base_kwargs)
    format_loader(cfg["format"])(model, files, cfg)
    return _adapt(model, cfg, base_kwargs, _requested_kwargs(cfg["model_kwargs"], extra=wanted), entry.name)


def _load_folder(folder: Path, cfg: dict, wanted: dict, what: str,
                 expected_sha256: str | None = None) -> keras.Model:
    """A published (Keras unzipped) folder: ``config.json``, ``model.weights.h5``, ``metadata.json``."""
    if not (folder / "config.json").is_file() or not (folder / KERAS_WEIGHTS_FILENAME).is_file():
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
        raise WeightsNotFoundError(f"{what}: expected a Keras model folder with config.json and "
                                   f"{KERAS_WEIGHTS_FILENAME}; found {found}.")
    expected = expected_sha256 or cfg.get("files", {}).get(KERAS_WEIGHTS_FILENAME, {}).get("sha256")
    _check_sha256(folder / KERAS_WEIGHTS_FILENAME, expected, "metadata.json")
    model = keras.saving.load_model(str(folder), compile=False)
    base = _requested_kwargs(cfg.get("model_kwargs", {}))
    return _adapt(model, cfg, base, _requested_kwargs(cfg.get("model_kwargs", {}), extra=wanted), what)


def _load_hub(source: ModelSource, pretrained: bool, wanted: dict, cache_dir) -> keras.Model:
    rev = source.revision or "main"
    meta_path = download(source.repo_id, "metadata.json", rev, cache_dir, context=source.spec)
    cfg = metadata_cfg(Path(meta_path), source.spec, required=not pretrained)
    if not pretrained:
        return _random(source, cfg, wanted)
    commit = snapshot_commit(meta_path, rev)  # what follows comes from the same commit
    expected = cfg.get("files", {}).get(KERAS_WEIGHTS_FILENAME, {}).get("sha256")
    fetch_verified(source.repo_id, KERAS_WEIGHTS_FILENAME, commit, expected, cache_dir=cache_dir,
                   context=source.spec)
    config = Path(download(source.repo_id, "config.json", commit, cache_dir, context=source.spec))
    return _load_folder(config.parent, cfg, wanted, source.spec, expected_sha256=expected)


def _random(source: ModelSource, cfg: dict, wanted: dict) -> keras.Model:
    """``pretrained=False`` for a folder, file or Hub address: the architecture of its config."""
    if "architecture" not in cfg:
        raise WeightsError(f"{source.spec}: pretrained=False needs the architecture, but the model has no "
                           f"keras_attention pretrained config.")
    return create_model(cfg["architecture"], **_requested_kwargs(cfg.get("model_kwargs", {}), extra=wanted))


def _load_run(source: ModelSource, cfg: dict, wanted: dict) -> keras.Model:
    """A training run's ``model.keras``, or its ``model.weights.h5`` built from ``pretrained.json``."""
    path = source.path
    base = _requested_kwargs(cfg.get("model_kwargs", {}))
    if path.name.endswith(".keras"):
        model = keras.saving.load_model(path, compile=False)
    else:
        if "architecture" not in cfg:
            raise InvalidInputError(f"{str(path)!r} holds weights only; it needs a pretrained.json "
                                    f"with 'architecture' and 'model_kwargs' next to it.")
        _check_sha256(path, cfg.get("files", {}).get(path.name, {}).get("sha256"), str(source.cfg_path))
        model = create_model(cfg["architecture"], **base)
        model.load_weights(path)
    return _adapt(model, cfg, base, _requested_kwargs(cfg.get("model_kwargs", {}), extra=wanted),
                  source.spec)


def load(name, *, pretrained: bool = True, num_classes: int | None = None, input_shape=None,
         include_top: bool = True, revision: str | None = None, cache_dir: str | None = None,
         **kwargs) -> keras.Model:
    """A model with pretrained weights, by registry name, Hub address, folder or file.

    Args:
        name: ``"se_resnet20"`` (its default tag), ``"se_resnet20.cifar10"``,
            ``"hf://org/repo"`` or ``"hf://org/repo@<revision>"`` (a folder published by
            :func:`~keras_attention.weights.publish`, or any Keras unzipped model folder), a
            local folder in that layout (``config.json``, ``model.weights.h5``,
            ``metadata.json``), a training run folder, or a ``.keras`` / ``.weights.h5``
            file (with the run's ``pretrained.json`` beside it); see
            :func:`~keras_attention.weights.resolve_source`.
        pretrained: ``False`` builds the architecture with random weights (with the tag's
            ``model_kwargs`` as defaults when a tag is named).
        num_classes: classifier width; if it differs from the weights', every weight but
            the classifier's (layer ``cfg["classifier"]``, default ``"head_fc"``) is
            loaded and the classifier is freshly initialised, ready for ``fit``.
        input_shape: ``(H, W, C)`` to build for, if not the weights' (the networks are
            fully convolutional up to global pooling, so all weights still apply).
        include_top: ``False`` drops the classifier (features or pooled features, see the
            builder's ``pooling``).
        revision: Hub commit (or branch) to use instead of the entry's pinned commit (or
            the address's ``@revision``).
        cache_dir: Hugging Face cache folder (default ``HF_HUB_CACHE``).
        **kwargs: further builder arguments (``pooling``, ...).

    Returns:
        An uncompiled ``keras.Model``.

    Raises:
        RegistryError: unknown name (the tags that exist are listed) or malformed entry.
        ChecksumError: a weights file has the wrong SHA-256 (both hashes named).
        WeightsNotFoundError: weights neither local, cached nor downloadable (repo, file,
            revision and how to fetch them named); ``ModelNotFoundError`` for a path that
            does not exist.
    """
    source = resolve_source(name, revision)
    wanted = _requested_kwargs({}, num_classes, input_shape, include_top, kwargs)
    if source.kind == REGISTRY:
        return _load_registry(source, pretrained, wanted, revision, cache_dir)
    if source.kind == HUB:
        return _load_hub(source, pretrained, wanted, cache_dir)
    cfg = source_cfg(source, required=not pretrained)
    if not pretrained:
        return _random(source, cfg, wanted)
    if source.kind == FOLDER:
        return _load_folder(source.path, cfg, wanted, source.spec)
    return _load_run(source, cfg, wanted)
