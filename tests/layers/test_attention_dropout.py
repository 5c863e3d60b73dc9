import json

import keras
import numpy as np
import pytest

from keras_attention.layers import ADCM, AttentionDropout, SpatialAttention, SqueezeExcite, create_attention
from keras_attention.layers.attention_dropout import (MAX_DROP_PROBABILITY, drop_probabilities,
                                                      global_stochastic_pool)
from tests.helpers import random_images, run_layer_test


def test_contract_adcm(tmp_path):
    run_layer_test(ADCM, {"reduction_ratio": 4, "seed": 3}, [(2, 8, 8, 16), (1, 5, 7, 16)], tmp_path=tmp_path)


def test_contract_adcm_return_attention(tmp_path):
    run_layer_test(ADCM, {"reduction_ratio": 4, "return_attention": True, "drop": "high",
                          "position_channels": 2, "position_kernel_size": 5}, [(2, 6, 6, 16)],
                   tmp_path=tmp_path, fresh_process=False, mixed_precision=False)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_adcm_structure_is_cad_then_pad():
    # CAD: shared MLP C -> C/r -> C with biases; PAD: 1x1 conv C -> 3 and 3x3 conv 3 -> 1, with biases.
    layer = ADCM(reduction_ratio=4, name="m")
    layer.build((None, 6, 6, 16))
    shapes = {w.path.split("/", 1)[1].removeprefix("m_"): tuple(w.shape) for w in layer.trainable_weights}
    assert shapes == {"channel_fc1/kernel": (16, 4), "channel_fc1/bias": (4,),
                      "channel_fc2/kernel": (4, 16), "channel_fc2/bias": (16,),
                      "position_reduce/kernel": (1, 1, 16, 3), "position_reduce/bias": (3,),
                      "position_conv/kernel": (3, 3, 3, 1), "position_conv/bias": (1,)}
    assert layer.count_params() == (16 * 4 + 4) + (4 * 16 + 16) + (16 * 3 + 3) + (9 * 3 + 1) == 227


def test_adcm_inference_matches_the_equations():
    layer = ADCM(reduction_ratio=4, return_attention=True)
    x = random_images((2, 5, 6, 16), seed=1)
    layer.build(x.shape)
    rng = np.random.default_rng(0)
    for sub in (layer.channel_fc1, layer.channel_fc2, layer.position_reduce, layer.position_conv):
        sub.bias.assign(rng.normal(0, 0.5, sub.bias.shape).astype("float32"))  # biases are used
    y, mc, ms = [_np(t) for t in layer(x, training=False)]
    w1, b1 = _np(layer.channel_fc1.kernel), _np(layer.channel_fc1.bias)
    w2, b2 = _np(layer.channel_fc2.kernel), _np(layer.channel_fc2.bias)
    mlp = lambda v: np.maximum(v @ w1 + b1, 0) @ w2 + b2  # noqa: E731
    a = np.maximum(x, 0)
    stochastic = (a ** 2).sum(axis=(1, 2)) / a.sum(axis=(1, 2))  # test-time stochastic pooling
    expected_mc = _sigmoid(mlp(x.max(axis=(1, 2))) + mlp(x.mean(axis=(1, 2))) + mlp(stochastic))
    np.testing.assert_allclose(mc, expected_mc[:, None, None, :], rtol=1e-5, atol=1e-6)
    xc = x * expected_mc[:, None, None, :]
    reduced = xc @ _np(layer.position_reduce.kernel)[0, 0] + _np(layer.position_reduce.bias)
    conv = _np(keras.ops.conv(reduced, _np(layer.position_conv.kernel), padding="same")) + _np(layer.position_conv.bias)
    np.testing.assert_allclose(ms, _sigmoid(conv), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, xc * _sigmoid(conv), rtol=1e-5, atol=1e-5)
    assert ms.shape == (2, 5, 6, 1) and not np.allclose(ms, ms.mean())


