"""Getting a registry entry's files: package folder, Hugging Face cache, Hub; always verified.

Each file of a tag comes from the package folder, else from the local Hugging Face cache,
else from the Hub, always at the entry's pinned commit (:func:`resolve_file`). Downloads go
through ``huggingface_hub.hf_hub_download``, so ``HF_HUB_OFFLINE``, ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_TOKEN`` and its progress bars behave as in the rest
of the Hugging Face ecosystem, and an interrupted download leaves only a process-unique
``.incomplete`` file.

Every file is checked by SHA-256 before it is used. A bad file in the Hub cache is deleted
(blob and snapshot link) and downloaded once more; if the fresh copy is also bad (or we are
offline) :class:`ChecksumError` names the file and both hashes. Where an entry has no
``sha256`` (a timm checkpoint whose hash could not be read when the entry was written) the
file is checked against the hash the Hub reports: the ``ETag``/``X-Linked-Etag`` of an LFS
file is the SHA-256 of its content, that of a regular file its git blob SHA-1
(``huggingface_hub.get_hf_file_metadata``); offline, against the name of the cache blob,
which ``huggingface_hub`` stores under that same ETag.
"""

from __future__ import annotations

import logging
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)

from keras_attention._files import git_blob_sha1_file, sha256_file
from keras_attention._version import __version__
from keras_attention.weights._registry import (COMMIT_RE, LIBRARY_NAME, PRETRAINED_FILENAME, SHA256_RE,
                                               ChecksumError, PretrainedEntry, RegistryError,
                                               WeightsNotFoundError, find_pretrained)

logger = logging.getLogger(__name__)


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read by ``huggingface_hub`` at import)."""
    return bool(constants.HF_HUB_OFFLINE)


def cache_root(cache_dir=None) -> str:
    """The Hugging Face cache folder used: ``cache_dir`` or ``HF_HUB_CACHE``."""
    return str(cache_dir or constants.HF_HUB_CACHE)


def fetch_hint(repo_id: str, filename: str, revision: str) -> str:
    """The sentence that says how to get a file into the cache."""
    return (f"To fetch it, run once with network access (HF_HUB_OFFLINE unset), e.g. "
            f"`hf download {repo_id} {filename} --revision {revision}`, or copy a Hugging Face cache "
            f"that holds it to HF_HUB_CACHE.")


def _cause(e: BaseException) -> str:
    """``"Type: first line"`` of the innermost cause (e.g. the refused connection)."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def download(repo_id: str, filename: str, revision: str, cache_dir=None, *, context: str,
             force_download: bool = False) -> str:
    """``hf_hub_download`` of one file, with errors that say what failed and how to fix it.

    Args:
        repo_id: ``"org/name"``.
        filename: path of the file in the repo.
        revision: commit hash or branch.
        cache_dir: Hugging Face cache folder (default ``HF_HUB_CACHE``).
        context: what the file belongs to, for messages (a registry name, an address).
        force_download: download even if cached.

    Returns:
        The path of the file in the cache (``snapshots/<commit>/<filename>``).

    Raises:
        WeightsNotFoundError: offline or unreachable with nothing cached, gated or missing
            repo, missing revision or file, or a failed transfer; the message names the
            repo, file and revision and says how to fetch the file.
    """
    where = f"{filename!r} of {context} (Hub repo {repo_id!r}, revision {revision})"
    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                               force_download=force_download, library_name=LIBRARY_NAME,
                                               library_version=__version__)
    except LocalEntryNotFoundError as e:
        if offline():
            raise WeightsNotFoundError(
                f"Cannot load {where}: HF_HUB_OFFLINE is set and the file is not in the Hugging Face "
                f"cache ({cache_root(cache_dir)}). {fetch_hint(repo_id, filename, revision)}") from e
        raise WeightsNotFoundError(
            f"Cannot load {where}: the Hub at {constants.ENDPOINT} could not be reached ({_cause(e)}) and "
            f"the file is not in the Hugging Face cache ({cache_root(cache_dir)}). Check the network and "
            f"HF_ENDPOINT. {fetch_hint(repo_id, filename, revision)}") from e
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


def snapshot_commit(path, fallback: str | None = None) -> str | None:
    """The commit of a cached file (``.../snapshots/<commit>/<file>``), else ``fallback``."""
    for parent in Path(path).parents:
        if parent.parent.name == "snapshots" and COMMIT_RE.match(parent.name):
            return parent.name
    return fallback


