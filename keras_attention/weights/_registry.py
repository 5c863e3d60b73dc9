"""The weights registry: ``weights/<arch>.<tag>/pretrained.json`` entries, read and checked.

Each pretrained tag is a folder holding ``pretrained.json`` (schema in ``weights/README.md``)
and, for our own small weights, the weight file. The folders searched are
``KERAS_ATTENTION_WEIGHTS_PATH`` (``os.pathsep``-separated, first), then
``keras_attention/_weights`` (installed wheel), then ``weights/`` next to the package (source
checkout); the first folder holding a name wins.

A malformed entry does not take the others down: :func:`scan` sets it aside, warns once
(naming the file and the problem), and only a lookup of that very name raises.
:func:`validate_registry` reports every problem at once.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from keras_attention._errors import InvalidInputError, KerasAttentionError, MissingFileError, did_you_mean
from keras_attention._files import sha256_file
from keras_attention.registry import get_model_entry

SCHEMA_VERSION = 1
WEIGHTS_PATH_ENV = "KERAS_ATTENTION_WEIGHTS_PATH"
PRETRAINED_FILENAME = "pretrained.json"
KERAS_WEIGHTS_FILENAME = "model.weights.h5"
DEFAULT_CLASSIFIER = "head_fc"
HUB_LAYOUT_FILES = ("config.json", KERAS_WEIGHTS_FILENAME, "metadata.json")
LIBRARY_NAME = "keras-attention"

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos3", "lanczos5")


class WeightsError(KerasAttentionError):
    """Base class of the errors of :mod:`keras_attention.weights`."""


class WeightsNotFoundError(WeightsError, MissingFileError):
    """A weights file (or model folder) could not be found locally nor fetched from the Hub."""


class ModelNotFoundError(WeightsNotFoundError, InvalidInputError):
    """A model file or folder named by the caller does not exist (a ``FileNotFoundError``
    and, as evaluation always raised it, a ``ValueError``)."""


class ChecksumError(WeightsError, InvalidInputError):
    """A weights file does not have the SHA-256 its registry entry (or the Hub) says."""


class RegistryError(WeightsError, InvalidInputError):
    """A ``pretrained.json`` entry is malformed, or a name is not in the registry."""


class FolderExistsError(WeightsError, FileExistsError):
    """An output folder exists and ``overwrite`` was not asked for."""


# --------------------------------------------------------------------------------------
# Where entries live
# --------------------------------------------------------------------------------------

def package_root() -> Path:
    """The ``keras_attention`` package folder."""
    return Path(__file__).resolve().parents[1]


def weights_dirs() -> list[Path]:
    """Folders searched for ``<arch>.<tag>/pretrained.json``, first match wins.

    Returns:
        The existing folders among: ``KERAS_ATTENTION_WEIGHTS_PATH`` entries, then
        ``keras_attention/_weights`` (installed wheel), then ``weights/`` next to the
        package (source checkout).
    """
    dirs = [Path(p).expanduser() for p in os.environ.get(WEIGHTS_PATH_ENV, "").split(os.pathsep) if p]
    dirs += [package_root() / "_weights", package_root().parent / "weights"]
    return [d for d in dirs if d.is_dir()]


@dataclass(frozen=True)
class PretrainedEntry:
    """One registry entry: its config (``pretrained.json``) and where it was found."""

    name: str
    cfg: dict
    folder: Path  # weights/<name>/
    root: Path  # weights/

    @property
    def path(self) -> Path:
        """The entry's ``pretrained.json``."""
        return self.folder / PRETRAINED_FILENAME


# --------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------

def _fail(where: str, message: str):
    raise RegistryError(f"{where}: {message} (schema: weights/README.md)")


