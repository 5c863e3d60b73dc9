import keras
import numpy as np
import pytest

import keras_attention as ka
from keras_attention.complexity import count_macs, count_params
from keras_attention.models._common import ChannelPadShortcut
from tests.helpers import check_fresh_process_reload, random_images

# Trainable parameters for 1000 classes. Sources: torchvision/timm model definitions
# (identical structure; counted with timm 1.0.31: resnet*, resnext*, seresnet50/101/152,
# seresnext*), which equal the official Caffe/Torch releases (e.g. resnet50 25,557,032,
# SENet's se_resnet50 28,088,024).
IMAGENET_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x4d": 44_177_704,
    "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872,
    "se_resnet152": 66_821_848,
    "se_resnext50_32x4d": 27_559_896,
    "se_resnext101_32x4d": 48_955_416,
    # SE width C // 16 as in the SENet paper (Sec. 3.2); timm rounds it up to a multiple
    # of 8 (4 -> 8 in stage 1), which gives 11,779,624 and 21,960,416. Both are 11.78M /
    # 21.96M as reported (SENet TPAMI Table 10 lists SE-ResNet-18 11.78M, -34 21.96M).
    "se_resnet18": 11_778_592,
    "se_resnet34": 21_958_868,
    # Gather-Excite (Hu et al., NeurIPS 2018), global extent, layers following the official
    # GENet release (see keras_attention/layers/gather_excite.py): GE-theta-minus adds no
    # parameters; GE-theta/GE-theta-plus add 5.55M/8.08M (paper: 31.2M/33.7M in all, rounded).
    "ge_resnet50": 25_557_032,
    "ge_theta_resnet50": 31_106_600,
    "ge_theta_plus_resnet50": 33_637_592,
    # GCNet (Cao et al. 2019), ResNet-50 + GC (r16, c3-c5): 28.08M in the paper.
    "gc_resnet50": 28_078_773,
    "gc_resnet101": 49_337_222,
    # CBAM (Woo et al. 2018) Table 4: ResNet50 + CBAM 28.09M / 3.864 GFLOPs; ResNet101 + CBAM
    # 49.33M / 7.581 GFLOPs (our MACs with the stride on the 1x1: 3.8644 G and 7.5814 G).
    "cbam_resnet50": 28_089_624,
    "cbam_resnet101": 49_330_172,
    # NAM official code: one BatchNorm (gamma, beta) per block on C = 4 x width channels:
    # 2 x (256*3 + 512*4 + 1024*6 + 2048*3) = 30,208 over ResNet-50.
    "nam_resnet50": 25_587_240,
    # ECA (Wang et al. 2020), the released models (github.com/BangguWu/ECANet README):
    # ECA-Net50 k = 3,5,5,7 per stage: 3*3 + 4*5 + 6*5 + 3*7 = 80 parameters ("+80" in the
    # README); ECA-Net101 k = 3,3,5,7: 3*3 + 4*3 + 23*5 + 3*7 = 157.
    "eca_resnet50": 25_557_112,
    "eca_resnet101": 44_549_317,
}

# CIFAR ResNets with option-A shortcuts (He et al. 2016, Sec. 4.2, Table 6: 0.27M, 0.46M,
# 0.66M, 0.85M, 1.7M), 10 classes: 16 + 3 stages x n basic blocks; counted by hand for
# resnet20 (432 + 32 stem, 13,824 + 192 stage 1, 50,688 + 384 stage 2, 202,752 + 768
# stage 3, 650 head = 269,722); the others add 2 blocks per stage per step of n.
CIFAR_PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
                "resnet56": 853_018, "resnet110": 1_727_962}


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMS))
def test_imagenet_parameter_counts(name):
    model = ka.create_model(name)
    assert count_params(model) == IMAGENET_PARAMS[name]


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_cifar_parameter_counts(name):
    assert count_params(ka.create_model(name)) == CIFAR_PARAMS[name]


def test_se_reduction_divisor_matches_timm_rounding():
    # timm's seresnet18 (rd_divisor=8) has 11,779,624 parameters.
    model = ka.create_model("se_resnet18", attention_kwargs={"reduction_divisor": 8})
    assert count_params(model) == 11_779_624


