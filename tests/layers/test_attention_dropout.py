import json

import keras
import numpy as np
import pytest

from keras_attention.layers import ADCM, CBAM, AttentionDropout, SpatialAttention, SqueezeExcite, create_attention
from tests.helpers import random_images, run_layer_test


def test_contract_adcm(tmp_path):
    run_layer_test(ADCM, {"reduction_ratio": 4, "seed": 3}, [(2, 8, 8, 16), (1, 5, 7, 16)], tmp_path=tmp_path)


def test_contract_adcm_return_attention(tmp_path):
    run_layer_test(ADCM, {"reduction_ratio": 4, "return_attention": True, "drop": "high"}, [(2, 6, 6, 16)],
                   tmp_path=tmp_path, fresh_process=False, mixed_precision=False)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_adcm_inference_is_cbam():
    layer = ADCM(reduction_ratio=4, zero_init_gamma=False, return_attention=True)
    x = random_images((2, 5, 6, 16), seed=1)
    layer.build(x.shape)
    layer.spatial.norm.beta.assign([0.3])  # make the spatial map non-trivial
    y, mc, ms = [keras.ops.convert_to_numpy(t) for t in layer(x, training=False)]
    # Same weights in a CBAM layer: ADCM at inference is CBAM exactly.
    cbam = CBAM(reduction_ratio=4, zero_init_gamma=False)
    cbam.build(x.shape)
    cbam.channel.set_weights(layer.channel.get_weights())
    cbam.spatial.set_weights(layer.spatial.get_weights())
    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(cbam(x, training=False)), rtol=1e-5, atol=1e-6)
    # The returned maps are the CBAM maps (paper Eq. 2-3, official channel order [max, mean]).
    ch = layer.channel
    mlp = lambda v: np.maximum(v @ keras.ops.convert_to_numpy(ch.fc1.kernel) + keras.ops.convert_to_numpy(ch.fc1.bias), 0) \
        @ keras.ops.convert_to_numpy(ch.fc2.kernel) + keras.ops.convert_to_numpy(ch.fc2.bias)  # noqa: E731
    expected_mc = _sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))[:, None, None, :]
    np.testing.assert_allclose(mc, expected_mc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, x * expected_mc * ms, rtol=1e-5, atol=1e-5)
    assert ms.shape == (2, 5, 6, 1) and not np.allclose(ms, ms.mean())


def test_adcm_training_drops_channels_and_positions():
    layer = ADCM(reduction_ratio=4, channel_rate=0.5, position_rate=0.0, seed=0)
    x = random_images((4, 6, 6, 32), seed=2) + 3.0  # positive: a dropped unit reads exactly 0
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    dropped = np.all(y == 0, axis=(1, 2))  # whole channels
    assert 0 < dropped.mean() < 1
    assert np.all((y == 0).sum(axis=(1, 2)) % 36 == 0)  # never partial channels


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
        kept = y[:, 0, 0, :][~dropped]
        np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)  # inverted-dropout scaling
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
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        AttentionDropout(rate=1.0)
    with pytest.raises(ValueError, match="channel attention"):
        AttentionDropout()([np.ones((1, 4, 4, 8), "float32"), np.ones((1, 4, 4, 8), "float32")])
    with pytest.raises(ValueError, match="two inputs"):
        AttentionDropout()(np.ones((1, 4, 4, 8), "float32"))


@pytest.mark.parametrize("kwargs", [{"channel_rate": -0.1}, {"position_rate": 1}, {"drop": "max"},
                                    {"reduction_ratio": 0}, {"spatial_kernel_size": 0},
                                    {"spatial_kernel_size": 4}])
def test_adcm_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
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