def test_global_stochastic_pool():
    x = np.zeros((1, 2, 2, 3), "float32")
    x[0, :, :, 0] = [[1.0, 3.0], [-2.0, 0.0]]  # positive part 1 and 3: sampled 1/4 and 3/4 of the time
    x[0, :, :, 1] = -1.0  # nothing positive: 0
    x[0, :, :, 2] = 2.0
    np.testing.assert_allclose(_np(global_stochastic_pool(x)), [[10 / 4, 0, 2]], rtol=1e-6)
    seed = keras.random.SeedGenerator(0)
    draws = np.concatenate([_np(global_stochastic_pool(np.tile(x, (1000, 1, 1, 1)), True, seed)) for _ in range(4)])
    assert set(np.unique(draws[:, 0])) == {1.0, 3.0} and np.all(draws[:, 1:] == [0, 2])
    assert (draws[:, 0] == 3.0).mean() == pytest.approx(0.75, abs=0.03)  # 4000 draws, SE 0.007
    assert draws[:, 0].mean() == pytest.approx(10 / 4, abs=0.06)  # the test-time value is the mean


def test_adcm_training_drops_channels_and_positions():
    layer = ADCM(reduction_ratio=4, channel_rate=0.5, position_rate=0.0, seed=0)
    x = random_images((4, 6, 6, 32), seed=2) + 3.0  # positive: a dropped unit reads exactly 0
    y = _np(layer(x, training=True))
    dropped = np.all(y == 0, axis=(1, 2))  # whole channels
    assert 0 < dropped.mean() < 1
    assert np.all((y == 0).sum(axis=(1, 2)) % 36 == 0)  # never partial channels
    layer = ADCM(reduction_ratio=4, channel_rate=0.0, position_rate=0.5, seed=0)
    zero = _np(layer(x, training=True)) == 0
    assert np.all(zero.all(-1) == zero.any(-1)) and 0 < zero.all(-1).mean() < 1  # whole positions


def _monte_carlo_check(layer, x1, att1, draws, rate, drop, axes):
    """Mean of ``draws`` training passes (one call on the sample tiled over the batch) equals
    the inference output per unit, within 5 Monte-Carlo standard errors.

    A unit kept with probability 1 - d and scaled by 1 / (1 - d) has mean x and standard
    deviation |x| sqrt(d / (1 - d)); the mean of M draws has standard error that / sqrt(M).
    """
    x = np.tile(x1, (draws, 1, 1, 1))
    att = np.tile(att1, (draws, 1, 1, 1))
    train = _np(layer([x, att], training=True)).mean(axis=0)
    infer = _np(layer([x1, att1], training=False))[0]
    np.testing.assert_array_equal(infer, x1[0])
    d = np.broadcast_to(_np(drop_probabilities(att1, rate, drop, axes))[0], x1[0].shape)
    se = np.abs(x1[0]) * np.sqrt(d / (1 - d) / draws)
    err = np.abs(train - infer)
    assert np.all(err <= 5 * se + 1e-5 * np.abs(infer)), \
        f"E[train] differs from inference by up to {(err / np.maximum(se, 1e-12)).max():.1f} standard errors"
    return train / infer


@pytest.mark.parametrize("drop", ["low", "high"])
def test_attention_dropout_expected_training_output_equals_inference(drop):
    # Channels at attention 0.05 and 0.95 are dropped with d = 0.57 and 0.03 ("low"); with one
    # common 1 / (1 - rate) scale their expected training outputs were 0.61x and 1.39x the
    # inference output. Per-unit scaling 1 / (1 - d) makes both 1x.
    draws, c = 20000, 8
    att1 = np.array([0.05] * 4 + [0.95] * 4, "float32").reshape(1, 1, 1, c)
    x1 = random_images((1, 3, 3, c), seed=3)
    ratio = _monte_carlo_check(AttentionDropout(rate=0.3, drop=drop, seed=0), x1, att1, draws, 0.3, drop, (3,))
    assert np.abs(ratio.mean(axis=(0, 1)) - 1).max() < 0.05
    # Spatial map: random attention per position, positions dropped in every channel.
    att1 = random_images((1, 4, 5, 1), seed=4, low=0, high=1)
    x1 = random_images((1, 4, 5, 3), seed=5)
    _monte_carlo_check(AttentionDropout(rate=0.4, drop=drop, seed=1), x1, att1, draws, 0.4, drop, (1, 2, 3))


