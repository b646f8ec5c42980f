"""The plain/residual builder: paper sizes, torchvision compatibility, skip variants, validation."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch import nn

from reslab.errors import ConfigError
from reslab.models import (
    Head,
    LinearSkipUnit,
    Network,
    PostActUnit,
    PreActUnit,
    Stem,
    Unit,
    ZeroPadSubsample,
    build_network,
    classifier_head,
    count_flops,
    count_parameters,
    model_summary,
    weighted_depth,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
RESNET20 = 269_722


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def on_meta(**kwargs) -> Network:
    """Build without allocating weights: sizes and MACs only need shapes."""
    with torch.device("meta"):
        return build_network(**kwargs)


# --- paper sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth, params",
    [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962)],
)
def test_cifar_resnet_option_a_has_paper_parameter_count_and_plain_matches(depth, params):
    assert count_parameters(on_meta(depth=depth, shortcut="A", num_classes=10)) == params
    assert count_parameters(on_meta(depth=depth, shortcut="none", num_classes=10)) == params


@pytest.mark.parametrize(
    "depth, params",
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)],
)
def test_imagenet_resnet_option_b_has_torchvision_parameter_count(depth, params):
    net = on_meta(depth=depth, shortcut="B", num_classes=1000, input_size=224)
    assert count_parameters(net) == params
    assert net.depth == weighted_depth(net) == depth


@pytest.mark.parametrize("depth, params", [(18, 11_515_688), (34, 21_623_848)])
def test_imagenet_plain_equals_resnet_option_a(depth, params):
    for shortcut in ("none", "A"):
        assert count_parameters(on_meta(depth=depth, shortcut=shortcut, num_classes=1000, input_size=224)) == params


@pytest.mark.parametrize("depth, gmacs", [(18, 1.814), (34, 3.664), (50, 4.089)])
def test_imagenet_macs_match_torchvision_metadata(depth, gmacs):
    net = on_meta(depth=depth, shortcut="B", num_classes=1000, input_size=224)
    assert count_flops(net, (3, 224, 224)) / 1e9 == pytest.approx(gmacs, rel=0.03)


def test_flops_on_cpu_equal_flops_on_meta_and_restore_train_mode():
    net = build_network(depth=20)
    net.train()
    net.layer1[0].bn1.eval()  # a submodule in another mode must keep it
    macs = count_flops(net, (3, 32, 32))
    assert macs == count_flops(on_meta(depth=20), (1, 3, 32, 32))
    assert 40e6 < macs < 42e6  # ResNet-20 is about 41 M multiply-adds
    assert net.training and net.layer1[1].training and not net.layer1[0].bn1.training


def test_model_summary_names_stages_and_totals():
    text = model_summary(build_network(depth=20), (3, 32, 32))
    assert "depth 20" in text
    assert f"{RESNET20:,}" in text
    for stage in ("layer1", "layer2", "layer3"):
        assert stage in text


# --- torchvision compatibility ---------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_loads_strictly_and_gives_equal_logits(depth):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    net = build_network(depth=depth, shortcut="B", num_classes=1000, input_size=224).eval()
    net.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), reference(x), atol=1e-5)


def test_head_is_the_fc_layer():
    net = build_network(depth=8)
    assert classifier_head(net) is net.fc


# --- skip variants ---------------------------------------------------------------------------

# ResNet-20 (CIFAR, option A, 10 classes) BN parameters: stem 2*16, then six BNs per stage of
# 2*16, 2*32, 2*64 channels; conv output channels (biases without BN) are half of that.
BN_PARAMS = 2 * 16 + 6 * (2 * 16 + 2 * 32 + 2 * 64)
# 1x1 projection (conv + BN) parameters where ResNet-20 changes shape, and on every other skip
PROJ_WHERE_SHAPE_CHANGES = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
PROJ_ELSEWHERE = 3 * (16 * 16 + 2 * 16) + 2 * (32 * 32 + 2 * 32) + 2 * (64 * 64 + 2 * 64)

VARIANTS = {
    "paper": ({}, RESNET20, 9),
    "span1": ({"skip_span": 1}, RESNET20, 18),
    "span2": ({"skip_span": 2}, RESNET20, 9),
    "span3": ({"skip_span": 3}, RESNET20, 6),
    "span4_remainder": ({"skip_span": 4}, RESNET20, 6),
    "weight_fixed_0.5": ({"skip_weight": 0.5}, RESNET20, 9),
    "weight_learned": ({"skip_weight": "learned"}, RESNET20 + 9, 9),
    "weight_learned_span1": ({"skip_weight": "learned", "skip_span": 1}, RESNET20 + 18, 18),
    "weight_projection": (
        {"skip_weight": "projection"},
        RESNET20 + PROJ_WHERE_SHAPE_CHANGES + PROJ_ELSEWHERE,
        9,
    ),
    "shortcut_B": ({"shortcut": "B"}, RESNET20 + PROJ_WHERE_SHAPE_CHANGES, 9),
    "shortcut_C": ({"shortcut": "C"}, RESNET20 + PROJ_WHERE_SHAPE_CHANGES + PROJ_ELSEWHERE, 9),
    "source_Z": ({"skip_source": "Z"}, RESNET20, 9),
    "source_Z_span3": ({"skip_source": "Z", "skip_span": 3}, RESNET20, 6),
    # BNs move from conv outputs to conv inputs: stem BN (-32), narrower BN in front of the two
    # widening convs (-32, -64), final BN before pooling (+128): the same total
    "preact": ({"preact": True}, RESNET20 - 32 - 32 - 64 + 128, 9),
    # pre-activation projections carry no BN of their own
    "preact_B": ({"preact": True, "shortcut": "B"}, RESNET20 + PROJ_WHERE_SHAPE_CHANGES - 2 * 32 - 2 * 64, 9),
    "norm_none": ({"norm": "none"}, RESNET20 - BN_PARAMS // 2, 9),
    "norm_none_preact": ({"norm": "none", "preact": True}, RESNET20 - BN_PARAMS // 2, 9),
    "plain": ({"shortcut": "none"}, RESNET20, 9),
    "plain_preact": ({"shortcut": "none", "preact": True}, RESNET20, 9),
    "zero_init": ({"zero_init_residual": True}, RESNET20, 9),
    # 9n+2 with n=1: stem 3*16*9+32; units 16-16-64, 64-32-128, 128-64-256 (1x1, 3x3, 1x1 + BNs); fc 256*10+10
    "bottleneck_cifar_11": ({"depth": 11, "block": "bottleneck"}, 84_762, 3),
    "bottleneck_cifar_11_preact": ({"depth": 11, "block": "bottleneck", "preact": True}, None, 3),
    "imagenet_18_preact_small_input": (
        {"style": "imagenet", "depth": 18, "preact": True, "width": 8},
        None,
        8,
    ),
    "imagenet_50_Z_stride_in_1x1": (
        {"style": "imagenet", "depth": 50, "skip_source": "Z", "stride_in_1x1": True, "width": 4},
        None,
        16,
    ),
    "explicit_stages": ({"stages": [1, 2]}, None, 3),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_and_has_expected_size(name):
    kwargs, params, units = VARIANTS[name]
    torch.manual_seed(0)
    net = build_network(**{"input_size": 16, **kwargs})
    if params is not None:
        assert count_parameters(net) == params
    # every unit is an element of a stage `layer<k>` (the gradient-norm callback relies on it)
    stages = [child for child_name, child in net.named_children() if child_name.startswith("layer")]
    assert all(isinstance(stage, nn.Sequential) for stage in stages)
    assert sum(len(stage) for stage in stages) == units
    assert all(isinstance(unit, Unit) for stage in stages for unit in stage)

    logits = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_span_regroups_layers_and_keeps_depth():
    net = build_network(depth=32, skip_span=3)  # 10 conv layers per stage -> units of 3, 3, 3, 1
    for stage in net.stages():
        assert [unit.span for unit in stage] == [3, 3, 3, 1]
    assert net.depth == weighted_depth(net) == 32


def test_plain_net_is_resnet_with_zero_skip_weight():
    torch.manual_seed(0)
    plain = build_network(depth=20, shortcut="none").eval()
    zero_skip = build_network(depth=20, shortcut="A", skip_weight=0.0).eval()
    identity_skip = build_network(depth=20, shortcut="A").eval()
    zero_skip.load_state_dict(plain.state_dict(), strict=True)
    identity_skip.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(zero_skip(x), plain(x), atol=1e-6)
        assert not torch.allclose(identity_skip(x), plain(x), atol=1e-3)


def test_option_a_subsamples_and_zero_pads():
    x = torch.randn(2, 4, 6, 6)
    out = ZeroPadSubsample(stride=2, extra_channels=3)(x)
    assert out.shape == (2, 7, 3, 3)
    assert torch.equal(out[:, :4], x[:, :, ::2, ::2])
    assert not out[:, 4:].any()


def _eval_unit(**kwargs):
    torch.manual_seed(0)
    net = build_network(depth=8, **kwargs).eval()
    for m in net.modules():  # non-trivial BN statistics so a wrong order would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.layer1[0], torch.randn(2, 16, 8, 8)


def test_unit_skip_from_y_adds_the_input_before_the_last_activation():
    unit, x = _eval_unit()
    assert isinstance(unit, PostActUnit)
    relu = torch.relu
    expected = relu(unit.bn2(unit.conv2(relu(unit.bn1(unit.conv1(x))))) + x)
    with torch.no_grad():
        assert torch.allclose(unit(x), expected, atol=1e-6)


def test_unit_skip_from_z_carries_the_pre_activation():
    unit, z = _eval_unit(skip_source="Z")
    assert isinstance(unit, LinearSkipUnit)
    relu = torch.relu
    expected = unit.bn2(unit.conv2(relu(unit.bn1(unit.conv1(relu(z)))))) + z
    with torch.no_grad():
        assert torch.allclose(unit(z), expected, atol=1e-6)


def test_preact_unit_is_bn_relu_conv_and_net_ends_with_bn_relu():
    unit, x = _eval_unit(preact=True)
    assert isinstance(unit, PreActUnit)
    relu = torch.relu
    expected = unit.conv2(relu(unit.bn2(unit.conv1(relu(unit.bn1(x)))))) + x
    with torch.no_grad():
        assert torch.allclose(unit(x), expected, atol=1e-6)
    net = build_network(depth=8, preact=True)
    assert "bn1" not in dict(net.named_children()) and isinstance(net.final_bn, nn.BatchNorm2d)
    assert "final_bn" not in dict(build_network(depth=8).named_children())


STAGES = ["layer1", "layer2", "layer3"]


@pytest.mark.parametrize(
    "kwargs, stem, head",
    [
        ({}, ["conv1", "bn1", "relu"], ["avgpool", "flatten", "fc"]),
        ({"shortcut": "none", "skip_source": "Z"}, ["conv1", "bn1", "relu"], ["avgpool", "flatten", "fc"]),
        ({"skip_source": "Z"}, ["conv1", "bn1"], ["final_relu", "avgpool", "flatten", "fc"]),
        ({"preact": True}, ["conv1"], ["final_bn", "final_relu", "avgpool", "flatten", "fc"]),
        ({"norm": "none", "preact": True}, ["conv1"], ["final_bn", "final_relu", "avgpool", "flatten", "fc"]),
    ],
)
def test_stem_and_head_are_named_parts_that_keep_torchvision_layer_names(kwargs, stem, head):
    torch.manual_seed(0)
    net = build_network(depth=8, input_size=8, **kwargs).eval()
    assert [name for name, _ in net.stem().named_children()] == stem
    assert [name for name, _ in net.head().named_children()] == head
    # the parts' layers are the network's own children, in forward order, with no part prefix
    assert [name for name, _ in net.named_children()] == stem + STAGES + head
    assert all(layer is getattr(net, name) for name, layer in net.head().named_children())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net.head()(nn.Sequential(*net.stages())(net.stem()(x))), net(x))


@pytest.mark.parametrize("style, size", [("imagenet", 16), ("cifar", 64)])
def test_stem_and_head_work_alone(style, size):
    stem = Stem(style=style, in_channels=3, width=8, norm="bn", order="post")
    # ImageNet style: 7x7/2 conv, then 3x3/2 max pool; CIFAR style: 3x3/1 conv
    assert [name for name, _ in stem.named_children()][-1] == ("maxpool" if style == "imagenet" else "relu")
    assert stem(torch.zeros(1, 3, 64, 64)).shape == (1, 8, size, size)
    head = Head(in_channels=8, num_classes=3, norm="bn", order="pre").eval()
    assert head(torch.zeros(2, 8, 4, 4)).shape == (2, 3)
    net = on_meta(depth=18, input_size=224) if style == "imagenet" else on_meta(depth=20)
    assert [name for name, _ in net.stem().named_children()] == [name for name, _ in stem.named_children()]


def test_learned_skip_weight_is_one_trainable_scalar_per_unit():
    net = build_network(depth=8, skip_weight="learned")
    weight = dict(net.named_parameters())["layer2.0.skip_weight"]
    assert weight.shape == () and weight.item() == 1.0
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert weight.grad is not None and weight.grad != 0


def test_zero_init_residual_makes_each_unit_start_as_its_skip():
    unit, x = _eval_unit(zero_init_residual=True)
    with torch.no_grad():
        assert torch.allclose(unit(x), torch.relu(x))
    unit, x = _eval_unit(zero_init_residual=True, preact=True)
    with torch.no_grad():
        assert torch.allclose(unit(x), x)


def test_stride_position_in_bottleneck():
    default = on_meta(depth=50, input_size=224)
    paper = on_meta(depth=50, input_size=224, stride_in_1x1=True)
    assert default.layer2[0].conv2.stride == (2, 2) and default.layer2[0].conv1.stride == (1, 1)
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)


def test_style_auto_follows_input_size():
    assert on_meta(depth=18, input_size=224).spec.style == "imagenet"
    assert on_meta(depth=20, input_size=127).spec.style == "cifar"
    assert on_meta(depth=20, input_size=32).conv1.kernel_size == (3, 3)
    assert on_meta(depth=20, width=8).layer3[0].conv1.out_channels == 32


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"depth": 21}, ["6n+2", "20, 26", "model.stages"]),
        ({"depth": 21, "block": "bottleneck"}, ["9n+2", "20, 29"]),
        ({"depth": 35, "input_size": 224}, ["18, 34, 50, 101, 152", "model.stages=[...]"]),
        ({"depth": 50, "style": "imagenet", "block": "basic"}, ["bottleneck", "model.block=auto"]),
        ({"skip_span": 0}, ["skip_span", ">= 1"]),
        ({"skip_span": 7}, ["1..6"]),
        ({"depth": 11, "block": "bottleneck", "skip_span": 2}, ["span 3"]),
        ({"shortcut": "D"}, ["A, B, C, none"]),
        ({"style": "mnist"}, ["auto, cifar, imagenet"]),
        ({"block": "wide"}, ["auto, basic, bottleneck"]),
        ({"norm": "gn"}, ["bn, none"]),
        ({"skip_source": "X"}, ["Y, Z"]),
        ({"skip_weight": "half"}, ["learned", "projection", "number"]),
        ({"preact": True, "skip_source": "Z"}, ["skip_source=Y"]),
        ({"shortcut": "none", "zero_init_residual": True}, ["zero_init_residual=false"]),
        ({"stages": [3, 0, 3]}, ["units per stage"]),
        ({"preact": "yes"}, ["true or false"]),
        ({"width": 0}, ["integer >= 1"]),
        ({"num_classes": 0}, ["num_classes", "integer >= 1"]),
    ],
)
def test_bad_knobs_raise_config_error_naming_allowed_values(kwargs, words):
    with pytest.raises(ConfigError) as info:
        on_meta(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_case_and_null_spellings_are_accepted():
    assert on_meta(depth=8, shortcut="a").spec.shortcut == "A"
    assert on_meta(depth=8, shortcut=None).spec.shortcut == "none"
    assert on_meta(depth=8, skip_source="z").spec.order == "linear_skip"
    assert on_meta(depth=8, skip_weight="0.5").spec.skip_weight == 0.5


# --- config files ----------------------------------------------------------------------------


def _model_cfg(name: str):
    """conf/model/NAME.yaml as Hydra composes it (its `defaults:` included), on 3x16x16 data."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", "data=synthetic", "data.image_size=16"])
    return cfg.model


@pytest.mark.parametrize(
    "name, differs", [("resnet", {}), ("plain", {"shortcut": "none"}), ("preact", {"preact": True})]
)
def test_model_yaml_holds_every_builder_knob_at_its_default(name, differs):
    cfg = _model_cfg(name)
    signature = inspect.signature(build_network).parameters
    keys = set(cfg) - {"_target_"}
    assert keys == set(signature)
    assert cfg.num_classes == 10 and cfg.in_channels == 3 and cfg.input_size == 16
    for key in keys - {"num_classes", "in_channels", "input_size"}:
        assert cfg[key] == differs.get(key, signature[key].default), key

    net = instantiate(cfg)
    assert isinstance(net, Network)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_plain_and_resnet_configs_build_equal_sizes():
    assert count_parameters(instantiate(_model_cfg("plain"))) == count_parameters(instantiate(_model_cfg("resnet")))