def hash_for_etag(path, etag: str) -> tuple[str, str]:
    """``(algorithm, local digest)`` comparable with a Hub ETag.

    Returns:
        ``("SHA-256", sha256)`` for a 64-hex ETag (LFS files), ``("git blob SHA-1", sha1)``
        for a 40-hex ETag (regular files).

    Raises:
        ChecksumError: the ETag is neither.

    (Own code: ``huggingface_hub`` checks a download's hash itself but has no public helper
    that checks a cached or uploaded file against an ETag.)
    """
    if SHA256_RE.match(etag):
        return "SHA-256", sha256_file(path)
    if COMMIT_RE.match(etag):
        return "git blob SHA-1", git_blob_sha1_file(path)
    raise ChecksumError(f"Cannot verify {Path(path).name}: the Hub's ETag {etag!r} is neither a SHA-256 "
                        f"nor a git blob SHA-1, and the registry entry has no sha256.")


def _discard_cached(path: str, cache_dir) -> None:
    """Removes a snapshot file and the cache blob it links to, so no later call reuses them."""
    pointer = Path(path)
    blob = pointer.resolve()
    cache = Path(cache_root(cache_dir)).resolve()
    for p in ((blob,) if cache in blob.parents else ()) + (pointer,):
        try:
            p.unlink(missing_ok=True)
        except OSError as e:  # pragma: no cover - read-only caches
            logger.warning("Could not remove %s: %s", p, e)


def _expected_from_hub(path: str, repo_id: str, filename: str, revision: str) -> str | None:
    """The ETag the Hub reports for a file (its SHA-256 if LFS), or the cache blob name offline."""
    if not offline():
        try:
            url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision)
            return huggingface_hub.get_hf_file_metadata(url).etag
        except Exception as e:  # noqa: BLE001 - fall back to the cache blob name
            logger.info("Could not read the Hub's ETag of %s (%s); using the cache blob name.", filename, e)
    blob = Path(path).resolve()
    if blob.parent.name == "blobs" and (SHA256_RE.match(blob.name) or COMMIT_RE.match(blob.name)):
        return blob.name
    return None


def _verify(path: Path, expected_sha256: str | None, *, repo_id: str, filename: str,
            revision: str) -> tuple[bool, str, str, str]:
    """``(ok, algorithm, expected, actual)`` for one downloaded file."""
    if expected_sha256:
        actual = sha256_file(path)
        return actual == expected_sha256, "SHA-256", expected_sha256, actual
    etag = _expected_from_hub(str(path), repo_id, filename, revision)
    if etag is None:
        raise ChecksumError(
            f"Cannot verify {filename!r} of {repo_id}@{revision}: the registry entry has no sha256 and, "
            f"offline, the cache does not store the file under its Hub hash (symlinks disabled?). Run once "
            f"with network access so its hash can be read from the Hub.")
    algo, actual = hash_for_etag(path, etag)
    return actual == etag, algo, etag, actual


def fetch_verified(repo_id: str, filename: str, revision: str, expected_sha256: str | None = None, *,
                   cache_dir=None, context: str | None = None) -> Path:
    """Downloads (or finds in the cache) one Hub file at ``revision`` and verifies it.

    A cached file with the wrong hash is deleted and downloaded once more; a fresh file
    with the wrong hash is deleted and reported.

    Args:
        repo_id: ``"org/name"``.
        filename: the file in the repo.
        revision: commit hash (or branch).
        expected_sha256: the SHA-256 to check against; ``None`` checks against the Hub's ETag.
        cache_dir: Hugging Face cache folder (default ``HF_HUB_CACHE``).
        context: what the file belongs to, for messages.

    Returns:
        The verified file's path in the cache.

    Raises:
        ChecksumError: the file (after one fresh download, if online) has the wrong
            hash; the message names the file and both hashes.
        WeightsNotFoundError: offline/no network with nothing cached, missing file, repo
            or revision (the message says which and how to fetch it).
    """
    context = context or f"{repo_id}@{revision}"
    path = download(repo_id, filename, revision, cache_dir, context=context)
    ok, algo, expected, actual = _verify(Path(path), expected_sha256, repo_id=repo_id, filename=filename,
                                         revision=revision)
    if ok:
        return Path(path)
    _discard_cached(path, cache_dir)
    message = (f"{filename!r} of {context} from the Hugging Face cache has the wrong {algo}: expected "
               f"{expected}, got {actual}. The bad file ({path}) was deleted")
    if offline():
        raise ChecksumError(f"{message}. {fetch_hint(repo_id, filename, revision)}")
    logger.warning("%s; downloading it again.", message)
    path = download(repo_id, filename, revision, cache_dir, context=context, force_download=True)
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

    Args:
        name_or_entry: ``"arch.tag"``/``"arch"`` or a :class:`PretrainedEntry`.
        filename: one of the entry's ``files``.
        revision: Hub commit (or branch) instead of the pinned one.
        cache_dir: Hugging Face cache folder (default ``HF_HUB_CACHE``).

    Returns:
        The verified file's path.

    Raises:
        RegistryError: unknown name, or a file the entry does not list.
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
