"""The tf.data path: augmentation maths, determinism from (seed, epoch), resume slicing,
evaluation views, and the preprocessing config."""

import numpy as np
import pytest
import tensorflow as tf

from keras_attention.data import CIFAR10_MEAN, CIFAR10_STD, ImageSource, Preprocessing
from keras_attention.data import tf_augment as augment
from keras_attention.data.tf_pipeline import eval_dataset, train_dataset
from keras_attention.data.tfds import load_tfds
from tests.data._common import TFDS_DIR, needs_cifar

pytestmark = pytest.mark.tf


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png_source(images, labels, num_classes=3):
    """An in-memory ImageSource of PNG-encoded images."""
    encoded = [tf.io.encode_png(img).numpy() for img in images]
    labels = np.asarray(labels, np.int64)
    shape = images[0].shape if len({i.shape for i in images}) == 1 else None
    return ImageSource("synthetic", "train", labels, [f"c{i}" for i in range(num_classes)],
                       image_shape=shape, _encoded=encoded,
                       tf_records=lambda: tf.data.Dataset.from_tensor_slices((encoded, labels)))


def test_cifar_transform_is_a_padded_shift_possibly_mirrored():
    img = _image(32, 32)
    padded = np.pad(img.astype(np.float32), ((4, 4), (4, 4), (0, 0)))
    seen_flip = seen_plain = False
    for s in range(12):
        out = augment.cifar_train_transform(img, tf.constant([s, 7], tf.int64)).numpy()
        assert out.shape == (32, 32, 3)
        views = {(t, l, f): (padded[t:t + 32, l:l + 32, ::1] if not f else
                             padded[t:t + 32, l:l + 32][:, ::-1])
                 for t in range(9) for l in range(9) for f in (0, 1)}
        matches = [k for k, v in views.items() if np.array_equal(v, out)]
        assert matches, "output is not a 4-pixel-padded random crop (optionally flipped)"
        seen_flip |= any(k[2] for k in matches)
        seen_plain |= any(not k[2] for k in matches)
    assert seen_flip and seen_plain


def test_stateless_transforms_depend_only_on_the_seed():
    img = _image(60, 80)
    a = augment.imagenet_train_transform(img, tf.constant([1, 2], tf.int64), (48, 48)).numpy()
    b = augment.imagenet_train_transform(img, tf.constant([1, 2], tf.int64), (48, 48)).numpy()
    c = augment.imagenet_train_transform(img, tf.constant([1, 3], tf.int64), (48, 48)).numpy()
    assert a.shape == (48, 48, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 255.0


def test_eval_transform_resizes_shorter_side_then_centre_crops():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 30:] = 255  # right half white
    out = augment.eval_transform(img, (32, 32), crop_pct=0.875).numpy()
    # shorter side -> floor(32 / 0.875) = 36, so 36 x 54, centre crop columns 11..42
    assert out.shape == (32, 32, 3)
    assert augment.scale_size((32, 32), 0.875) == 36
    assert out[:, :10].max() < 1 and out[:, -10:].min() > 254  # edge at the centre column 16
    assert abs(int(np.argmax(out[0, :, 0] > 127)) - 16) <= 1
    same = augment.eval_transform(_image(32, 32), (32, 32), crop_pct=1.0).numpy()
    np.testing.assert_array_equal(same, _image(32, 32).astype(np.float32))  # untouched


def test_five_crops_cifar_corners_of_the_padded_image_and_centre_is_the_image():
    img = _image(32, 32, seed=3)
    crops = augment.five_crops(img, (32, 32), pad=4).numpy()
    padded = np.pad(img.astype(np.float32), ((4, 4), (4, 4), (0, 0)))
    np.testing.assert_array_equal(crops[0], padded[:32, :32])
    np.testing.assert_array_equal(crops[3], padded[8:, 8:])
    np.testing.assert_array_equal(crops[4], img.astype(np.float32))


def test_normalize_uses_mean_and_std_of_unit_range_images():
    x = np.full((2, 2, 3), 255, np.uint8)
    out = augment.normalize(x, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)).numpy()
    np.testing.assert_allclose(out[0, 0], [1.0, 3.0, 0.5], rtol=1e-6)


