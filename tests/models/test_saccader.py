"""Saccader: parameter count, the cell (masking, reference maths, float16), policies, losses, phases, reload."""

import math

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.layers.saccader import (SaccaderCell, cell_locations, gather_cells, ordered_logits_cells,
                                             sobel_cells)
from keras_attention.losses import location_pretraining_loss, reinforce_loss
from keras_attention.models.saccader import Saccader
from tests.helpers import (IMAGEWOOF, check_fresh_process_reload, count_trainable_params, gradient, needs_imagewoof,
                           random_images,
                           randomize_batch_norms)

# Trainable parameters at 1000 classes, counted from the official structure
# (github.com/google-research/google-research, saccader/visual_attention/saccader.py with
# saccader_config.py and saccader/feedforward/bagnet_model.py):
REPRESENTATION = 20_573_736  # BagNet-77-lowD (tests/models/test_bagnet.py)
WHERE = (2048 * 1024 + 2 * 1024 + 9 * 1024 * 1024 + 2 * 1024   # group 0: 1x1, 3x3 dilated (+ BN)
         + 1024 * 512 + 2 * 512 + 9 * 512 * 512 + 2 * 512)     # group 1
MIXING = (512 + 512) * 512 + 512                                # 1x1 conv on [where, what], bias
CELL = 512                                                      # dense(units=1, use_bias=False)
SACCADER77 = 35_523_112

SIZE = 101  # a 4 x 4 grid of 77 x 77 glimpses
GRID = 16


def tiny(**kwargs):
    keras.utils.set_random_seed(0)
    model = ka.create_model("saccader77", **{"input_shape": (SIZE, SIZE, 3), "num_classes": 5,
                                             "width_multiplier": 0.0625, "seed": 1, **kwargs})
    randomize_batch_norms(model)
    return model


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def mixed_and_logits(model, x):
    features, what, logits2d = model.representation(x, training=False)
    _, mixed = model.attention_network([features, what], training=False)
    return numpy(mixed), numpy(logits2d)


