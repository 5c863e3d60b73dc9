"""Pretrained weights: the ``weights/`` registry, resolving, verifying, loading, publishing.

One module owns everything between a name such as ``"se_resnet20.cifar10"`` and a
model with weights:

- **Registry.** Each pretrained tag ``arch.tag`` is a folder ``weights/<arch>.<tag>/``
  holding ``pretrained.json`` (schema in ``weights/README.md``) and, for our own small
  weights, the weight file itself. In a wheel the folder is ``keras_attention/_weights``;
  extra folders can be put first with the ``KERAS_ATTENTION_WEIGHTS_PATH`` environment
  variable (``os.pathsep``-separated).
- **Resolving.** Each file of a tag comes from the package folder, else from the local
  Hugging Face cache, else from the Hub, always at the entry's pinned commit
  (:func:`resolve_file`). Downloads go through ``huggingface_hub.hf_hub_download``, so
  ``HF_HUB_OFFLINE``, ``HF_HOME``/``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_TOKEN`` and its
  progress bars behave as in the rest of the Hugging Face ecosystem; it writes to a
  process-unique ``.incomplete`` file and renames it only when complete.
- **Verifying.** Every file is checked by SHA-256 before it is loaded. A bad file in the
  Hub cache is deleted (blob and snapshot link) and downloaded once more; if the fresh
  copy is also bad (or we are offline) :class:`ChecksumError` names the file and both
  hashes. Where an entry has no ``sha256`` (a timm checkpoint whose hash could not be
  read when the entry was written) the file is checked against the hash the Hub reports
  for it: the ``ETag``/``X-Linked-Etag`` of an LFS file is the SHA-256 of its content,
  that of a regular file its git blob SHA-1 (``huggingface_hub.get_hf_file_metadata``);
  offline, against the name of the cache blob, which ``huggingface_hub`` stores under
  that same ETag.
- **Loading.** :func:`load` builds the registered architecture and loads the weights; a
  different ``num_classes`` (or ``include_top=False``) keeps every weight but the
  classifier's. ``hf://org/repo[@revision]`` and local folders in Keras's unzipped layout
  (``config.json``, ``model.weights.h5``, ``metadata.json``) load too, and so does
  ``keras.saving.load_model("hf://org/repo")`` once ``keras_attention`` is imported
  (Keras downloads the folder itself; our layers are registered as serializable).
- **Publishing.** :func:`build_hub_folder` / :func:`save_hub_folder` write that unzipped
  layout plus a model card, :func:`publish` uploads it and returns the commit to pin.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from keras_attention._errors import KerasAttentionError, did_you_mean

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
WEIGHTS_PATH_ENV = "KERAS_ATTENTION_WEIGHTS_PATH"
PRETRAINED_FILENAME = "pretrained.json"
KERAS_WEIGHTS_FILENAME = "model.weights.h5"
DEFAULT_CLASSIFIER = "head_fc"
HUB_LAYOUT_FILES = ("config.json", KERAS_WEIGHTS_FILENAME, "metadata.json")
LIBRARY_NAME = "keras-attention"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos3", "lanczos5")


class WeightsError(KerasAttentionError):
    """Base class of the errors of this module."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weights file could not be found locally nor fetched from the Hub."""


class ChecksumError(WeightsError, ValueError):
    """A weights file does not have the SHA-256 its registry entry (or the Hub) says."""


class RegistryError(WeightsError, ValueError):
    """A ``pretrained.json`` entry is malformed, or a name is not in the registry."""


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

def weights_dirs() -> list[Path]:
    """Folders searched for ``<arch>.<tag>/pretrained.json``, first match wins.

    ``KERAS_ATTENTION_WEIGHTS_PATH`` entries first, then ``keras_attention/_weights``
    (installed wheel), then ``weights/`` next to the package (source checkout).
    """
    dirs = [Path(p).expanduser() for p in os.environ.get(WEIGHTS_PATH_ENV, "").split(os.pathsep) if p]
    package = Path(__file__).resolve().parent
    dirs += [package / "_weights", package.parent / "weights"]
    return [d for d in dirs if d.is_dir()]


@dataclass(frozen=True)
class PretrainedEntry:
    """One registry entry: its config (``pretrained.json``) and where it was found."""

    name: str
    cfg: dict
    folder: Path  # weights/<name>/
    root: Path  # weights/


def _fail(where: str, message: str):
    raise RegistryError(f"{where}: {message} (schema: weights/README.md)")


def validate_pretrained_cfg(cfg: dict, where: str = "pretrained config") -> None:
    """Checks a registry entry against the schema in ``weights/README.md``.

    Raises:
        RegistryError: naming ``where`` and the first field that is missing or wrong.
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
        if sha is not None and not (isinstance(sha, str) and _SHA256_RE.match(sha)):
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
    if not (isinstance(repo_id, str) and _REPO_ID_RE.match(repo_id)):
        _fail(where, f"hub.repo_id must be 'org/name', received {repo_id!r}")
    revision = hub.get("revision", "missing")
    if revision is not None and not (isinstance(revision, str) and _COMMIT_RE.match(revision)):
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
    interp = need("interpolation", str, f"one of {_INTERPOLATIONS}")
    if interp not in _INTERPOLATIONS:
        _fail(where, f"interpolation must be one of {_INTERPOLATIONS}, received {interp!r}")
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


def _read_entry(folder: Path, root: Path) -> PretrainedEntry:
    path = folder / PRETRAINED_FILENAME
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RegistryError(f"{path}: not valid JSON ({e})") from e
    validate_pretrained_cfg(cfg, str(path))
    if cfg["name"] != folder.name:
        _fail(str(path), f"name {cfg['name']!r} must equal the folder name {folder.name!r}")
    return PretrainedEntry(cfg["name"], cfg, folder, root)


def _scan() -> dict[str, PretrainedEntry]:
    entries: dict[str, PretrainedEntry] = {}
    for root in weights_dirs():
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(("_", ".")) or not (folder / PRETRAINED_FILENAME).is_file():
                continue
            if folder.name not in entries:
                entries[folder.name] = _read_entry(folder, root)
    return entries


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Sorted pretrained tags (``arch.tag``), optionally filtered by an ``fnmatch`` pattern."""
    names = sorted(_scan())
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def find_pretrained(name: str) -> PretrainedEntry:
    """The registry entry of ``arch.tag``, or of the default tag of ``arch``.

    Raises:
        RegistryError: unknown tag or architecture without pretrained weights; the
            message lists the tags that exist.
    """
    entries = _scan()
    if name in entries:
        return entries[name]
    arch, _, tag = name.partition(".")
    tags = sorted(n for n, e in entries.items() if e.cfg["architecture"] == arch)
    if tag:
        hint = (f" Tags of {arch!r}: {', '.join(tags)}." if tags
                else did_you_mean(name, entries, n=5, cutoff=0.6))
        raise RegistryError(f"No pretrained weights named {name!r}.{hint} "
                            f"See keras_attention.list_models(pretrained=True).")
    if not tags:
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


