"""DenseNet / DenseNet-BC builders: structure, exact parameter counts, MACs, serialization."""

import math

import keras
import numpy as np
import pytest

from keras_attention.complexity import count_macs
from keras_attention.models.densenet import IMAGENET_BLOCKS, build_densenet, densenet_cifar
from keras_attention.registry import create_model, list_models
from tests.helpers import check_fresh_process_reload, count_trainable_params, random_images


def official_param_count(blocks, k, stem, num_classes, bottleneck=True, compression=0.5):
    """Trainable parameters of the official Torch DenseNet (liuzhuang13/DenseNet
    models/densenet.lua + DenseConnectLayer.lua), counted layer by layer: bias-free
    convolutions, BN (gamma, beta) before every convolution and at the end, FC with bias."""
    c = 2 * k if (bottleneck or stem == "imagenet") else 16
    total = 3 * c * (49 if stem == "imagenet" else 9) + (2 * c if stem == "imagenet" else 0)
    for b, n in enumerate(blocks):
        for _ in range(n):
            total += 2 * c
            total += (c * 4 * k + 2 * 4 * k + 9 * 4 * k * k) if bottleneck else 9 * c * k
            c += k
        if b < len(blocks) - 1:
            out = math.floor(c * compression)
            total += 2 * c + c * out
            c = out
    return total + 2 * c + c * num_classes + num_classes


# Exact counts: torchvision's densenet{121,161,169,201} (its documentation's "params" and
# keras.applications' trainable counts agree); CIFAR: 769,162 is the official Torch
# DenseNet-BC-100-12 for CIFAR-10 (paper Table 2 / README: 0.8M); the others are our
# counts, equal to the official structure's (official_param_count) and to the rounded
# figures of paper Table 2 and the official README (Wide-DenseNet-BC-40-48: 2.7M).
EXPECTED = {
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet161": 28_681_000,
    "densenet_bc_40_12": 176_122,
    "densenet_bc_40_48": 2_733_130,   # README: 2.7M
    "densenet_bc_100_12": 769_162,    # Table 2: 0.8M
    "densenet_bc_250_24": 15_324_406,  # Table 2: 15.3M
    "densenet_bc_190_40": 25_624_430,  # Table 2: 25.6M
}
CIFAR = {"densenet_bc_40_12": (40, 12), "densenet_bc_40_48": (40, 48), "densenet_bc_100_12": (100, 12),
         "densenet_bc_250_24": (250, 24), "densenet_bc_190_40": (190, 40)}
IMAGENET = {"densenet121": (121, 32), "densenet169": (169, 32), "densenet201": (201, 32),
            "densenet161": (161, 48)}


def test_registered_names():
    assert set(list_models("densenet*")) == set(EXPECTED)


def test_expected_counts_follow_the_official_structure():
    for name, (depth, k) in IMAGENET.items():
        assert official_param_count(IMAGENET_BLOCKS[depth], k, "imagenet", 1000) == EXPECTED[name]
    for name, (depth, k) in CIFAR.items():
        n = (depth - 4) // 6
        assert official_param_count((n, n, n), k, "cifar", 10) == EXPECTED[name]
    # plain DenseNets of paper Table 2 (no bottleneck, no compression): 1.0M, 7.0M, 27.2M
    for (depth, k), millions in {(40, 12): 1.0, (100, 12): 7.0, (100, 24): 27.2}.items():
        n = (depth - 4) // 3
        count = official_param_count((n, n, n), k, "cifar", 10, bottleneck=False, compression=1)
        assert round(count / 1e6, 1) == millions


@pytest.mark.parametrize("name", ["densenet121", "densenet_bc_40_12", "densenet_bc_40_48",
                                  "densenet_bc_100_12"])
def test_parameter_counts(name):
    model = create_model(name)
    assert count_trainable_params(model) == EXPECTED[name]
    # depth L counts the convolutions and the FC layer (paper Table 1 / Sec. 4)
    depth = (IMAGENET.get(name) or CIFAR.get(name))[0]
    weighted = [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(weighted) == depth


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet169", "densenet201", "densenet161", "densenet_bc_250_24",
                                  "densenet_bc_190_40"])
def test_parameter_counts_of_the_large_models(name):
    assert count_trainable_params(create_model(name)) == EXPECTED[name]


def test_plain_densenet_cifar():
    model = densenet_cifar(40, 12, bottleneck=False, compression=1.0)
    assert model.name == "densenet_40_12"
    assert count_trainable_params(model) == official_param_count((12, 12, 12), 12, "cifar", 10,
                                                                 bottleneck=False, compression=1)
    assert model.get_layer("stem_conv").filters == 16  # official code: 16 without bottleneck


