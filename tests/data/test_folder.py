"""Class-folder datasets: real Imagewoof images, and the bad-input errors."""

import os
import shutil

import numpy as np
import pytest

from keras_attention.data import Preprocessing, load_folder, load_source
from tests.helpers import import_or_skip
from tests.data._common import IMAGEWOOF, PIPELINES, batches, needs_imagewoof, pipeline

pytestmark = needs_imagewoof
CLASSES = ["n02086240", "n02087394", "n02088364"]


@pytest.fixture
def small_folder(tmp_path):
    """train/ and val/ with 4 real Imagewoof images for each of 3 classes (copies)."""
    for split in ("train", "val"):
        for c in CLASSES:
            (tmp_path / split / c).mkdir(parents=True)
            for name in sorted(os.listdir(IMAGEWOOF / split / c))[:4]:
                shutil.copy(IMAGEWOOF / split / c / name, tmp_path / split / c / name)
    return tmp_path


def test_real_imagewoof_val_split_lists_every_image():
    src = load_folder(IMAGEWOOF, "val")
    assert src.num_examples == 3929 and src.num_classes == 10  # ../shared/data/README.md
    assert src.label_names[0] == "n02086240" and src.label_names == sorted(src.label_names)
    assert len(src.files) == 3929 and src.files[0].endswith(".JPEG")


@pytest.mark.parametrize("name", PIPELINES)
def test_folder_pipelines_decode_real_jpegs(small_folder, name):
    src = load_source(str(small_folder), "train")
    assert src.num_examples == 12 and src.label_names == CLASSES
    pre = Preprocessing(input_size=(64, 64, 3), crop_pct=0.875, recipe="imagenet")
    ds, steps = pipeline(name).train_dataset(src, pre, 4, epochs=1, seed=0)
    train = batches(ds)
    assert steps == 3 and len(train) == 3
    x, y = train[0]
    assert x.shape == (4, 64, 64, 3) and np.isfinite(x).all() and y.shape == (4, 3)
    assert sorted(np.concatenate([b[1] for b in train]).argmax(1).tolist()) == \
        [0] * 4 + [1] * 4 + [2] * 4
    x, y = batches(pipeline(name).eval_dataset(src, pre, 12))[0]
    assert x.shape == (12, 64, 64, 3) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert -3 < x.mean() < 3 and x.std() > 0.3  # normalised real images, not blank


def test_non_image_file_is_named_or_skipped_and_counted(small_folder):
    bad = small_folder / "train" / CLASSES[1] / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.txt.*is not a readable image.*skip_corrupt"):
        load_folder(small_folder, "train")
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        src = load_folder(small_folder, "train", skip_corrupt=True)
    assert src.num_examples == 12 and src.skipped_files == [str(bad)]


def test_truncated_jpeg_found_by_full_verification(small_folder):
    victim = sorted((small_folder / "train" / CLASSES[0]).iterdir())[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) // 2])  # valid header, cut short
    load_folder(small_folder, "train")  # the header check cannot see it
    with pytest.raises(ValueError, match=rf"{victim.name}.*cannot be decoded"):
        load_folder(small_folder, "train", verify="full", progress=False)


def test_decode_error_at_run_time_names_the_file(small_folder):
    victim = small_folder / "train" / CLASSES[2] / "zz_broken.JPEG"
    victim.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # JPEG signature, garbage body
    pre = Preprocessing(input_size=(32, 32, 3), recipe="none")
    src = load_folder(small_folder, "train", verify="none")
    with pytest.raises(ValueError, match="zz_broken.JPEG.*cannot be decoded"):  # grain: named
        batches(pipeline("grain").eval_dataset(src, pre, 13))
    import_or_skip("tensorflow", "the tf.data path needs TensorFlow")
    with pytest.raises(Exception) as info:  # tf.data: a decode error names no file...
        batches(pipeline("tf").eval_dataset(src, pre, 13))
    with pytest.raises(ValueError, match="zz_broken.JPEG"):  # ...until the source explains it
        src.on_decode_error(info.value)


def test_empty_class_folder_and_missing_split_say_what_was_found(small_folder):
    (small_folder / "train" / "n09999999").mkdir()
    with pytest.raises(ValueError, match=r"Empty class folder.*n09999999.*Files per class"):
        load_folder(small_folder, "train")
    with pytest.raises(ValueError, match=r"Split 'validation' not found.*\['train', 'val'\]"):
        load_folder(small_folder, "validation")
    with pytest.raises(ValueError, match="does not exist"):
        load_folder(small_folder / "nowhere", "train")


def test_label_names_of_a_model_map_the_folders(small_folder):
    names = ["x"] + CLASSES  # model with an extra class first
    src = load_folder(small_folder, "val", label_names=names)
    _, y = batches(pipeline("grain").eval_dataset(src, Preprocessing(input_size=(32, 32, 3)), 12))[0]
    assert sorted(set(y.tolist())) == [1, 2, 3]
    with pytest.raises(ValueError, match="not one of the model's 2 classes"):
        load_folder(small_folder, "val", label_names=CLASSES[:2])