def _expand_labels(entry: PretrainedEntry) -> dict:
    cfg = copy.deepcopy(entry.cfg)
    if "label_names" not in cfg and "labels_file" in cfg:
        path = (entry.root / cfg["labels_file"]).resolve()
        if not path.is_file():
            raise RegistryError(f"{entry.folder / PRETRAINED_FILENAME}: labels_file {cfg['labels_file']!r} "
                                f"not found at {path}")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(labels) != cfg["num_classes"]:
            raise RegistryError(f"{path}: {len(labels)} labels, expected num_classes = {cfg['num_classes']}")
        cfg["label_names"] = labels
    return cfg


def get_pretrained_cfg(name: str, *, revision: str | None = None, cache_dir: str | None = None) -> dict:
    """The pretrained config of a registry name, an ``hf://`` address or a local folder.

    For a registry name (``arch`` for its default tag, or ``arch.tag``) it is the entry's
    ``pretrained.json`` with ``label_names`` filled in from ``labels_file`` where needed.
    For ``hf://org/repo[@revision]`` and local folders it is the ``pretrained_cfg`` saved
    in their ``metadata.json`` (downloading that one small file if needed).

    Returns:
        A new dict (safe to modify): input_size, crop_pct, interpolation, mean, std,
        num_classes, label_names, license, metrics, ... (see ``weights/README.md``).

    Raises:
        RegistryError: unknown name (the message lists the tags that exist), or no
            pretrained config in the folder's ``metadata.json``.
    """
    if str(name).startswith("hf://"):
        repo_id, rev = parse_hf_address(str(name), revision)
        path = _download(repo_id, "metadata.json", rev or "main", cache_dir, context=str(name))
        return _pretrained_cfg_from_metadata(Path(path), str(name))
    if _is_local_path(name):
        return _pretrained_cfg_from_metadata(Path(name).expanduser() / "metadata.json", str(name))
    return _expand_labels(find_pretrained(name))


def _pretrained_cfg_from_metadata(path: Path, what: str) -> dict:
    if not path.is_file():
        raise RegistryError(f"{what}: no metadata.json, so no pretrained config ({path}).")
    meta = json.loads(path.read_text(encoding="utf-8"))
    cfg = meta.get("pretrained_cfg")
    if not isinstance(cfg, dict):
        raise RegistryError(f"{what}: metadata.json has no 'pretrained_cfg' (not published by keras_attention?)")
    return cfg


def validate_registry(*, check_architectures: bool = True, check_files: bool = True) -> list[str]:
    """Checks every entry of every weights folder; returns the names checked.

    Beyond the schema: the architecture is registered, at most one default tag per
    architecture, files present in the folder have the size and SHA-256 of the entry,
    files absent from the folder are published (``hub.revision`` set), and
    ``labels_file`` lists ``num_classes`` names.

    Raises:
        RegistryError: listing every problem found.
    """
    from keras_attention import registry
    problems: list[str] = []
    defaults: dict[str, list[str]] = {}
    names = []
    for root in weights_dirs():
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(("_", ".")) or not folder.is_dir():
                continue
            if not (folder / PRETRAINED_FILENAME).is_file():
                problems.append(f"{folder}: no {PRETRAINED_FILENAME}")
                continue
            try:
                entry = _read_entry(folder, root)
                _expand_labels(entry)
            except RegistryError as e:
                problems.append(str(e))
                continue
            names.append(entry.name)
            cfg = entry.cfg
            if cfg["default"]:
                defaults.setdefault(cfg["architecture"], []).append(entry.name)
            if check_architectures:
                try:
                    registry.get_model_entry(cfg["architecture"])
                except ValueError as e:
                    problems.append(f"{folder / PRETRAINED_FILENAME}: {e}")
            for filename, info in cfg["files"].items():
                local = folder / filename
                if local.is_file():
                    if check_files:
                        if info.get("size") is not None and local.stat().st_size != info["size"]:
                            problems.append(f"{local}: size {local.stat().st_size}, entry says {info['size']}")
                        if info["sha256"] and sha256_file(local) != info["sha256"]:
                            problems.append(f"{local}: SHA-256 {sha256_file(local)}, entry says {info['sha256']}")
                elif cfg["hub"]["revision"] is None and cfg["format"] != "timm":
                    problems.append(f"{folder / PRETRAINED_FILENAME}: {filename!r} is neither in the folder nor "
                                    f"published (hub.revision is null)")
    for arch, tags in defaults.items():
        if len(tags) > 1:
            problems.append(f"{arch!r} has several default tags: {tags}")
    if problems:
        raise RegistryError("Invalid weights registry:\n- " + "\n- ".join(problems))
    return names


# --------------------------------------------------------------------------------------
# Hashes and files
# --------------------------------------------------------------------------------------

_HASH_MEMO: dict[tuple, str] = {}