def test_adcm_expected_training_output_equals_inference():
    # With each channel constant over H x W, stochastic pooling is deterministic, so the maps
    # are the same in training and inference; PAD's position dropout then averages out to
    # the inference output. (With channel dropout on too, PAD's map depends on which channels
    # were dropped, as any layer after a dropout does, and the expectation is not exact.)
    draws = 8000
    x1 = np.broadcast_to(random_images((1, 1, 1, 8), seed=6), (1, 4, 4, 8)).copy()
    layer = ADCM(reduction_ratio=2, channel_rate=0.0, position_rate=0.5, seed=2, return_attention=True)
    infer, _, ms = [_np(t) for t in layer(x1, training=False)]
    train = _np(layer(np.tile(x1, (draws, 1, 1, 1)), training=True)[0]).mean(axis=0)
    d = np.broadcast_to(_np(drop_probabilities(ms, 0.5, "low", (1, 2, 3)))[0], x1[0].shape)
    se = np.abs(infer[0]) * np.sqrt(d / (1 - d) / draws)
    assert np.all(np.abs(train - infer[0]) <= 5 * se + 1e-5 * np.abs(infer[0]))


def test_drop_probabilities_are_clipped_and_outputs_finite():
    # One channel with attention 0 among seven at 1: "low" gives it rate * 8 = 2.4 -> clipped.
    att = np.array([0.0] + [1.0] * 7, "float32").reshape(1, 1, 1, 8)
    d = _np(drop_probabilities(att, 0.3, "low", (3,)))
    assert d.max() == pytest.approx(MAX_DROP_PROBABILITY) and d.min() == 0
    random_att = random_images((64, 1, 1, 8), seed=7, low=0, high=1)
    for drop in ("low", "high", "uniform"):
        d = _np(drop_probabilities(random_att, MAX_DROP_PROBABILITY, drop, (3,)))
        assert 0 <= d.min() and d.max() <= MAX_DROP_PROBABILITY + 1e-7
    x = np.ones((4000, 1, 1, 8), "float32")
    y = _np(AttentionDropout(rate=0.3, seed=5)([x, np.tile(att, (4000, 1, 1, 1))], training=True))
    assert np.all(np.isfinite(y))
    kept = y[:, 0, 0, 0][y[:, 0, 0, 0] != 0]
    np.testing.assert_allclose(kept, 1 / (1 - MAX_DROP_PROBABILITY), rtol=1e-5)  # scale at most 10
    assert len(kept) / 4000 == pytest.approx(1 - MAX_DROP_PROBABILITY, abs=0.02)
    with pytest.raises(ValueError, match=r"\[0, 0.9\]"):
        AttentionDropout(rate=0.95)


def test_attention_dropout_is_identity_at_inference():
    layer = AttentionDropout(rate=0.5)
    x = random_images((2, 4, 4, 8))
    att = random_images((2, 1, 1, 8), low=0, high=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([x, att], training=False)), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([x, att])), x)


def test_attention_dropout_follows_the_attention():
    # Channel attention: half the channels at 0.05, half at 0.95. "low" drops mostly the
    # first half, "high" mostly the second, and on average `rate` of all channels.
    n, c = 2000, 8
    att = np.tile(np.array([0.05] * 4 + [0.95] * 4, "float32"), (n, 1)).reshape(n, 1, 1, c)
    x = np.ones((n, 2, 2, c), "float32")
    for drop, low_more in [("low", True), ("high", False)]:
        y = keras.ops.convert_to_numpy(AttentionDropout(rate=0.3, drop=drop, seed=1)([x, att], training=True))
        dropped = (y[:, 0, 0, :] == 0)
        assert dropped.mean() == pytest.approx(0.3, abs=0.02)
        assert (dropped[:, :4].mean() > dropped[:, 4:].mean()) == low_more
        # d = rate * w / mean(w): w = 0.95 vs 0.05 -> 0.57 vs 0.03 (and vice versa).
        assert dropped[:, :4].mean() == pytest.approx(0.57 if low_more else 0.03, abs=0.03)
        # Per-unit inverted dropout: a kept unit is scaled by 1 / (1 - d) of its own d.
        d = np.array([0.57] * 4 + [0.03] * 4 if low_more else [0.03] * 4 + [0.57] * 4)
        scale = np.broadcast_to(1 / (1 - d), dropped.shape)
        np.testing.assert_allclose(y[:, 0, 0, :][~dropped], scale[~dropped], rtol=1e-5)
    y = keras.ops.convert_to_numpy(AttentionDropout(rate=0.3, drop="uniform", seed=2)([x, att], training=True))
    assert (y[:, 0, 0, :4] == 0).mean() == pytest.approx(0.3, abs=0.03)


