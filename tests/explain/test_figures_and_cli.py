"""Figures and ``keras-attention explain``: the PNG files decode, on real CIFAR-10 images with the
shipped weights (the prepared dataset of ``tests/conftest.py``, readable on every backend)."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

import keras_attention as ka
from keras_attention import explain
from keras_attention.cli import main
from keras_attention.data import open_prepared
from keras_attention.models.residual_attention import build_residual_attention_network
from tests.helpers import random_images


def _png(path, min_size=(200, 150)):
    """Decodes a PNG fully; returns it as an RGB array (fails on a truncated or blank file)."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[1] >= min_size[0] and pixels.shape[0] >= min_size[1], pixels.shape
    assert pixels.std() > 5, "blank image"
    return pixels


@pytest.mark.parametrize("build", [
    lambda: ka.create_model("nl_resnet50", stage_widths=(4, 8, 16, 32), num_classes=10, input_shape=(64, 64, 3)),
    lambda: ka.create_model("resnet20", attention="stn", attention_stages=(3,), input_shape=(64, 64, 3)),
    lambda: build_residual_attention_network((1, 1, 1), base_width=4, stem="cifar", num_classes=10,
                                             input_shape=(64, 64, 3)),
    lambda: ka.create_model("resnet20", attention="ge", attention_kwargs={"extent": 2}, input_shape=(64, 64, 3)),
], ids=["nonlocal", "stn", "residual_attention", "ge_extent"])
def test_explanation_figure_of_every_map_kind(build, tmp_path):
    keras.utils.set_random_seed(0)
    model = build()
    x = random_images((2, 64, 64, 3), seed=0)
    maps = explain.attention_maps(model, x, queries=((0.5, 0.5), (0.2, 0.8)))
    cam = explain.grad_cam(model, x)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    panels = sum(len(explain.figures.spatial_panels(e, 1)) + ("grid" in e.maps) for e in maps)
    assert panels > 0
    fig = explain.plot_explanation(image, maps, cam, 1, label_names=[f"c{i}" for i in range(10)],
                                   probabilities=np.full((2, 10), 0.1), true_label="c3", title=model.name)
    _png(explain.save_figure(fig, tmp_path / "x.png", dpi=60), min_size=(300, 100))
    _png(explain.save_figure(explain.plot_channel_gates(maps, 0), tmp_path / "gates.png", dpi=60),
         min_size=(100, 50))


@pytest.fixture
def cifar_files(cifar10_prepared, tmp_path):
    source = open_prepared(cifar10_prepared, "test")
    paths = []
    for i in range(3):
        data, ext = source.encoded_image(i)
        paths.append(tmp_path / f"test_{i}{ext}")
        paths[-1].write_bytes(data)
    return paths


def test_cli_writes_one_png_per_image(cifar_files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", "cbam_resnet20.cifar10", *map(str, cifar_files), str(cifar_files[0]),
                 "--output", str(out), "--dpi", "50"]) == 0
    written = capsys.readouterr().out.split()
    assert [p.split("/")[-1] for p in written] == ["test_0.png", "test_1.png", "test_2.png", "test_0_1.png"]
    for path in written:
        _png(path)
    # Grad-CAM only, on a named layer; a query for the (absent) pairwise layers is accepted
    assert main(["explain", "se_resnet20.cifar10", str(cifar_files[1]), "--layers", "none", "--gradcam-layer",
                 "stage2_block2_out", "--query", "0.5,0.5", "--output", str(out / "cam"), "--dpi", "50"]) == 0
    _png(out / "cam" / "test_1.png", min_size=(60, 60))


