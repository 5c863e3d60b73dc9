"""``explain.attention_maps`` on registry models: one forward pass over the model's own layers
gives the model's outputs and, for every attention layer (found by type), exactly the maps
that layer computes on its input inside the model. Backend-agnostic."""

import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention import explain
from keras_attention.data import Preprocessing, array_source
from keras_attention.models.residual_attention import build_residual_attention_network
from keras_attention.models.resnet import CIFAR_DEFAULTS, build_resnet
from tests.helpers import random_images

np_ = keras.ops.convert_to_numpy
QUERIES = ((0.5, 0.5), (0.25, 0.75))

def _cifar(attention, **kwargs):
    """The CIFAR ResNet builder with one block per stage (three attention layers): the registry's
    builder and attention slot at a third of resnet20's depth, to keep the JAX/PyTorch runs short."""
    return build_resnet("basic", (1, 1, 1), **CIFAR_DEFAULTS, attention=attention, **kwargs)


MODELS = {
    "se": lambda: ka.create_model("se_resnet20"),  # a registry model as it is
    "cbam": lambda: _cifar("cbam"),
    "gc": lambda: _cifar("gc"),
    "ge": lambda: _cifar("ge"),
    "ge_extent2": lambda: _cifar("ge", attention_kwargs={"extent": 2}),
    "eca": lambda: _cifar("eca"),
    "nam": lambda: _cifar("nam"),
    "sagan": lambda: _cifar("sagan", attention_kwargs={"reduction_ratio": 4}),
    "danet_pam": lambda: _cifar("danet_pam", attention_kwargs={"reduction_ratio": 4}),
    "danet_cam": lambda: _cifar("danet_cam"),
    "adcm": lambda: _cifar("adcm", attention_kwargs={"reduction_ratio": 4}),
    "stn": lambda: _cifar("stn", attention_stages=(3,)),
    "nonlocal": lambda: ka.create_model("nl_resnet50", stage_widths=(4, 8, 16, 32), num_classes=10,
                                        input_shape=(64, 64, 3)),
    "residual_attention": lambda: build_residual_attention_network(
        (1, 0, 0), base_width=2, stem="cifar", num_classes=10, input_shape=(32, 32, 3), name="ran_tiny"),
}


