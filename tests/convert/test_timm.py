"""timm checkpoint conversion: name table, strictness, and logit parity with timm itself.

The parity tests (marked ``timm``) build timm's model with random weights and random,
non-trivial BatchNorm statistics, save its state dict as ``model.safetensors`` (as the
Hub serves it), convert it onto our model and compare logits on the same random
batch (NCHW for timm, NHWC for us). The other tests need no timm: they build timm-
layout state dicts from our own models with the inverse transforms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.cli import main
from keras_attention.convert import timm as ct
from keras_attention.weights import sha256_file
from tests.helpers import REPO_ROOT, import_or_skip, random_images

WEIGHTS_DIR = REPO_ROOT / "weights"
PARITY_SIZE = 80  # odd map sizes in stage 4 (5 -> 3): exercises ceil-mode average pooling
RTOL = ct.PARITY_RTOL  # the tolerance the README states and `keras-attention convert --verify` checks


# ------------------------------------------------------------------------------------------
# Helpers: our model -> timm-layout state dict (the inverse of the converter's transforms).

def _inverse(spec: ct.WeightSpec, value: np.ndarray) -> np.ndarray:
    if spec.transform is ct.conv2d_kernel:
        return np.transpose(value, (3, 2, 0, 1))
    if spec.transform is ct.conv1d_kernel:
        return np.transpose(value, (2, 1, 0))
    if spec.transform is ct.pointwise_kernel:
        return np.transpose(value)[:, :, None, None]
    if spec.transform is ct.dense_kernel:
        return np.transpose(value)
    assert spec.transform is ct.identity, spec.transform
    return value


def fake_state_dict(model, seed=0, layout="resnet") -> dict[str, np.ndarray]:
    """A timm-layout state dict with random values whose conversion gives ``model`` those values."""
    rng = np.random.default_rng(seed)
    state = {}
    for spec in ct.weight_mapping(model, layout):
        value = rng.uniform(0.5, 1.5, size=tuple(spec.variable.shape)).astype("float32")
        state[spec.key] = _inverse(spec, value)
        if spec.key.endswith(".running_var"):
            state[spec.key[:-len("running_var")] + "num_batches_tracked"] = np.array(7, dtype="int64")
    return state


def _weights(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


# ------------------------------------------------------------------------------------------
# Name table and strictness (no timm needed).

@pytest.mark.parametrize("layer, avg_down, expected", [
    ("stem_conv", False, "conv1"),
    ("stem_bn", False, "bn1"),
    ("stem_conv1", True, "conv1.0"),
    ("stem_bn2", True, "conv1.4"),
    ("stem_conv3", True, "conv1.6"),
    ("stem_bn3", True, "bn1"),
    ("stage1_block0_conv1", False, "layer1.0.conv1"),
    ("stage3_block22_bn3", False, "layer3.22.bn3"),
    ("stage2_block0_downsample_conv", False, "layer2.0.downsample.0"),
    ("stage2_block0_downsample_bn", False, "layer2.0.downsample.1"),
    ("stage2_block0_downsample_conv", True, "layer2.0.downsample.1"),
    ("stage2_block0_downsample_bn", True, "layer2.0.downsample.2"),
    ("stage4_block2_attention", False, "layer4.2.se"),
    ("head_fc", False, "fc"),
    ("stage1_block0_relu1", False, None),
])
def test_name_table(layer, avg_down, expected):
    assert ct.timm_prefix(layer, avg_down) == expected


@pytest.mark.parametrize("layer, layout, by_class, expected", [
    ("stem_conv1", "byobnet", False, "stem.conv1.conv"),
    ("stem_bn3", "byobnet", False, "stem.conv3.bn"),
    ("stage1_block0_conv1", "byobnet", False, "stages.0.0.conv1_1x1.conv"),
    ("stage4_block1_bn2", "byobnet", False, "stages.3.1.conv2_kxk.bn"),
    ("stage2_block0_downsample_conv", "byobnet", False, "stages.1.0.shortcut.conv"),
    ("stage3_block2_attention", "byobnet", True, "stages.2.2.attn"),
    ("final_bn", "byobnet", False, "final_conv.bn"),
    ("head_fc", "byobnet", False, "head.fc"),
    ("stage1_block0_conv2", "sknet", False, "layer1.0.conv2.conv"),
    ("stage1_block0_bn3", "sknet", False, "layer1.0.conv3.bn"),
    ("stage1_block0_conv1", "sknet", True, "layer1.0.conv1"),  # a SelectiveKernel layer
    ("stage2_block0_downsample_bn", "sknet", False, "layer2.0.downsample.1"),
    ("stage1_block0_conv2", "resnet", True, "layer1.0.conv2"),  # a SplitAttention layer
    ("final_conv", "resnet", False, None),
])
def test_name_table_layouts(layer, layout, by_class, expected):
    assert ct.timm_prefix(layer, False, layout, by_class=by_class) == expected


#: (our architecture, a few timm keys its mapping must produce), one per layout and new layer.
LAYOUT_CASES = {
    "gc_resnet33ts": ["stem.conv3.bn.running_var", "stages.1.0.attn.conv_attn.weight",
                      "stages.3.1.attn.mlp_add.norm.weight", "final_conv.conv.weight", "head.fc.bias"],
    "bat_resnext26ts": ["stages.0.0.attn.ba.conv_p.bias", "stages.3.1.attn.conv2.bn.weight"],
    "sk_resnet18": ["layer1.0.conv1.paths.1.bn.running_mean", "layer1.0.conv1.attn.fc_select.weight",
                    "layer1.0.conv2.conv.weight", "layer2.0.downsample.0.weight", "fc.weight"],
    "resnest14d": ["conv1.6.weight", "layer2.0.conv2.fc2.bias", "layer2.0.conv2.bn1.running_var",
                   "layer1.0.downsample.1.weight"],
}


@pytest.mark.parametrize("arch", sorted(LAYOUT_CASES))
def test_round_trip_new_layouts(arch):
    """Every weight maps to one timm key (timm's layout for ``arch``) and loads back unchanged."""
    layout = ct.timm_layout(arch)
    model = ka.create_model(arch, input_shape=(None, None, 3), num_classes=7)
    state = fake_state_dict(model, layout=layout)
    specs = ct.weight_mapping(model, layout)
    assert sorted(s.path for s in specs) == sorted(w.path for w in model.weights)
    assert len({s.key for s in specs}) == len(specs) and set(LAYOUT_CASES[arch]) <= set(state)
    before = _weights(model)
    ct.load_timm_weights(model, state, layout=layout)
    after = _weights(model)
    assert all(not np.array_equal(before[p], after[p]) for p in before)
    for spec in specs:
        np.testing.assert_array_equal(after[spec.path], spec.transform(state[spec.key]), err_msg=spec.path)
    with pytest.raises(ct.ConversionError):  # another layout does not fit
        ct.load_timm_weights(model, state, layout="byobnet" if layout == "resnet" else "resnet")


def test_mapping_covers_every_weight_once():
    model = ka.create_model("se_resnet18", input_shape=(32, 32, 3))
    specs = ct.weight_mapping(model)
    assert sorted(s.path for s in specs) == sorted(w.path for w in model.weights)
    assert len({s.key for s in specs}) == len(specs)
    keys = {s.key for s in specs}
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight",
            "layer1.1.se.fc2.bias", "fc.weight"} <= keys


