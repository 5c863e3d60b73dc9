"""Multiple granularity descriptors: region discovery, crops, coarse labels, parameter count,
phases (which weights learn), initialisation between phases, protocol outputs, reload."""

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.data.hierarchy import load_hierarchy
from keras_attention.models.granularity import MultiGranularity, crop_and_resize, region_boxes
from keras_attention.training.run import initialize_from
from tests.helpers import check_fresh_process_reload, count_trainable_params, random_images, randomize_batch_norms

SIZE = 16
# A two-stage basic-block ResNet with the CIFAR stem (3x3 conv, no pool): features 8 x 8 x 8 at 16 px
BACKBONE = {"stage_depths": [1, 1], "stage_widths": [4, 8], "stem": "cifar", "stem_width": 4}
BIRDS = {"levels": ["order", "family"],
         "parents": {"crow": ["passerine", "corvid"], "gull": ["seabird", "laridae"],
                     "jay": ["passerine", "corvid"], "robin": ["passerine", "thrush"]}}
K = (2, 3, 4)  # classes per level: order, family, fine


def tiny(**kwargs):
    keras.utils.set_random_seed(0)
    model = ka.create_model("multi_granularity", **{"num_classes": 4, "input_shape": (SIZE, SIZE, 3),
                                                    "hierarchy": BIRDS, "backbone": "resnet18",
                                                    "backbone_kwargs": BACKBONE, **kwargs})
    randomize_batch_norms(model)
    return model


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def shared():
    """One model for the read-only checks (building six backbones costs ~10 s on JAX)."""
    return tiny()


@pytest.fixture
def model(shared):
    shared.set_training_phase("descriptors")
    yield shared
    shared.set_training_phase("descriptors")


def test_region_discovery_returns_the_hot_rectangle():
    energy = np.zeros((2, 8, 10), "float32")
    energy[0, 1:3, 5:9] = 4.0  # rows 1-2, columns 5-8 of an 8 x 10 grid
    energy[0, 2, 6] = 5.0
    energy[1] += np.linspace(0, 1, 10)[None]  # a ramp along x: columns with >= half the range
    boxes = numpy(region_boxes(energy, (80, 50), threshold=0.5))  # cells are 10 px high, 5 px wide
    np.testing.assert_allclose(boxes[0], [10, 25, 30, 45])  # (top, left, bottom, right), not transposed
    np.testing.assert_allclose(boxes[1], [0, 25, 80, 50])
    flat = numpy(region_boxes(np.ones((1, 4, 4), "float32"), (32, 32)))
    np.testing.assert_allclose(flat[0], [0, 0, 32, 32])  # nothing stands out: the whole image
    only_max = numpy(region_boxes(energy[:1], (80, 50), threshold=0.9))
    np.testing.assert_allclose(only_max[0], [20, 30, 30, 35])  # the single hottest cell


def test_crop_and_resize_reads_the_box():
    images = np.zeros((2, 8, 8, 1), "float32")
    images[..., 0] = np.arange(8)[None, :, None] * 10 + np.arange(8)[None, None, :]  # value = 10 y + x
    identity = numpy(crop_and_resize(images, np.array([[0, 0, 8, 8]] * 2, "float32"), (8, 8)))
    np.testing.assert_allclose(identity, images, atol=1e-5)
    crops = numpy(crop_and_resize(images, np.array([[2, 4, 4, 8], [0, 0, 2, 2]], "float32"), (2, 4)))
    np.testing.assert_allclose(crops[0, ..., 0], [[24, 25, 26, 27], [34, 35, 36, 37]], atol=1e-5)
    np.testing.assert_allclose(crops[1, ..., 0], [[0, 0.25, 0.75, 1.25], [10, 10.25, 10.75, 11.25]],
                               atol=1e-5)  # 2x upsampling: between pixel centres; x = -0.25 reads the border pixel