def reference_cell(mixed, kernel, logits2d, steps):
    """The official cell's equations in NumPy (float64), argmax policy."""
    n, h, w, c = mixed.shape
    f = mixed.reshape(n, h * w, c).astype("float64")
    patch = logits2d.reshape(n, h * w, -1)

    def softmax(z):
        z = z - z.max(-1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(-1, keepdims=True)

    space = f @ kernel[:, 0] / math.sqrt(c)
    state = np.zeros((n, h * w))
    cells, glimpses, loc_logits = [], [], []
    for _ in range(steps):
        mask = -1e5 * state
        a = softmax(space + mask)
        b = softmax(np.einsum("ns,nsc->nc", a, f))
        logits = np.einsum("nsc,nc->ns", f, b) + mask
        idx = logits.argmax(-1)
        state[np.arange(n), idx] = 1
        cells.append(idx)
        glimpses.append(patch[np.arange(n), idx])
        loc_logits.append(logits)
    return np.stack(cells, 1), np.stack(glimpses, 1), np.stack(loc_logits, 1)


def test_parameter_count_equals_the_official_implementation():
    assert REPRESENTATION + WHERE + MIXING + CELL == SACCADER77
    model = ka.create_model("saccader77")
    assert count_trainable_params(model) == SACCADER77
    assert count_trainable_params(model.representation) == REPRESENTATION
    assert count_trainable_params(model.attention_network) == WHERE + MIXING
    assert count_trainable_params(model.cell) == CELL
    assert model.grid_shape == (19, 19) and (model.receptive_field, model.step) == (77, 8)
    assert model.attention_network.get_layer("where_group0_layer1_conv").dilation_rate == (2, 2)


def test_cell_matches_the_official_equations():
    model = tiny()
    x = random_images((3, SIZE, SIZE, 3), seed=1)
    mixed, logits2d = mixed_and_logits(model, x)
    out = model.cell(mixed, logits2d, num_glimpses=GRID, policy="learned", training=False)
    cells, glimpses, loc_logits = reference_cell(mixed, numpy(model.cell.kernel), logits2d, GRID)
    np.testing.assert_array_equal(numpy(out["cells"]), cells)
    np.testing.assert_allclose(numpy(out["glimpse_logits"]), glimpses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(numpy(out["location_logits"]), loc_logits, rtol=1e-5, atol=1e-3)
    # the model's prediction is the mean over glimpses of those logits
    np.testing.assert_allclose(numpy(model(x, num_glimpses=GRID)), glimpses.mean(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("steps", [1, 7, GRID])
def test_learned_policy_never_revisits_a_cell(training, steps):
    model = tiny()
    out = model.glimpse(random_images((4, SIZE, SIZE, 3), seed=2), training=training, num_glimpses=steps)
    cells = numpy(out["cells"])
    assert cells.shape == (4, steps)
    for row in cells:
        assert len(set(row.tolist())) == steps, f"a cell was visited twice: {row}"
    if steps == GRID:
        assert all(sorted(row) == list(range(GRID)) for row in cells)
    logits = numpy(out["location_logits"])
    assert np.all(np.isfinite(logits))
    for t in range(1, steps):  # visited cells are masked with -1e5
        visited = np.take_along_axis(logits[:, t], cells[:, :t], axis=1)
        assert np.all(visited < -9e4)


def test_more_glimpses_than_cells():
    model = tiny()
    out = model.glimpse(random_images((2, SIZE, SIZE, 3), seed=3), num_glimpses=GRID + 4)
    assert numpy(out["cells"]).shape == (2, GRID + 4)
    assert np.all(np.isfinite(numpy(out["logits"])))
    # engineered policies give at most h * w glimpses, as the official sort2d
    out = model.glimpse(random_images((2, SIZE, SIZE, 3), seed=3), num_glimpses=GRID + 4, policy="ordered_logits")
    assert numpy(out["cells"]).shape == (2, GRID)


def test_training_samples_from_the_location_distribution():
    model = tiny()
    mixed, logits2d = mixed_and_logits(model, random_images((8, SIZE, SIZE, 3), seed=4))
    greedy = numpy(model.cell(mixed, logits2d, num_glimpses=4)["cells"])
    np.testing.assert_array_equal(numpy(model.cell(mixed, logits2d, num_glimpses=4)["cells"]), greedy)
    sampled = [numpy(model.cell(mixed, logits2d, num_glimpses=4, training=True)["cells"]) for _ in range(3)]
    assert not all(np.array_equal(s, greedy) for s in sampled)
    assert not np.array_equal(sampled[0], sampled[1])
    # the first step's samples follow softmax(location logits): the argmax cell is the most frequent
    out = model.cell(np.repeat(mixed[:1], 400, 0), np.repeat(logits2d[:1], 400, 0), num_glimpses=1, training=True)
    counts = np.bincount(numpy(out["cells"])[:, 0], minlength=GRID)
    probs = np.exp(numpy(out["location_logits"])[0, 0])
    probs /= probs.sum()
    assert np.abs(counts / 400 - probs).max() < 0.1


def test_cell_is_float32_and_finite_under_mixed_float16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny()
        assert model.cell.compute_dtype == "float32"
        assert model.attention_network.get_layer("mixing_conv").compute_dtype == "float16"
        x = random_images((2, SIZE, SIZE, 3), seed=5) * 50
        for training in (False, True):
            out = model.glimpse(x, training=training, num_glimpses=GRID)
            for key in ("logits", "location_logits", "glimpse_logits"):
                assert keras.backend.standardize_dtype(out[key].dtype) == "float32", key
                assert np.all(np.isfinite(numpy(out[key]))), key
            assert all(sorted(row) == list(range(GRID)) for row in numpy(out["cells"]))
        # the cell alone, given float16 features
        cell = SaccaderCell(name="cell16")
        feats = keras.ops.cast(random_images((2, 3, 3, 8), seed=6), "float16")
        logits = keras.ops.cast(random_images((2, 3, 3, 4), seed=7), "float16")
        out = cell(feats, logits, num_glimpses=9)
        assert np.all(np.isfinite(numpy(out["location_logits"])))
    finally:
        keras.config.set_dtype_policy(previous)


def test_ordered_logits_are_the_top_cells_of_the_predicted_class():
    rng = np.random.default_rng(8)
    logits2d = rng.standard_normal((3, 4, 5, 6)).astype("float32")
    cells = numpy(ordered_logits_cells(logits2d, 7))
    flat = logits2d.reshape(3, 20, 6)
    predicted = flat.mean(1).argmax(-1)
    expected = np.argsort(-flat[np.arange(3), :, predicted], axis=1)[:, :7]
    np.testing.assert_array_equal(cells, expected)
    np.testing.assert_array_equal(numpy(ordered_logits_cells(logits2d, 50)).shape, (3, 20))
    # in the model: glimpse logits are the patch logits at those cells
    model = tiny()
    x = random_images((2, SIZE, SIZE, 3), seed=9)
    out = model.glimpse(x, policy="ordered_logits", num_glimpses=5)
    logits2d = numpy(out["logits2d"])
    np.testing.assert_array_equal(numpy(out["cells"]), numpy(ordered_logits_cells(logits2d, 5)))
    np.testing.assert_allclose(numpy(out["glimpse_logits"]), numpy(gather_cells(logits2d, out["cells"])))


@pytest.mark.parametrize("statistic", ["mean", "var"])
def test_sobel_policies_score_each_patch(statistic):
    rng = np.random.default_rng(10)
    images = rng.uniform(0, 1, (2, 25, 25, 3)).astype("float32")
    rf, step, grid = 9, 8, (3, 3)
    gray = images @ np.array([0.2989, 0.5870, 0.1140])
    padded = np.pad(gray, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    ky = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    dy = sum(ky[a, b] * padded[:, a:a + 25, b:b + 25] for a in range(3) for b in range(3))
    dx = sum(ky.T[a, b] * padded[:, a:a + 25, b:b + 25] for a in range(3) for b in range(3))
    edges = np.sqrt(dy ** 2 + dx ** 2)
    patches = np.stack([edges[:, i * step:i * step + rf, j * step:j * step + rf].reshape(2, -1)
                        for i in range(3) for j in range(3)], axis=1)
    score = patches.mean(-1) if statistic == "mean" else patches.var(-1, ddof=1)
    cells = numpy(sobel_cells(images, 9, grid, rf, step, statistic))
    np.testing.assert_array_equal(cells, np.argsort(-score, axis=1))
    # the official stride ceil((H - rf + 1) / h) is the network's step at 224 x 224
    assert math.ceil((224 - 77 + 1) / 19) == 8


def test_glimpse_geometry():
    model = tiny()
    out = model.glimpse(random_images((2, SIZE, SIZE, 3), seed=11), num_glimpses=GRID)
    cells, boxes, rows_cols = numpy(out["cells"]), numpy(out["boxes"]), numpy(out["rows_cols"])
    np.testing.assert_array_equal(rows_cols, np.stack([cells // 4, cells % 4], -1))
    np.testing.assert_array_equal(boxes[..., 0], 8 * rows_cols[..., 0])
    np.testing.assert_array_equal(boxes[..., 3] - boxes[..., 1], np.full_like(cells, 77))
    assert boxes.max() == SIZE  # the last cell's patch ends at the image border
    grid = np.linspace(-1, 1, 4) * (1 - 77 / SIZE)  # official: position_channels * location_scale
    np.testing.assert_allclose(numpy(out["locations"]), grid[rows_cols], atol=1e-6)
    np.testing.assert_allclose(numpy(cell_locations(np.arange(16), (4, 4))), np.linspace(-1, 1, 4)[
        np.stack([np.arange(16) // 4, np.arange(16) % 4], -1)], atol=1e-6)


@pytest.mark.parametrize("policy", ["random", "center", "sobel_mean", "sobel_var"])
def test_other_policies(policy):
    model = tiny(policy=policy)
    x = random_images((2, SIZE, SIZE, 3), seed=12)
    for steps in (1, 6):
        y = model(x, num_glimpses=steps)
        assert tuple(y.shape) == (2, 5) and np.all(np.isfinite(numpy(y)))
    if policy == "center":
        assert np.all(numpy(model.glimpse(x)["cells"]) == 10)  # round(1.5) = 2 (half to even): row 2, col 2


def test_reinforce_gradient_is_zero_when_all_rewards_are_equal():
    rng = np.random.default_rng(13)
    logits = rng.standard_normal((4, 3, 10)).astype("float32")
    actions = rng.integers(0, 10, (4, 3))
    for value in (0.0, 1.0):
        rewards = np.full(4, value, "float32")
        g = gradient(lambda t: reinforce_loss(t, actions, rewards), logits)
        assert np.all(g == 0)
        assert float(numpy(reinforce_loss(logits, actions, rewards))) == 0.0
    # otherwise d loss / d logits = -(r - mean r) / (N T) * (onehot(action) - softmax(logits))
    rewards = np.array([1, 0, 1, 1], "float32")
    g = gradient(lambda t: reinforce_loss(t, actions, rewards), logits)
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = -(rewards - rewards.mean())[:, None, None] / 12 * (np.eye(10)[actions] - softmax)
    np.testing.assert_allclose(g, expected, atol=1e-6)
    logp = np.log(softmax)[np.arange(4)[:, None], np.arange(3)[None], actions]
    np.testing.assert_allclose(float(numpy(reinforce_loss(logits, actions, rewards))),
                               -np.mean((rewards - rewards.mean())[:, None] * logp), rtol=1e-5)


def test_location_pretraining_loss_is_the_cross_entropy_with_the_targets():
    rng = np.random.default_rng(14)
    logits = rng.standard_normal((2, 4, 9)).astype("float32")
    targets = rng.integers(0, 9, (2, 4))
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_softmax, targets[..., None], -1).mean()
    np.testing.assert_allclose(float(numpy(location_pretraining_loss(logits, targets))), expected, rtol=1e-5)


def compiled(model, lr=0.05):
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_saccader_phase_loss_is_glimpse_cross_entropy_plus_reinforce():
    model = compiled(tiny())
    x, labels = random_images((4, SIZE, SIZE, 3), seed=15), np.array([0, 1, 2, 3])
    y = np.eye(5, dtype="float32")[labels]
    y_pred = model(x, training=True)
    outputs, policy = model._train_outputs
    assert policy == "learned"
    out = {k: numpy(v) for k, v in outputs.items()}
    loss = float(numpy(model.compute_loss(x, y, y_pred, training=True)))
    g = out["glimpse_logits"]
    log_softmax = g - np.log(np.exp(g).sum(-1, keepdims=True))
    ce = -log_softmax[np.arange(4), :, labels].mean()
    rewards = (out["logits"].argmax(-1) == labels).astype("float32")
    rl = float(numpy(reinforce_loss(out["location_logits"], out["cells"], rewards)))
    assert loss == pytest.approx(ce + rl, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(numpy(y_pred), g.mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the locations phase: none into the representation
def test_training_phases_update_the_right_weights():
    # lr 0.01 for the saccader step: at 0.05 the step can leave the cell's softmaxes saturated for
    # this batch (on PyTorch, whose sampled glimpses differ, the cell's gradient was then ~1e-24)
    model = compiled(tiny(), lr=0.01)
    x, y = random_images((4, SIZE, SIZE, 3), seed=16), np.eye(5, dtype="float32")[[0, 1, 2, 3]]

    def snapshot():
        return {"representation": numpy(model.representation.get_layer("stage2_block0_conv2").kernel),
                "where": numpy(model.attention_network.get_layer("mixing_conv").kernel),
                "cell": numpy(model.cell.kernel)}

    before = snapshot()
    assert np.isfinite(model.train_on_batch(x, y)[0])
    after = snapshot()
    assert all(not np.array_equal(before[k], after[k]) for k in before), "saccader phase: all parts learn"
    # the next phase as `keras-attention train` runs it: built in that phase, initialised from the last
    from keras_attention.training.run import initialize_from
    trained = model
    model = compiled(tiny(training_phase="locations"))
    initialize_from(model, trained)
    after = snapshot()
    loss = model.train_on_batch(x, y)[0]
    assert np.isfinite(loss)
    final = snapshot()
    np.testing.assert_array_equal(final["representation"], after["representation"])  # stop-gradient
    assert not np.array_equal(final["cell"], after["cell"])
    assert not np.array_equal(final["where"], after["where"])
    with pytest.raises(ValueError, match="training_phase"):
        model.set_training_phase("pretrain")
    # `keras-attention train` exports by building the model again and copying the weights
    export = tiny()
    export.set_weights(model.get_weights())
    np.testing.assert_allclose(numpy(export(x)), numpy(model(x)), rtol=1e-6, atol=1e-6)


def test_load_representation_from_the_bagnet_classifier():
    """Phase 1 -> 2 (``train --init-from`` a saccader_bagnet77 run) and phase 2 -> 3 (a Saccader)."""
    from keras_attention.training.run import initialize_from
    model = tiny()
    bagnet = ka.create_model("saccader_bagnet77", input_shape=(SIZE, SIZE, 3), num_classes=5,
                             width_multiplier=0.0625)
    randomize_batch_norms(bagnet, seed=3)
    initialize_from(model, bagnet)
    x = random_images((2, SIZE, SIZE, 3), seed=17)
    np.testing.assert_allclose(numpy(model.glimpse(x)["representation_logits"]), numpy(bagnet(x)), rtol=1e-4,
                               atol=1e-5)
    later = tiny()
    initialize_from(later, model)
    np.testing.assert_allclose(numpy(later(x)), numpy(model(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="representation"):
        model.load_representation(ka.create_model("bagnet9", input_shape=(SIZE, SIZE, 3), num_classes=5))


@pytest.mark.parametrize("kwargs, match", [
    ({"policy": "glance"}, "policy"), ({"training_phase": "all"}, "training_phase"),
    ({"input_shape": (None, None, 3)}, "static"), ({"include_top": False}, "include_top"),
    ({"input_shape": (64, 64, 3)}, "receptive field"), ({"num_glimpses": 0}, "num_glimpses"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ka.create_model("saccader77", **kwargs)


@pytest.mark.parametrize("policy", ["learned", "ordered_logits"])
def test_save_and_reload_in_a_fresh_process(policy, tmp_path):
    model = tiny(policy=policy, num_glimpses=3)
    config = model.get_config()
    assert Saccader.from_config(config).get_config() == config
    cell_config = model.cell.get_config()
    assert SaccaderCell.from_config(cell_config).get_config() == cell_config and cell_config["seed"] == 1
    check_fresh_process_reload(model, random_images((2, SIZE, SIZE, 3), seed=18), tmp_path, atol=1e-5)


@needs_imagewoof
def test_predict_gives_the_glimpses_in_the_image_files_pixels(capsys, monkeypatch):
    """``predict`` on real Imagewoof files (not square, not the input size): T glimpses each, their
    boxes the 77 px patches mapped back through the evaluation resize and centre crop."""
    from keras_attention import evaluation
    from keras_attention.cli import main
    from keras_attention.data.transforms import eval_view_box
    model = tiny()
    loaded = evaluation.load_for_inference(model, {"input_size": [SIZE, SIZE, 3], "crop_pct": 0.875,
                                                   "label_names": list("abcde"),
                                                   "label_descriptions": ["Alpha", "Beta", "Gamma", "Delta", "Eps"]})
    files = sorted((IMAGEWOOF / "val").glob("*/*.JPEG"))[:3]
    results = evaluation.predict(loaded, files, top_k=2)
    expected = model.glimpse(evaluation.preprocess_images([evaluation.load_image_file(f) for f in files],
                                                          loaded.preprocessing))
    for r, f, boxes in zip(results, files, numpy(expected["boxes"])):
        shape = evaluation.load_image_file(f).shape
        left, top, right, bottom = eval_view_box(shape[:2], (SIZE, SIZE), 0.875)
        scale = np.array([bottom - top, right - left]) / SIZE
        assert len(r["glimpses"]) == model.num_glimpses
        for g, view in zip(r["glimpses"], boxes):
            np.testing.assert_allclose(g["view_box"], view, atol=0.01)
            y0, x0, y1, x1 = g["box"]
            assert top - 0.01 <= y0 < y1 <= bottom + 0.01 and left - 0.01 <= x0 < x1 <= right + 0.01
            np.testing.assert_allclose([y1 - y0, x1 - x0], 77 * scale, atol=0.02)
            assert g["label"] in "abcde" and 0 < g["probability"] <= 1
            assert g["description"] == loaded.config["label_descriptions"]["abcde".index(g["label"])]
    # the command prints them (the model is given through a patched loader: no run folder needed)
    monkeypatch.setattr(evaluation, "load_for_inference", lambda spec, *a, **k: loaded)
    assert main(["predict", "tiny", str(files[0]), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{model.num_glimpses} glimpses, in order" in out and "    6: (" in out
    top = results[0]["top"][0]
    assert f"%  {top['label']} ({top['description']})" in out  # readable names where the weights give them
