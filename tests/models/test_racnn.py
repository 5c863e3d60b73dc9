"""RA-CNN: parameter count, glimpses (boxes composed to the input), fusion over scales, ranking loss,
APN targets, training phases (which parts learn from which loss), errors, save/reload."""

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.layers.attention_crop import units_from_boxes
from keras_attention.models.racnn import RACNN, boxes_to_input, ranking_loss, response_boxes
from tests.helpers import check_fresh_process_reload, count_trainable_params, gradient, random_images

# racnn_vgg19 at 200 classes (CUB), the released model's structure (paper Sec. 3-4; the issue):
VGG19_CONVS = 20_024_384                      # keras.applications.VGG19 conv1_1 ... conv5_4 (16 convs, bias)
FC = 512 * 200 + 200                          # GAP(conv5_4) -> FC to the classes, one per scale
APN = (14 * 14 * 512) * 1024 + 1024 + 1024 * 3 + 3   # 14x14x512 map -> FC 1024 (tanh) -> FC 3 (sigmoid)
RACNN_VGG19 = 3 * VGG19_CONVS + 3 * FC + 2 * APN      # three unshared scales, two APNs = 265,910,046

SIZE, CROP, K = 64, 32, 5
TINY = {"num_classes": K, "input_shape": (SIZE, SIZE, 3), "crop_size": CROP,
        "backbone_kwargs": {"stage_widths": [8, 8, 8, 8], "stem_width": 8, "stage_depths": [1, 1, 1, 1]}}


def tiny(**kwargs):
    keras.utils.set_random_seed(0)
    return ka.create_model("racnn_resnet18", **{**TINY, **kwargs})


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def logit(p):
    return np.log(p / (1 - p))


def fix_apn(model, index, box, side):
    """Makes APN ``index`` output the constant ``box`` (t_x, t_y, t_l) in pixels of a ``side`` image."""
    fc2 = model.apns[index].get_layer(f"apn{index + 1}_fc2")
    kernel, _ = fc2.get_weights()
    units = numpy(units_from_boxes(np.asarray([box], "float32"), side, model.min_half_side))[0]
    fc2.set_weights([np.zeros_like(kernel), logit(units)])


def test_parameter_count_of_racnn_vgg19():
    assert RACNN_VGG19 == 265_910_046
    model = ka.create_model("racnn_vgg19")
    assert count_trainable_params(model) == RACNN_VGG19
    assert [count_trainable_params(s) for s in model.stacks] == [VGG19_CONVS] * 3
    assert [count_trainable_params(a) for a in model.apns] == [APN] * 2
    assert [tuple(s.output.shape[1:]) for s in model.stacks] == [(28, 28, 512), (14, 14, 512), (14, 14, 512)]
    assert model.apn_grid == 14 and model.crop_size == 224


def test_glimpse_boxes_are_composed_into_the_input_image():
    model = tiny()
    fix_apn(model, 0, (32.0, 20.0, 16.0), SIZE)   # crop 1: x 16..48, y 4..36 of the input
    fix_apn(model, 1, (16.0, 16.0, 8.0), CROP)    # crop 2: the centre half of crop 1 (zoom 1:1)
    x = random_images((2, SIZE, SIZE, 3), seed=1)
    out = model.glimpse(x)
    assert tuple(out["boxes"].shape) == (2, 2, 4) and tuple(out["scale_logits"].shape) == (2, 3, K)
    np.testing.assert_allclose(numpy(out["apn_boxes"])[0], [[32, 20, 16], [16, 16, 8]], atol=1e-3)
    # (top, left, bottom, right) in input pixels; crop 1 maps 32 crop pixels onto 32 input pixels
    np.testing.assert_allclose(numpy(out["boxes"])[0], [[4, 16, 36, 48], [12, 24, 28, 40]], atol=1e-3)
    # crop 1 is the input's box at its own scale (32 pixels to 32): the input's pixels (mask ~0.99)
    np.testing.assert_allclose(numpy(out["crops"][0])[0, 1:-1, 1:-1], numpy(x)[0, 5:35, 17:47], rtol=0.01, atol=1e-3)
    np.testing.assert_allclose(numpy(boxes_to_input(np.array([[8.0, 4.0, 2.0]]), np.array([[30.0, 40.0, 16.0]]),
                                                    16)), [[30.0, 32.0, 4.0]])


