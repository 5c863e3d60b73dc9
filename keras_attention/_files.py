"""Atomic writes and file hashes: the one place the package writes files safely.

Every file the package writes (weights, checkpoints, JSON, model cards, figures, prepared
datasets) goes through :func:`atomic_write`: the content is written to a temporary file
in the same folder, flushed and ``fsync``-ed, then ``os.replace``-d over the target, so a
reader (or a run killed at any moment) sees either the old file or the complete new one.
Folders are replaced with :func:`atomic_folder`, which keeps the old folder until the new
one is in place. Files are hashed with :func:`sha256_file` (``hashlib.file_digest``;
:func:`git_blob_sha1_file` for the Hub's ETag of regular files).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

_HASH_MEMO: dict[tuple, str] = {}


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content (``hashlib.file_digest``), memoised per path, size,
    modification time and inode, so verifying a large file twice reads it once.

    Args:
        path: the file.
        algorithm: a ``hashlib`` name (``"sha256"``), or ``"git-sha1"`` for the git blob id
            (SHA-1 of ``b"blob <size>\\0"`` followed by the content).
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, algorithm)
    if key not in _HASH_MEMO:
        if algorithm == "git-sha1":
            prefix = f"blob {st.st_size}\0".encode()
            digest = lambda: hashlib.sha1(prefix)  # noqa: E731  (file_digest takes a constructor)
        else:
            digest = algorithm
        with open(path, "rb") as f:
            _HASH_MEMO[key] = hashlib.file_digest(f, digest).hexdigest()
    return _HASH_MEMO[key]


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's content (64 lowercase hex digits)."""
    return file_digest(path, "sha256")


def git_blob_sha1_file(path) -> str:
    """Hex git blob id of a file (40 hex digits): the Hugging Face Hub's ETag of a regular
    (non-LFS) file, as ``git hash-object`` computes it.

    (Own code over ``hashlib.file_digest``: ``huggingface_hub.utils.sha.git_hash`` takes the
    whole content as one ``bytes`` object and does not memoise.)
    """
    return file_digest(path, "git-sha1")


def _fsync_folder(folder: Path) -> None:
    """Makes a rename inside ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without folder fsync
        pass
    finally:
        os.close(fd)


def _temporary_sibling(path: Path) -> Path:
    # Keeps the suffixes (".weights.h5", ".keras", ".png") that writers such as Keras check.
    return path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Calls ``write(tmp)`` to write a temporary file, fsyncs it and renames it to ``path``.

    ``write`` receives a path in the same folder whose name ends like ``path`` (so writers
    that check the extension accept it). If ``write`` raises, ``path`` is untouched and the
    temporary file is removed.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path, text: str) -> Path:
    """Writes UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, *, indent: int = 2) -> Path:
    """``json.dumps(obj, indent=2)`` plus a newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def copy_file(source, target) -> Path:
    """Copies ``source`` to ``target`` atomically (content and permission bits)."""
    return atomic_write(target, lambda tmp: shutil.copy2(source, tmp))


@contextlib.contextmanager
def atomic_folder(target):
    """Yields a temporary sibling folder path that replaces ``target`` if the block succeeds.

    The block creates and fills the yielded folder (it does not exist yet). On success an
    existing ``target`` is first renamed aside, the new folder renamed into place, and only
    then the old one deleted, so at every moment ``target`` is either the complete old
    folder or the complete new one (or, for an instant between the two renames, absent).
    If the block raises, ``target`` is untouched and the temporary folder removed; if the
    second rename fails, the old folder is renamed back before the error propagates.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.with_name(f".tmp-{token}-{target.name}")
    old = target.with_name(f".old-{token}-{target.name}")
    try:
        yield tmp
        for file in (p for p in tmp.rglob("*") if p.is_file()):
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old.exists() and not target.exists():
                os.replace(old, target)  # the old folder stays where it was
            raise
        _fsync_folder(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