@pytest.mark.parametrize("arch", ["se_resnet18", "resnext26t_32x4d", "eca_resnet50d"])
def test_round_trip_through_timm_layout(arch):
    model = ka.create_model(arch, input_shape=(32, 32, 3), num_classes=7)
    state = fake_state_dict(model)
    ct.load_timm_weights(model, state)
    reference = ka.create_model(arch, input_shape=(32, 32, 3), num_classes=7)
    for spec in ct.weight_mapping(reference):
        spec.variable.assign(spec.transform(state[spec.key]))
    got, want = _weights(model), _weights(reference)
    assert got.keys() == want.keys()
    for path in got:
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)
    # Grouped kernels keep PyTorch's group order: (O, I/g, kh, kw) -> (kh, kw, I/g, O).
    if arch.startswith("resnext"):
        kernel = model.get_layer("stage1_block0_conv2").kernel
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(kernel)[1, 2, 3, 5],
                                      state["layer1.0.conv2.weight"][5, 3, 1, 2])
    if arch.startswith("eca"):  # Conv1d (1, 1, k) -> Conv1D (k, 1, 1), k = 5 for C = 256
        kernel = keras.ops.convert_to_numpy(model.get_layer("stage1_block0_attention").conv.kernel)
        np.testing.assert_array_equal(kernel[:, 0, 0], state["layer1.0.se.conv.weight"][0, 0])
        assert kernel.shape == (5, 1, 1)


