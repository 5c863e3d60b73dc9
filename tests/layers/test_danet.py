import keras
import numpy as np
import pytest

from keras_attention.layers import (DANetChannelAttention, DANetPositionAttention, DualAttentionHead,
                                    create_attention)
from tests.helpers import random_images, run_layer_test

SHAPES = [(2, 8, 8, 16), (1, 6, 10, 16), (2, 3, 5, 16)]


def test_contract_position(tmp_path):
    run_layer_test(DANetPositionAttention, {}, SHAPES, tmp_path=tmp_path, identity_at_init=True)


def test_contract_channel(tmp_path):
    run_layer_test(DANetChannelAttention, {}, SHAPES, tmp_path=tmp_path, identity_at_init=True)


def test_contract_head(tmp_path):
    # The auxiliary classifiers (conv6/conv7) are trained by their own losses in DANet,
    # so the main output's loss alone does not reach them.
    run_layer_test(DualAttentionHead, {"num_classes": 5, "return_branches": True}, SHAPES[:2],
                   tmp_path=tmp_path, expected_output_shape=lambda s: (*s[:3], 5),
                   no_gradient_weights=("conv6", "conv7"))
    run_layer_test(DualAttentionHead, {}, SHAPES[:1], tmp_path=tmp_path, fresh_process=False,
                   expected_output_shape=lambda s: (*s[:3], 4))


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_position_attention_matches_official_computation():
    layer = DANetPositionAttention(return_attention=True)
    x = random_images((2, 5, 4, 16), seed=4)
    layer.build(x.shape)
    layer.gamma.assign(0.5)
    y, att = layer(x)
    # PAM_Module.forward on NCHW tensors, transcribed to NumPy.
    conv = lambda sub: np.einsum("nhwc,cd->ndhw", x, keras.ops.convert_to_numpy(sub.kernel)[0, 0]) + \
        keras.ops.convert_to_numpy(sub.bias)[None, :, None, None]  # noqa: E731
    n, c, h, w = 2, 16, 5, 4
    proj_query = conv(layer.query).reshape(n, -1, h * w).transpose(0, 2, 1)
    proj_key = conv(layer.key).reshape(n, -1, h * w)
    attention = _softmax(proj_query @ proj_key)
    proj_value = conv(layer.value).reshape(n, -1, h * w)
    out = (proj_value @ attention.transpose(0, 2, 1)).reshape(n, c, h, w)
    expected = 0.5 * out + x.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(att), attention, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), expected.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    assert layer.query.filters == 2 and layer.value.filters == 16 and layer.query.use_bias


def test_channel_attention_matches_official_computation():
    layer = DANetChannelAttention(return_attention=True)
    x = random_images((2, 5, 4, 6), seed=5) * 0.3
    layer.build(x.shape)
    layer.gamma.assign(0.8)
    y, att = layer(x)
    n, c = 2, 6
    a = x.transpose(0, 3, 1, 2).reshape(n, c, -1)  # CAM_Module.forward
    energy = a @ a.transpose(0, 2, 1)
    attention = _softmax(energy.max(-1, keepdims=True) - energy)
    expected = (0.8 * (attention @ a) + a).reshape(n, c, 5, 4).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(att), attention, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), expected, rtol=1e-4, atol=1e-5)
    assert tuple(att.shape) == (2, 6, 6)
    assert [w.name for w in layer.trainable_weights] == ["gamma"]


def test_head_parameter_count_matches_official():
    # DANetHead(2048, 19 classes): conv5a/conv5c 3x3 2048->512 + BN; PAM(512): Q, K 512->64
    # with bias, V 512->512 with bias, gamma; CAM: gamma; conv51/52 3x3 512->512 + BN;
    # conv6/7/8 1x1 512->19 with bias.
    head = DualAttentionHead(num_classes=19)
    head.build((None, 8, 8, 2048))
    expected = (2 * (9 * 2048 * 512 + 2 * 512) + 2 * (512 * 64 + 64) + 512 * 512 + 512 + 1 + 1
                + 2 * (9 * 512 * 512 + 2 * 512) + 3 * (512 * 19 + 19))
    assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == expected == 23_954_619


def test_head_outputs_and_attention_maps():
    head = DualAttentionHead(num_classes=3, return_branches=True, return_attention=True, subsample=2)
    outputs = head(random_images((2, 8, 6, 16)), training=False)
    assert [tuple(o.shape) for o in outputs] == [(2, 8, 6, 3)] * 3 + [(2, 48, 12), (2, 4, 4)]
    main, position, channel = [keras.ops.convert_to_numpy(o) for o in outputs[:3]]
    assert not np.allclose(main, position) and not np.allclose(main, channel)


def test_position_subsampled_56x56_batch8_runs():
    layer = create_attention("danet_pam", subsample=2, return_attention=True)
    y, att = layer(np.zeros((8, 56, 56, 64), "float32"))
    assert tuple(y.shape) == (8, 56, 56, 64) and tuple(att.shape) == (8, 3136, 784)


@pytest.mark.parametrize("cls,kwargs", [(DANetPositionAttention, {"reduction_ratio": 0}),
                                        (DualAttentionHead, {"dropout_rate": 1.0}),
                                        (DualAttentionHead, {"num_classes": 0}),
                                        (DualAttentionHead, {"subsample": -1})])
def test_invalid_arguments(cls, kwargs):
    with pytest.raises(ValueError, match="must be"):
        cls(**kwargs)


def test_bad_inputs():
    for layer in (DANetPositionAttention(), DANetChannelAttention(), DualAttentionHead()):
        with pytest.raises(ValueError, match="4D input"):
            layer(np.zeros((2, 16), "float32"))