def test_model_boxes_come_from_each_detectors_predicted_class_activation(model):
    x = random_images((3, SIZE, SIZE, 3), seed=1)
    out = model.glimpse(x)
    assert out["logits"].shape == (3, 4) and keras.backend.standardize_dtype(out["logits"].dtype) == "float32"
    assert out["boxes"].shape == (3, 3, 4) and out["glimpse_logits"].shape == (3, 3, 4)
    assert out["energy"].shape == (3, 3, 8, 8) and out["descriptors"].shape == (3, 24)
    for i in (0, 2):  # the coarsest and the fine level (fewer eager ops: JAX compiles each one)
        features = numpy(model.detectors[i](x, training=False))
        logits = numpy(out["detector_logits"][i])
        kernel = numpy(model.detector_heads[i].kernel)
        cam = np.einsum("nhwc,nc->nhw", features, kernel[:, logits.argmax(-1)].T)
        np.testing.assert_allclose(numpy(out["energy"][:, i]), cam, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(numpy(out["boxes"][:, i]), numpy(region_boxes(cam, (SIZE, SIZE))), atol=1e-4)
    boxes = numpy(out["boxes"])
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2:] <= SIZE).all() and (boxes[..., 2:] > boxes[..., :2]).all()
    # classify_with: the concatenated descriptors (the default), one level's probe, or the fine detector
    np.testing.assert_allclose(numpy(out["logits"]), numpy(out["all_logits"]), atol=1e-6)
    np.testing.assert_allclose(numpy(model(x, classify_with="family")), numpy(out["glimpse_logits"][:, 1]),
                               atol=1e-5)
    np.testing.assert_allclose(numpy(model(x, classify_with="detector")), numpy(out["detector_logits"][-1]),
                               atol=1e-6)


def test_coarse_labels_are_derived_from_the_fine_label(model):
    hierarchy = load_hierarchy(BIRDS)
    fine = np.array([0, 1, 2, 3, 2])  # crow gull jay robin jay
    one_hot = np.eye(4, dtype="float32")[fine]
    for labels in (one_hot, fine, fine[:, None]):
        order, family, same = (numpy(t) for t in model.level_labels(labels))
        np.testing.assert_array_equal(order.argmax(-1), [0, 1, 0, 0, 0])  # passerine seabird
        np.testing.assert_array_equal(family.argmax(-1), [0, 1, 0, 2, 0])  # corvid laridae thrush
        np.testing.assert_array_equal(same, one_hot)
        np.testing.assert_array_equal(family.argmax(-1), hierarchy.coarse_labels(fine, "family"))
    smoothed = numpy(model.level_labels(0.9 * one_hot + 0.1 / 4)[0])
    np.testing.assert_allclose(smoothed[0], [0.975, 0.025], atol=1e-6)  # the 3 passerines: 0.925 + 2 x 0.025


def test_trainable_parameter_count(model):
    # Backbone (tiny ResNet-18, CIFAR stem; no biases, BN gamma + beta):
    #   stem 3x3 3->4 + BN: 108 + 8; stage 1 block 4->4: 2 x (144 + 8);
    #   stage 2 block 4->8 /2: 288 + 16 + 576 + 16 + 1x1 projection 32 + 16
    backbone = 116 + 304 + 944
    c, levels, fine = 8, 3, 4
    assert count_trainable_params(ka.create_model("resnet18", include_top=False, input_shape=(SIZE, SIZE, 3),
                                                  **BACKBONE)) == backbone
    heads = sum(c * k + k for k in K)  # one Dense(K_l) per level on the C-channel GAP
    branches = levels * backbone + heads  # phase 1: the detectors
    descriptors = (levels * backbone + heads  # phase 2: describers and their level heads,
                   + levels * (c * fine + fine)  # one fine probe per level's descriptor,
                   + levels * c * fine + fine)  # the classifier of the concatenated descriptors
    assert count_trainable_params(model) == descriptors == 4_381
    assert model.count_params() - sum(int(np.prod(v.shape)) for v in model.non_trainable_weights) == descriptors
    model.set_training_phase("branches")
    assert count_trainable_params(model) == branches == 4_173