def test_strict_errors_list_every_problem():
    model = ka.create_model("resnet18", input_shape=(32, 32, 3), num_classes=5)
    state = fake_state_dict(model)
    before = _weights(model)
    bad = dict(state)
    del bad["layer1.0.bn1.running_mean"]
    del bad["layer3.1.conv2.weight"]
    bad["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), "float32")
    bad["fc.weight"] = np.zeros((6, 512), "float32")
    with pytest.raises(ct.ConversionError) as info:
        ct.load_timm_weights(model, bad)
    message = str(info.value)
    for expected in ("2 Keras weights have no tensor", "layer1.0.bn1.running_mean", "layer3.1.conv2.weight",
                     "1 checkpoint tensors are not used", "layer5.0.conv1.weight",
                     "1 shape mismatches", "fc.weight (6, 512) -> head_fc/kernel (512, 5)"):
        assert expected in message
    after = _weights(model)
    assert all(np.array_equal(before[p], after[p]) for p in before), "weights changed on failure"


def test_num_batches_tracked_ignored_and_allow_unused():
    model = ka.create_model("resnet18", input_shape=(32, 32, 3), include_top=False)
    full = ka.create_model("resnet18", input_shape=(32, 32, 3))
    state = fake_state_dict(full)
    assert any(k.endswith("num_batches_tracked") for k in state)
    with pytest.raises(ct.ConversionError, match="fc.bias"):
        ct.load_timm_weights(model, state)
    ct.load_timm_weights(model, state, allow_unused=ct.CLASSIFIER_KEYS)


def test_unknown_weight_layer_is_an_error():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.scale

    model = ka.create_model("resnet18", input_shape=(32, 32, 3), attention=Scale)
    with pytest.raises(ct.ConversionError, match="stage1_block0_attention \\(Scale"):
        ct.weight_mapping(model)


def test_se_width_inferred_from_checkpoint():
    # timm: make_divisible(C / 16, 8): 64 -> 8 (paper: 4); 256 -> 16 in both.
    timm_like = {"layer1.0.se.fc1.weight": np.zeros((8, 64, 1, 1)), "layer3.0.se.fc1.weight": np.zeros((16, 256, 1, 1))}
    assert ct.infer_se_kwargs(timm_like) == {"reduction_divisor": 8}
    paper = {"layer1.0.se.fc1.weight": np.zeros((4, 64, 1, 1)), "layer3.0.se.fc1.weight": np.zeros((16, 256, 1, 1))}
    assert ct.infer_se_kwargs(paper) == {}
    r8 = {"layer1.0.se.fc1.weight": np.zeros((8, 64, 1, 1)), "layer3.0.se.fc1.weight": np.zeros((32, 256, 1, 1))}
    assert ct.infer_se_kwargs(r8) == {"reduction_ratio": 8}
    with pytest.raises(ct.ConversionError, match="SE widths"):
        ct.infer_se_kwargs({"layer1.0.se.fc1.weight": np.zeros((5, 64, 1, 1)),
                            "layer3.0.se.fc1.weight": np.zeros((16, 256, 1, 1))})


def test_se_resnet18_with_timm_widths_loads():
    ours_timm_widths = ka.create_model("se_resnet18", input_shape=(32, 32, 3),
                                       attention_kwargs={"reduction_divisor": 8})
    state = fake_state_dict(ours_timm_widths)
    model = ct.create_model_from_timm("seresnet18", state, input_shape=(32, 32, 3))
    assert model.get_layer("stage1_block0_attention").fc1.units == 8
    with pytest.raises(ct.ConversionError, match="shape mismatches"):
        ct.load_timm_weights(ka.create_model("se_resnet18", input_shape=(32, 32, 3)), state)


# Trainable parameters of the ResNet-D variants added for the timm checkpoints, counted
# with timm 1.0.31 (sum of parameter sizes of timm.create_model(name)); 1000 classes.
# (resnet101d 44,568,392 and eca_resnet101d 44,568,563 are checked against timm itself in
# test_deep_models_map_every_tensor.)
RESNET_D_PARAMS = {"resnet50d": 25_576_264, "se_resnext26d_32x4d": 16_809_512,
                   "se_resnext26t_32x4d": 16_806_976, "eca_resnet50d": 25_576_350}


@pytest.mark.parametrize("arch", sorted(RESNET_D_PARAMS))
def test_resnet_d_parameter_counts(arch):
    from keras_attention.complexity import count_params

    assert count_params(ka.create_model(arch)) == RESNET_D_PARAMS[arch]


def test_tiered_stem_widths():
    model = ka.create_model("se_resnext26t_32x4d", input_shape=(64, 64, 3))
    assert [model.get_layer(f"stem_conv{i}").filters for i in (1, 2, 3)] == [24, 32, 64]
    model = ka.create_model("resnet50d", input_shape=(64, 64, 3))
    assert [model.get_layer(f"stem_conv{i}").filters for i in (1, 2, 3)] == [32, 32, 64]


def test_architecture_names():
    assert ct.our_architecture("seresnet50.a1_in1k") == "se_resnet50"
    assert ct.our_architecture("timm/ecaresnet50d.miil_in1k") == "eca_resnet50d"
    assert ct.our_architecture("seresnext26t_32x4d") == "se_resnext26t_32x4d"
    assert ct.our_architecture("gcresnext26ts.ch_in1k") == "gc_resnext26ts"
    assert ct.our_architecture("skresnext50_32x4d") == "sk_resnext50_32x4d"
    registered = set(ka.list_models())
    assert set(ct.TIMM_ARCHITECTURES.values()) <= registered
    assert set(ct.TIMM_LAYOUTS) <= set(ct.TIMM_ARCHITECTURES.values())
    assert {ct.timm_layout(a) for a in ("gc_resnet50t", "sk_resnet34", "resnest50d", "se_resnet50")} == \
        {"byobnet", "sknet", "resnet"}
    with pytest.raises(ValueError, match="seresnet50"):
        ct.our_architecture("seresnet05")


def test_classifier_keys_per_layout():
    assert ct.infer_model_kwargs("gcresnet33ts", {"head.fc.weight": np.zeros((5, 1280))}) == {"num_classes": 5}
    assert ct.infer_model_kwargs("skresnet18", {"fc.weight": np.zeros((6, 512))}) == {"num_classes": 6}
    assert ct.classifier_keys("bat_resnext26ts") == ("head.fc.weight", "head.fc.bias")


def test_new_head_and_features():
    full = ka.create_model("resnet18", input_shape=(32, 32, 3), num_classes=5)
    state = fake_state_dict(full)
    x = random_images((2, 32, 32, 3))
    features = ct.create_model_from_timm("resnet18.tv_in1k", state, include_top=False, pooling="avg",
                                         input_shape=(32, 32, 3))
    ct.load_timm_weights(full, state)
    backbone = keras.Model(full.input, full.get_layer("head_pool").output)
    np.testing.assert_allclose(np.asarray(features(x)), np.asarray(backbone(x)), rtol=1e-5, atol=1e-5)
    fresh = ct.create_model_from_timm("resnet18", state, num_classes=3, input_shape=(32, 32, 3))
    assert fresh.output_shape == (None, 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh.get_layer("stem_conv").kernel),
                                  keras.ops.convert_to_numpy(full.get_layer("stem_conv").kernel))