def test_matches_keras_applications_densenet121():
    """Same weights in keras.applications.DenseNet121 (an independent implementation of
    the same network) and ours give the same logits: structure, padding and ordering agree."""
    ours = create_model("densenet121", input_shape=(64, 64, 3))
    theirs = keras.applications.DenseNet121(weights=None, input_shape=(64, 64, 3),
                                            classifier_activation=None)
    ours_layers = [l for l in ours.layers if l.weights]
    their_layers = [l for l in theirs.layers if l.weights]
    # 120 convolutions + FC, and 121 BNs (stem, 2 per dense layer, 3 transitions, final)
    assert len(ours_layers) == len(their_layers) == 121 + 121
    rng = np.random.default_rng(0)
    for mine, other in zip(ours_layers, their_layers):
        assert type(mine) is type(other)
        weights = []
        for w in other.get_weights():
            if isinstance(other, keras.layers.BatchNormalization):
                weights.append(rng.uniform(0.5, 1.5, w.shape).astype("float32"))  # gamma/var > 0
            else:
                weights.append(w)
        other.set_weights(weights)
        mine.set_weights(weights)
        if isinstance(mine, keras.layers.BatchNormalization):
            mine.epsilon = other.epsilon  # keras.applications uses 1.001e-5 instead of 1e-5
    x = random_images((2, 64, 64, 3), seed=1)
    expected = keras.ops.convert_to_numpy(theirs(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)), expected,
                               atol=1e-4 * np.abs(expected).max(), rtol=1e-4)


def test_layer_names_shapes_and_heads():
    model = create_model("densenet_bc_40_12", input_shape=(32, 32, 3))
    for name in ["stem_conv", "block1_layer1_bn1", "block1_layer1_conv1", "block1_layer1_bn2",
                 "block1_layer1_conv2", "block1_layer6_concat", "transition1_conv", "transition2_pool",
                 "block3_layer6_conv2", "final_bn", "head_pool", "head_fc"]:
        model.get_layer(name)
    assert model.get_layer("block1_layer1_conv1").filters == 48  # 4k bottleneck
    assert model.get_layer("block1_layer6_concat").output.shape[-1] == 24 + 6 * 12
    assert model.get_layer("transition1_conv").filters == 48  # floor(0.5 * 96)
    assert tuple(model.get_layer("final_relu").output.shape) == (None, 8, 8, 132)
    assert model.get_layer("head_fc").dtype_policy.name == "float32"
    assert not any(isinstance(l, keras.layers.Dropout) for l in model.layers)  # off by default
    features = create_model("densenet_bc_40_12", include_top=False)
    assert tuple(features.output.shape) == (None, 8, 8, 132)
    pooled = create_model("densenet121", include_top=False, pooling="max", input_shape=(None, None, 3))
    assert tuple(pooled.output.shape) == (None, 1024)
    imagenet = create_model("densenet121", input_shape=(64, 64, 3), num_classes=7)
    assert tuple(imagenet.get_layer("final_relu").output.shape) == (None, 2, 2, 1024)
    assert tuple(imagenet.output.shape) == (None, 7)
    with_dropout = create_model("densenet_bc_40_12", dropout_rate=0.2)
    # after every convolution but the stem's (official code): 2 per layer, 1 per transition
    assert sum(isinstance(l, keras.layers.Dropout) for l in with_dropout.layers) == 2 * 18 + 2


def test_initialisation():
    model = create_model("densenet_bc_40_12")
    kernel = keras.ops.convert_to_numpy(model.get_layer("block3_layer6_conv2").kernel)
    # He normal over fan-out (3 * 3 * k), official densenet.lua ConvInit
    assert abs(kernel.std() / math.sqrt(2 / (9 * 12)) - 1) < 0.05
    assert not model.get_layer("stem_conv").use_bias
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("head_fc").bias), 0)


def test_training_step_and_mixed_precision():
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = build_densenet(blocks=(2, 2), growth_rate=4, stem="cifar", num_classes=3,
                               input_shape=(8, 8, 3), dropout_rate=0.1, name="tiny")
        assert keras.backend.standardize_dtype(model.output.dtype) == "float32"
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel)
        loss = model.train_on_batch(random_images((4, 8, 8, 3)), np.arange(4) % 3)
        assert np.isfinite(loss)
        assert not np.array_equal(before, keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel))
    finally:
        keras.config.set_dtype_policy(previous)


def test_fresh_process_reload(tmp_path):
    model = build_densenet(blocks=(2, 2), growth_rate=4, stem="cifar", num_classes=3,
                           input_shape=(8, 8, 3), name="tiny")
    check_fresh_process_reload(model, random_images((2, 8, 8, 3)), tmp_path)


def test_multiply_accumulates():
    # torchvision's documentation lists 2.83 "GFLOPS" (multiply-adds) for densenet121
    assert round(count_macs(create_model("densenet121")) / 1e9, 2) == 2.83


@pytest.mark.parametrize("kwargs", [{"growth_rate": 0}, {"compression": 0}, {"compression": 1.5},
                                    {"dropout_rate": 1.0}, {"blocks": ()}, {"stem": "vgg"},
                                    {"pooling": "mean", "include_top": False},
                                    {"num_classes": 0}, {"init_channels": -1}])
def test_invalid_arguments(kwargs):
    args = {"blocks": (1, 1), "growth_rate": 4, "stem": "cifar", "input_shape": (8, 8, 3), **kwargs}
    with pytest.raises(ValueError, match="must"):
        build_densenet(**args)


def test_invalid_cifar_depth():
    with pytest.raises(ValueError, match="depth = 6 n \\+ 4"):
        densenet_cifar(41, 12)
    with pytest.raises(ValueError, match="depth = 3 n \\+ 4"):
        densenet_cifar(42, 12, bottleneck=False)
