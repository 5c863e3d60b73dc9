"""Atomic files and folders (keras_attention._files) and which errors the command line reports
as one line (issue 15, defects 6 and 7)."""

import os

import pytest

from keras_attention import _files
from keras_attention._errors import InvalidInputError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_folder_build_keeps_the_old_folder(tmp_path):
    target = tmp_path / "entry"
    target.mkdir()
    (target / "weights.h5").write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with _files.atomic_folder(target) as tmp:
            tmp.mkdir()
            (tmp / "weights.h5").write_text("new, half written")
            raise RuntimeError("interrupted")
    assert (target / "weights.h5").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_folder_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "entry"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with _files.atomic_folder(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.h5").write_text("new")
        assert (target / "stale.txt").read_text() == "old"  # still in place while the new one is built
    assert sorted(p.name for p in target.iterdir()) == ["weights.h5"]
    assert _leftovers(tmp_path) == []


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "entry"
    target.mkdir()
    (target / "weights.h5").write_text("old")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the new folder's rename into place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(_files.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        with _files.atomic_folder(target) as tmp:
            tmp.mkdir()
            (tmp / "weights.h5").write_text("new")
    assert (target / "weights.h5").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_text_writes_are_synced_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "pretrained.json"
    path.write_text("old")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(_files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    _files.atomic_write_text(path, "new")
    assert path.read_text() == "new" and synced, "the file was not fsynced before the rename"

    def broken(tmp):
        tmp.write_text("partial")
        raise OSError("interrupted")

    with pytest.raises(OSError, match="interrupted"):
        _files.atomic_write(path, broken)
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrained.json"]


@pytest.mark.parametrize("error, one_line", [(InvalidInputError("no images in class 'a'"), True),
                                             (ValueError("an internal bug"), False)])
def test_only_our_errors_become_one_line(error, one_line, tmp_path, monkeypatch, capsys):
    from keras_attention.cli import main
    from keras_attention.data import prepared

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(prepared, "prepare_folder", fail)
    monkeypatch.delenv("KERAS_ATTENTION_TRACEBACK", raising=False)
    argv = ["data", "prepare", str(tmp_path), "--output", str(tmp_path / "out")]
    if one_line:
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == "keras-attention data: error: no images in class 'a'"
    else:  # a bug is not a user error: its traceback shows
        with pytest.raises(ValueError, match="an internal bug"):
            main(argv)