def _file_digest(path: Path, algo: str) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, algo)
    if key not in _HASH_MEMO:
        if algo == "git-sha1":
            h = hashlib.sha1(f"blob {st.st_size}\0".encode())
        else:
            h = hashlib.new(algo)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's content (memoised per path, size, mtime and inode)."""
    return _file_digest(Path(path), "sha256")


def git_blob_sha1_file(path) -> str:
    """Hex git blob id (SHA-1 of ``b"blob <size>\\0" + content``), the Hub's ETag of regular files."""
    return _file_digest(Path(path), "git-sha1")


def _hash_for_etag(path: Path, etag: str) -> tuple[str, str]:
    """(algorithm, local digest) comparable to a Hub ETag: SHA-256 for LFS, git SHA-1 otherwise."""
    if _SHA256_RE.match(etag):
        return "SHA-256", sha256_file(path)
    if _COMMIT_RE.match(etag):
        return "git blob SHA-1", git_blob_sha1_file(path)
    raise ChecksumError(f"Cannot verify {path.name}: the Hub's ETag {etag!r} is neither a SHA-256 "
                        f"nor a git blob SHA-1, and the registry entry has no sha256.")


def _atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# Resolving
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _atomic_folder(target: Path):
    """Yields a temporary sibling folder that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _hf():
    import huggingface_hub
    return huggingface_hub


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _cache_root(cache_dir) -> str:
    from huggingface_hub import constants
    return str(cache_dir or constants.HF_HUB_CACHE)


def _fetch_hint(repo_id: str, filename: str, revision: str) -> str:
    return (f"To fetch it, run once with network access (HF_HUB_OFFLINE unset), e.g. "
            f"`hf download {repo_id} {filename} --revision {revision}`, or copy a Hugging Face cache "
            f"that holds it to HF_HUB_CACHE.")


def _download(repo_id: str, filename: str, revision: str, cache_dir, *, context: str,
              force_download: bool = False) -> str:
    """``hf_hub_download`` with our error messages (repo, file, revision, how to fix)."""
    hf = _hf()
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    where = f"{filename!r} of {context} (Hub repo {repo_id!r}, revision {revision})"
    try:
        return hf.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                  force_download=force_download, library_name=LIBRARY_NAME,
                                  library_version=_version())
    except LocalEntryNotFoundError as e:
        if _offline():
            raise WeightsNotFoundError(
                f"Cannot load {where}: HF_HUB_OFFLINE is set and the file is not in the Hugging Face "
                f"cache ({_cache_root(cache_dir)}). {_fetch_hint(repo_id, filename, revision)}") from e
        raise WeightsNotFoundError(
            f"Cannot load {where}: the Hub at {constants.ENDPOINT} could not be reached ({_cause(e)}) and "
            f"the file is not in the Hugging Face cache ({_cache_root(cache_dir)}). Check the network and "
            f"HF_ENDPOINT. {_fetch_hint(repo_id, filename, revision)}") from e
    except GatedRepoError as e:
        raise WeightsNotFoundError(f"Cannot load {where}: the repo is gated; accept its terms on the Hub and "
                                   f"set HF_TOKEN (or run `hf auth login`).") from e
    except RepositoryNotFoundError as e:
        raise WeightsNotFoundError(f"Cannot load {where}: the Hub at {constants.ENDPOINT} has no such repo "
                                   f"(or it is private: set HF_TOKEN or run `hf auth login`).") from e
    except RevisionNotFoundError as e:
        raise WeightsNotFoundError(f"Cannot load {where}: the repo has no revision {revision}.") from e
    except EntryNotFoundError as e:
        raise WeightsNotFoundError(f"Cannot load {where}: the file does not exist in the repo at that "
                                   f"revision.") from e
    except Exception as e:  # transport errors mid-download (after the client's retries), 5xx, ...
        raise WeightsNotFoundError(f"Cannot load {where}: the download failed ({_cause(e)}); no partial "
                                   f"file was kept, run again to retry.") from e


def _cause(e: BaseException) -> str:
    """``"Type: first line"`` of the innermost cause (e.g. the refused connection)."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _version() -> str:
    import keras_attention
    return keras_attention.__version__


def _discard_cached(path: str, cache_dir) -> None:
    """Removes a snapshot file and the cache blob it links to, so no later call reuses them."""
    pointer = Path(path)
    blob = pointer.resolve()
    cache = Path(_cache_root(cache_dir)).resolve()
    for p in ((blob,) if cache in blob.parents else ()) + (pointer,):
        try:
            p.unlink(missing_ok=True)
        except OSError as e:  # pragma: no cover - read-only caches
            logger.warning("Could not remove %s: %s", p, e)


def _expected_from_hub(path: str, repo_id: str, filename: str, revision: str) -> str | None:
    """The ETag the Hub reports for a file (its SHA-256 if LFS), or the cache blob name offline."""
    hf = _hf()
    if not _offline():
        try:
            meta = hf.get_hf_file_metadata(hf.hf_hub_url(repo_id, filename, revision=revision))
            return meta.etag
        except Exception as e:  # noqa: BLE001 - fall back to the cache blob name
            logger.info("Could not read the Hub's ETag of %s (%s); using the cache blob name.", filename, e)
    blob = Path(path).resolve()
    if blob.parent.name == "blobs" and (_SHA256_RE.match(blob.name) or _COMMIT_RE.match(blob.name)):
        return blob.name
    return None


def _verify(path: Path, expected_sha256: str | None, *, repo_id: str | None, filename: str,
            revision: str | None) -> tuple[bool, str, str, str]:
    """(ok, algorithm, expected, actual) for one file."""
    if expected_sha256:
        actual = sha256_file(path)
        return actual == expected_sha256, "SHA-256", expected_sha256, actual
    if repo_id is None:
        raise ChecksumError(f"Cannot verify {path}: its registry entry has no sha256 and it has no Hub repo.")
    etag = _expected_from_hub(str(path), repo_id, filename, revision)
    if etag is None:
        raise ChecksumError(
            f"Cannot verify {filename!r} of {repo_id}@{revision}: the registry entry has no sha256 and, "
            f"offline, the cache does not store the file under its Hub hash (symlinks disabled?). Run once "
            f"with network access so its hash can be read from the Hub.")
    algo, actual = _hash_for_etag(Path(path), etag)
    return actual == etag, algo, etag, actual