def test_attention_dropout_spatial_map_drops_positions_in_all_channels():
    x = np.ones((3, 8, 8, 5), "float32")
    att = random_images((3, 8, 8, 1), low=0, high=1)
    y = keras.ops.convert_to_numpy(AttentionDropout(rate=0.4, seed=0)([x, att], training=True))
    zero = (y == 0)
    assert np.all(zero.all(-1) == zero.any(-1))  # a dropped position is dropped in every channel
    assert 0.2 < zero.all(-1).mean() < 0.6


def test_attention_dropout_serialization_and_errors():
    layer = AttentionDropout(rate=0.2, drop="high", seed=4)
    config = layer.get_config()
    assert AttentionDropout.from_config(config).get_config() == config
    json.dumps(keras.saving.serialize_keras_object(layer))
    with pytest.raises(ValueError, match="low"):
        AttentionDropout(drop="random")
    with pytest.raises(ValueError, match=r"\[0, 0.9\]"):
        AttentionDropout(rate=1.0)
    with pytest.raises(ValueError, match="channel attention"):
        AttentionDropout()([np.ones((1, 4, 4, 8), "float32"), np.ones((1, 4, 4, 8), "float32")])
    with pytest.raises(ValueError, match="two inputs"):
        AttentionDropout()(np.ones((1, 4, 4, 8), "float32"))


@pytest.mark.parametrize("kwargs", [{"channel_rate": -0.1}, {"position_rate": 1}, {"channel_rate": 0.95},
                                    {"drop": "max"}, {"reduction_ratio": 0}, {"position_kernel_size": 0},
                                    {"position_kernel_size": 4}, {"position_channels": 0},
                                    {"position_channels": 2.5}])
def test_adcm_invalid_arguments(kwargs):
    with pytest.raises((ValueError, TypeError)):
        ADCM(**kwargs)


def test_rcan_channel_attention_is_squeeze_excite():
    # RCAN CALayer(channel=64, reduction=16): AdaptiveAvgPool2d(1) -> Conv2d(64, 4, 1, bias)
    # -> ReLU -> Conv2d(4, 64, 1, bias) -> Sigmoid -> x * y, written here with 1x1
    # convolutions over the pooled 1x1 map; SqueezeExcite(r=16) with the same weights.
    se = create_attention("se", reduction_ratio=16)
    x = random_images((2, 6, 5, 64), seed=7)
    y = keras.ops.convert_to_numpy(se(x))
    w1, b1 = keras.ops.convert_to_numpy(se.fc1.kernel).reshape(1, 1, 64, 4), keras.ops.convert_to_numpy(se.fc1.bias)
    w2, b2 = keras.ops.convert_to_numpy(se.fc2.kernel).reshape(1, 1, 4, 64), keras.ops.convert_to_numpy(se.fc2.bias)
    pooled = x.mean(axis=(1, 2), keepdims=True)  # (N, 1, 1, C)
    conv1 = keras.ops.conv(pooled, w1, padding="same") + b1
    conv2 = keras.ops.conv(np.maximum(keras.ops.convert_to_numpy(conv1), 0), w2, padding="same") + b2
    np.testing.assert_allclose(y, x * _sigmoid(keras.ops.convert_to_numpy(conv2)), rtol=1e-5, atol=1e-6)
    assert se.count_params() == 64 * 4 + 4 + 4 * 64 + 64 == 580  # CALayer(64, 16) parameters
    assert isinstance(se, SqueezeExcite)


def test_restoration_spatial_attention_is_cbam_spatial_attention():
    # Restoration-style spatial attention: [max_c, mean_c] -> 3x3 conv with bias b ->
    # sigmoid -> scale. CBAM's SpatialAttention(kernel_size=3) at inference with its BN set
    # to an affine map equal to "+ b" computes the same function.
    sa = SpatialAttention(kernel_size=3, zero_init_gamma=False)
    x = random_images((2, 6, 5, 8), seed=8)
    sa.build(x.shape)
    b = 0.4
    sa.norm.moving_mean.assign([-b])
    sa.norm.moving_variance.assign([1.0 - sa.norm.epsilon])
    kernel = keras.ops.convert_to_numpy(sa.conv.kernel)
    pooled = np.concatenate([x.max(-1, keepdims=True), x.mean(-1, keepdims=True)], -1)
    conv = keras.ops.convert_to_numpy(keras.ops.conv(pooled, kernel, padding="same")) + b
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sa(x, training=False)), x * _sigmoid(conv), rtol=1e-5, atol=1e-6)
