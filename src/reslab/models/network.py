"""The one builder of plain and residual networks: stem -> stages of units -> head.

`build_network(**cfg.model)` validates every knob, resolves the "auto" choices into a
`NetworkSpec` (plain data, printable) and builds a `Network` from it. Plain and residual nets of
the same depth differ only in `shortcut`, so plain-N and ResNet-N (option A) have identical
parameters. The stem and head are named parts (`Stem`, `Head`) whose layers keep torchvision's
module names (conv1, bn1, relu, maxpool, layer1..layerK, avgpool, fc), so an ImageNet-style,
option-B, post-activation net with default knobs loads torchvision's ResNet state dicts with
strict=True and computes the same function.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from reslab.errors import ConfigError
from reslab.models.blocks import Unit, make_unit
from reslab.models.heads import Head
from reslab.models.layers import NORMS
from reslab.models.shortcuts import SHORTCUTS, parse_skip_weight
from reslab.models.stages import (
    CIFAR_NUM_STAGES,
    IMAGENET_MIN_INPUT_SIZE,
    LAYERS_PER_UNIT,
    cifar_stages,
    imagenet_stages,
    split_into_units,
)
from reslab.models.stems import Stem

STYLES = ("auto", "cifar", "imagenet")
BLOCKS = ("auto", "basic", "bottleneck")
SKIP_SOURCES = ("Y", "Z")
DEFAULT_WIDTH = {"cifar": 16, "imagenet": 64}


@dataclass(frozen=True)
class NetworkSpec:
    """Every decision the builder took, after validation and with the "auto" values resolved."""

    style: str  # cifar | imagenet
    block: str  # basic | bottleneck
    units_per_stage: tuple[int, ...]  # in the block's own units (2 layers basic, 3 bottleneck)
    unit_spans: tuple[tuple[int, ...], ...]  # per stage, the layer count of each actual unit
    stage_widths: tuple[int, ...]
    stem_width: int
    order: str  # post | linear_skip | pre   (see blocks.py)
    shortcut: str  # A | B | C | none
    norm: str
    skip_weight: float | str
    stride_in_1x1: bool
    zero_init_residual: bool
    num_classes: int
    in_channels: int

    @property
    def depth(self) -> int:
        """Weighted layers on the main path: stem conv + every unit's layers + fc."""
        return 1 + sum(sum(spans) for spans in self.unit_spans) + 1