def fetch_verified(repo_id: str, filename: str, revision: str, expected_sha256: str | None = None, *,
                   cache_dir=None, context: str | None = None) -> Path:
    """Downloads (or finds in the cache) one Hub file at ``revision`` and verifies it.

    A cached file with the wrong hash is deleted and downloaded once more; a fresh file
    with the wrong hash is deleted and reported.

    Raises:
        ChecksumError: the file (after one fresh download, if online) has the wrong
            hash; the message names the file and both hashes.
        WeightsNotFoundError: offline/no network with nothing cached, missing file, repo
            or revision (the message says which and how to fetch it).
    """
    context = context or f"{repo_id}@{revision}"
    path = _download(repo_id, filename, revision, cache_dir, context=context)
    ok, algo, expected, actual = _verify(Path(path), expected_sha256, repo_id=repo_id, filename=filename,
                                         revision=revision)
    if ok:
        return Path(path)
    _discard_cached(path, cache_dir)
    message = (f"{filename!r} of {context} from the Hugging Face cache has the wrong {algo}: expected "
               f"{expected}, got {actual}. The bad file ({path}) was deleted")
    if _offline():
        raise ChecksumError(f"{message}. {_fetch_hint(repo_id, filename, revision)}")
    logger.warning("%s; downloading it again.", message)
    path = _download(repo_id, filename, revision, cache_dir, context=context, force_download=True)
    ok, algo, expected, actual = _verify(Path(path), expected_sha256, repo_id=repo_id, filename=filename,
                                         revision=revision)
    if ok:
        return Path(path)
    _discard_cached(path, cache_dir)
    raise ChecksumError(f"{filename!r} of {context} downloaded from the Hub (repo {repo_id!r}, revision "
                        f"{revision}) has the wrong {algo}: expected {expected}, got {actual}. The file "
                        f"was deleted and is not used.")


def resolve_file(name_or_entry, filename: str, *, revision: str | None = None, cache_dir=None) -> Path:
    """Path of one verified file of a pretrained tag.

    Order: the package weights folder, the Hugging Face cache, the Hub, always at the
    entry's pinned ``hub.revision`` (``revision`` overrides it; then the package folder is
    skipped and, where the revision differs from the pinned one, the file is verified
    against the Hub's hash instead of the entry's).

    Raises:
        ChecksumError: wrong SHA-256 (file name and both hashes in the message).
        WeightsNotFoundError: not in the package, not cached, and not downloadable.
    """
    entry = name_or_entry if isinstance(name_or_entry, PretrainedEntry) else find_pretrained(name_or_entry)
    cfg = entry.cfg
    if filename not in cfg["files"]:
        raise RegistryError(f"{entry.name} has no file {filename!r}; its files: {sorted(cfg['files'])}")
    expected = cfg["files"][filename]["sha256"]
    pinned = cfg["hub"]["revision"]
    if revision is None or revision == pinned:
        local = entry.folder / filename
        if revision is None and local.is_file():
            actual = sha256_file(local)
            if expected and actual != expected:
                raise ChecksumError(f"{local} (package weights of {entry.name}) has the wrong SHA-256: expected "
                                    f"{expected}, got {actual}. The installed package is damaged; reinstall it.")
            if not expected:
                raise ChecksumError(f"{local}: the entry of {entry.name} has no sha256 to verify it against.")
            return local
        revision = pinned
    else:
        expected = None
    if revision is None and cfg["format"] == "timm":
        # timm checkpoints whose commit could not be read when the entry was written (no
        # network): taken from the repo's main branch and verified against the SHA-256 the
        # Hub reports for the LFS file (expected is null for these entries).
        revision = "main"
    if revision is None:
        raise WeightsNotFoundError(
            f"{filename!r} of {entry.name} is not in the package weights folder ({entry.folder}) and the entry "
            f"is not published yet (hub.revision is null in {entry.folder / PRETRAINED_FILENAME}).")
    return fetch_verified(cfg["hub"]["repo_id"], filename, revision, expected, cache_dir=cache_dir,
                          context=entry.name)


def resolve_files(name_or_entry, *, revision: str | None = None, cache_dir=None) -> dict[str, Path]:
    """``{filename: verified path}`` for every file of a pretrained tag (see :func:`resolve_file`)."""
    entry = name_or_entry if isinstance(name_or_entry, PretrainedEntry) else find_pretrained(name_or_entry)
    return {f: resolve_file(entry, f, revision=revision, cache_dir=cache_dir) for f in entry.cfg["files"]}


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

WeightsLoader = Callable[[keras.Model, dict, dict], None]
_FORMAT_LOADERS: dict[str, WeightsLoader] = {}


def register_weights_format(fmt: str, loader: WeightsLoader) -> None:
    """Registers ``loader(model, files, cfg)`` that loads weights of format ``fmt``.

    ``files`` maps each file name of the entry to its verified local path; ``model`` is
    built by ``create_model(cfg["architecture"], **cfg["model_kwargs"])``. The ``"timm"``
    loader is registered by :mod:`keras_attention.convert` when it is imported.
    """
    _FORMAT_LOADERS[fmt] = loader


def _load_keras_weights(model: keras.Model, files: dict, cfg: dict) -> None:
    model.load_weights(str(files[KERAS_WEIGHTS_FILENAME]))


register_weights_format("keras", _load_keras_weights)


def _format_loader(fmt: str) -> WeightsLoader:
    if fmt not in _FORMAT_LOADERS and fmt == "timm":
        try:
            import keras_attention.convert  # noqa: F401  (registers the "timm" loader)
        except ImportError as e:
            raise WeightsError("Weights of format 'timm' need keras_attention.convert, which could not be "
                               f"imported: {e}") from e
    if fmt not in _FORMAT_LOADERS:
        raise WeightsError(f"No loader for weights format {fmt!r}; known: {sorted(_FORMAT_LOADERS)}.")
    return _FORMAT_LOADERS[fmt]