def test_cli_excitation_per_class(cifar10_prepared, tmp_path, capsys):
    out = tmp_path / "fig6"
    assert main(["explain", "se_resnet20.cifar10", "--dataset", str(cifar10_prepared), "--split", "test[:300]",
                 "--excitation-per-class", "--output", str(out), "--dpi", "50", "--no-progress"]) == 0
    png, numbers = capsys.readouterr().out.split()
    _png(png)
    data = json.loads(open(numbers).read())
    assert data["dataset"].startswith("cifar10 [test[:300]]") and sum(data["counts"]) == 300
    assert len(data["layers"]) == 9 and data["layers"][-1]["layer"] == "stage3_block2_attention"
    per_class = np.array(data["layers"][-1]["per_class"], dtype=float)
    assert per_class.shape == (10, 64) and np.all((per_class >= 0) & (per_class <= 1))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["explain", "se_resnet20.cifar10", "--output", str(tmp_path)]) == 2
    assert "either image files or --excitation-per-class" in capsys.readouterr().err
    assert main(["explain", "se_resnet20.cifar10", str(tmp_path / "nope.png"), "--output", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    assert main(["explain", "se_resnet20.cifar10", str(tmp_path / "x.png"), "--layers", "stage9_*",
                 "--output", str(tmp_path)]) == 2
    assert "'stage9_*' selects no attention layer" in capsys.readouterr().err


def test_gallery_page_is_generated_and_its_figures_are_small():
    import re

    from tests.helpers import REPO_ROOT
    page = REPO_ROOT / "docs" / "explain.md"
    text = page.read_text()
    assert "python -m keras_attention.explain.gallery" in text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(figures) >= 5
    for rel in figures:
        path = page.parent / rel
        assert path.stat().st_size < 500_000, f"{rel}: keep the committed figures small"
        _png(path, min_size=(100, 100))


@pytest.mark.parametrize("attention,kwargs", [("sk", {"reduction_channels": 8}), ("splat", {}),
                                              ("bat", {"block_size": 4, "reduction_channels": 8})])
def test_path_weights_are_channel_rows_and_bat_matrices_are_not_drawn(attention, kwargs, tmp_path):
    keras.utils.set_random_seed(0)
    model = ka.create_model("resnet20", attention=attention, attention_kwargs=kwargs, attention_stages=(2, 3))
    x = random_images((2, 32, 32, 3), seed=0)
    maps = explain.attention_maps(model, x)
    assert len(maps) == 6 and all(e.stage in (2, 3) for e in maps)
    assert all(explain.figures.spatial_panels(e, 0) == [] for e in maps)  # nothing of these is over the image
    rows = explain.figures._stage_gates(list(maps), 0)
    if attention == "bat":
        assert rows == {}
    else:  # one row per block and path, one heatmap per stage
        assert sorted((stage, channels) for stage, channels, _ in rows) == [(2, 32), (3, 64)]
        assert all(len(r) == 3 * 2 for r in rows.values())
    fig = explain.plot_explanation(np.zeros((32, 32, 3), np.uint8) + 128, maps, None, 0, title=attention)
    _png(explain.save_figure(fig, tmp_path / "x.png", dpi=50), min_size=(100, 60))


def test_saccader_glimpses(tmp_path):
    keras.utils.set_random_seed(0)
    saccader = ka.create_model("saccader77", input_shape=(96, 96, 3), num_classes=10, width_multiplier=0.125)
    x = random_images((2, 96, 96, 3))
    maps = explain.attention_maps(saccader, x)
    (entry,) = maps
    assert entry.layer == "glimpses" and entry.kind == "Saccader" and set(entry.maps) == set(explain.GLIMPSE_MAPS)
    boxes, probability = entry.maps["boxes"], entry.maps["location_probability"]
    assert boxes.shape == (2, 6, 4) and probability.shape == (2, 6, 3, 3)
    assert np.all(boxes[..., 2:] - boxes[..., :2] == 77) and boxes.min() >= 0 and boxes.max() <= 96
    np.testing.assert_allclose(probability.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    # the output is the mean of the glimpsed patches' logits, and is the model's own output
    np.testing.assert_allclose(maps.outputs, entry.maps["glimpse_logits"].mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps.outputs, np.asarray(keras.ops.convert_to_numpy(saccader(x, training=False))),
                               rtol=1e-4, atol=1e-5)
    assert explain.figures.spatial_panels(entry, 0) == []
    fig = explain.plot_explanation(np.full((96, 96, 3), 128, np.uint8), maps, None, 0, title="saccader")
    _png(explain.save_figure(fig, tmp_path / "g.png", dpi=50), min_size=(60, 60))
    with pytest.raises(explain._probe.InvalidInputError, match="hard-attention"):
        explain.attention_maps(saccader, x, layers=["stage3_*"])
    with pytest.raises(explain._probe.InvalidInputError, match="'saccader77' has no layer"):  # no Grad-CAM yet
        explain.grad_cam(saccader, x)
