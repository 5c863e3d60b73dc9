"""One resolver for every way of naming a model, shared by ``load`` and ``load_for_inference``.

:func:`resolve_source` turns what a user types into a :class:`ModelSource`:

==========================================  ==========  ===========================================
given                                       kind        model / config
==========================================  ==========  ===========================================
``"se_resnet20"``, ``"se_resnet20.cifar10"``  registry    the entry's weights / ``pretrained.json``
``"hf://org/repo[@revision]"``              hub         the published Keras folder / its metadata
a folder with ``config.json`` and no        folder      the same, on disk
``pretrained.json``
a training run folder                       run         ``model.keras`` (else ``model.weights.h5``)
                                                        / ``pretrained.json``
a ``.keras`` or ``.weights.h5`` file         run         the file / ``pretrained.json`` beside it
==========================================  ==========  ===========================================

A string is a local path when it is a ``PathLike``, contains a path separator, starts with
``~`` or ends with ``.keras``/``.h5``; otherwise it is a registry name, even if a folder of
that name exists in the working directory (write ``./name``; the error says so).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from keras_attention._errors import InvalidInputError
from keras_attention.weights._download import download
from keras_attention.weights._registry import (KERAS_WEIGHTS_FILENAME, PRETRAINED_FILENAME, REPO_ID_RE,
                                               ModelNotFoundError, PretrainedEntry, RegistryError, entry_cfg,
                                               find_pretrained)

REGISTRY, HUB, FOLDER, RUN = "registry", "hub", "folder", "run"
_MODEL_FILES = ("model.keras", KERAS_WEIGHTS_FILENAME)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, as :func:`resolve_source` found it.

    ``kind`` is ``"registry"`` (``name``), ``"hub"`` (``repo_id``, ``revision``),
    ``"folder"`` (a published Keras folder at ``path``) or ``"run"`` (a ``.keras`` or
    ``.weights.h5`` file at ``path``, with ``cfg_path`` the ``pretrained.json`` beside it,
    which may be absent). ``spec`` is what was given, for messages.
    """

    kind: str
    spec: str
    name: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None
    cfg_path: Path | None = None


def parse_hf_address(address: str, revision: str | None = None) -> tuple[str, str | None]:
    """``"hf://org/repo@rev"`` -> ``("org/repo", "rev")``.

    Args:
        address: ``hf://org/repo`` or ``hf://org/repo@revision`` (the prefix is optional).
        revision: a revision passed separately; must agree with ``@rev`` if both are given.

    Raises:
        InvalidInputError: not ``org/repo``, or two different revisions.
    """
    body = address[len("hf://"):] if address.startswith("hf://") else address
    repo_id, _, rev = body.partition("@")
    if not REPO_ID_RE.match(repo_id):
        raise InvalidInputError(f"Invalid Hub address {address!r}: expected 'hf://org/repo' or "
                                f"'hf://org/repo@revision'.")
    if rev and revision and rev != revision:
        raise InvalidInputError(f"{address!r} names revision {rev!r} but revision={revision!r} was passed.")
    return repo_id, (rev or revision or None)


def is_local_path(spec) -> bool:
    """Whether ``spec`` names a local file or folder rather than a registry name.

    A ``PathLike``, or a string with a path separator, a leading ``~`` or a ``.keras``/``.h5``
    suffix. A bare ``"se_resnet20"`` is always a registry name.
    """
    if isinstance(spec, os.PathLike):
        return True
    spec = str(spec)
    return not spec.startswith("hf://") and (
        "/" in spec or os.sep in spec or spec.startswith("~") or spec.endswith((".keras", ".h5")))


def _local_source(path: Path, spec: str) -> ModelSource:
    if path.is_dir():
        if not (path / PRETRAINED_FILENAME).is_file() and (path / "config.json").is_file():
            return ModelSource(FOLDER, spec, path=path)
        for filename in _MODEL_FILES:
            if (path / filename).is_file():
                return ModelSource(RUN, spec, path=path / filename, cfg_path=path / PRETRAINED_FILENAME)
        raise ModelNotFoundError(
            f"Folder {spec!r} holds neither a training run (model.keras or {KERAS_WEIGHTS_FILENAME}, with "
            f"{PRETRAINED_FILENAME}) nor a published model folder (config.json, {KERAS_WEIGHTS_FILENAME}, "
            f"metadata.json); found {sorted(p.name for p in path.iterdir())}.")
    if path.is_file():
        if path.name.endswith((".keras", ".weights.h5")):
            return ModelSource(RUN, spec, path=path, cfg_path=path.parent / PRETRAINED_FILENAME)
        raise InvalidInputError(f"{spec!r}: expected a .keras or .weights.h5 file, or a model folder.")
    raise ModelNotFoundError(f"Model file or folder {spec!r} does not exist.")