def transfer_weights(source: keras.Model, target: keras.Model, skip=()) -> list[str]:
    """Copies weights layer by layer, matched by name, from ``source`` into ``target``.

    Every layer of ``target`` that has weights and is not in ``skip`` must exist in
    ``source`` with the same weight shapes. Layers only in ``source`` (e.g. a classifier
    ``target`` does not have) are ignored.

    Returns:
        Names of the layers whose weights were copied.

    Raises:
        ValueError: a layer is missing from ``source`` or its weight shapes differ.
    """
    by_name = {layer.name: layer for layer in source.layers}
    skip = set(skip)
    moved = []
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        if layer.name not in by_name:
            raise ValueError(f"Cannot transfer weights: layer {layer.name!r} of the new model is not in the "
                             f"pretrained model.")
        src = by_name[layer.name].get_weights()
        dst = layer.get_weights()
        if [w.shape for w in src] != [w.shape for w in dst]:
            raise ValueError(f"Cannot transfer weights of layer {layer.name!r}: pretrained shapes "
                             f"{[w.shape for w in src]}, new model shapes {[w.shape for w in dst]}.")
        layer.set_weights(src)
        moved.append(layer.name)
    return moved


def _requested_kwargs(base: dict, num_classes, input_shape, include_top, extra: dict) -> dict:
    kwargs = dict(base)
    if "input_shape" in kwargs and kwargs["input_shape"] is not None:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if not include_top:
        kwargs["include_top"] = False
    kwargs.update(extra)
    return kwargs


def _adapt(source: keras.Model, cfg: dict, arch: str, base_kwargs: dict, kwargs: dict,
           what: str) -> keras.Model:
    """``source`` if ``kwargs`` asks for nothing new, else a new model with its weights (fresh head)."""
    from keras_attention import registry
    if kwargs == base_kwargs:
        return source
    target = registry.create_model(arch, **kwargs)
    classifier = cfg.get("classifier", DEFAULT_CLASSIFIER)
    new_head = kwargs.get("num_classes", base_kwargs.get("num_classes")) != base_kwargs.get("num_classes")
    try:
        transfer_weights(source, target, skip=(classifier,) if new_head else ())
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e
    return target


def parse_hf_address(address: str, revision: str | None = None) -> tuple[str, str | None]:
    """``"hf://org/repo@rev"`` -> ``("org/repo", "rev")`` (``revision`` must agree with ``@rev``)."""
    body = address[len("hf://"):] if address.startswith("hf://") else address
    repo_id, _, rev = body.partition("@")
    if not _REPO_ID_RE.match(repo_id):
        raise ValueError(f"Invalid Hub address {address!r}: expected 'hf://org/repo' or "
                         f"'hf://org/repo@revision'.")
    if rev and revision and rev != revision:
        raise ValueError(f"{address!r} names revision {rev!r} but revision={revision!r} was passed.")
    return repo_id, (rev or revision or None)


def _is_local_path(name) -> bool:
    """A local folder rather than a registry name: a ``PathLike``, or a string with a path separator.

    A bare ``"se_resnet20"`` is always a registry name, even if the working directory has a
    folder of that name (write ``"./se_resnet20"`` for the folder).
    """
    if isinstance(name, os.PathLike):
        return True
    return not name.startswith("hf://") and ("/" in name or os.sep in name or name.startswith("~"))


def load(name: str, *, pretrained: bool = True, num_classes: int | None = None, input_shape=None,
         include_top: bool = True, revision: str | None = None, cache_dir: str | None = None,
         **kwargs) -> keras.Model:
    """A model with pretrained weights, by registry name, Hub address or local folder.

    Args:
        name: ``"se_resnet20"`` (its default tag), ``"se_resnet20.cifar10"``,
            ``"hf://org/repo"`` or ``"hf://org/repo@<revision>"`` (a folder published by
            :func:`publish`, or any Keras unzipped model folder), or a local folder in
            Keras's unzipped layout (``config.json``, ``model.weights.h5``,
            ``metadata.json``).
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
        RegistryError: unknown name (the tags that exist are listed).
        ChecksumError: a weights file has the wrong SHA-256 (both hashes named).
        WeightsNotFoundError: weights neither local, cached nor downloadable (repo, file,
            revision and how to fetch them named).
    """
    from keras_attention import registry
    if _is_local_path(name):
        return _load_folder(Path(name).expanduser(), num_classes, input_shape, include_top, kwargs,
                            what=str(name))
    name = str(name)
    if name.startswith("hf://"):
        return _load_folder_from_hub(name, pretrained, num_classes, input_shape, include_top, revision,
                                     cache_dir, kwargs)
    if not pretrained:
        arch, tag = registry.split_model_name(name)
        base = find_pretrained(name).cfg["model_kwargs"] if tag else {}
        return registry.create_model(arch, **_requested_kwargs(base, num_classes, input_shape, include_top,
                                                               kwargs))
    entry = find_pretrained(name)
    cfg = entry.cfg
    files = resolve_files(entry, revision=revision, cache_dir=cache_dir)
    base_kwargs = _requested_kwargs(cfg["model_kwargs"], None, None, True, {})
    model = registry.create_model(cfg["architecture"], **base_kwargs)
    _format_loader(cfg["format"])(model, files, cfg)
    wanted = _requested_kwargs(cfg["model_kwargs"], num_classes, input_shape, include_top, kwargs)
    return _adapt(model, cfg, cfg["architecture"], base_kwargs, wanted, entry.name)


