"""Every attention layer's ``call_with_maps``: the maps' shapes and ranges, and that they are
the tensors the layer used: its output is rebuilt from its input and the maps alone (or, for
the pairwise layers, from the maps and the layer's own value/output convolutions), and
``call`` returns exactly ``call_with_maps(...)[0]``. Backend-agnostic (run under
``KERAS_BACKEND=jax|torch`` too)."""

import keras
import numpy as np
import pytest

from keras_attention.layers import (ADCM, CBAM, ECA, NAM, BilinearAttentionTransform, ChannelAttention,
                                    DANetChannelAttention, DANetPositionAttention, DualAttentionHead,
                                    GatherExcite, GlobalContext, NonLocalBlock, ResidualAttentionModule,
                                    SelectiveKernel, SelfAttention2D, SpatialAttention, SpatialTransformer,
                                    SplitAttention, SqueezeExcite)
from keras_attention.layers.spatial_transformer import bilinear_sample
from keras_attention.layers._common import query_indices
from tests.helpers import random_images

np_ = keras.ops.convert_to_numpy
RTOL, ATOL = 1e-5, 1e-5
QUERIES = ((0.5, 0.5), (0.0, 0.0), (1.0, 0.3))


def _randomise_norms(layer, seed=0):
    """Non-trivial BatchNorm statistics and scales (several layers start with gamma = 0)."""
    rng = np.random.default_rng(seed)
    for sub in layer._flatten_layers():
        if isinstance(sub, keras.layers.BatchNormalization):
            sub.gamma.assign(rng.uniform(0.5, 1.5, sub.gamma.shape).astype("float32"))
            sub.beta.assign(rng.normal(0, 0.2, sub.beta.shape).astype("float32"))
            sub.moving_mean.assign(rng.normal(0, 0.2, sub.moving_mean.shape).astype("float32"))
            sub.moving_variance.assign(rng.uniform(0.5, 2, sub.moving_variance.shape).astype("float32"))


def _run(layer, x, **kwargs):
    """Builds ``layer`` (norms randomised), checks ``call == call_with_maps()[0]``, returns
    ``(output, maps)`` as NumPy."""
    layer(x)  # build
    _randomise_norms(layer)
    if isinstance(getattr(layer, "gamma", None), keras.Variable):
        layer.gamma.assign(0.7)  # SAGAN / DANet residual scale, initialised to 0
    y = layer(x, training=False) if "training" in layer.call.__code__.co_varnames else layer(x)
    y2, maps = layer.call_with_maps(keras.ops.convert_to_tensor(x), training=False, **kwargs)
    first = lambda t: t[0] if isinstance(t, (tuple, list)) else t  # noqa: E731
    y, y2 = np_(first(y)), np_(first(y2))
    np.testing.assert_array_equal(y, y2)  # call is call_with_maps(...)[0]
    return y, {k: np_(v) for k, v in maps.items()}


def _in_unit(*arrays):
    """Gates are sigmoids: in [0, 1] (float32 saturates at the ends) and not constant."""
    for a in arrays:
        assert np.all(a >= 0) and np.all(a <= 1) and a.max() > a.min(), (a.min(), a.max())