def test_macs_match_papers():
    # SENet paper Table 2: ResNet-50 3.86 GFLOPs, SE-ResNet-50 3.87 (original Caffe models,
    # stride on the first 1x1). With the stride on the 3x3 (torchvision/timm) it is 4.09 G.
    assert count_macs(ka.create_model("resnet50", stride_in_1x1=True)) / 1e9 == pytest.approx(3.86, rel=0.02)
    assert count_macs(ka.create_model("se_resnet50", stride_in_1x1=True)) / 1e9 == pytest.approx(3.87, rel=0.02)
    assert count_macs(ka.create_model("resnet50")) == 4_089_184_256


def test_deterministic_layer_names():
    names = {layer.name for layer in ka.create_model("se_resnet50").layers}
    for expected in ("stem_conv", "stem_bn", "stage1_block0_conv1", "stage1_block0_downsample_conv",
                     "stage4_block2_bn3", "stage3_block5_attention", "head_fc"):
        assert expected in names
    assert [l.name for l in ka.create_model("resnet20").layers] == \
        [l.name for l in ka.create_model("resnet20").layers]


def test_attention_slot_is_after_last_bn_before_add():
    model = ka.create_model("se_resnet20")
    attn = model.get_layer("stage2_block0_attention")
    assert attn._inbound_nodes[0].parent_nodes[0].operation.name == "stage2_block0_bn2"
    add = model.get_layer("stage2_block0_add")
    assert attn.name in [n.operation.name for n in add._inbound_nodes[0].parent_nodes]


def test_attention_stages_gc_default():
    names = {l.name for l in ka.create_model("gc_resnet50").layers}
    assert "stage1_block0_attention" not in names and "stage2_block0_attention" in names


def test_features_and_pooling():
    model = ka.create_model("resnet18", include_top=False, input_shape=(64, 64, 3))
    assert model.output_shape == (None, 2, 2, 512)
    model = ka.create_model("resnet18", include_top=False, pooling="avg", input_shape=(None, None, 3))
    assert tuple(model(random_images((1, 96, 80, 3))).shape) == (1, 512)