def test_hub_weights_loader(tmp_path):
    """The loader of registry format "timm": ``loader(model, files, cfg)`` as keras_attention.weights calls it."""
    from safetensors.numpy import save_file

    model = ka.create_model("se_resnet18", input_shape=(32, 32, 3), attention_kwargs={"reduction_divisor": 8})
    state = fake_state_dict(model)
    save_file(state, str(tmp_path / "model.safetensors"))
    cfg = {"name": "se_resnet18.x", "architecture": "se_resnet18", "source": {"model": "seresnet18.x"}}
    ct.load_timm_files(model, {"model.safetensors": tmp_path / "model.safetensors"}, cfg)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("head_fc").bias), state["fc.bias"])
    with pytest.raises(ct.ConversionError, match="converts to 'se_resnet50'"):
        ct.load_timm_files(model, {"model.safetensors": tmp_path / "model.safetensors"},
                           {**cfg, "source": {"model": "seresnet50.a1_in1k"}})
    with pytest.raises(ct.ConversionError, match="model.safetensors"):
        ct.load_timm_files(model, {"pytorch_model.bin": tmp_path / "x"}, cfg)
    from keras_attention import weights
    assert weights.format_loader("timm") is ct.load_timm_files


def test_hub_weights_loader_uses_the_architectures_layout(tmp_path):
    from safetensors.numpy import save_file

    model = ka.create_model("eca_resnext26ts", input_shape=(None, None, 3), num_classes=5)
    state = fake_state_dict(model, layout="byobnet")
    assert "stages.3.1.attn.conv.weight" in state and "head.fc.weight" in state
    save_file(state, str(tmp_path / "model.safetensors"))
    cfg = {"name": "eca_resnext26ts.x", "architecture": "eca_resnext26ts",
           "source": {"model": "eca_resnext26ts.ch_in1k"}}
    ct.load_timm_files(model, {"model.safetensors": tmp_path / "model.safetensors"}, cfg)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("head_fc").bias), state["head.fc.bias"])


