"""The prepared-dataset format: writing, reading with slices, checksums (damaged or truncated
copies refused, naming the file), and ``keras-attention data prepare`` from a class folder and
from TFDS."""

import json
import shutil

import numpy as np
import pytest

from keras_attention.cli import main
from keras_attention.data import is_prepared, load_source, open_prepared, write_prepared
from keras_attention.data.prepared import read_manifest
from tests.data._common import IMAGEWOOF, TFDS_DIR, needs_cifar, needs_imagewoof


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 8, 6, 3), dtype=np.uint8)
    labels = np.arange(30) % 3
    folder = write_prepared(tmp_path / "tiny", name="tiny", label_names=["a", "b", "c"],
                            splits={"train": (images, labels), "test": (images[:10], labels[:10])},
                            source="test")
    return folder, images, labels


def test_round_trip_with_slices_and_manifest(tiny):
    folder, images, labels = tiny
    assert is_prepared(folder) and not is_prepared(folder / "nowhere")
    manifest = read_manifest(folder)
    assert manifest["splits"]["train"]["num_examples"] == 30
    assert set(manifest["splits"]["train"]["files"]) == {"train.images.npy", "train.labels.npy"}
    src = open_prepared(folder, "train")
    assert src.num_examples == 30 and src.image_shape == (8, 6, 3) and src.label_names == ["a", "b", "c"]
    np.testing.assert_array_equal(src.read([4, 2]), images[[4, 2]])
    np.testing.assert_array_equal(src.labels, labels)
    part = load_source(str(folder), "train[10:20]")  # through the catalog, as --dataset
    np.testing.assert_array_equal(part.read(np.arange(10)), images[10:20])
    assert load_source(str(folder), "train[:50%]").num_examples == 15
    assert load_source(str(folder), "test").num_examples == 10
    with pytest.raises(ValueError, match=r"Split 'val' not found.*'train', 'test'"):
        open_prepared(folder, "val")
    with pytest.raises(ValueError, match="label names differ"):
        load_source(str(folder), "train", label_names=["x", "y", "z"])


def test_damaged_or_truncated_copies_are_refused_naming_the_file(tiny, tmp_path):
    folder, images, _ = tiny
    damaged = shutil.copytree(folder, tmp_path / "damaged")
    data = bytearray((damaged / "train.images.npy").read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    (damaged / "train.images.npy").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"train\.images\.npy has SHA-256 .* the manifest says"):
        open_prepared(damaged, "train")
    open_prepared(damaged, "test")  # the other split is intact
    truncated = shutil.copytree(folder, tmp_path / "truncated")
    (truncated / "test.labels.npy").write_bytes((truncated / "test.labels.npy").read_bytes()[:50])
    with pytest.raises(ValueError, match=r"test\.labels\.npy has 50 bytes.*truncated"):
        open_prepared(truncated, "test")
    (truncated / "test.labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.labels\.npy is missing"):
        open_prepared(truncated, "test")
    manifest = json.loads((folder / "dataset.json").read_text())
    (truncated / "dataset.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        open_prepared(truncated, "train")


def test_write_validates_arrays_and_never_leaves_half_a_folder(tmp_path, tiny):
    folder, images, labels = tiny
    with pytest.raises(ValueError, match="images must be uint8"):
        write_prepared(tmp_path / "x", name="x", label_names=["a"], source="t",
                       splits={"train": (images.astype(np.float32), labels)})
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        write_prepared(tmp_path / "x", name="x", label_names=["a", "b"], source="t",
                       splits={"train": (images, labels)})
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(ValueError, match="exists"):
        write_prepared(folder, name="t", label_names=["a", "b", "c"], source="t",
                       splits={"train": (images, labels)})
    write_prepared(folder, name="t2", label_names=["a", "b", "c"], source="t",
                   splits={"train": (images[:3], labels[:3])}, overwrite=True)
    assert read_manifest(folder)["name"] == "t2" and open_prepared(folder, "train").num_examples == 3


@needs_imagewoof
def test_prepare_command_from_a_class_folder(tmp_path, capsys):
    root = tmp_path / "woof"
    for split in ("train", "val"):
        for wnid in sorted((IMAGEWOOF / split).iterdir())[:2]:
            (root / split / wnid.name).mkdir(parents=True)
            for f in sorted(wnid.iterdir())[:3]:
                shutil.copy(f, root / split / wnid.name / f.name)
    assert main(["data", "prepare", str(root), "--output", str(tmp_path / "p")]) == 2
    assert "different sizes" in capsys.readouterr().err  # real photos: sizes differ
    assert main(["data", "prepare", str(root), "--output", str(tmp_path / "p"), "--image-size", "48"]) == 0
    assert "train: 6 images (48, 48, 3)" in capsys.readouterr().out
    src = load_source(str(tmp_path / "p"), "val")
    assert src.num_examples == 6 and src.image_shape == (48, 48, 3)
    assert src.label_names == sorted(p.name for p in (root / "val").iterdir())


@needs_cifar
@pytest.mark.tf
def test_prepare_command_from_tfds(tmp_path, capsys):
    code = main(["data", "prepare", "cifar10", "--splits", "test", "--data-dir", str(TFDS_DIR),
                 "--output", str(tmp_path / "c10")])
    assert code == 0 and "test: 10000 images (32, 32, 3)" in capsys.readouterr().out
    src = load_source(str(tmp_path / "c10"), "test[:5]")
    from keras_attention.data.tfds import load_tfds
    ref = load_tfds("cifar10", "test[:5]", data_dir=TFDS_DIR, download=False)
    np.testing.assert_array_equal(src.read(np.arange(5)), ref.arrays)  # lossless
    np.testing.assert_array_equal(src.labels, ref.labels)
    assert src.label_names == ref.label_names
