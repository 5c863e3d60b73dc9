import numpy as np
import pytest

import keras_attention as ka
from keras_attention.complexity import count_params
from keras_attention.layers import NonLocalBlock
from tests.helpers import random_images


def _nl_params(c):
    d = c // 2  # theta/phi/g: C*d + d; W_z: d*C + C; BN gamma/beta: 2C
    return 3 * (c * d + d) + d * c + c + 2 * c


def test_parameter_count():
    # resnet50 (25,557,032, torchvision/official) + 2 non-local blocks at C=512 (res3) and
    # 3 at C=1024 (res4), inner width C/2 as in the official release: 32,915,496.
    expected = 25_557_032 + 2 * _nl_params(512) + 3 * _nl_params(1024)
    assert expected == 32_915_496
    assert count_params(ka.create_model("nl_resnet50")) == expected


def test_placement_every_other_block_of_res3_res4():
    model = ka.create_model("nl_resnet50", input_shape=(64, 64, 3))
    nl = [l for l in model.layers if isinstance(l, NonLocalBlock)]
    assert [l.name for l in nl] == ["stage2_block1_nonlocal", "stage2_block3_nonlocal",
                                    "stage3_block1_nonlocal", "stage3_block3_nonlocal",
                                    "stage3_block5_nonlocal"]
    # Between residual blocks: fed by the block's output ReLU, feeding the next block.
    assert nl[0]._inbound_nodes[0].parent_nodes[0].operation.name == "stage2_block1_out"
    assert nl[0].inner_channels == 256 and nl[2].inner_channels == 512


def test_identity_at_init_equals_resnet50():
    # Non-local blocks start as the identity, so with the same backbone weights the
    # network computes exactly resnet50.
    nl = ka.create_model("nl_resnet50", input_shape=(64, 64, 3), num_classes=7)
    base = ka.create_model("resnet50", input_shape=(64, 64, 3), num_classes=7)
    for layer in base.layers:
        if layer.weights:
            layer.set_weights(nl.get_layer(layer.name).get_weights())
    x = random_images((2, 64, 64, 3), seed=3)
    np.testing.assert_allclose(np.asarray(nl(x, training=False)), np.asarray(base(x, training=False)),
                               rtol=1e-4, atol=1e-4)


def test_options_reach_the_blocks():
    model = ka.create_model("nl_resnet50", input_shape=(64, 64, 3), include_top=False,
                            nonlocal_blocks={4: (2,)}, nonlocal_kwargs={"mode": "dot_product", "subsample": 1})
    nl = [l for l in model.layers if isinstance(l, NonLocalBlock)]
    assert [l.name for l in nl] == ["stage4_block2_nonlocal"]
    assert nl[0].mode == "dot_product" and model.output_shape == (None, 2, 2, 2048)


def test_invalid_mode():
    with pytest.raises(ValueError, match="concatenation"):
        ka.create_model("nl_resnet50", nonlocal_kwargs={"mode": "gauss"})


def test_attention_maps_available():
    model = ka.create_model("nl_resnet50", input_shape=(64, 64, 3), num_classes=3, return_attention=True)
    logits, *maps = model(random_images((1, 64, 64, 3)))
    # res3 at 8x8 (64 positions, 16 after 2x2 pooling), res4 at 4x4 (16 -> 4).
    assert tuple(logits.shape) == (1, 3)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 16)] * 2 + [(1, 16, 4)] * 3
    np.testing.assert_allclose(np.asarray(maps[0]).sum(-1), 1.0, rtol=1e-5)
    plain = ka.create_model("nl_resnet50", input_shape=(64, 64, 3))
    assert tuple(plain.get_layer("stage3_block5_nonlocal").output[1].shape) == (None, 16, 4)