@pytest.mark.parametrize("pinned", [True, False])
def test_load_timm_entry_through_hub(tmp_path, monkeypatch, hf_hub, pinned):
    """End to end: a "timm" entry served by the local Hub stand-in, converted at load time.

    Unpinned (as the shipped timm entries are until someone pins them online: revision
    and sha256 null): the file comes from ``main`` and is checked against the Hub's
    LFS SHA-256; a corrupted download is refused.
    """
    from keras_attention import weights
    fake_hub = hf_hub
    from safetensors.numpy import save_file

    kwargs = {"num_classes": 5, "input_shape": [32, 32, 3], "attention_kwargs": {"reduction_divisor": 8}}
    reference = ka.create_model("se_resnet18", **kwargs)
    state = fake_state_dict(reference)
    save_file(state, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    revision = fake_hub.commit("timm/seresnet18.test_in5", {"model.safetensors": data}, lfs=True)
    entry = json.loads((WEIGHTS_DIR / "se_resnet50.a1_in1k" / "pretrained.json").read_text())
    entry.pop("labels_file")
    entry.update(name="se_resnet18.test_in5", architecture="se_resnet18", tag="test_in5", default=False,
                 files={"model.safetensors": {"sha256": sha256_file(tmp_path / "model.safetensors")
                                              if pinned else None, "size": len(data) if pinned else None}},
                 hub={"repo_id": "timm/seresnet18.test_in5", "revision": revision if pinned else None},
                 model_kwargs=kwargs,
                 num_classes=5, label_names=list("abcde"), input_size=[32, 32, 3],
                 source={"repo_id": "timm/seresnet18.test_in5", "model": "seresnet18.test_in5"})
    folder = tmp_path / "registry" / entry["name"]
    folder.mkdir(parents=True)
    (folder / "pretrained.json").write_text(json.dumps(entry))
    monkeypatch.setenv("KERAS_ATTENTION_WEIGHTS_PATH", str(tmp_path / "registry"))
    fake_hub.corrupt.add("timm/seresnet18.test_in5/model.safetensors")
    with pytest.raises(weights.ChecksumError):
        weights.load("se_resnet18.test_in5")
    fake_hub.corrupt.clear()
    model = weights.load("se_resnet18.test_in5")
    ct.load_timm_weights(reference, state)
    x = random_images((2, 32, 32, 3))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5)
    features = weights.load("se_resnet18.test_in5", include_top=False, pooling="avg")
    assert features.output_shape == (None, 512)
    if not pinned:
        assert fake_hub.count("HEAD", "/resolve/main/model.safetensors") >= 1  # resolved at main


def test_not_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"PK\x03\x04 a pickled torch checkpoint")
    with pytest.raises(ct.ConversionError, match="safetensors"):
        ct.load_state_dict(path)
    with pytest.raises(FileNotFoundError):
        ct.load_state_dict(tmp_path / "missing.safetensors")


def test_pretrained_cfg_from_timm_config_json():
    hub_config = {"architecture": "seresnet50", "num_classes": 1000,
                  "pretrained_cfg": {"tag": "a1_in1k", "input_size": [3, 224, 224],
                                     "test_input_size": [3, 288, 256], "crop_pct": 0.95,
                                     "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225], "num_classes": 1000, "pool_size": [7, 7]}}
    cfg = ct.pretrained_cfg_from_timm(hub_config)
    assert cfg["input_size"] == [224, 224, 3] and cfg["test_input_size"] == [288, 256, 3]
    assert cfg["crop_pct"] == 0.95 and cfg["interpolation"] == "bicubic" and cfg["num_classes"] == 1000
    assert cfg["timm_architecture"] == "seresnet50" and "pool_size" not in cfg


# ------------------------------------------------------------------------------------------
# The command line: keras-attention convert.

def _run_command(*args, env=None, timeout=300):
    """``keras-attention convert`` in a fresh process (for environment variables read at import time)."""
    return subprocess.run([sys.executable, "-m", "keras_attention.cli", "convert", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})})


def _command(capsys, *args):
    """``keras-attention convert`` in this process (saves a TensorFlow import); returns (status, stderr)."""
    capsys.readouterr()
    status = main(["convert", *[str(a) for a in args]])
    return status, capsys.readouterr().err


