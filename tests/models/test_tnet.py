"""TNet: parameter count, patch geometry, gradients kept apart, the official loss, levels, MACs, reload."""

import math
import time

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.models.tnet import (PARTS, STAGE_PLANES, TNet, baseline_reinforce_loss, extract_patches,
                                         grid_geometry, sinusoidal_encoding, tnet_loss, tnet_macs)
from tests.helpers import (FEW_STEPS_RUN_EAGERLY, check_fresh_process_reload, count_trainable_params, gradient,
                           random_images)

SIZE = 96  # patches of round(96 * 0.34375) = 33 px, stride 16, padded 96 -> 97 (one pixel at the top/left)
WIDTH = 0.0625  # 32-d features


def official_param_count(width: float, num_classes: int) -> int:
    """Trainable parameters from the official structure (Tpap/TNet ``ImageNet/models.py``):
    ``BagNet_77`` (every conv with bias, no BN), ``location_module_cls`` (two 1x1 convs and the
    two ``Dense(1)`` coordinate scalings), ``positional_encoding_module_cls`` (dense on
    ``[features, encoding]``) and ``classification_module_cls``."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    planes = [max(1, round(c * width)) for c in STAGE_PLANES]
    dim = planes[3]
    total, cin = conv(3, 3, planes[0]), planes[0]
    for part, blocks in PARTS.items():
        p = planes[part - 2]
        for kernel, stride, _ in blocks:
            total += conv(1, cin, p) + conv(kernel, p, p) + conv(1, p, 4 * p)
            if stride > 1 or cin != 4 * p:
                total += conv(1, cin, 4 * p)
            cin = 4 * p
    total += conv(1, cin, dim)                                        # part6
    grid_channels = 4 * planes[2]                                     # part 4's output
    total += conv(1, grid_channels + dim + 2, dim) + conv(1, dim, 1) + 4  # location module
    total += 2 * dim * dim + dim                                      # positional fusion
    return total + dim * num_classes + num_classes                    # classifier


def tiny(**kwargs):
    keras.utils.set_random_seed(0)
    return TNet(**{"num_classes": 5, "input_shape": (SIZE, SIZE, 3), "width_multiplier": WIDTH, "dropout_rate": 0.0,
                   **kwargs})


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def shared():
    """One tiny TNet (2 levels, 3 patches) for the tests that only run it."""
    return tiny()


def test_parameter_count_equals_the_official_structure(shared):
    model = shared
    assert count_trainable_params(model) == official_param_count(WIDTH, 5)
    assert [v.name for v in model.non_trainable_weights] == ["baseline"]


def test_grid_geometry_is_the_official_one():
    # official create_masked_batch: 224 px, overlap 0.34375 -> 77 px patches, stride 37, 224 -> 225
    assert grid_geometry(224) == (77, 37, 1, 0)
    assert grid_geometry(SIZE) == (33, 16, 1, 0)
    assert grid_geometry(128) == (44, 21, 0, 0)


def test_extract_patches_crops_the_padded_grid():
    images = random_images((2, SIZE, SIZE, 3), seed=1)
    padded = np.pad(images, ((0, 0), (1, 0), (1, 0), (0, 0)))
    cells = np.array([[0, 24, 7], [12, 3, 20]], "int32")
    geometry = grid_geometry(SIZE)
    patches = numpy(extract_patches(images, cells, 5, geometry, geometry))
    assert patches.shape == (6, 33, 33, 3)
    for n in range(2):
        for j, cell in enumerate(cells[n]):
            r, c = divmod(int(cell), 5)
            np.testing.assert_array_equal(patches[3 * n + j], padded[n, 16 * r:16 * r + 33, 16 * c:16 * c + 33])


def test_glimpse_geometry_and_boxes():
    model = tiny(patches_per_level=[2])
    images = random_images((3, SIZE, SIZE, 3), seed=2)
    out = model.glimpse(images)
    assert numpy(out["logits"]).shape == (3, 5) and numpy(out["logits"]).dtype == np.float32
    boxes, levels, cells = numpy(out["boxes"]), numpy(out["levels"]), numpy(out["cells"])
    assert boxes.shape == (3, 3, 4) and levels.tolist() == [[1, 2, 2]] * 3
    assert numpy(out["location_logits"][0]).shape == (3, 25)  # 25 candidate patches
    np.testing.assert_array_equal(boxes[:, 0], [[0, 0, SIZE, SIZE]] * 3)
    assert (cells[:, 0] == -1).all() and ((cells[:, 1:] >= 0) & (cells[:, 1:] < 25)).all()
    assert (cells[:, 1] != cells[:, 2]).all()  # k distinct patches (top-k)
    # the chosen cells are the top-2 of the location distribution
    top = np.argsort(-numpy(out["location_logits"][0]), axis=-1)[:, :2]
    np.testing.assert_array_equal(np.sort(cells[:, 1:], -1), np.sort(top, -1))
    # a child's box is its cell of the parent's grid (parent frame: padded by one pixel at the top/left)
    for n in range(3):
        for t in (1, 2):
            r, c = divmod(int(cells[n, t]), 5)
            top_, left = -1 + 16 * r, -1 + 16 * c
            np.testing.assert_array_equal(boxes[n, t], [max(top_, 0), max(left, 0), top_ + 33, left + 33])
    assert (boxes >= 0).all() and (boxes[..., 2] <= SIZE).all() and (boxes[..., 3] <= SIZE).all()
    assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all()


def test_third_level_boxes_are_inside_their_parents():
    model = tiny(num_levels=3, patches_per_level=[2, 2])
    out = model.glimpse(random_images((2, SIZE, SIZE, 3), seed=3))
    boxes, levels = numpy(out["boxes"]), numpy(out["levels"])
    assert levels.tolist() == [[1, 2, 2, 3, 3, 3, 3]] * 2
    # level 3: 11 px patches, stride 6, each 33 px parent padded by one pixel on every side
    assert grid_geometry(33) == (11, 6, 1, 1)
    for n in range(2):
        for child in range(4):
            parent = boxes[n, 1 + child // 2]
            box = boxes[n, 3 + child]
            assert box[2] - box[0] <= 11 and box[3] - box[1] <= 11
            assert (box[:2] >= parent[:2] - 1).all() and (box[2:] <= parent[2:] + 1).all()


def test_any_levels_and_patches_at_inference(shared):
    images = random_images((2, SIZE, SIZE, 3), seed=4)
    for levels, patches, steps in [(1, None, 1), (2, 1, 2), (2, [5], 6), (3, [3, 2], 10), (4, 1, 4)]:
        out = shared.glimpse(images, num_levels=levels, patches_per_level=patches)
        assert numpy(out["glimpse_logits"]).shape == (2, steps, 5)
        np.testing.assert_allclose(numpy(shared(images, num_levels=levels, patches_per_level=patches)),
                                   numpy(out["logits"]), atol=1e-5)
    # the model's default: 2 levels, 3 patches; more levels repeat the last patch count
    assert numpy(shared.glimpse(images)["glimpse_logits"]).shape == (2, 4, 5)
    assert numpy(shared.glimpse(images, num_levels=3)["glimpse_logits"]).shape == (2, 13, 5)


def test_logits_are_the_classifier_of_the_mean_feature(shared):
    out = shared.glimpse(random_images((2, SIZE, SIZE, 3), seed=5))
    np.testing.assert_allclose(numpy(out["logits"]), numpy(out["glimpse_logits"]).mean(axis=1), atol=1e-5)


def test_sinusoidal_encoding_matches_the_official_formula():
    y, x, s = np.array([0.0, 7.0]), np.array([0.0, 3.0]), np.array([0.0, 1.0])
    enc = numpy(sinusoidal_encoding(y, x, s, 32))
    freqs = np.exp(np.arange(5) * math.log(1e-2) / 4)  # 32 // 6 = 5 frequencies, max_inv_afreq 1e2
    expected = np.concatenate([np.sin(y[:, None] * freqs), np.cos(y[:, None] * freqs),
                               np.sin(x[:, None] * freqs), np.cos(x[:, None] * freqs),
                               np.sin(s[:, None] * freqs), np.cos(s[:, None] * freqs), np.zeros((2, 2))], axis=1)
    np.testing.assert_allclose(enc, expected, atol=1e-6)


def _train_step_changes(model, loss, seed=6):
    """Weights (by sub-model) that one SGD step changes."""
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss, run_eagerly=FEW_STEPS_RUN_EAGERLY)
    before = {id(v): numpy(v).copy() for v in model.trainable_weights}
    x = random_images((4, SIZE, SIZE, 3), seed=seed)
    model.train_on_batch(x, keras.utils.to_categorical([0, 1, 2, 3], 5))
    changed = lambda module: [not np.array_equal(before[id(v)], numpy(v)) for v in module.trainable_weights]  # noqa
    return changed(model.extractor), changed(model.location_module)


def test_cross_entropy_does_not_reach_the_location_module():
    model = tiny(reinforce_weight=0.0)
    extractor, location = _train_step_changes(model, keras.losses.CategoricalCrossentropy(from_logits=True))
    assert any(extractor) and not any(location)


def test_location_loss_does_not_reach_the_extractor():
    model = tiny()
    zero_ce = lambda y_true, y_pred: 0.0 * keras.ops.sum(y_pred)  # noqa: E731  (only REINFORCE left)
    extractor, location = _train_step_changes(model, zero_ce)
    assert not any(extractor) and any(location)


def test_reinforce_gradient_is_zero_when_rewards_equal_the_baseline():
    log_probs = np.log(np.array([0.2, 0.5, 0.9, 0.3], "float32"))
    equal = gradient(lambda lp: baseline_reinforce_loss(lp, np.full(4, 0.7, "float32"), 0.7), log_probs)
    np.testing.assert_array_equal(equal, 0.0)
    other = gradient(lambda lp: baseline_reinforce_loss(lp, np.array([1, 0, 1, 0], "float32"), 0.5), log_probs)
    np.testing.assert_allclose(other, [-0.125, 0.125, -0.125, 0.125], atol=1e-7)  # -(r - b) / n


def test_loss_is_the_official_formula():
    rng = np.random.default_rng(7)
    n, steps, k = 3, 4, 5
    glimpse_logits = rng.standard_normal((n, steps, k)).astype("float32")
    logits = glimpse_logits.mean(1)
    log_probs = np.concatenate([np.zeros((n, 1)), np.log(rng.uniform(0.01, 0.3, (n, steps - 1)))], 1)
    labels = np.array([0, 2, 4])
    outputs = {"logits": logits, "glimpse_logits": glimpse_logits, "log_probs": log_probs.astype("float32")}
    loss, target = tnet_loss(outputs, labels, k, 0.4)

    def ce(z, y):
        z = z - z.max(-1, keepdims=True)
        return -(z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(len(y)), y]

    reward = (logits.argmax(-1) == labels).astype(float)
    feature_reward = (glimpse_logits.argmax(-1) == labels[:, None]).astype(float)[:, 1:]
    expected = (0.3 * ce(logits, labels).mean() + 0.7 * ce(glimpse_logits.reshape(-1, k), labels.repeat(steps)).mean()
                + 0.1 * 0.3 * np.mean((reward - 0.4) * -log_probs[:, 1:].sum(1))
                + 0.1 * 0.7 * np.mean((feature_reward - 0.4) * -log_probs[:, 1:]))
    np.testing.assert_allclose(float(numpy(loss)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(numpy(target)), 0.3 * reward.mean() + 0.7 * feature_reward.mean(), rtol=1e-6)


def test_training_updates_the_baseline_as_an_ema():
    model = tiny()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  run_eagerly=FEW_STEPS_RUN_EAGERLY)
    x = random_images((4, SIZE, SIZE, 3), seed=8)
    y = keras.utils.to_categorical([0, 1, 2, 3], 5)
    out = model.glimpse(x)
    _, target = tnet_loss(out, y, 5, 0.5)
    model.train_on_batch(x, y)
    np.testing.assert_allclose(float(numpy(model.baseline)), 0.9 * 0.5 + 0.1 * float(numpy(target)), atol=1e-6)


def test_macs_are_the_extractor_passes_plus_location_modules(shared):
    model = shared
    macs = tnet_macs(model, num_levels=3, patches_per_level=[3, 2])
    assert macs["passes"] == 1 + 3 + 6
    dim = model.feature_dim
    assert macs["fusion_and_head"] == 10 * 2 * dim * dim + dim * 5  # fusion of every feature + classifier
    assert macs["total"] == 10 * macs["extractor"] + 4 * macs["location"] + macs["fusion_and_head"]
    assert tnet_macs(model, num_levels=1)["total"] == macs["extractor"] + dim * dim * 2 + dim * 5
    assert macs["full_resolution"] > macs["extractor"]
    # count_macs on the (subclassed) model: its image_shape, and every patch of the internal batch
    from keras_attention.complexity import count_macs
    assert count_macs(model) == tnet_macs(model)["total"] > 2 * macs["extractor"]


def test_registry_entries():
    small = ka.create_model("tnet_bagnet77_small")
    assert small.image_shape == (128, 128, 3) and small.feature_dim == 64 and small.num_classes == 10
    assert small.num_levels == 2 and small.patches_per_level == (3,)


@pytest.mark.parametrize("kwargs, match", [
    ({"input_shape": (64, 64, 3)}, "at least the extractor"),
    ({"input_shape": (128, 128, 3), "extractor_size": 101}, "feature grid"),
    ({"patches_per_level": [26]}, r"\[1, 25\]"),
    ({"overlap": 0.0}, "overlap"),
    ({"ce_weight": 1.5}, "ce_weight"),
    ({"training_phase": "locations"}, "training_phase"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_save_and_reload_in_a_fresh_process(tmp_path):
    model = tiny(patches_per_level=[2])
    model.baseline.assign(0.37)
    check_fresh_process_reload(model, random_images((2, SIZE, SIZE, 3), seed=9), tmp_path, atol=1e-5)


@pytest.mark.slow  # about 25 s on 2 CPU cores
def test_full_size_builds_counts_and_trains_one_step():
    start = time.time()
    model = ka.create_model("tnet_bagnet77", num_classes=1000)
    # official structure: 21,859,949 trainable parameters at 1000 classes
    assert count_trainable_params(model) == official_param_count(1.0, 1000) == 21_859_949
    macs = tnet_macs(model)
    assert macs["passes"] == 4 and macs["total"] < 0.5 * macs["full_resolution"]
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  run_eagerly=FEW_STEPS_RUN_EAGERLY)
    loss = model.train_on_batch(random_images((2, 224, 224, 3), seed=10), keras.utils.to_categorical([3, 999], 1000))
    assert np.isfinite(loss)
    print(f"full size: {time.time() - start:.1f} s")