def _intermediate(model, layers, x):
    """Each layer's input and output inside ``model`` (one plain functional sub-model)."""
    first = lambda t: t[0] if isinstance(t, (list, tuple)) else t  # noqa: E731
    sub = keras.Model(model.input, {layer.name: {"in": layer.input, "out": first(layer.output)} for layer in layers})
    result = sub.predict_on_batch(x)
    return [(keras.ops.convert_to_tensor(result[layer.name]["in"]), np.asarray(result[layer.name]["out"]))
            for layer in layers]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_maps_are_the_layers_own_from_one_forward_pass(kind):
    keras.utils.set_random_seed(0)
    model = MODELS[kind]()
    x = random_images((2, *model.input_shape[1:]), seed=1)
    probe = explain.probe_model(model, queries=QUERIES)
    layers = explain.attention_layers(model)
    assert layers, kind
    # one pass: every attention layer appears once, wrapped; never called on its own
    wrapped = [layer for layer in probe.layers if layer.name.endswith("_maps")]
    assert [w.wrapped for w in wrapped] == layers
    assert not any(layer in probe.layers for layer in layers)
    assert {id(w) for w in probe.weights} == {id(w) for w in model.weights}  # shared, not copied

    result = explain.attention_maps(model, x, queries=QUERIES, batch_size=1)
    expected = np_(model(x, training=False))  # batches of 1 vs 2: kernels may sum in another order
    np.testing.assert_allclose(result.outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert [e.layer for e in result] == [layer.name for layer in layers]
    for entry, layer, (layer_in, layer_out) in zip(result, layers, _intermediate(model, layers, x)):
        own_out, own_maps = layer.call_with_maps(layer_in, training=False, queries=QUERIES)
        own_out = own_out[0] if isinstance(own_out, (list, tuple)) else own_out
        np.testing.assert_allclose(np_(own_out), layer_out, rtol=1e-5, atol=2e-5)
        assert set(entry.maps) == set(own_maps), (entry.layer, set(entry.maps))
        for key, value in own_maps.items():
            assert entry.maps[key].dtype == np.float32
            # batch 1 vs batch 2: float32 kernels may sum in another order
            np.testing.assert_allclose(entry.maps[key], np_(value), rtol=1e-4, atol=5e-5,
                                       err_msg=f"{entry.layer} {key}")
        assert entry.kind == type(layer).__name__
        assert entry.input_shape == tuple(layer.input.shape[1:])


def test_entries_say_layer_stage_block_and_shapes():
    keras.utils.set_random_seed(0)
    model = ka.create_model("cbam_resnet20")
    result = explain.attention_maps(model, random_images((3, 32, 32, 3)))
    assert len(result) == 9 and result.outputs.shape == (3, 10)
    first, last = result[0], result["stage3_block2_attention"]
    assert (first.layer, first.stage, first.block) == ("stage1_block0_attention", 1, 0)
    assert (last.stage, last.block, last.kind) == (3, 2, "CBAM")
    assert last.maps["channel_gate"].shape == (3, 64) and last.maps["spatial_gate"].shape == (3, 8, 8)
    assert first.channel_gate is first.maps["channel_gate"]
    with pytest.raises(KeyError):
        result["nope"]


def test_pairwise_maps_hold_only_the_asked_queries():
    keras.utils.set_random_seed(0)
    model = MODELS["nonlocal"]()
    result = explain.attention_maps(model, random_images((2, 64, 64, 3)))  # default: the centre
    entry = result["stage2_block1_nonlocal"]
    assert entry.queries == ((0.5, 0.5),)
    assert entry.maps["attention"].shape == (2, 1, 4, 4)  # 8x8 map, 2x2 sub-sampled keys
    entry = explain.attention_maps(model, random_images((2, 64, 64, 3)), queries=QUERIES)[0]
    assert entry.maps["attention"].shape == (2, 2, 4, 4)
    np.testing.assert_allclose(entry.maps["attention"].sum(axis=(2, 3)), 1.0, rtol=1e-5)


def test_layer_selection():
    model = ka.create_model("se_resnet20")
    assert [layer.name for layer in explain.attention_layers(model, ["stage3_*"])] == [
        f"stage3_block{b}_attention" for b in range(3)]
    assert len(explain.attention_layers(model, "SqueezeExcite")) == 9
    result = explain.attention_maps(model, random_images((1, 32, 32, 3)), layers=["stage2_block1_attention"])
    assert [e.layer for e in result] == ["stage2_block1_attention"]
    with pytest.raises(ValueError, match="selects no attention layer.*stage2_block1_attention"):
        explain.attention_layers(model, ["stage2_block1_atention"])
    assert explain.attention_layers(ka.create_model("resnet20")) == []


def test_raw_images_with_preprocessing():
    model = ka.create_model("se_resnet20")
    pre = Preprocessing(input_size=(32, 32, 3), crop_pct=1.0, mean=(0.5,) * 3, std=(0.25,) * 3, recipe="none")
    raw = np.random.default_rng(0).integers(0, 256, (2, 40, 36, 3), dtype=np.uint8)
    by_raw = explain.attention_maps(model, raw, preprocessing=pre)
    views = ka.data.loader.eval_views(raw, pre)
    np.testing.assert_allclose(by_raw.outputs, explain.attention_maps(model, views).outputs, rtol=1e-6)
    with pytest.raises(ValueError, match="preprocessing"):
        explain.attention_maps(model, raw[0])


def test_excitation_per_class_is_the_mean_gate_of_each_class():
    keras.utils.set_random_seed(0)
    model = ka.create_model("se_resnet20")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 9, 9, 0])
    names = [f"c{i}" for i in range(10)]
    source = array_source("toy", "test", images, labels, names)
    pre = Preprocessing(input_size=(32, 32, 3), crop_pct=1.0, mean=(0.5,) * 3, std=(0.25,) * 3, recipe="none")
    result = explain.excitation_per_class(model, source, pre, batch_size=5)
    assert len(result.layers) == 9 and result.map_name[result.layers[0]] == "gate"
    np.testing.assert_array_equal(result.counts, np.bincount(labels, minlength=10))
    maps = explain.attention_maps(model, images, preprocessing=pre)
    for entry in maps:
        gates = entry.maps["gate"]
        for c in (0, 1, 2, 9):
            np.testing.assert_allclose(result.per_class[entry.layer][c], gates[labels == c].mean(0), rtol=1e-5)
        assert np.isnan(result.per_class[entry.layer][5]).all()  # no images of class 5
        np.testing.assert_allclose(result.overall[entry.layer], gates.mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match="per-channel gate"):
        explain.excitation_per_class(ka.create_model("resnet20"), source, pre)