def test_command_converts_local_checkpoint(tmp_path, capsys):
    from safetensors.numpy import save_file

    model = ka.create_model("resnet18", input_shape=(None, None, 3))
    state = fake_state_dict(model)
    ckpt = tmp_path / "src" / "model.safetensors"
    ckpt.parent.mkdir()
    save_file(state, str(ckpt))
    out = tmp_path / "out"
    status, err = _command(capsys, "--checkpoint", ckpt, "--timm-name", "resnet18.a1_in1k", "--output", out)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["keras_version"] == keras.__version__
    cfg = meta["pretrained_cfg"]  # timm's values from the registry entry weights/resnet18.a1_in1k
    assert cfg["name"] == "resnet18.a1_in1k" and cfg["architecture"] == "resnet18" and cfg["format"] == "keras"
    assert cfg["model_kwargs"] == {"num_classes": 1000, "input_shape": [None, None, 3]}
    assert cfg["input_size"] == [224, 224, 3] and cfg["crop_pct"] == 0.95
    assert cfg["interpolation"] == "bicubic" and cfg["num_classes"] == 1000 and len(cfg["mean"]) == 3
    assert cfg["source"]["sha256"] == sha256_file(ckpt) and cfg["source"]["repo_id"] == "timm/resnet18.a1_in1k"
    assert cfg["source"]["size"] == ckpt.stat().st_size and cfg["source"]["model"] == "resnet18.a1_in1k"
    assert cfg["files"]["model.weights.h5"]["sha256"] == sha256_file(out / "model.weights.h5")
    assert meta["conversion"]["pretrained_cfg_from"] == "registry entry resnet18.a1_in1k"
    reloaded = keras.saving.load_model(out)
    ct.load_timm_weights(model, state)
    x = random_images((2, 48, 40, 3))
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)
    # An existing folder is not overwritten without --overwrite.
    status, err = _command(capsys, "--checkpoint", ckpt, "--timm-name", "resnet18.a1_in1k", "--output", out)
    assert status == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    status, err = _command(capsys, "--checkpoint", ckpt, "--timm-name", "seresnet05", "--output", tmp_path / "o2")
    assert status == 2 and "not supported by the converter" in err