def test_prediction_fuses_the_chosen_scales():
    model = tiny()
    x = random_images((3, SIZE, SIZE, 3), seed=2)
    scale_logits = numpy(model.glimpse(x)["scale_logits"])
    softmax = np.exp(scale_logits) / np.exp(scale_logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(numpy(model(x, scales=1)), scale_logits[:, 0], rtol=1e-5, atol=1e-5)
    for scales in (2, 3):
        expected = np.log(softmax[:, :scales].mean(1))
        np.testing.assert_allclose(numpy(model(x, scales=scales)), expected, rtol=1e-4, atol=1e-5)
    assert keras.backend.standardize_dtype(model(x).dtype) == "float32"
    np.testing.assert_allclose(numpy(model(x)), numpy(model(x, scales=3)))
    np.testing.assert_allclose(numpy(tiny(scales=2)(x)), numpy(model(x, scales=2)), rtol=1e-5, atol=1e-6)


def test_ranking_loss():
    margin = 0.05
    # p_{s+1} >= p_s + margin: zero
    assert float(numpy(ranking_loss(np.array([[0.2, 0.25, 0.9], [0.0, 0.05, 0.1]]), margin))) == pytest.approx(0.0,
                                                                                                             abs=1e-7)
    # otherwise max(0, p_s - p_{s+1} + margin), summed over the two pairs, averaged over examples
    p = np.array([[0.5, 0.4, 0.6], [0.3, 0.32, 0.2]], "float32")
    expected = np.mean([(0.15 + 0.0), (0.03 + 0.17)])
    assert float(numpy(ranking_loss(p, margin))) == pytest.approx(expected, rel=1e-5)
    # in the model: on the true class's softmax probability
    model = tiny()
    logits = [np.array([[2.0, 0.0, 0, 0, 0]], "float32"), np.array([[0.0, 0, 0, 0, 0]], "float32"),
              np.array([[3.0, 0, 0, 0, 0]], "float32")]
    y = np.eye(K, dtype="float32")[[0]]
    p = [np.exp(l[0, 0]) / np.exp(l[0]).sum() for l in logits]
    expected = max(0, p[0] - p[1] + margin) + max(0, p[1] - p[2] + margin)
    assert float(numpy(model.ranking_loss(y, logits))) == pytest.approx(expected, rel=1e-5)


def test_ranking_gradient_finer_only_raises_the_finer_scales():
    """Both pairs active: the plain gradient w.r.t. p_2 cancels (-1 + 1) and pushes p_1 down;
    "finer" treats each pair's coarser probability as a target, so only p_2 and p_3 are pushed up."""
    p = np.array([[0.5, 0.4, 0.3]], "float32")
    both = gradient(lambda q: ranking_loss(q, 0.05), p)
    finer = gradient(lambda q: ranking_loss(q, 0.05, coarser_as_target=True), p)
    np.testing.assert_allclose(both, [[1.0, 0.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(finer, [[0.0, -1.0, -1.0]], atol=1e-6)
    assert float(numpy(ranking_loss(p, 0.05, coarser_as_target=True))) == pytest.approx(
        float(numpy(ranking_loss(p, 0.05))))
    assert tiny().ranking_gradient == "finer"
    with pytest.raises(ValueError, match="ranking_gradient"):
        tiny(ranking_gradient="coarser")


def test_apn_targets_centre_a_half_side_square_on_the_strongest_response():
    features = np.zeros((2, 4, 4, 3), "float32")
    features[0, 1, 2, 0] = 5.0   # row 1, column 2
    features[1, 3, 0, :] = 1.0   # row 3, column 0: the square is moved inside the image
    boxes = numpy(response_boxes(features, 64))
    np.testing.assert_allclose(boxes[0], [40.0, 24.0, 16.0])   # x = (2 + 0.5) * 16, y = (1 + 0.5) * 16
    np.testing.assert_allclose(boxes[1], [16.0, 48.0, 16.0])   # x 8 -> 16, y 56 -> 48 (inside)


def compiled(model, lr=0.05):
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


def snapshot(model):
    return {"scale1_convs": numpy(model.stacks[0].get_layer("stem_conv").kernel),
            "scale3_convs": numpy(model.stacks[2].get_layer("stem_conv").kernel),
            "scale2_fc": numpy(model.classifiers[1].get_layer("scale2_fc").kernel),
            "apn1": np.concatenate([numpy(w).ravel() for w in model.apns[0].weights]),
            "apn2": np.concatenate([numpy(w).ravel() for w in model.apns[1].weights])}


def changed(before, after):
    return {k for k in before if not np.array_equal(before[k], after[k])}


def interior_apns(model):
    """APN outputs away from the sigmoid's saturation, with a small kernel (boxes that vary little)."""
    for i, side in enumerate((SIZE, CROP)):
        fc2 = model.apns[i].get_layer(f"apn{i + 1}_fc2")
        kernel, _ = fc2.get_weights()
        fc2.set_weights([kernel * 0.01, logit(np.array([0.5, 0.45, 0.3], "float32"))])


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_alternating_phases_train_the_right_parts():
    x, y = random_images((4, SIZE, SIZE, 3), seed=3), np.eye(K, dtype="float32")[[0, 1, 2, 3]]
    classifier_parts = {"scale1_convs", "scale3_convs", "scale2_fc"}
    # the APN phase: the ranking loss gives the APNs a non-zero gradient, the classifiers are frozen
    model = tiny(training_phase="apn")
    interior_apns(model)
    compiled(model)
    model(x, training=True)
    outputs = model._train_outputs
    del model._train_outputs
    before = snapshot(model)
    rank = float(numpy(model.ranking_loss(y, outputs["scale_logits"])))
    assert rank > 0
    model.train_on_batch(x, y)
    assert changed(before, snapshot(model)) == {"apn1", "apn2"}
    # the classifiers phase: cross-entropies only, APNs frozen and their boxes gradient-stopped
    model.set_training_phase("classifiers")
    compiled(model)
    before = snapshot(model)
    model.train_on_batch(x, y)
    assert changed(before, snapshot(model)) == classifier_parts
    # the gradient of the cross-entropies with respect to the APNs is zero even if they could learn
    model.apns[0].trainable = model.apns[1].trainable = True
    compiled(model)
    before = snapshot(model)
    model.train_on_batch(x, y)
    assert changed(before, snapshot(model)) == classifier_parts


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_pretraining_phases():
    x, y = random_images((4, SIZE, SIZE, 3), seed=4), np.eye(K, dtype="float32")[[0, 1, 2, 3]]
    model = compiled(tiny(training_phase="pretrain"))
    before = snapshot(model)
    model.train_on_batch(x, y)
    assert changed(before, snapshot(model)) == {"scale1_convs", "scale3_convs", "scale2_fc"}
    model.set_training_phase("apn_pretrain")
    compiled(model, lr=0.1)
    model(x, training=True)
    outputs = model._train_outputs
    del model._train_outputs
    # the regression targets make the crops, and are the heuristic boxes of each scale's map
    for s, side in enumerate((SIZE, CROP)):
        np.testing.assert_allclose(numpy(outputs["boxes"][s]), numpy(outputs["targets"][s]), atol=1e-4)
        assert np.all(numpy(outputs["targets"][s])[:, 2] == side / 4)
    before = snapshot(model)
    losses = [model.train_on_batch(x, y) for _ in range(3)]
    assert changed(before, snapshot(model)) == {"apn1", "apn2"}
    assert np.isfinite(losses[0]) and losses[-1] < losses[0]  # the regression learns
    # joint (default): every part learns
    model.set_training_phase("joint")
    interior_apns(model)
    compiled(model)
    before = snapshot(model)
    model.train_on_batch(x, y)
    assert changed(before, snapshot(model)) == set(before)


def test_initialize_from_a_previous_phase():
    source = tiny(training_phase="apn")
    keras.utils.set_random_seed(5)
    target = ka.create_model("racnn_resnet18", **TINY, training_phase="classifiers")
    x = random_images((2, SIZE, SIZE, 3), seed=5)
    assert not np.allclose(numpy(source(x)), numpy(target(x)))
    target.initialize_from(source)
    np.testing.assert_allclose(numpy(target(x)), numpy(source(x)), atol=1e-6)
    with pytest.raises(ValueError, match="RA-CNN"):
        target.initialize_from(ka.create_model("resnet18", num_classes=K, input_shape=(SIZE, SIZE, 3)))
    with pytest.raises(ValueError, match="weights"):
        target.initialize_from(tiny(num_classes=K + 1))


def test_errors():
    with pytest.raises(ValueError, match="scales"):
        tiny(scales=4)
    with pytest.raises(ValueError, match="training_phase"):
        tiny(training_phase="ranking")
    with pytest.raises(ValueError, match="square"):
        tiny(input_shape=(64, 48, 3))
    with pytest.raises(ValueError, match="apn_grid"):
        tiny(apn_grid=3)
    with pytest.raises(ValueError, match="classifier"):
        ka.create_model("racnn_resnet18", include_top=False)
    with pytest.raises(ValueError, match="scales"):
        tiny()(random_images((1, SIZE, SIZE, 3)), scales=0)


def test_registry_backbone_and_save_reload(tmp_path):
    model = tiny(training_phase="apn")
    config = model.get_config()
    assert RACNN.from_config(config).get_config() == config
    x = random_images((2, SIZE, SIZE, 3), seed=6)
    check_fresh_process_reload(model, x, tmp_path, atol=1e-5)
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.training_phase == "apn" and not reloaded.stacks[0].trainable
    np.testing.assert_allclose(numpy(reloaded.glimpse(x)["boxes"]), numpy(model.glimpse(x)["boxes"]), atol=1e-4)


def test_mixed_precision_gives_float32_logits_and_boxes():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny()
        assert model.crops[0].compute_dtype == "float16"
        out = model.glimpse(random_images((2, SIZE, SIZE, 3), seed=7))
        for key in ("logits", "scale_logits", "boxes"):
            assert keras.backend.standardize_dtype(out[key].dtype) == "float32", key
            assert np.all(np.isfinite(numpy(out[key]))), key
        assert keras.backend.standardize_dtype(out["crops"][0].dtype) == "float16"
    finally:
        keras.config.set_dtype_policy(previous)