def validate_pretrained_cfg(cfg: dict, where: str = "pretrained config") -> None:
    """Checks a registry entry against the schema in ``weights/README.md``.

    Args:
        cfg: the parsed ``pretrained.json``.
        where: what to name in the message (usually the file's path).

    Raises:
        RegistryError: naming ``where`` and the first field that is missing or wrong.

    (Own code rather than a JSON Schema: the rules cross fields, e.g. ``name`` = architecture
    + tag, one ``mean`` per channel, ``sha256`` required for ``"keras"`` only.)
    """
    if not isinstance(cfg, dict):
        _fail(where, f"expected a JSON object, received {type(cfg).__name__}")

    def need(key, types, what):
        if key not in cfg:
            _fail(where, f"missing field {key!r} ({what})")
        value = cfg[key]
        types = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            _fail(where, f"field {key!r} must be {what}, received {value!r}")
        return value

    if need("schema_version", int, "an integer") != SCHEMA_VERSION:
        _fail(where, f"schema_version {cfg['schema_version']} is not supported (expected {SCHEMA_VERSION})")
    name = need("name", str, "a string 'arch.tag'")
    arch = need("architecture", str, "a registered model name")
    tag = need("tag", str, "a string without dots")
    if not _TAG_RE.match(tag):
        _fail(where, f"tag {tag!r} may only contain letters, digits, '_' and '-'")
    if name != f"{arch}.{tag}":
        _fail(where, f"name {name!r} must equal architecture + '.' + tag = {arch + '.' + tag!r}")
    need("default", bool, "true or false")
    fmt = need("format", str, "'keras' or 'timm'")
    if fmt not in ("keras", "timm"):
        _fail(where, f"format must be 'keras' or 'timm', received {fmt!r}")
    files = need("files", dict, "an object {filename: {sha256, size}}")
    if not files:
        _fail(where, "files is empty")
    for filename, info in files.items():
        if "/" in filename or "\\" in filename or filename.startswith("."):
            _fail(where, f"file name {filename!r} must be a plain file name")
        if not isinstance(info, dict) or "sha256" not in info:
            _fail(where, f"files[{filename!r}] must be an object with 'sha256' and 'size'")
        sha = info["sha256"]
        if sha is not None and not (isinstance(sha, str) and SHA256_RE.match(sha)):
            _fail(where, f"files[{filename!r}].sha256 must be 64 lowercase hex digits or null, received {sha!r}")
        if sha is None and fmt == "keras":
            _fail(where, f"files[{filename!r}].sha256 is required for format 'keras'")
        size = info.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            _fail(where, f"files[{filename!r}].size must be a byte count or null, received {size!r}")
    if fmt == "keras" and set(files) != {KERAS_WEIGHTS_FILENAME}:
        _fail(where, f"format 'keras' has exactly one file, {KERAS_WEIGHTS_FILENAME!r}; received {sorted(files)}")
    hub = need("hub", dict, "an object {repo_id, revision}")
    repo_id = hub.get("repo_id")
    if not (isinstance(repo_id, str) and REPO_ID_RE.match(repo_id)):
        _fail(where, f"hub.repo_id must be 'org/name', received {repo_id!r}")
    revision = hub.get("revision", "missing")
    if revision is not None and not (isinstance(revision, str) and COMMIT_RE.match(revision)):
        _fail(where, f"hub.revision must be a 40-hex commit hash or null, received {revision!r}")
    model_kwargs = need("model_kwargs", dict, "an object of builder arguments")
    num_classes = need("num_classes", int, "a positive integer")
    if num_classes <= 0 or model_kwargs.get("num_classes", num_classes) != num_classes:
        _fail(where, f"num_classes {num_classes} must be positive and equal model_kwargs.num_classes")
    size = need("input_size", list, "[H, W, C]")
    if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        _fail(where, f"input_size must be [H, W, C] positive integers, received {size!r}")
    crop = need("crop_pct", (int, float), "a number in (0, 1]")
    if not 0 < crop <= 1:
        _fail(where, f"crop_pct must be in (0, 1], received {crop!r}")
    interp = need("interpolation", str, f"one of {INTERPOLATIONS}")
    if interp not in INTERPOLATIONS:
        _fail(where, f"interpolation must be one of {INTERPOLATIONS}, received {interp!r}")
    for key in ("mean", "std"):
        value = need(key, list, "a list of 3 numbers")
        if len(value) != size[2] or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in value):
            _fail(where, f"{key} must have one number per channel ({size[2]}), received {value!r}")
    if any(v <= 0 for v in cfg["std"]):
        _fail(where, f"std must be positive, received {cfg['std']!r}")
    if "label_names" in cfg:
        labels = cfg["label_names"]
        if not (isinstance(labels, list) and all(isinstance(v, str) for v in labels)
                and len(labels) == num_classes):
            _fail(where, f"label_names must be a list of {num_classes} strings")
    elif "labels_file" in cfg:
        if not isinstance(cfg["labels_file"], str):
            _fail(where, "labels_file must be a path relative to weights/")
    else:
        _fail(where, "missing field 'label_names' (or 'labels_file')")
    descriptions = cfg.get("label_descriptions")
    if descriptions is not None and not (isinstance(descriptions, list) and len(descriptions) == num_classes
                                         and all(isinstance(v, str) for v in descriptions)):
        _fail(where, f"label_descriptions must be a list of {num_classes} strings (one per label)")
    need("license", str, "a license id such as 'apache-2.0'")
    paper = need("paper", (dict, str), "an object {title, url, arxiv}")
    if isinstance(paper, dict) and not paper:
        _fail(where, "paper must name the paper (title, url or arxiv)")
    need("dataset", str, "the training dataset name")
    metrics = need("metrics", dict, "an object {top1, top5, split, command}")
    for key in ("top1", "top5"):
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 100):
            _fail(where, f"metrics.{key} must be a percentage in [0, 100] or null, received {value!r}")
    if "classifier" in cfg and not isinstance(cfg["classifier"], str):
        _fail(where, "classifier must be a layer name")