def _load_folder(folder: Path, num_classes, input_shape, include_top, kwargs, *, what: str,
                 expected_sha256: str | None = None) -> keras.Model:
    if not (folder / "config.json").is_file() or not (folder / KERAS_WEIGHTS_FILENAME).is_file():
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
        raise WeightsNotFoundError(f"{what}: expected a Keras model folder with config.json and "
                                   f"{KERAS_WEIGHTS_FILENAME}; found {found}.")
    cfg = None
    if (folder / "metadata.json").is_file():
        cfg = json.loads((folder / "metadata.json").read_text(encoding="utf-8")).get("pretrained_cfg")
    if expected_sha256 is None and cfg:
        expected_sha256 = cfg.get("files", {}).get(KERAS_WEIGHTS_FILENAME, {}).get("sha256")
    if expected_sha256:
        actual = sha256_file(folder / KERAS_WEIGHTS_FILENAME)
        if actual != expected_sha256:
            raise ChecksumError(f"{folder / KERAS_WEIGHTS_FILENAME} has the wrong SHA-256: expected "
                                f"{expected_sha256} (metadata.json), got {actual}.")
    import keras_attention.models  # noqa: F401  (registers every serializable class)
    model = keras.saving.load_model(str(folder), compile=False)
    if num_classes is None and input_shape is None and include_top and not kwargs:
        return model
    if not cfg or "architecture" not in cfg:
        raise WeightsError(f"{what}: changing num_classes/input_shape/include_top needs the architecture, "
                           f"but metadata.json has no keras_attention pretrained_cfg.")
    base_kwargs = _requested_kwargs(cfg["model_kwargs"], None, None, True, {})
    wanted = _requested_kwargs(cfg["model_kwargs"], num_classes, input_shape, include_top, kwargs)
    return _adapt(model, cfg, cfg["architecture"], base_kwargs, wanted, what)


def _load_folder_from_hub(address, pretrained, num_classes, input_shape, include_top, revision, cache_dir,
                          kwargs) -> keras.Model:
    from keras_attention import registry
    repo_id, rev = parse_hf_address(address, revision)
    rev = rev or "main"
    meta_path = Path(_download(repo_id, "metadata.json", rev, cache_dir, context=address))
    # Pin what follows to the commit the first file came from (snapshots/<commit>/...).
    commit = meta_path.parent.name if _COMMIT_RE.match(meta_path.parent.name) else rev
    cfg = json.loads(meta_path.read_text(encoding="utf-8")).get("pretrained_cfg")
    if not pretrained:
        if not cfg:
            raise WeightsError(f"{address}: pretrained=False needs the architecture, but metadata.json has no "
                               f"keras_attention pretrained_cfg.")
        return registry.create_model(cfg["architecture"], **_requested_kwargs(
            cfg["model_kwargs"], num_classes, input_shape, include_top, kwargs))
    expected = (cfg or {}).get("files", {}).get(KERAS_WEIGHTS_FILENAME, {}).get("sha256")
    fetch_verified(repo_id, KERAS_WEIGHTS_FILENAME, commit, expected, cache_dir=cache_dir, context=address)
    config = Path(_download(repo_id, "config.json", commit, cache_dir, context=address))
    return _load_folder(config.parent, num_classes, input_shape, include_top, kwargs, what=address,
                        expected_sha256=expected)


# --------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------

def default_repo_id(cfg: dict) -> str:
    return cfg["hub"]["repo_id"]


def _yaml_front_matter(cfg: dict) -> str:
    import yaml
    metrics = cfg.get("metrics") or {}
    tags = ["image-classification", "keras", "keras-attention", cfg["architecture"]]
    front = {
        "library_name": "keras",
        "license": cfg["license"],
        "pipeline_tag": "image-classification",
        "tags": tags,
        "datasets": [cfg["dataset"]],
        "metrics": ["accuracy"],
    }
    results = []
    for key, label in (("top1", "Top-1 accuracy (%)"), ("top5", "Top-5 accuracy (%)")):
        if metrics.get(key) is not None:
            results.append({"type": "accuracy" if key == "top1" else "top_5_accuracy",
                            "value": float(metrics[key]), "name": label})
    if results:
        front["model-index"] = [{
            "name": cfg["name"],
            "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"type": metrics.get("dataset", cfg["dataset"]),
                            "name": metrics.get("dataset", cfg["dataset"]),
                            "split": metrics.get("split", "test")},
                "metrics": results,
            }],
        }]
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n"


def _strip_front_matter(text: str) -> str:
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return text[end + 5:].lstrip("\n")
    return text


def build_model_card(cfg: dict, repo_id: str, body: str | None = None) -> str:
    """The Hub ``README.md``: YAML front matter, the card body, the config and a usage snippet.

    ``body`` is the weights folder's own model card (its front matter is dropped); a
    short description is generated without one.
    """
    metrics = cfg.get("metrics") or {}
    paper = cfg.get("paper")
    paper_text = paper if isinstance(paper, str) else ", ".join(
        str(paper[k]) for k in ("title", "url", "arxiv") if paper.get(k))
    if body:
        text = _strip_front_matter(body).rstrip() + "\n"
    else:
        text = (f"# {cfg['name']}\n\n`{cfg['architecture']}` trained on `{cfg['dataset']}` "
                f"([keras-attention](https://github.com/) model zoo).\n")
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    table = (f"\n## Evaluation\n\n| top-1 (%) | top-5 (%) | split | command |\n|---|---|---|---|\n"
             f"| {fmt(metrics.get('top1'))} | {fmt(metrics.get('top5'))} | {metrics.get('split', 'n/a')} | "
             f"`{metrics.get('command', 'n/a')}` |\n") if "## Evaluation" not in text else ""
    details = (f"\n## Preprocessing\n\n- input size: {cfg['input_size']} (H, W, C); crop fraction "
               f"{cfg['crop_pct']}; interpolation {cfg['interpolation']}\n- images scaled to [0, 1], then "
               f"normalised with mean {cfg['mean']} and std {cfg['std']}\n- {cfg['num_classes']} classes\n"
               f"- paper: {paper_text}\n- license: {cfg['license']}\n")
    usage = (f"\n## Usage\n\n```python\nimport keras_attention\n\n"
             f"model = keras_attention.load(\"hf://{repo_id}\")          # this folder\n"
             f"model = keras_attention.load(\"{cfg['name']}\")  # same weights via the registry (pinned commit)\n"
             f"model = keras_attention.load(\"{cfg['name']}\", num_classes=5)  # new head for fine-tuning\n\n"
             f"import keras\n"
             f"model = keras.saving.load_model(\"hf://{repo_id}\")  # after `import keras_attention`\n"
             f"```\n")
    return _yaml_front_matter(cfg) + "\n" + text + table + details + usage