def test_train_dataset_is_a_function_of_seed_and_epoch_and_resumes_exactly():
    images = [_image(16, 16, seed=i) for i in range(40)]
    src = _png_source(images, [i % 3 for i in range(40)])
    pre = Preprocessing(input_size=(16, 16, 3), crop_pct=1.0, recipe="cifar", pad=2)
    full, steps = train_dataset(src, pre, 8, epochs=3, seed=5)
    batches = list(full.as_numpy_iterator())
    assert steps == 5 and len(batches) == 15
    x, y = batches[0]
    assert x.shape == (8, 16, 16, 3) and x.dtype == np.float32 and y.shape == (8, 3)
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)  # one-hot
    again = list(train_dataset(src, pre, 8, epochs=3, seed=5)[0].as_numpy_iterator())
    for (a, _), (b, _) in zip(batches, again):
        np.testing.assert_array_equal(a, b)
    resumed = list(train_dataset(src, pre, 8, epochs=3, initial_epoch=2, seed=5)[0]
                   .as_numpy_iterator())
    assert len(resumed) == 5
    for (a, ya), (b, yb) in zip(resumed, batches[10:]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)
    # epochs differ from each other; another seed differs
    assert not any(np.array_equal(a[0], b[0]) for a, b in zip(batches[:5], batches[5:10]))
    other = next(train_dataset(src, pre, 8, epochs=1, seed=6)[0].as_numpy_iterator())
    assert not np.array_equal(other[0], x)


def test_every_example_once_per_epoch_and_remainder_dropped():
    images = [np.full((8, 8, 3), i, np.uint8) for i in range(21)]
    src = _png_source(images, [i % 3 for i in range(21)])
    pre = Preprocessing(input_size=(8, 8, 3), crop_pct=1.0, recipe="none", mean=(0, 0, 0),
                        std=(1, 1, 1))
    ds, steps = train_dataset(src, pre, 5, epochs=2, seed=0, one_hot=False)
    batches = list(ds.as_numpy_iterator())
    assert steps == 4 and len(batches) == 8
    for epoch in range(2):
        ids = np.concatenate([np.round(b[0][:, 0, 0, 0] * 255).astype(int)
                              for b in batches[epoch * 4:(epoch + 1) * 4]])
        assert len(ids) == 20 and len(set(ids.tolist())) == 20  # 20 distinct of 21 images
        labels = np.concatenate([b[1] for b in batches[epoch * 4:(epoch + 1) * 4]])
        np.testing.assert_array_equal(labels, ids % 3)  # labels travel with their images


def test_eval_dataset_keeps_order_and_tta_views():
    images = [_image(20, 24, seed=i) for i in range(5)]
    src = _png_source(images, [0, 1, 2, 0, 1])
    pre = Preprocessing(input_size=(16, 16, 3), crop_pct=0.8, recipe="imagenet")
    x, y = next(eval_dataset(src, pre, 10).as_numpy_iterator())
    assert x.shape == (5, 16, 16, 3) and list(y) == [0, 1, 2, 0, 1]
    x, _ = next(eval_dataset(src, pre, 10, tta="five_crop_flip").as_numpy_iterator())
    assert x.shape == (5, 10, 16, 16, 3)
    np.testing.assert_allclose(x[:, 5:], x[:, :5, :, ::-1], atol=1e-6)  # mirrored views
    x2, _ = next(eval_dataset(src, pre, 10, tta="flip").as_numpy_iterator())
    assert x2.shape == (5, 2, 16, 16, 3)
    with pytest.raises(ValueError, match="tta must be"):
        eval_dataset(src, pre, 10, tta="ten_crop")


def test_preprocessing_validation_and_round_trip():
    pre = Preprocessing(input_size=(32, 32), crop_pct=1.0, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                        recipe="cifar")
    assert pre.input_size == (32, 32, 3)
    assert Preprocessing.from_config({**pre.to_config(), "unknown": 1}).to_config() == \
        pre.to_config()
    assert Preprocessing.from_config({"input_size": [8, 8, 3]}).recipe == "none"
    for bad, msg in [({"crop_pct": 0}, "crop_pct"), ({"recipe": "autoaugment"}, "recipe"),
                     ({"std": (1, 0, 1)}, "std"), ({"input_size": (8, 8, 1)}, "input_size"),
                     ({"interpolation": "lanczos9"}, "interpolation")]:
        with pytest.raises(ValueError, match=msg):
            Preprocessing(**bad)


@needs_cifar
def test_real_cifar_batches_are_normalised():
    src = load_tfds("cifar10", "train[:512]", data_dir=TFDS_DIR, download=False)
    pre = Preprocessing(input_size=(32, 32, 3), crop_pct=1.0, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                        recipe="none")
    x = np.concatenate([b[0] for b in train_dataset(src, pre, 128, epochs=1)[0]
                        .as_numpy_iterator()])
    assert x.shape == (512, 32, 32, 3)
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=0.1)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=0.1)