def _compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True), run_eagerly=False)
    return model


def _snapshot(model):
    parts = {f"detector{i}": model.detectors[i] for i in range(3)}
    parts.update({f"describer{i}": model.describers[i] for i in range(3)})
    parts.update({f"probe{i}": model.probes[i] for i in range(3)})
    parts["classifier"] = model.classifier
    return {k: [numpy(w).copy() for w in v.trainable_weights or v.weights] for k, v in parts.items()}


def _changed(before, after):
    return {k for k in before if any(not np.array_equal(a, b) for a, b in zip(before[k], after[k]))}


def test_each_phase_trains_every_branch_and_only_its_parts():
    model = _compiled(tiny(training_phase="branches"))
    assert count_trainable_params(model) == 4_173  # the constructor's phase (test_trainable_parameter_count)
    x, y = random_images((4, SIZE, SIZE, 3), seed=2), np.eye(4, dtype="float32")[[0, 1, 2, 3]]
    before = _snapshot(model)
    assert np.isfinite(float(np.asarray(model.train_on_batch(x, y)).ravel()[0]))
    assert _changed(before, _snapshot(model)) == {"detector0", "detector1", "detector2"}

    later = _compiled(tiny(training_phase="descriptors"))
    initialize_from(later, model)  # phase 1 -> 2: describers start as the detectors
    for detector, describer in zip(model.detectors, later.describers):
        for a, b in zip(detector.weights, describer.weights):
            np.testing.assert_array_equal(numpy(a), numpy(b))
    before = _snapshot(later)
    assert np.isfinite(float(np.asarray(later.train_on_batch(x, y)).ravel()[0]))
    changed = _changed(before, _snapshot(later))
    assert changed == {f"describer{i}" for i in range(3)} | {f"probe{i}" for i in range(3)} | {"classifier"}


def test_loss_of_each_phase_is_the_sum_of_the_levels_cross_entropies(model):
    model.set_training_phase("branches")
    x, y = random_images((4, SIZE, SIZE, 3), seed=3), np.eye(4, dtype="float32")[[3, 2, 1, 0]]
    model(x, training=True)
    loss = float(numpy(model.compute_loss(x, y, None, training=True)))
    out = model.glimpse(x)  # inference mode differs from training only through BN: recompute in training
    outputs = model.glimpse(x, training=True)
    labels = [numpy(t) for t in model.level_labels(y)]
    ce = lambda t, z: float(np.mean(numpy(keras.losses.categorical_crossentropy(t, z, from_logits=True))))  # noqa: E731
    expected = sum(ce(t, z) for t, z in zip(labels, outputs["detector_logits"]))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert "boxes" in out and "boxes" not in outputs  # the branches phase trains on whole images only


@pytest.mark.parametrize("kwargs, match", [
    ({"training_phase": "all"}, "training_phase"), ({"classify_with": "genus"}, "classify_with"),
    ({"num_classes": 5}, "4 fine classes"), ({"threshold": 1.0}, "threshold"),
    ({"input_shape": (None, None, 3)}, "static"), ({"include_top": False}, "include_top"),
    ({"hierarchy": {"levels": ["a"], "parents": {"x": []}}}, "exactly one parent"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_initialize_from_rejects_other_models(model):
    with pytest.raises(ValueError, match="MultiGranularity"):
        model.initialize_from(ka.create_model("resnet18", num_classes=4, input_shape=(SIZE, SIZE, 3), **BACKBONE))


def test_save_and_reload_in_a_fresh_process(tmp_path):
    model = tiny(classify_with="order", region_size=(12, 12), threshold=0.3)
    config = model.get_config()
    assert MultiGranularity.from_config(config).get_config() == config
    assert config["hierarchy"]["parents"]["gull"] == ["seabird", "laridae"]  # stored resolved: self-contained
    check_fresh_process_reload(model, random_images((2, SIZE, SIZE, 3), seed=4), tmp_path, atol=1e-5)
