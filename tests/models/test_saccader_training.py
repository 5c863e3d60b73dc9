"""Saccader's three training steps through ``keras_attention.training.train`` (frozen parts get no
update), float16 training steps, real-image glimpses that never revisit a cell, and the
glimpse-count evaluation script (``scripts/saccader_glimpses.py``)."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

import keras_attention as ka
from keras_attention.training import TrainConfig, train
from tests.helpers import IMAGEWOOF, load_script, needs_imagewoof, random_images, randomize_batch_norms

SIZE = 101  # a 4 x 4 grid of 77 x 77 glimpses
TINY = {"input_shape": (SIZE, SIZE, 3), "num_classes": 2, "width_multiplier": 0.0625, "seed": 1}
FEW = {"num_glimpses": 2, "pretraining_glimpses": 3}  # short unrolled glimpse loops: fast XLA compiles


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def class_folder(root, per_class=4, size=(112, 120)):
    """``root/train/{cat,dog}/*.png``: two classes of random RGB images."""
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / "train" / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size, 3), np.uint8)).save(root / "train" / label / f"{i}.png")
    return root


def run(tmp_path, name, data, **options):
    """One ``keras-attention train`` run of a tiny Saccader: one optimizer step (batch 8)."""
    values = {"model": "saccader77", "dataset": str(data), "train_split": "train", "val_split": None,
              "input_size": (SIZE, SIZE, 3), "crop_pct": 1.0, "augment": "none", "hflip": False,
              "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "epochs": 1, "batch_size": 8,
              "optimizer": "sgd", "lr": 0.1, "weight_decay": 8e-5, "weight_decay_mode": "l2",
              "output_dir": str(tmp_path / name), "verbose": 0, "pipeline": "grain", **options}
    values["model_kwargs"] = {**{k: v for k, v in TINY.items() if k != "input_shape"}, **FEW,
                              **values.get("model_kwargs", {})}
    metrics = train(TrainConfig.from_dict(values))
    assert metrics["optimizer_steps"] == 1
    return ka.load(str(tmp_path / name)), metrics


def parts(model):
    """Every weight (trainable or not) of the representation and of the location network."""
    return {"representation": [numpy(v) for v in model.representation.weights],
            "locations": [numpy(v) for v in model.attention_network.weights + model.cell.weights]}


def changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_each_phase_through_train_updates_only_its_parts(tmp_path):
    """Step 2 (``init_from`` a trained model, ``training_phase: locations``) keeps every
    representation weight, BatchNorm statistics included, bit for bit, in spite of the L2 and
    the training-mode call; step 3 (``init_from`` step 2's run folder) changes both parts."""
    data = class_folder(tmp_path / "data")
    keras.utils.set_random_seed(0)
    start = ka.create_model("saccader77", **TINY, **FEW)
    randomize_batch_norms(start, seed=2)
    start.save(tmp_path / "start.keras")
    before = parts(start)

    phase2, metrics = run(tmp_path, "locations", data, init_from=str(tmp_path / "start.keras"),
                          model_kwargs={"training_phase": "locations"})
    after2 = parts(phase2)
    assert not any(changed(before["representation"], after2["representation"]))
    assert any(changed(before["locations"], after2["locations"]))
    assert np.isfinite(metrics["final_train_loss"])
    # only the location network is trainable (and counted) in this phase
    assert metrics["trainable_params"] == sum(int(np.prod(v.shape)) for v in phase2.attention_network.trainable_weights
                                              + phase2.cell.trainable_weights)

    phase3, metrics = run(tmp_path, "saccader", data, init_from=str(tmp_path / "locations"),
                          model_kwargs={"training_phase": "saccader"})
    after3 = parts(phase3)
    assert np.isfinite(metrics["final_train_loss"])
    kernels = [i for i, v in enumerate(phase3.representation.weights) if len(v.shape) >= 2]
    assert all(np.array(changed(after2["representation"], after3["representation"]))[kernels])
    assert any(changed(after2["locations"], after3["locations"]))
    assert json.loads((tmp_path / "saccader" / "train_config.json").read_text())["init_from"] == str(
        tmp_path / "locations")


def test_representation_is_frozen_only_in_the_locations_phase():
    model = ka.create_model("saccader77", training_phase="locations", **TINY)
    assert not model.representation.trainable
    frozen = {id(v) for v in model.representation.weights if len(v.shape) >= 2}  # kernels
    assert not frozen & {id(v) for v in model.trainable_variables}
    model.set_training_phase("saccader")
    assert model.representation.trainable
    assert frozen <= {id(v) for v in model.trainable_variables}
    # the phase comes back from the config (the saved model of a step-2 run)
    assert not ka.models.saccader.Saccader.from_config(
        {**model.get_config(), "training_phase": "locations"}).representation.trainable


@pytest.mark.parametrize("phase", ["locations", "saccader"])
def test_float16_training_step_is_finite(phase):
    """Under mixed_float16 (loss scaling) the -1e5 visited-cell mask stays finite: the cell and
    the losses are float32, so neither the 12-glimpse pretraining loss (whose masked targets
    cost about 1e5 each) nor REINFORCE turn into inf/NaN."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = ka.create_model("saccader77", training_phase=phase, **{**TINY, **FEW, "num_classes": 4})
        assert model.attention_network.get_layer("mixing_conv").compute_dtype == "float16"
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        x, y = random_images((4, SIZE, SIZE, 3), seed=3), np.eye(4, dtype="float32")
        before = [numpy(v) for v in model.attention_network.trainable_weights]
        # The dynamic loss scale starts at 2^15 and halves after each step whose float16 gradients
        # overflow (skipped, weights kept); a few steps in, one must apply, with finite weights.
        for _ in range(8):
            loss = float(numpy(model.train_on_batch(x, y)))
            assert np.isfinite(loss)
            after = [numpy(v) for v in model.attention_network.trainable_weights]
            if any(changed(before, after)):
                break
        assert all(np.isfinite(w).all() for w in after)
        assert any(changed(before, after)), "every step overflowed"
        out = model.glimpse(x, num_glimpses=16, training=True)
        assert np.isfinite(numpy(out["location_logits"])).all()  # -1e5 masks, not -inf
        assert np.isfinite(numpy(out["logits"])).all()
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------------- real images
def imagewoof_val_images(count=4, size=128):
    files = sorted(p for d in sorted((IMAGEWOOF / "val").iterdir())[:count] for p in sorted(d.iterdir())[:1])
    images = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
              for f in files]
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    return ((np.stack(images) - mean) / std).astype("float32")


@needs_imagewoof
def test_no_cell_is_visited_twice_on_real_images():
    """Imagewoof val images at 128 px (a 7 x 7 grid): for every T up to h*w the learned policy
    (argmax, and sampling in training) and ordered_logits glimpse T distinct cells."""
    x = imagewoof_val_images()
    keras.utils.set_random_seed(0)
    model = ka.create_model("saccader77", input_shape=(128, 128, 3), num_classes=10, width_multiplier=0.0625,
                            seed=3)
    randomize_batch_norms(model, seed=1)
    cells_total = model.grid_shape[0] * model.grid_shape[1]
    assert cells_total == 49
    for policy, training in (("learned", False), ("learned", True), ("ordered_logits", False)):
        for steps in (6, cells_total):
            cells = numpy(model.glimpse(x, training=training, num_glimpses=steps, policy=policy)["cells"])
            assert cells.shape == (len(x), steps)
            assert all(len(set(row)) == steps for row in cells), (policy, training, steps, cells)
        assert all(sorted(row) == list(range(cells_total)) for row in cells)  # T = h*w: every cell once
    # the random policy may revisit (official: uniform locations snapped to the grid), the test can fail
    cells = numpy(model.glimpse(x, num_glimpses=cells_total, policy="random")["cells"])
    assert any(len(set(row)) < cells_total for row in cells)


# ---------------------------------------------------------------------------- the evaluation script
def test_glimpse_script_matches_the_model():
    """``scripts/saccader_glimpses.py`` computes each policy's glimpses once for T_max; its
    prefix means are the model's predictions with t glimpses."""
    script = load_script("saccader_glimpses")
    keras.utils.set_random_seed(0)
    model = ka.create_model("saccader77", **{**TINY, "num_classes": 5})
    randomize_batch_norms(model, seed=4)
    x = random_images((3, SIZE, SIZE, 3), seed=5)
    out = script.policy_glimpse_logits(model, x, 16, policies=("learned", "ordered_logits", "center"))
    for policy in ("learned", "ordered_logits", "center"):
        for steps in (1, 16):
            expected = numpy(model(x, num_glimpses=steps, policy=policy))
            np.testing.assert_allclose(out[policy][:, :steps].mean(1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["representation"][:, 0], numpy(model.glimpse(x)["representation_logits"]),
                               rtol=1e-5, atol=1e-5)
    labels = np.argmax(out["learned"][:, :2].mean(1), -1)
    curve = script.accuracy_curves(out, labels)
    assert curve["learned"][1] == 100.0 and curve["learned"].shape == (16,)
    table = script.markdown_table(curve, [1, 2, 16], num_examples=3).splitlines()
    assert table[0].startswith("| glimpses | learned") and table[3].startswith("| 2 | 100.00 |")