def _versions() -> dict:
    import platform
    out = {"keras_attention_version": _version(), "keras_version": keras.__version__,
           "backend": keras.backend.backend(), "python_version": platform.python_version()}
    try:
        out["huggingface_hub_version"] = _hf().__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def save_hub_folder(model: keras.Model, cfg: dict, out_dir, *, repo_id: str | None = None,
                    weights_file=None, card_body: str | None = None, overwrite: bool = False) -> Path:
    """Writes ``model`` as a Hub folder: Keras's unzipped layout plus a model card.

    Files: ``config.json`` (the model's Keras config), ``model.weights.h5`` (``weights_file``
    copied byte for byte when given, so its SHA-256 stays the registry's; otherwise saved
    from ``model``), ``metadata.json`` (Keras's ``keras_version``/``date_saved`` plus our
    versions and the ``pretrained_cfg``, with the weights' SHA-256 and size) and
    ``README.md`` (:func:`build_model_card`). The folder is written next to ``out_dir``
    and renamed into place when complete.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it.")
    with _atomic_folder(out_dir) as tmp:
        keras.saving.save_model(model, str(tmp), zipped=False)
        assets = tmp / "assets"
        if assets.is_dir() and not any(assets.iterdir()):
            assets.rmdir()  # Keras leaves an empty assets/ folder; the Hub cannot hold one
        weights = tmp / KERAS_WEIGHTS_FILENAME
        if weights_file is not None:
            shutil.copyfile(weights_file, weights)
        cfg = copy.deepcopy(cfg)
        repo_id = repo_id or cfg["hub"]["repo_id"]
        cfg["files"] = {KERAS_WEIGHTS_FILENAME: {"sha256": sha256_file(weights), "size": weights.stat().st_size}}
        cfg["format"] = "keras"
        # A file cannot hold the hash of the commit that contains it: the revision is pinned in the registry.
        cfg["hub"] = {"repo_id": repo_id, "revision": None}
        meta = json.loads((tmp / "metadata.json").read_text(encoding="utf-8"))
        meta.update(_versions())
        meta["pretrained_cfg"] = cfg
        _atomic_write_text(tmp / "metadata.json", json.dumps(meta, indent=2) + "\n")
        _atomic_write_text(tmp / "README.md", build_model_card(cfg, repo_id, card_body))
    return out_dir


def build_hub_folder(name: str, out_dir, *, repo_id: str | None = None, overwrite: bool = False) -> Path:
    """The Hub folder of registry tag ``name`` (weights resolved and verified as for :func:`load`)."""
    entry = find_pretrained(name)
    cfg = _expand_labels(entry)
    model = load(entry.name)
    weights_file = None
    if cfg["format"] == "keras":
        weights_file = resolve_file(entry, KERAS_WEIGHTS_FILENAME)
    card = entry.folder / "README.md"
    return save_hub_folder(model, cfg, out_dir, repo_id=repo_id or cfg["hub"]["repo_id"],
                           weights_file=weights_file,
                           card_body=card.read_text(encoding="utf-8") if card.is_file() else None,
                           overwrite=overwrite)


def upload_hub_folder(folder, repo_id: str, *, private: bool | None = None, token=None,
                      commit_message: str | None = None) -> str:
    """``create_repo(exist_ok=True)`` + ``upload_folder``; returns the 40-hex commit.

    After the upload, the Hub's ETag of every file is compared with the local file
    (SHA-256 for LFS files, git blob SHA-1 for regular files).

    Raises:
        ChecksumError: a file on the Hub differs from the local one.
    """
    hf = _hf()
    folder = Path(folder)
    api = hf.HfApi(token=token, library_name=LIBRARY_NAME, library_version=_version())
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                             commit_message=commit_message or f"Upload {folder.name} with keras-attention")
    commit = info.oid
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        url = hf.hf_hub_url(repo_id, path.relative_to(folder).as_posix(), revision=commit)
        meta = hf.get_hf_file_metadata(url, token=token)
        algo, actual = _hash_for_etag(path, meta.etag)
        if actual != meta.etag:
            raise ChecksumError(f"{path.name} on the Hub ({repo_id}@{commit}) has {algo} {meta.etag}, the local "
                                f"file has {actual}.")
    return commit


def update_registry_revision(name: str, revision: str, repo_id: str | None = None) -> Path:
    """Writes ``hub.revision`` (and ``hub.repo_id``) into the entry's ``pretrained.json`` atomically."""
    if not _COMMIT_RE.match(revision):
        raise ValueError(f"revision must be a 40-hex commit hash, received {revision!r}")
    entry = find_pretrained(name)
    path = entry.folder / PRETRAINED_FILENAME
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["hub"]["revision"] = revision
    if repo_id:
        cfg["hub"]["repo_id"] = repo_id
    validate_pretrained_cfg(cfg, str(path))
    _atomic_write_text(path, json.dumps(cfg, indent=2) + "\n")
    return path


def publish(name: str, *, repo_id: str | None = None, private: bool | None = None, token=None,
            commit_message: str | None = None, update_registry: bool = False,
            work_dir=None) -> str:
    """Builds the Hub folder of ``name``, uploads it, returns the commit hash to pin.

    Args:
        name: registry tag (``"se_resnet20.cifar10"``).
        repo_id: Hub repo (default: the entry's ``hub.repo_id``).
        update_registry: write the commit (and repo) into the entry's ``pretrained.json``.
        work_dir: where to build the folder (default: a temporary folder).
    """
    entry = find_pretrained(name)
    repo_id = repo_id or entry.cfg["hub"]["repo_id"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_hub_folder(entry.name, Path(work_dir or tmp) / entry.name, repo_id=repo_id,
                                  overwrite=True)
        commit = upload_hub_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)
    if update_registry:
        update_registry_revision(entry.name, commit, repo_id)
    return commit