def test_squeeze_excite_and_eca_gates():
    x = random_images((2, 5, 6, 16), seed=1)
    for layer in (SqueezeExcite(reduction_ratio=4), ECA()):
        y, maps = _run(layer, x)
        assert set(maps) == {"gate"} and maps["gate"].shape == (2, 16)
        _in_unit(maps["gate"])
        np.testing.assert_allclose(y, x * maps["gate"][:, None, None, :], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("variant,extent", [("theta-", "global"), ("theta-", 2), ("theta", 4),
                                            ("theta+", "global")])
def test_gather_excite_gate_at_its_extent(variant, extent):
    x = random_images((2, 8, 8, 16), seed=2)
    layer = GatherExcite(variant=variant, extent=extent, reduction_ratio=4)
    y, maps = _run(layer, x)
    gate = maps["gate"]
    _in_unit(gate)
    if extent == "global":
        assert gate.shape == (2, 16)
        np.testing.assert_allclose(y, x * gate[:, None, None, :], rtol=RTOL, atol=ATOL)
    else:
        assert gate.shape == (2, 8 // extent, 8 // extent, 16)
        up = np_(layer._upsample(keras.ops.convert_to_tensor(gate), keras.ops.convert_to_tensor(x)))
        np.testing.assert_allclose(y, x * up, rtol=RTOL, atol=ATOL)
        # nearest-neighbour: each input cell reads the gate of its extent window
        np.testing.assert_allclose(up[:, ::extent, ::extent], gate, rtol=0, atol=0)


@pytest.mark.parametrize("fusion", ["add", "mul"])
def test_global_context_weights_are_the_softmax_used(fusion):
    x = random_images((2, 6, 5, 16), seed=3)
    layer = GlobalContext(reduction_ratio=4, fusion=fusion)
    layer(x)
    rng = np.random.default_rng(0)
    for w in (layer.fc2.kernel, layer.fc2.bias, layer.conv_mask.kernel):  # zero-initialised / tiny
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    y, maps = _run(layer, x)
    weights, transform = maps["context_weights"], maps["transform"]
    assert weights.shape == (2, 6, 5) and transform.shape == (2, 16)
    assert np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    # the layer's own transform of the context pooled with these weights
    context = np.einsum("nhw,nhwc->nc", weights, x)
    t = np_(layer.fc2(keras.ops.relu(layer.norm(layer.fc1(keras.ops.convert_to_tensor(context))))))
    np.testing.assert_allclose(transform, t, rtol=1e-4, atol=1e-5)
    expected = x + t[:, None, None, :] if fusion == "add" else x / (1 + np.exp(-t[:, None, None, :]))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_global_context_avg_has_no_weights():
    y, maps = _run(GlobalContext(reduction_ratio=4, context_modeling="avg"), random_images((1, 4, 4, 8)))
    assert set(maps) == {"transform"}


def test_cbam_and_its_parts():
    x = random_images((2, 7, 6, 16), seed=4)
    y, maps = _run(CBAM(reduction_ratio=4, spatial_kernel_size=3), x)
    cg, sg = maps["channel_gate"], maps["spatial_gate"]
    assert cg.shape == (2, 16) and sg.shape == (2, 7, 6)
    _in_unit(cg, sg)
    np.testing.assert_allclose(y, x * cg[:, None, None, :] * sg[..., None], rtol=RTOL, atol=ATOL)
    y, maps = _run(ChannelAttention(reduction_ratio=4), x)
    np.testing.assert_allclose(y, x * maps["gate"][:, None, None, :], rtol=RTOL, atol=ATOL)
    y, maps = _run(SpatialAttention(kernel_size=3), x)
    assert maps["gate"].shape == (2, 7, 6)
    np.testing.assert_allclose(y, x * maps["gate"][..., None], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spatial", [False, True])
def test_nam_channel_weights_and_gate(spatial):
    x = random_images((2, 4, 5, 8), seed=5)
    layer = NAM(spatial=spatial)
    y, maps = _run(layer, x)
    w = maps["channel_weights"]
    assert w.shape == (2, 8)
    gamma = np.abs(np_(layer.channel_norm.gamma))
    np.testing.assert_allclose(w, np.broadcast_to(gamma / gamma.sum(), (2, 8)), rtol=1e-6)
    _in_unit(maps["mean_gate"])
    if not spatial:  # y = gate * x: the gate is y / x, its spatial mean is mean_gate
        np.testing.assert_allclose((y / x).mean(axis=(1, 2)), maps["mean_gate"], rtol=1e-4, atol=1e-5)
    else:
        assert maps["pixel_weights"].shape == (2, 4, 5) and maps["mean_pixel_gate"].shape == (2, 4, 5)
        np.testing.assert_allclose(maps["pixel_weights"].sum(axis=(1, 2)), 1.0, rtol=1e-5)
        _in_unit(maps["mean_pixel_gate"])


def _rows(x, queries):
    h, w = x.shape[1:3]
    return np_(query_indices(queries, h, w))


@pytest.mark.parametrize("subsample", [1, 2])
def test_non_local_query_rows(subsample):
    x = random_images((2, 6, 8, 8), seed=6)
    layer = NonLocalBlock(reduction_channels=4, subsample=subsample)
    y, maps = _run(layer, x, queries=QUERIES)
    att = maps["attention"]
    kh, kw = 6 // subsample, 8 // subsample
    assert att.shape == (2, 3, kh, kw)
    np.testing.assert_allclose(att.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    _, full = layer.call_with_maps(keras.ops.convert_to_tensor(x), training=False)
    full = np_(full["attention"])
    assert full.shape == (2, 48, kh * kw)
    rows = _rows(x, QUERIES)
    assert list(rows) == [3 * 8 + 4, 0, 5 * 8 + 2]
    np.testing.assert_allclose(att.reshape(2, 3, -1), full[:, rows], rtol=0, atol=0)
    # the output at each query position is x_i + BN(W_z sum_j a_ij g(x_j)): the maps are the weights used
    pooled = layer.pool(x) if subsample > 1 else x
    g = np_(layer.g(pooled)).reshape(2, kh * kw, -1)
    mixed = np.einsum("nqk,nkd->nqd", att.reshape(2, 3, -1), g)[:, :, None, :]
    z = np_(layer.bn(layer.out_conv(keras.ops.convert_to_tensor(mixed)), training=False))[:, :, 0]
    flat_x, flat_y = x.reshape(2, 48, -1), y.reshape(2, 48, -1)
    np.testing.assert_allclose(flat_y[:, rows], flat_x[:, rows] + z, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls,kwargs", [(SelfAttention2D, {"subsample": 2, "value_ratio": 2}),
                                        (DANetPositionAttention, {})])
def test_sagan_and_danet_position_query_rows(cls, kwargs):
    x = random_images((2, 6, 6, 16), seed=7)
    layer = cls(reduction_ratio=4, **kwargs)
    y, maps = _run(layer, x, queries=QUERIES)
    att = maps["attention"]
    s = kwargs.get("subsample", 1)
    assert att.shape == (2, 3, 6 // s, 6 // s)
    np.testing.assert_allclose(att.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    value = layer.value(x)
    if s > 1:
        value = layer.pool(value)
    o = np.einsum("nqk,nkd->nqd", att.reshape(2, 3, -1), np_(value).reshape(2, (6 // s) ** 2, -1))
    if layer.output_conv:
        o = np_(layer.out(keras.ops.convert_to_tensor(o[:, :, None, :])))[:, :, 0]
    rows = _rows(x, QUERIES)
    gamma = float(np_(layer.gamma))
    np.testing.assert_allclose(y.reshape(2, 36, -1)[:, rows], x.reshape(2, 36, -1)[:, rows] + gamma * o,
                               rtol=1e-4, atol=1e-5)


def test_danet_channel_attention_and_head():
    x = random_images((2, 5, 5, 8), seed=8)
    layer = DANetChannelAttention()
    y, maps = _run(layer, x)
    att = maps["attention"]
    assert att.shape == (2, 8, 8)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
    out = np.einsum("npi,nji->npj", x.reshape(2, 25, 8), att).reshape(x.shape)
    np.testing.assert_allclose(y, x + float(np_(layer.gamma)) * out, rtol=1e-4, atol=1e-5)

    head = DualAttentionHead(reduction_ratio=2, return_attention=True)
    y, maps = _run(head, random_images((2, 6, 6, 16), seed=9), queries=QUERIES)
    assert maps["position_attention"].shape == (2, 3, 6, 6) and maps["channel_attention"].shape == (2, 8, 8)
    outputs = head(random_images((2, 6, 6, 16), seed=9), training=False)  # (main, position map, channel map)
    rows = _rows(np.zeros((1, 6, 6, 1)), QUERIES)
    np.testing.assert_allclose(maps["position_attention"].reshape(2, 3, -1), np_(outputs[1])[:, rows], atol=1e-7)
    np.testing.assert_allclose(maps["channel_attention"], np_(outputs[2]), atol=1e-7)


def test_residual_attention_mask():
    x = random_images((2, 8, 8, 16), seed=10)
    layer = ResidualAttentionModule(num_pools=2)
    y, maps = _run(layer, x)
    mask = maps["mask"]
    assert mask.shape == (2, 8, 8, 16)
    _in_unit(mask)
    trunk = layer._run(layer.trunk, layer._run(layer.pre, x, False), False)
    expected = np_(layer._run(layer.post, trunk * (1 + keras.ops.convert_to_tensor(mask)), False))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    with_mask = ResidualAttentionModule.from_config({**layer.get_config(), "return_attention": True})
    with_mask(x)
    with_mask.set_weights(layer.get_weights())
    np.testing.assert_allclose(np_(with_mask(x, training=False)[1]), mask, atol=1e-7)


def test_spatial_transformer_grid_and_output():
    x = random_images((2, 8, 8, 3), seed=11)
    layer = SpatialTransformer(transform="attention")
    layer(x)
    layer.regressor.bias.assign(np.array([0.5, 0.2, -0.3], "float32"))  # zoom in, shift
    y, maps = _run(layer, x)
    assert maps["theta"].shape == (2, 2, 3) and maps["grid"].shape == (2, 8, 8, 2)
    np.testing.assert_allclose(maps["theta"][0], [[0.5, 0, 0.2], [0, 0.5, -0.3]], atol=1e-6)
    np.testing.assert_array_equal(maps["output"], y)
    grid = maps["grid"]
    np.testing.assert_allclose(grid[:, 0, 0], [[-0.5 + 0.2, -0.5 - 0.3]] * 2, atol=1e-6)
    resampled = np_(bilinear_sample(x, grid.reshape(2, -1, 2), 8, 8))
    np.testing.assert_allclose(y, resampled, rtol=1e-5, atol=1e-6)


def test_adcm_gates():
    x = random_images((2, 6, 6, 16), seed=12)
    y, maps = _run(ADCM(reduction_ratio=4), x)
    cg, pg = maps["channel_gate"], maps["position_gate"]
    assert cg.shape == (2, 16) and pg.shape == (2, 6, 6)
    _in_unit(cg, pg)
    np.testing.assert_allclose(y, x * cg[:, None, None, :] * pg[..., None], rtol=1e-4, atol=1e-5)


def test_every_registered_attention_layer_has_maps():
    from keras_attention.layers import ATTENTION_LAYERS
    for name, cls in ATTENTION_LAYERS.items():
        assert callable(getattr(cls, "call_with_maps", None)), name
        assert cls.MAPS, name


@pytest.mark.parametrize("queries", [[], [(0.5, 1.5)], [(0.5,)], "centre"])
def test_bad_queries(queries):
    layer = NonLocalBlock(reduction_channels=2)
    with pytest.raises(ValueError, match="queries"):
        layer.call_with_maps(keras.ops.convert_to_tensor(random_images((1, 4, 4, 4))), queries=queries)


@pytest.mark.parametrize("split_input,strides", [(True, 1), (False, 2)])
def test_selective_kernel_path_weights(split_input, strides):
    x = random_images((2, 6, 6, 8), seed=13)
    layer = SelectiveKernel(filters=8, strides=strides, split_input=split_input, reduction_channels=4)
    y, maps = _run(layer, x)
    weights = maps["path_weights"]
    assert weights.shape == (2, 2, 8) and np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    parts = np.split(x, 2, axis=-1) if split_input else [x, x]
    branches = [np_(layer._branch(i, keras.ops.convert_to_tensor(p), False)) for i, p in enumerate(parts)]
    expected = sum(weights[:, m, None, None, :] * branches[m] for m in range(2))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("radix,groups", [(2, 1), (2, 2), (1, 1)])
def test_split_attention_split_weights(radix, groups):
    x = random_images((2, 5, 5, 8), seed=14)
    layer = SplitAttention(groups=groups, radix=radix)
    y, maps = _run(layer, x)
    weights = maps["split_weights"]
    assert weights.shape == (2, radix, 8)
    if radix > 1:  # softmax over the splits
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    else:
        _in_unit(weights)
    splits = np_(keras.activations.get(layer.activation)(layer.bn0(
        layer.conv(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])), training=False)))
    splits = splits.reshape(2, 5, 5, radix, 8)
    np.testing.assert_allclose(y, (splits * weights[:, None, None]).sum(axis=3), rtol=1e-4, atol=1e-5)


def test_bilinear_attention_transforms():
    x = random_images((2, 4, 6, 16), seed=15)
    layer = BilinearAttentionTransform(block_size=2, groups=2, reduction_channels=4)
    y, maps = _run(layer, x)
    p, q = maps["row_transform"], maps["column_transform"]
    assert p.shape == q.shape == (2, 2, 2, 2) and np.all(p > 0) and np.all(q > 0)
    np.testing.assert_allclose(p.sum(axis=3), 1.0, rtol=1e-5)  # rows of P
    np.testing.assert_allclose(q.sum(axis=2), 1.0, rtol=1e-5)  # columns of Q
    # y = x + f((P kron I) u (Q kron I)) per channel, with the P and Q of its group
    u = np_(keras.ops.relu(layer.bn1(layer.conv1(x), training=False)))
    mixed = np.empty_like(u)
    for n in range(2):
        for c in range(4):
            g = c // 2
            mixed[n, :, :, c] = np.kron(p[n, g], np.eye(2)) @ u[n, :, :, c] @ np.kron(q[n, g], np.eye(3))
    z = keras.ops.relu(layer.ba_bn2(layer.ba_conv2(mixed), training=False))
    z = np_(keras.ops.relu(layer.bn2(layer.conv2(z), training=False)))
    np.testing.assert_allclose(y, x + z, rtol=1e-4, atol=1e-4)