def resolve_source(spec, revision: str | None = None) -> ModelSource:
    """Classifies a model name, address or path (see the module docstring).

    Args:
        spec: registry name, ``hf://`` address, folder or file (``str`` or ``PathLike``), or
            a :class:`ModelSource` (returned as it is).
        revision: Hub revision for ``hf://`` addresses (must agree with ``@revision``).

    Returns:
        A :class:`ModelSource`.

    Raises:
        ModelNotFoundError: a path that does not exist, or a folder with no model in it.
        InvalidInputError: a malformed ``hf://`` address, a file that is not a model, or a
            ``spec`` that is neither a string nor a path.
    """
    if isinstance(spec, ModelSource):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise InvalidInputError(f"Expected a model name, hf:// address or path; received "
                                f"{type(spec).__name__}.")
    if str(spec).startswith("hf://"):
        repo_id, rev = parse_hf_address(str(spec), revision)
        return ModelSource(HUB, str(spec), repo_id=repo_id, revision=rev)
    if is_local_path(spec):
        return _local_source(Path(os.path.expanduser(os.fspath(spec))), os.fspath(spec))
    return ModelSource(REGISTRY, spec, name=spec)


def find_entry(source: ModelSource) -> PretrainedEntry:
    """The registry entry of a ``"registry"`` source.

    Raises:
        RegistryError: unknown or malformed entry; if a file or folder of that name exists
            in the working directory, the message says to write ``./name``.
    """
    try:
        return find_pretrained(source.name)
    except RegistryError as e:
        if Path(source.name).exists():
            raise RegistryError(f"{e} (A file or folder named {source.name!r} exists here; write "
                                f"'./{source.name}' to load it.)") from e
        raise


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{str(path)!r} is not valid JSON: {err}") from None


def metadata_cfg(path: Path, what: str, required: bool = True) -> dict:
    """The ``pretrained_cfg`` saved in a published folder's ``metadata.json`` (``{}`` if none and
    not ``required``).

    Raises:
        RegistryError: ``required`` and no ``metadata.json`` or no ``pretrained_cfg`` in it.
    """
    cfg = _read_json(path).get("pretrained_cfg") if path.is_file() else None
    if isinstance(cfg, dict):
        return cfg
    if required:
        if not path.is_file():
            raise RegistryError(f"{what}: no metadata.json, so no pretrained config ({path}).")
        raise RegistryError(f"{what}: metadata.json has no 'pretrained_cfg' (not published by keras_attention?)")
    return {}


def source_cfg(source: ModelSource, *, cache_dir=None, required: bool = True) -> dict:
    """The pretrained config of a source (a new dict, safe to modify).

    Args:
        source: from :func:`resolve_source`.
        cache_dir: Hugging Face cache folder for ``hf://`` sources.
        required: raise when the source has no config; else return ``{}``.

    Returns:
        The registry entry (``label_names`` filled from ``labels_file``), the
        ``pretrained_cfg`` of a published folder's ``metadata.json``, or a run's
        ``pretrained.json``.

    Raises:
        RegistryError: unknown registry name, or (``required``) no config in the source.
        WeightsNotFoundError: the ``metadata.json`` of an ``hf://`` source cannot be fetched.
    """
    if source.kind == REGISTRY:
        return entry_cfg(find_entry(source))
    if source.kind == HUB:
        path = download(source.repo_id, "metadata.json", source.revision or "main", cache_dir,
                        context=source.spec)
        return metadata_cfg(Path(path), source.spec, required)
    if source.kind == FOLDER:
        return metadata_cfg(source.path / "metadata.json", source.spec, required)
    if source.cfg_path.is_file():
        return _read_json(source.cfg_path)
    if required:
        raise RegistryError(f"{source.spec}: no {PRETRAINED_FILENAME} next to {source.path}, so no "
                            f"pretrained config.")
    return {}


def get_pretrained_cfg(name, *, revision: str | None = None, cache_dir: str | None = None) -> dict:
    """The pretrained config of a registry name, ``hf://`` address, model folder or file.

    Args:
        name: as for :func:`keras_attention.load` (``"se_resnet20"`` for its default tag,
            ``"arch.tag"``, ``"hf://org/repo[@revision]"``, a published or run folder, a
            ``.keras``/``.weights.h5`` file).
        revision: Hub revision for ``hf://`` addresses.
        cache_dir: Hugging Face cache folder (default ``HF_HUB_CACHE``).

    Returns:
        A new dict (safe to modify): input_size, crop_pct, interpolation, mean, std,
        num_classes, label_names, license, metrics, ... (see ``weights/README.md``).

    Raises:
        RegistryError: unknown name (the message lists the tags that exist), a malformed
            entry (its file and problem named), or no pretrained config in the folder.
        ModelNotFoundError: a path that does not exist.
    """
    return source_cfg(resolve_source(name, revision), cache_dir=cache_dir, required=True)