def read_entry(folder: Path, root: Path) -> PretrainedEntry:
    """The entry in ``folder`` (``root`` is the weights folder holding it), validated.

    Raises:
        RegistryError: unreadable or invalid JSON, a schema error, or a ``name`` that is
            not the folder's name; the message names the file and the problem.
    """
    path = folder / PRETRAINED_FILENAME
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RegistryError(f"{path}: not valid JSON ({e})") from e
    except OSError as e:
        raise RegistryError(f"{path}: cannot be read ({e})") from e
    validate_pretrained_cfg(cfg, str(path))
    if cfg["name"] != folder.name:
        _fail(str(path), f"name {cfg['name']!r} must equal the folder name {folder.name!r}")
    return PretrainedEntry(cfg["name"], cfg, folder, root)


# --------------------------------------------------------------------------------------
# Scanning and looking up
# --------------------------------------------------------------------------------------

_WARNED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Scan:
    """Every entry on the search path: the valid ones and the malformed ones, by name."""

    entries: dict[str, PretrainedEntry]
    broken: dict[str, RegistryError]


def scan() -> Scan:
    """Reads every ``pretrained.json`` on the search path (first folder holding a name wins).

    A malformed entry is kept out of ``entries`` and put in ``broken``; it is reported once
    per process with ``warnings.warn`` (the file and the problem), so one bad file does not
    stop every other model from loading.

    Returns:
        A :class:`Scan`.
    """
    entries: dict[str, PretrainedEntry] = {}
    broken: dict[str, RegistryError] = {}
    for root in weights_dirs():
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(("_", ".")) or not (folder / PRETRAINED_FILENAME).is_file():
                continue
            if folder.name in entries or folder.name in broken:
                continue
            try:
                entries[folder.name] = read_entry(folder, root)
            except RegistryError as e:
                broken[folder.name] = e
                key = (str(folder / PRETRAINED_FILENAME), str(e))
                if key not in _WARNED:
                    _WARNED.add(key)
                    warnings.warn(f"Skipping the malformed weights registry entry {e}", RuntimeWarning,
                                  stacklevel=2)
    return Scan(entries, broken)


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Sorted pretrained tags (``arch.tag``) whose entries are valid.

    Args:
        pattern: an ``fnmatch`` pattern (``"se_resnet*"``); ``None`` lists all.
    """
    names = sorted(scan().entries)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def find_pretrained(name: str) -> PretrainedEntry:
    """The registry entry of ``arch.tag``, or of the default tag of ``arch``.

    Args:
        name: ``"se_resnet20.cifar10"``, or ``"se_resnet20"`` for its default tag (the one
            marked ``default``, or the only one).

    Raises:
        RegistryError: unknown tag or architecture without pretrained weights (the message
            lists the tags that exist), several or no default tags, or a malformed entry of
            that name (the message names its file and the problem).
    """
    found = scan()
    entries = found.entries
    if name in entries:
        return entries[name]
    if name in found.broken:
        raise found.broken[name]
    arch, _, tag = name.partition(".")
    tags = sorted(n for n, e in entries.items() if e.cfg["architecture"] == arch)
    if tag:
        hint = (f" Tags of {arch!r}: {', '.join(tags)}." if tags
                else did_you_mean(name, entries, n=5, cutoff=0.6))
        raise RegistryError(f"No pretrained weights named {name!r}.{hint} "
                            f"See keras_attention.list_models(pretrained=True).")
    if not tags:
        broken = sorted(n for n in found.broken if n.partition(".")[0] == arch)
        if broken:
            raise RegistryError(f"{arch!r} has no valid pretrained weights; its entries are malformed:\n- "
                                + "\n- ".join(str(found.broken[n]) for n in broken))
        hint = did_you_mean(name, entries, n=5, cutoff=0.6)
        raise RegistryError(f"{name!r} has no pretrained weights.{hint} Use pretrained=False for random "
                            f"weights, or see keras_attention.list_models(pretrained=True).")
    defaults = [n for n in tags if entries[n].cfg["default"]]
    if len(defaults) > 1:
        raise RegistryError(f"{arch!r} has several default tags: {defaults}; exactly one may be default.")
    if defaults:
        return entries[defaults[0]]
    if len(tags) == 1:
        return entries[tags[0]]
    raise RegistryError(f"{arch!r} has several pretrained tags and none is the default: "
                        f"{', '.join(tags)}. Name one, e.g. {tags[0]!r}.")


def entry_cfg(entry: PretrainedEntry) -> dict:
    """A copy of the entry's config with ``label_names`` read from ``labels_file`` where needed.

    Raises:
        RegistryError: the labels file is missing or does not list ``num_classes`` names.
    """
    cfg = copy.deepcopy(entry.cfg)
    if "label_names" not in cfg and "labels_file" in cfg:
        path = (entry.root / cfg["labels_file"]).resolve()
        if not path.is_file():
            raise RegistryError(f"{entry.path}: labels_file {cfg['labels_file']!r} not found at {path}")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(labels) != cfg["num_classes"]:
            raise RegistryError(f"{path}: {len(labels)} labels, expected num_classes = {cfg['num_classes']}")
        cfg["label_names"] = labels
    return cfg


# --------------------------------------------------------------------------------------
# Checking the whole registry
# --------------------------------------------------------------------------------------

def validate_registry(*, check_architectures: bool = True, check_files: bool = True) -> list[str]:
    """Checks every entry of every weights folder; returns the names checked.

    Beyond the schema: the architecture is registered, at most one default tag per
    architecture, files present in the folder have the size and SHA-256 of the entry,
    files absent from the folder are published (``hub.revision`` set), and
    ``labels_file`` lists ``num_classes`` names. A folder shadowed by one of the same name
    earlier on the search path is not used by the loader and is not checked.

    Args:
        check_architectures: check that each ``architecture`` is registered.
        check_files: hash the files present in the folders.

    Returns:
        The names of the valid entries.

    Raises:
        RegistryError: listing every problem found.
    """
    problems: list[str] = []
    defaults: dict[str, list[str]] = {}
    names = []
    seen: set[str] = set()
    for root in weights_dirs():
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(("_", ".")) or not folder.is_dir() or folder.name in seen:
                continue
            if not (folder / PRETRAINED_FILENAME).is_file():
                problems.append(f"{folder}: no {PRETRAINED_FILENAME}")
                continue
            seen.add(folder.name)
            try:
                entry = read_entry(folder, root)
                entry_cfg(entry)
            except RegistryError as e:
                problems.append(str(e))
                continue
            names.append(entry.name)
            cfg = entry.cfg
            if cfg["default"]:
                defaults.setdefault(cfg["architecture"], []).append(entry.name)
            if check_architectures:
                try:
                    get_model_entry(cfg["architecture"])
                except ValueError as e:
                    problems.append(f"{entry.path}: {e}")
            for filename, info in cfg["files"].items():
                local = folder / filename
                if local.is_file():
                    if check_files:
                        if info.get("size") is not None and local.stat().st_size != info["size"]:
                            problems.append(f"{local}: size {local.stat().st_size}, entry says {info['size']}")
                        if info["sha256"] and sha256_file(local) != info["sha256"]:
                            problems.append(f"{local}: SHA-256 {sha256_file(local)}, entry says {info['sha256']}")
                elif cfg["hub"]["revision"] is None and cfg["format"] != "timm":
                    problems.append(f"{entry.path}: {filename!r} is neither in the folder nor "
                                    f"published (hub.revision is null)")
    for arch, tags in defaults.items():
        if len(tags) > 1:
            problems.append(f"{arch!r} has several default tags: {tags}")
    if problems:
        raise RegistryError("Invalid weights registry:\n- " + "\n- ".join(problems))
    return names