# --------------------------------------------------------------------------------------
# Adding our own trained weights to the registry
# --------------------------------------------------------------------------------------

def _training_card_body(cfg: dict, train_cfg: dict, metrics: dict, notes: str | None) -> str:
    source = cfg.get("source") or {}
    m = cfg["metrics"]
    lines = [
        f"# {cfg['name']}",
        "",
        f"`{cfg['architecture']}` ({metrics.get('trainable_params', 'n/a'):,} trainable parameters) trained from "
        f"scratch on `{cfg['dataset']}` (`{train_cfg.get('train_split', 'train')}` split) by the keras-attention "
        f"training script, evaluated on the full `{m.get('split')}` split "
        f"({metrics.get('num_eval_examples', 'n/a'):,} images).",
        "",
        "## Evaluation",
        "",
        "| top-1 (%) | top-5 (%) | split | command |",
        "|---|---|---|---|",
        f"| {m['top1']:.2f} | {m['top5']:.2f} | {m.get('split')} | `{m.get('command')}` |",
        "",
    ]
    if m.get("per_class_top1"):
        lines += ["Top-1 per class (%): " + ", ".join(
            f"{label} {'n/a' if v is None else f'{v:.1f}'}" for label, v in m["per_class_top1"].items())
            + ".", ""]
    lines += [
        "## Training",
        "",
        f"- recipe: `weights/{source.get('recipe')}`; reproduce with `{source.get('command')}`",
        f"- {train_cfg['epochs']} epoch{'s' if train_cfg['epochs'] != 1 else ''} x "
        f"{metrics.get('steps_per_epoch')} steps, batch {train_cfg['batch_size']}, "
        f"{train_cfg['optimizer']} (lr {train_cfg['lr']}, momentum {train_cfg.get('momentum')}, nesterov "
        f"{train_cfg.get('nesterov')}), cosine schedule with {train_cfg.get('warmup_epochs')} warmup epoch(s), "
        f"weight decay {train_cfg.get('weight_decay')} ({train_cfg.get('weight_decay_mode')}), label smoothing "
        f"{train_cfg.get('label_smoothing')}, augmentation `{train_cfg.get('augment')}`, seed {train_cfg.get('seed')}",
        f"- precision {metrics.get('precision')}, backend {metrics.get('backend')}, hardware: {source.get('hardware')}",
        f"- training time {metrics.get('train_time_s_total', 0) / 60:.1f} min "
        f"({metrics.get('images_per_s_median', 0):.0f} images/s median)",
        f"- final training loss {metrics.get('final_train_loss', float('nan')):.4f}, training top-1 "
        f"{metrics.get('final_train_top1', float('nan')):.2f}% (with augmentation)",
        "",
        f"Weights file `model.weights.h5`, SHA-256 `{cfg['files'][KERAS_WEIGHTS_FILENAME]['sha256']}`. "
        "Training curves: `curves.png`.",
    ]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def add_trained_weights(run_dir, weights_dir=None, *, notes: str | None = None,
                        overwrite: bool = False) -> Path:
    """Adds a finished training run to the weights registry as ``weights/<arch>.<tag>/``.

    Copies ``model.weights.h5`` (its SHA-256 checked against the run's ``pretrained.json``)
    and ``curves.png``, writes ``pretrained.json`` and a model card ``README.md`` (the
    measured metrics, the recipe and the command that reproduces the run, hardware,
    training time, SHA-256, and ``notes``). The folder is written under a temporary name
    and renamed into place.

    Raises:
        FileNotFoundError: the run folder lacks one of its output files.
        ChecksumError: the run's weights do not match its ``pretrained.json``.
        FileExistsError: the entry exists and ``overwrite`` is false.
    """
    run_dir = Path(run_dir)
    weights_dir = Path(weights_dir) if weights_dir else Path(__file__).resolve().parents[1] / "weights"
    needed = ["pretrained.json", "metrics.json", "train_config.json", KERAS_WEIGHTS_FILENAME]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished training run: missing {missing}.")
    cfg = json.loads((run_dir / "pretrained.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train_cfg = json.loads((run_dir / "train_config.json").read_text())
    validate_pretrained_cfg(cfg, str(run_dir / "pretrained.json"))
    expected = cfg["files"][KERAS_WEIGHTS_FILENAME]["sha256"]
    actual = sha256_file(run_dir / KERAS_WEIGHTS_FILENAME)
    if actual != expected:
        raise ChecksumError(f"{run_dir / KERAS_WEIGHTS_FILENAME}: SHA-256 {actual}, its pretrained.json says {expected}.")
    target = weights_dir / cfg["name"]
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it.")
    # The command in the card must be runnable from the repository, not from the run's machine.
    source = cfg.setdefault("source", {})
    if source.get("recipe") and {"recipes", "_recipes"} & set(Path(source["recipe"]).parts):
        source["recipe"] = f"_recipes/{Path(source['recipe']).name}"  # as shipped in weights/
    if source.get("recipe"):
        source["command"] = (f"keras-attention train --recipe weights/{source['recipe']} --model "
                             f"{cfg['architecture']} --output runs/{cfg['name']}")
    source["train_time_s"] = metrics.get("train_time_s_total")
    with _atomic_folder(target) as tmp:
        tmp.mkdir()
        shutil.copy2(run_dir / KERAS_WEIGHTS_FILENAME, tmp / KERAS_WEIGHTS_FILENAME)
        if (run_dir / "curves.png").is_file():
            shutil.copy2(run_dir / "curves.png", tmp / "curves.png")
        (tmp / PRETRAINED_FILENAME).write_text(json.dumps(cfg, indent=2) + "\n")
        body = _training_card_body(cfg, train_cfg, metrics, notes)
        (tmp / "README.md").write_text(build_model_card(cfg, cfg["hub"]["repo_id"], body))
    return target