def test_command_offline_hub_is_a_clean_error(tmp_path):
    result = _run_command("--hub-repo", "timm/seresnet50.a1_in1k", "--output", tmp_path / "out",
                          env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-attention convert: error: "), result.stderr
    for part in ("'model.safetensors'", "timm/seresnet50.a1_in1k", "HF_HUB_OFFLINE", "cache", "hf download"):
        assert part in lines[0]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------
# Registry entries for timm's checkpoints (weights/<arch>.<tag>/pretrained.json).

def _timm_entries():
    entries = []
    for path in sorted(WEIGHTS_DIR.glob("*/pretrained.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry.get("format") == "timm":
            entries.append((path.parent.name, entry))
    return entries


def test_registry_entries_are_consistent():
    entries = _timm_entries()
    assert len(entries) >= 16
    registered = set(ka.list_models())
    defaults = {}
    for folder, e in entries:
        assert e["name"] == folder == f"{e['architecture']}.{e['tag']}"
        assert e["architecture"] in registered
        assert ct.our_architecture(e["source"]["model"]) == e["architecture"]
        assert e["hub"]["repo_id"] == e["source"]["repo_id"] == f"timm/{e['source']['model']}"
        assert e["hub"]["revision"] is None and e["files"] == {"model.safetensors": {"sha256": None, "size": None}}
        assert "null" in e["notes"] and "offline" in e["notes"]
        h, w, c = e["input_size"]
        assert c == 3 and h >= 128 and e["model_kwargs"]["input_shape"] == e["input_size"]
        assert e["num_classes"] == e["model_kwargs"]["num_classes"] == 1000
        assert 0 < e["crop_pct"] <= 1 and e["interpolation"] in ("bilinear", "bicubic")
        assert len(e["mean"]) == len(e["std"]) == 3 and e["license"] and e["paper"]
        if e["default"]:
            assert e["architecture"] not in defaults, f"two defaults for {e['architecture']}"
            defaults[e["architecture"]] = e["tag"]
    assert defaults["se_resnet50"] == "a1_in1k" and "eca_resnet50d" in defaults


# ------------------------------------------------------------------------------------------
# Parity with timm (test-only reference).

def _timm():
    timm = import_or_skip("timm", "timm (test-only PyTorch reference) is not installed; "
                                  "../shared/tools/install-timm-reference installs it")
    torch = import_or_skip("torch", "PyTorch is needed by the timm reference")
    return timm, torch


#: Last BN of a residual branch, per timm block: Bottleneck / ResNeSt, BasicBlock, SK bottleneck,
#: SK basic block, ByobNet bottleneck.
_LAST_BN = {"bottleneck": (".bn3", ".conv3.bn", ".conv3_1x1.bn"), "basic": (".bn2", ".conv2.bn")}


def _random_timm_model(name, seed=0):
    """timm's model with random weights and random BN statistics (so BN matters), eval mode.

    The last BN of every residual branch gets a smaller gamma (x 0.25) so activations do not
    grow by orders of magnitude with depth: with exploding activations the SE/ECA sigmoid
    gates amplify float32 round-off (for seresnet101 timm's own float32 and float64 logits
    then differ by 20 %, while ours and timm's agree to 2e-9 in float64), and the test
    would measure that instead of the conversion. Weights that timm initialises to zero
    (the add-fusion GC block's last convolution) get small random values, so the layer
    behind them is tested too.
    """
    timm, torch = _timm()
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    basic = hasattr(model, "layer1") and not any(n.startswith("conv3") for n, _ in model.layer1[0].named_children())
    last_bn = _LAST_BN["basic" if basic else "bottleneck"]
    gen = torch.Generator().manual_seed(seed + 1)
    zeros_gen = torch.Generator().manual_seed(seed + 2)  # apart, so the BN draws stay as they were
    with torch.no_grad():
        for p_name, param in model.named_parameters():
            if param.ndim > 1 and not param.any():
                param.copy_(torch.randn(param.shape, generator=zeros_gen) * 0.05)
        for path, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                scale = 0.25 if path.endswith(last_bn) else 1.0
                module.weight.copy_((torch.rand(n, generator=gen) + 0.5) * scale)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


def _save_safetensors(model, path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


PARITY = ["resnet18", "resnet50", "resnext50_32x4d", "seresnet18", "seresnet50", "seresnext50_32x4d",
          "resnet50d", "seresnext26d_32x4d", "seresnext26t_32x4d", "ecaresnet50d",
          # Issue 16, one per structure: ByobNet with GC, SiLU, the strided tiered stem and the
          # final conv; ByobNet ResNeXt with SE, groups of 32 and the -inf max pool; BAT (its
          # 8 x 8 blocks need 256 px); SK basic (split input) and bottleneck (grouped) blocks;
          # ResNeSt (Split attention, avd). The others of each family: MAPPING_ONLY.
          "gcresnet33ts", "seresnext26ts", "bat_resnext26ts", "skresnet18", "skresnext50_32x4d", "resnest14d"]
#: Input side per architecture where PARITY_SIZE does not fit (BAT: every stage a multiple of 8).
PARITY_SIZES = {"bat_resnext26ts": 256}
#: Trainable parameters (1000 classes) of the issue-16 architectures, counted with timm 1.0.31;
#: the parity and mapping tests check ours and timm's against these.
TIMM_PARAMS = {"gcresnet33ts": 19_880_698, "gcresnet50t": 25_897_080, "gcresnext26ts": 10_476_600,
               "gcresnext50ts": 15_667_320, "seresnet33ts": 19_779_200, "seresnext26ts": 10_388_064,
               "eca_resnet33ts": 19_676_302, "eca_resnext26ts": 10_297_988, "bat_resnext26ts": 10_731_200,
               "skresnet18": 11_958_056, "skresnet34": 22_282_376, "skresnext50_32x4d": 27_479_784,
               "resnest14d": 10_611_688, "resnest26d": 17_069_448, "resnest50d": 27_483_240}


def _check_trainable_params(timm_name, reference, model):
    """Ours equals timm's trainable parameter count (and the recorded one, where recorded)."""
    from keras_attention.complexity import count_params

    theirs = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert count_params(model) == theirs, (timm_name, count_params(model), theirs)
    assert TIMM_PARAMS.get(timm_name, theirs) == theirs
#: Max relative logit error measured (max |ours - timm| / max |timm|), for the report.
PARITY_ERRORS: dict[str, float] = {}


@pytest.mark.timm
@pytest.mark.parametrize("timm_name", PARITY)
def test_logits_match_timm(timm_name, tmp_path):
    _, torch = _timm()
    reference = _random_timm_model(timm_name)
    path = tmp_path / "model.safetensors"
    _save_safetensors(reference, path)
    model = ct.create_model_from_timm(timm_name, path)
    _check_trainable_params(timm_name, reference, model)
    size = PARITY_SIZES.get(timm_name, PARITY_SIZE)
    x = random_images((2, 3, size, size), seed=3)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    actual = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    assert actual.shape == expected.shape == (2, 1000)
    assert expected.std() > 1e-3 * np.abs(expected).max()  # logits are not trivially constant
    error = float(np.abs(actual - expected).max() / np.abs(expected).max())
    PARITY_ERRORS[timm_name] = error
    print(f"{timm_name}: max relative logit error {error:.2e}")
    assert error < RTOL


# One per remaining depth/family (resnet101 and seresnet101/152 add nothing to resnet152 +
# seresnet50 but time; `keras-attention convert --verify` checks any single one end to end).
MAPPING_ONLY = ["resnet34", "resnet152", "resnext101_32x4d", "seresnet34", "seresnext101_32x4d",
                "resnet101d", "ecaresnet101d",
                # Issue 16: the rest of each family (same blocks as a PARITY model, other depth,
                # widths, activation or attention).
                "gcresnet50t", "gcresnext26ts", "gcresnext50ts", "seresnet33ts", "eca_resnet33ts",
                "eca_resnext26ts", "skresnet34", "resnest26d", "resnest50d"]


@pytest.mark.timm
@pytest.mark.parametrize("timm_name", MAPPING_ONLY)
def test_deep_models_map_every_tensor(timm_name):
    """Every timm tensor has a Keras weight of the right shape (names and shapes only, no forward)."""
    timm, _ = _timm()
    reference = timm.create_model(timm_name, pretrained=False)
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    state = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    model = ct.create_model_from_timm(timm_name, state)
    specs = ct.weight_mapping(model, ct.timm_layout(ct.our_architecture(timm_name)))
    used = {s.key for s in specs}
    assert used == {k for k in shapes if not k.endswith("num_batches_tracked")}
    assert model.count_params() == sum(int(np.prod(shapes[k])) for k in used)
    _check_trainable_params(timm_name, reference, model)


@pytest.mark.timm
def test_registry_entries_match_timm_configs():
    timm, _ = _timm()
    from timm.models import get_pretrained_cfg

    entries = _timm_entries()
    for _, e in entries:
        cfg = get_pretrained_cfg(e["source"]["model"]).to_dict()
        c, h, w = cfg["input_size"]
        assert e["input_size"] == [h, w, c], e["name"]
        assert e["crop_pct"] == cfg["crop_pct"] and e["interpolation"] == cfg["interpolation"], e["name"]
        assert e["mean"] == list(cfg["mean"]) and e["std"] == list(cfg["std"]), e["name"]
        assert e["license"] == cfg.get("license", "unknown"), e["name"]
        assert e["hub"]["repo_id"] == cfg["hf_hub_id"], e["name"]
    have = {e["source"]["model"] for _, e in entries}
    for timm_arch in ct.TIMM_ARCHITECTURES:
        for name in timm.list_pretrained(f"{timm_arch}.*"):
            if name.split(".")[0] == timm_arch and get_pretrained_cfg(name).num_classes == 1000:
                assert name in have, f"no registry entry for timm's {name}"


@pytest.mark.timm
def test_command_verify_against_timm(tmp_path, capsys):
    _timm()
    reference = _random_timm_model("seresnet18")
    ckpt = tmp_path / "model.safetensors"
    _save_safetensors(reference, ckpt)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "seresnet18", "num_classes": 1000,
                                                      "pretrained_cfg": {"input_size": [3, 224, 224],
                                                                         "crop_pct": 0.875,
                                                                         "interpolation": "bicubic",
                                                                         "mean": [0.5] * 3, "std": [0.5] * 3,
                                                                         "num_classes": 1000}}))
    status, err = _command(capsys, "--checkpoint", ckpt, "--timm-name", "seresnet18",
                           "--output", tmp_path / "out", "--verify")
    assert status == 0, err
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["pretrained_cfg"]["model_kwargs"]["attention_kwargs"] == {"reduction_divisor": 8}
    assert meta["conversion"]["pretrained_cfg_from"] == "config.json next to the checkpoint"
    assert meta["pretrained_cfg"]["mean"] == [0.5] * 3 and meta["pretrained_cfg"]["crop_pct"] == 0.875
    assert meta["conversion"]["verification"]["max_relative_error"] < RTOL