class Network(nn.Sequential):
    """A `Stem`, the stages `layer1..layerK` (nn.Sequential of units) and a `Head`, run in order.

    The parts' layers are the network's own children (state-dict keys read `conv1.weight`, not
    `stem.conv1.weight`); `stem()`, `stages()` and `head()` give the parts back.
    """

    def __init__(self, spec: NetworkSpec) -> None:
        # Built in forward order, which is also the order the layers draw their initial weights.
        stem = Stem(
            style=spec.style, in_channels=spec.in_channels, width=spec.stem_width, norm=spec.norm, order=spec.order
        )
        stages = make_stages(spec, in_channels=stem.out_channels)
        head = Head(
            in_channels=stages[-1][-1].out_channels, num_classes=spec.num_classes, norm=spec.norm, order=spec.order
        )
        stage_names = [f"layer{k}" for k in range(1, len(stages) + 1)]
        super().__init__(
            OrderedDict([*stem.named_children(), *zip(stage_names, stages, strict=True), *head.named_children()])
        )
        self.spec = spec
        self.depth = spec.depth
        self._part_names = {
            "stem": tuple(name for name, _ in stem.named_children()),
            "stages": tuple(stage_names),
            "head": tuple(name for name, _ in head.named_children()),
        }
        self._init_weights(spec.zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He init as in the paper and torchvision; BN (ones, zeros) and the fc keep PyTorch's default
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if zero_init_residual:
            for unit in self.units():
                unit.zero_init_residual()

    def _layers(self, part: str) -> list[tuple[str, nn.Module]]:
        """(name, layer) of the part "stem", "stages" or "head", in forward order."""
        return [(name, getattr(self, name)) for name in self._part_names[part]]

    def stem(self) -> nn.Sequential:
        """The layers before the first stage (conv1, ...), as one module sharing them."""
        return nn.Sequential(OrderedDict(self._layers("stem")))

    def stages(self) -> list[nn.Sequential]:
        """layer1..layerK."""
        return [stage for _, stage in self._layers("stages")]

    def head(self) -> nn.Sequential:
        """The layers after the last stage (..., avgpool, flatten, fc), as one module sharing them."""
        return nn.Sequential(OrderedDict(self._layers("head")))

    def units(self) -> list[Unit]:
        """Every unit, stage by stage."""
        return [unit for stage in self.stages() for unit in stage]


def make_stages(spec: NetworkSpec, in_channels: int) -> list[nn.Sequential]:
    """The stages' units; the first unit of every stage but the first halves the feature map."""
    stages = []
    channels = in_channels
    for k, (spans, width) in enumerate(zip(spec.unit_spans, spec.stage_widths, strict=True), start=1):
        units = []
        for j, span in enumerate(spans):
            unit = make_unit(
                order=spec.order,
                block=spec.block,
                in_channels=channels,
                width=width,
                stride=2 if (k > 1 and j == 0) else 1,
                span=span,
                shortcut=spec.shortcut,
                norm=spec.norm,
                skip_weight=spec.skip_weight,
                stride_in_1x1=spec.stride_in_1x1,
            )
            units.append(unit)
            channels = unit.out_channels
        stages.append(nn.Sequential(*units))
    return stages


def build_network(
    depth: int = 20,
    shortcut: str = "A",
    style: str = "auto",
    block: str = "auto",
    stages: Sequence[int] | None = None,
    width: int | None = None,
    preact: bool = False,
    norm: str = "bn",
    skip_span: int | None = None,
    skip_weight: float | str = 1.0,
    skip_source: str = "Y",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
) -> Network:
    """Build a plain or residual network; the keyword names are the keys of conf/model/*.yaml.

    Raises ConfigError, naming the allowed values, for any knob that is out of range or any
    combination that cannot be built; then resolves the "auto" values into the `NetworkSpec`.
    """
    shortcut = _shortcut(shortcut)
    style = _choice("style", style, STYLES)
    block = _choice("block", block, BLOCKS)
    norm = _choice("norm", norm, NORMS)
    skip_source = _choice("skip_source", skip_source, SKIP_SOURCES, upper=True)
    skip_weight = parse_skip_weight(skip_weight)
    preact = _flag("preact", preact)
    stride_in_1x1 = _flag("stride_in_1x1", stride_in_1x1)
    zero_init_residual = _flag("zero_init_residual", zero_init_residual)
    num_classes = _positive_int("num_classes", num_classes)
    in_channels = _positive_int("in_channels", in_channels)
    input_size = _positive_int("input_size", input_size)
    width = None if width is None else _positive_int("width", width, hint="or null for the style's default")
    skip_span = None if skip_span is None else _positive_int("skip_span", skip_span, hint="or null for the unit's own")

    if style == "auto":
        style = "imagenet" if input_size >= IMAGENET_MIN_INPUT_SIZE else "cifar"
    if stages is not None:
        units = _stage_list(stages)
        block = "basic" if block == "auto" else block
    elif style == "cifar":
        depth = _positive_int("depth", depth)
        block = "basic" if block == "auto" else block
        units = cifar_stages(depth, block)
    else:
        depth = _positive_int("depth", depth)
        block, units = imagenet_stages(depth, block)

    layers_per_unit = LAYERS_PER_UNIT[block]
    span = layers_per_unit if skip_span is None else skip_span
    stage_layers = [n * layers_per_unit for n in units]
    if block == "basic" and span > min(stage_layers):
        raise ConfigError(
            f"model.skip_span={span} is longer than the shortest stage ({min(stage_layers)} layers); "
            f"a skip stays inside its stage, so allowed spans here are 1..{min(stage_layers)}"
        )
    if block == "bottleneck" and span != layers_per_unit:
        raise ConfigError(
            f"model.skip_span={span} does not fit bottleneck units, which are 1x1-3x3-1x1 (span 3); "
            f"use skip_span=null (or 3), or model.block=basic for other spans"
        )
    unit_spans = tuple(tuple(split_into_units(n, span)) for n in stage_layers)

    if preact and skip_source == "Z":
        raise ConfigError(
            "model.skip_source=Z with model.preact=true: pre-activation units already carry the "
            "un-activated sum on the skip; use skip_source=Y with preact, or preact=false for a Z-skip"
        )
    if zero_init_residual and shortcut == "none":
        raise ConfigError(
            "model.zero_init_residual=true needs a skip: in a plain net (shortcut none) it would zero "
            "every unit's output; set zero_init_residual=false or shortcut to A, B or C"
        )
    if preact:
        order = "pre"
    elif skip_source == "Z" and shortcut != "none":
        order = "linear_skip"
    else:
        order = "post"

    width = DEFAULT_WIDTH[style] if width is None else width
    spec = NetworkSpec(
        style=style,
        block=block,
        units_per_stage=tuple(units),
        unit_spans=unit_spans,
        stage_widths=tuple(width * 2**k for k in range(len(units))),
        stem_width=width,
        order=order,
        shortcut=shortcut,
        norm=norm,
        skip_weight=skip_weight,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        num_classes=num_classes,
        in_channels=in_channels,
    )
    return Network(spec)


def _shortcut(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        if value.strip().upper() in ("A", "B", "C"):
            return value.strip().upper()
        if value.strip().lower() == "none":
            return "none"
    raise ConfigError(
        f"model.shortcut={value!r} is not allowed; choose one of {', '.join(SHORTCUTS)} "
        "(A identity + zero-pad, B projection where the shape changes, C projection everywhere, "
        "none = plain)"
    )


def _choice(name: str, value: object, allowed: Sequence[str], upper: bool = False) -> str:
    if isinstance(value, str):
        normalised = value.strip().upper() if upper else value.strip().lower()
        if normalised in allowed:
            return normalised
    raise ConfigError(f"model.{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"model.{name}={value!r} is not allowed; use true or false")


def _positive_int(name: str, value: object, hint: str = "") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"model.{name}={value!r} is not allowed; use an integer >= 1" + (f" {hint}" if hint else ""))


def _stage_list(stages: object) -> list[int]:
    if isinstance(stages, Sequence) and not isinstance(stages, str) and len(stages) > 0:
        counts = list(stages)
        if all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts):
            return counts
    raise ConfigError(
        f"model.stages={stages!r} is not allowed; use null (stages from model.depth) or a non-empty "
        f"list of units per stage, each >= 1, e.g. [3,3,3] (CIFAR, {CIFAR_NUM_STAGES} stages) or [3,4,6,3]"
    )