def test_option_a_shortcut():
    x = random_images((2, 5, 5, 4))
    y = np.asarray(ChannelPadShortcut(8, 2)(x))
    assert y.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(y[..., 2:6], x[:, ::2, ::2, :])
    assert not y[..., :2].any() and not y[..., 6:].any()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_logits_float32(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = ka.create_model("se_resnet20")
        y = model(random_images((2, 32, 32, 3)))
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert np.isfinite(np.asarray(y)).all()
    finally:
        keras.config.set_dtype_policy(previous)


def test_save_and_reload_in_fresh_process(tmp_path):
    check_fresh_process_reload(ka.create_model("se_resnet20"), random_images((2, 32, 32, 3)), tmp_path)


def test_layer_instance_as_template():
    from keras_attention.layers import SqueezeExcite
    model = ka.create_model("resnet20", attention=SqueezeExcite(reduction_ratio=4))
    layers = [l for l in model.layers if isinstance(l, SqueezeExcite)]
    assert len(layers) == 9 and len({id(l) for l in layers}) == 9
    assert model.get_layer("stage3_block0_attention").fc1.units == 16


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="se_resnet50"):
        ka.create_model("se_resnet05")


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"),
    ({"input_shape": (32, 32)}, "input_shape"),
    ({"pooling": "sum", "include_top": False}, "pooling"),
    ({"attention": "squeeze"}, "Unknown attention"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ka.create_model("resnet20", **kwargs)


def test_list_models():
    names = ka.list_models()
    for required in ["resnet18", "resnet152", "resnext101_32x4d", "se_resnext50_32x4d", "ge_resnet50",
                     "gc_resnet101", "cbam_resnet101", "nam_resnet50", "eca_resnet50", "resnet110",
                     "cbam_resnet56", "eca_resnet20", "nam_resnet32"]:
        assert required in names
    assert ka.list_models("se_resnet*") == sorted(n for n in names if n.startswith("se_resnet"))
    assert "se_resnext50_32x4d" not in ka.list_models("*se_resnet*")


def test_initialisation_differs_per_layer_and_follows_the_seed():
    keras.utils.set_random_seed(1)
    model = ka.create_model("resnet20")
    a = np.asarray(model.get_layer("stage1_block0_conv1").kernel)
    b = np.asarray(model.get_layer("stage1_block1_conv1").kernel)
    assert not np.allclose(a, b), "same-shape convolutions start from identical kernels"
    assert np.std(a) == pytest.approx(np.sqrt(2.0 / (3 * 3 * 16)), rel=0.15)  # He fan-out
    keras.utils.set_random_seed(1)
    np.testing.assert_array_equal(np.asarray(ka.create_model("resnet20").get_layer("stage1_block0_conv1").kernel), a)


# --------------------------------------------------------------------------------------
# A user-given attention replaces the family's attention with that attention's own
# defaults (issue 15, defect 5): the family's attention_kwargs, per-stage attention
# kwargs (ECA's released kernel sizes) and attention-only backbone defaults (GC's
# attention_stages) apply only while the family's attention is kept.

from keras_attention.layers import get_attention  # noqa: E402
from keras_attention.models.resnet import ATTENTION_VARIANTS  # noqa: E402


def _swap_for(prefix):
    """An attention other than the family's, and the registered family that uses it."""
    return "cbam" if ATTENTION_VARIANTS[prefix][0] == "se" else "se"


def _attention_layers(model):
    return [layer for layer in model.layers if layer.name.endswith("_attention")]


def _check_default_attention(layers, swap, **overrides):
    cls = get_attention(swap)
    expected = {k: v for k, v in cls(**overrides).get_config().items() if k != "name"}
    for layer in layers:
        assert type(layer) is cls, f"{layer.name} is {type(layer).__name__}, expected {cls.__name__}"
        assert {k: v for k, v in layer.get_config().items() if k != "name"} == expected, layer.name


@pytest.mark.parametrize("prefix", sorted(ATTENTION_VARIANTS))
def test_swapped_attention_starts_from_its_own_defaults_cifar(prefix):
    swap = _swap_for(prefix)
    model = ka.create_model(f"{prefix}_resnet20", attention=swap)
    layers = _attention_layers(model)
    assert len(layers) == 9  # every block of the 3 x 3 CIFAR ResNet-20
    _check_default_attention(layers, swap)
    # The same network as the registered family of the swapped attention.
    assert count_params(model) == count_params(ka.create_model(f"{swap}_resnet20"))


@pytest.mark.parametrize("name", ["gc_resnet50", "eca_resnet50", "ge_theta_resnet50"])
def test_swapped_attention_drops_family_backbone_options(name):
    # gc_resnet50 has attention only in stages 2-4, eca_resnet50 fixes ECA kernel sizes per
    # stage, ge_theta_resnet50 passes variant="theta": none of it reaches an SE attention.
    model = ka.create_model(name, attention="se", input_shape=(64, 64, 3))
    layers = _attention_layers(model)
    assert len(layers) == 16  # 3 + 4 + 6 + 3 blocks
    _check_default_attention(layers, "se")
    assert count_params(model) == IMAGENET_PARAMS["se_resnet50"]


def test_swapped_attention_takes_the_users_kwargs_and_options():
    model = ka.create_model("ge_theta_resnet20", attention="se", attention_kwargs={"reduction_ratio": 4})
    _check_default_attention(_attention_layers(model), "se", reduction_ratio=4)
    # Backbone options the user gives explicitly are kept with a swapped attention.
    model = ka.create_model("gc_resnet50", attention="se", attention_stages=(2, 3, 4), input_shape=(64, 64, 3))
    names = {layer.name for layer in _attention_layers(model)}
    assert "stage1_block0_attention" not in names and "stage2_block0_attention" in names
    # attention=None gives the plain backbone.
    assert count_params(ka.create_model("ge_theta_resnet20", attention=None)) == CIFAR_PARAMS["resnet20"]


def test_kept_family_attention_keeps_family_options():
    # The family's own attention, named again or left out, keeps the family's kwargs; the
    # user's attention_kwargs are merged over them.
    for kwargs in ({}, {"attention": "ge"}, {"attention": "GE"}):
        model = ka.create_model("ge_theta_resnet20", **kwargs)
        assert {layer.variant for layer in _attention_layers(model)} == {"theta"}
    model = ka.create_model("ge_theta_resnet20", attention_kwargs={"variant": "theta+"})
    assert {layer.variant for layer in _attention_layers(model)} == {"theta+"}
    model = ka.create_model("eca_resnet50", attention="eca", input_shape=(64, 64, 3))
    assert [model.get_layer(f"stage{s}_block0_attention").kernel_size for s in (1, 2, 3, 4)] == [3, 5, 5, 7]
    names = {layer.name for layer in _attention_layers(ka.create_model("gc_resnet50", attention="gc"))}
    assert "stage1_block0_attention" not in names and "stage2_block0_attention" in names


# --------------------------------------------------------------------------------------
# Block and stem options of timm's ByobNet ResNets, SK ResNets and ResNeSt (issue 16).
# Parameter counts and logits against timm: tests/convert/test_timm.py; one model per family
# saved, reloaded and run under mixed precision: tests/models/test_resnet_families.py.

from keras_attention.layers import (BilinearAttentionTransform, GlobalContext, SelectiveKernel,  # noqa: E402
                                    SplitAttention)
from keras_attention.models._common import PaddedMaxPooling2D  # noqa: E402
from keras_attention.models.resnet import (BYOB_ARCHS, BYOB_DEFAULTS, BYOB_VARIANTS, SPATIAL_CONV_ARCHS,  # noqa: E402
                                          build_resnet)

NEW_MODELS = sorted([f"{p}_{a}" for p, (_, _, archs) in BYOB_VARIANTS.items() for a in archs] + list(SPATIAL_CONV_ARCHS))


#: One block per stage: the registered families' structure at a fraction of the build time
#: (these tests run under JAX too, where building a model is slow).
SHALLOW = {"stage_depths": (1, 1, 1, 1), "input_shape": (64, 64, 3)}


def _parent(model, name):
    return model.get_layer(name)._inbound_nodes[0].parent_nodes[0].operation.name


def test_new_models_are_registered():
    assert len(NEW_MODELS) == 15 and set(NEW_MODELS) <= set(ka.list_models())
    assert set(BYOB_ARCHS) == {"resnet33ts", "resnet50t", "resnext26ts", "resnext50ts"}


def test_byobnet_structure():
    model = ka.create_model("gc_resnet33ts", **SHALLOW)
    assert len({layer.name for layer in model.layers if layer.name.endswith("_attention")}) == 4
    # Tiered stem 24-32-64 with SiLU, no max pool: the third conv takes the stride.
    assert [model.get_layer(f"stem_conv{i}").filters for i in (1, 2, 3)] == [24, 32, 64]
    assert [model.get_layer(f"stem_conv{i}").strides for i in (1, 2, 3)] == [(2, 2), (1, 1), (2, 2)]
    assert "stem_pool" not in {layer.name for layer in model.layers}
    assert model.get_layer("stem_silu1").activation is keras.activations.silu
    # The attention follows the 3x3 conv-BN-SiLU, on the bottleneck width (timm attn_last=False).
    attn = model.get_layer("stage3_block0_attention")
    assert isinstance(attn, GlobalContext) and _parent(model, "stage3_block0_attention") == "stage3_block0_silu2"
    assert _parent(model, "stage3_block0_conv3") == "stage3_block0_attention"
    assert attn.fc1.units == 384 // 8 and attn.epsilon == 1e-6 and attn.fusion == "add"
    assert model.get_layer("final_conv").filters == 1280 and _parent(model, "head_pool") == "final_silu"
    assert not np.any(keras.ops.convert_to_numpy(model.get_layer("stage1_block0_bn3").gamma))  # zero_init_last


def test_byobnet_resnext_groups_and_stem_pool():
    model = ka.create_model("bat_resnext26ts", **SHALLOW, attention_kwargs={"block_size": 2})
    # Groups of 32 channels: 2, 4, 8, 16 groups in stages 1-4.
    assert [model.get_layer(f"stage{s}_block0_conv2").groups for s in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert isinstance(model.get_layer("stem_pool"), PaddedMaxPooling2D)  # after SiLU: -inf padding
    assert isinstance(model.get_layer("stage4_block0_attention"), BilinearAttentionTransform)
    assert model.get_layer("stage4_block0_attention").block_size == 2
    # ByobNet weights are for 256 px, the default input (BAT's 8 x 8 blocks need it: 64 ... 8 px stages).
    assert BYOB_DEFAULTS["input_shape"] == (256, 256, 3)
    assert keras.ops.convert_to_numpy(model(random_images((1, 64, 64, 3)))).shape == (1, 1000)


def test_padded_max_pool_after_negative_activations():
    # After SiLU every value can be negative; PyTorch's padding is -inf, never a winning zero.
    x = -np.abs(random_images((1, 4, 6, 2), seed=1)) - 0.1
    y = keras.ops.convert_to_numpy(PaddedMaxPooling2D(3, 2, 1)(x))
    assert y.shape == (1, 2, 3, 2) and np.all(y < 0)
    np.testing.assert_array_equal(y[0, 0, 0], x[0, :2, :2].max(axis=(0, 1)))
    np.testing.assert_array_equal(y[0, 1, 2], x[0, 1:4, 3:6].max(axis=(0, 1)))
    layer = PaddedMaxPooling2D(3, 2, 1)
    assert PaddedMaxPooling2D.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="padding"):
        PaddedMaxPooling2D(3, 2, 3)


def test_spatial_conv_replaces_the_3x3():
    model = ka.create_model("sk_resnet18", **SHALLOW)
    sk = model.get_layer("stage2_block0_conv1")  # basic block: the first 3x3
    assert isinstance(sk, SelectiveKernel) and sk.strides == 2 and sk.filters == 128 and sk.split_input
    names = {layer.name for layer in model.layers}
    assert "stage2_block0_bn1" not in names and "stage2_block0_relu1" not in names
    # The bottleneck's 3x3 (conv2), grouped (SKNet-50 is ResNeXt-50 32x4d with SK convs).
    model = build_resnet("bottleneck", (1, 1), stage_widths=(64, 128), groups=32, base_width=4, spatial_conv="sk",
                         spatial_conv_kwargs={"split_input": False, "reduction_divisor": 32}, input_shape=(64, 64, 3))
    sk = model.get_layer("stage2_block0_conv2")
    assert isinstance(sk, SelectiveKernel) and sk.groups == 32 and sk.strides == 2 and sk.fc_reduce.units == 32
    # ResNeSt: split attention at stride 1, then the 3x3 average pool takes the stride ("avd").
    model = ka.create_model("resnest14d", input_shape=(64, 64, 3))  # one block per stage already
    splat = model.get_layer("stage2_block0_conv2")
    assert isinstance(splat, SplitAttention) and splat.strides == 1 and splat.radix == 2
    assert _parent(model, "stage2_block0_avd_pad") == "stage2_block0_conv2"
    assert model.get_layer("stage2_block0_avd_pool").strides == (2, 2)
    assert "stage1_block0_avd_pool" not in {layer.name for layer in model.layers}  # stride 1: no pool


def test_spatial_conv_kwargs_are_the_familys_until_swapped():
    model = ka.create_model("sk_resnet18", **SHALLOW, spatial_conv_kwargs={"activation": "silu"})
    sk = model.get_layer("stage1_block0_conv1")
    assert sk.activation == "silu" and sk.reduction_ratio == 8 and sk.reduction_divisor == 16
    # Another spatial conv starts from its own defaults; None gives the plain ResNet-18.
    model = ka.create_model("sk_resnet18", **SHALLOW, spatial_conv="splat")
    assert model.get_layer("stage1_block0_conv1").radix == 2
    plain = ka.create_model("sk_resnet18", **SHALLOW, spatial_conv=None)
    assert count_params(plain) == count_params(ka.create_model("resnet18", **SHALLOW))
    # A spatial conv composes with an attention in the slot.
    model = ka.create_model("resnest14d", input_shape=(64, 64, 3), attention="se")
    assert _parent(model, "stage1_block0_attention") == "stage1_block0_bn3"


@pytest.mark.parametrize("kwargs, match", [
    ({"stem_pool": None}, "three-conv stem"),
    ({"stem_pool": "avg"}, "stem_pool"),
    ({"attention_position": "first"}, "attention_position"),
    ({"activation": "swishy"}, "activation"),
    ({"group_size": 24}, "group_size"),
    ({"final_conv_width": 0}, "final_conv_width"),
    ({"spatial_conv": "squeeze"}, "Unknown attention"),
])
def test_invalid_new_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_resnet("bottleneck", (1, 1, 1, 1), input_shape=(64, 64, 3), **kwargs)
