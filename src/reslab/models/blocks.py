"""Units: a short chain of weighted layers with an optional skip around it.

In the seed's notation a layer computes Z = conv(...) (with its BN) and Y = f(Z); a skip of span
s adds the output of layer l-s to the pre-activation of layer l:  Y_l = f(Z_l + W o Y_{l-s}).
A unit here is exactly the `span` layers one skip jumps, so:

- the paper's basic block is a unit of span 2, its bottleneck a unit of span 3;
- another skip span s (the seed's generalisation) is a unit of s 3x3 layers: s=1 puts a skip
  around every convolution, s=3 makes one skip jump three convolutions; the network keeps its
  depth by regrouping each stage's layers into units of s (see stages.split_into_units).

Three unit orders cover the variants studied:

- PostActUnit     conv-BN-ReLU ... conv-BN, + skip, ReLU    (paper; skip from Y, the activated output)
- LinearSkipUnit  ReLU, conv-BN-ReLU ... conv-BN, + skip    (skip from Z, the pre-activation)
- PreActUnit      BN-ReLU-conv ... BN-ReLU-conv, + skip     (identity-mappings paper)

Layers are named conv1/bn1, conv2/bn2, ... and the shape-changing part of the skip `downsample`,
as in torchvision, so state dicts and per-layer tooling carry over.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from reslab.models.layers import conv1x1, conv3x3, conv_has_bias, norm_layer
from reslab.models.shortcuts import make_shortcut
from reslab.models.stages import EXPANSION


class Unit(nn.Module):
    """`span` weighted layers conv{i} with norms bn{i}, and an optional skip from the unit's input.

    The skip is `skip_weight * downsample(x)`: downsample is None (identity), option A's
    zero-padding or a projection; skip_weight is None (1), a fixed float or a learned scalar.
    """

    def __init__(
        self,
        convs: list[nn.Conv2d],
        norms: list[nn.Module],
        downsample: nn.Module | None,
        has_skip: bool,
        skip_weight: float | str,
        norms_first: bool = False,
    ) -> None:
        super().__init__()
        self.span = len(convs)
        self.out_channels = convs[-1].out_channels
        names = []
        for i, (conv, norm) in enumerate(zip(convs, norms, strict=True), start=1):
            # registered in the order the forward pass uses them, so printouts read top-down
            if norms_first:
                setattr(self, f"bn{i}", norm)
            setattr(self, f"conv{i}", conv)
            if not norms_first:
                setattr(self, f"bn{i}", norm)
            names.append((f"conv{i}", f"bn{i}"))
        self._layer_names = tuple(names)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.has_skip = has_skip
        if skip_weight == "learned":
            self.skip_weight = nn.Parameter(torch.ones(()))
        elif skip_weight == 1.0 or skip_weight == "projection":
            self.skip_weight = None
        else:
            self.skip_weight = float(skip_weight)

    def layers(self) -> list[tuple[nn.Conv2d, nn.Module]]:
        """(conv, norm) pairs in forward order."""
        return [(getattr(self, c), getattr(self, n)) for c, n in self._layer_names]

    def skip(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        if self.skip_weight is not None:
            x = self.skip_weight * x
        return x

    def zero_init_residual(self) -> None:
        """Make the residual branch output zero at start, so the unit begins as its skip."""
        conv, norm = self.layers()[-1]
        if isinstance(norm, nn.BatchNorm2d):
            nn.init.zeros_(norm.weight)
        else:
            _zero_conv(conv)

    def extra_repr(self) -> str:
        weight = "learned" if isinstance(self.skip_weight, nn.Parameter) else self.skip_weight
        return f"span={self.span}, skip={self.has_skip}" + (f", skip_weight={weight}" if weight is not None else "")


class PostActUnit(Unit):
    """Paper unit: conv-BN-ReLU ... conv-BN, add the skip of the unit's (activated) input, ReLU."""

    def forward(self, x: Tensor) -> Tensor:
        out = x
        last = self.span - 1
        for i, (conv, norm) in enumerate(self._layer_names):
            out = getattr(self, norm)(getattr(self, conv)(out))
            if i < last:
                out = self.relu(out)
        if self.has_skip:
            out += self.skip(x)
        return self.relu(out)


class LinearSkipUnit(Unit):
    """Skip from Z: units pass on their pre-activation; the activation starts the next unit.

    With Z_l = what layer l's activation receives (its conv-BN output plus any skip added to
    it), Y_l = f(Z_l) and Z_l = conv-BN(...) + W o Z_{l-s}: the skip stream never passes a ReLU,
    which is what the later proposals (identity mappings) connect. The network's stem leaves
    its ReLU to the first unit and applies one after the last unit.
    """

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(x)  # not in place: x itself is the skip
        last = self.span - 1
        for i, (conv, norm) in enumerate(self._layer_names):
            out = getattr(self, norm)(getattr(self, conv)(out))
            if i < last:
                out = self.relu(out)
        out += self.skip(x)
        return out


class PreActUnit(Unit):
    """Identity-mappings unit: BN-ReLU-conv ... BN-ReLU-conv, add the skip; no activation after.

    bn{i} normalises the input of conv{i}. Projections take the un-activated input x, so the
    skip stream stays free of BN and ReLU from stem to head.
    """

    def forward(self, x: Tensor) -> Tensor:
        conv, norm = self._layer_names[0]
        out = getattr(self, conv)(F.relu(getattr(self, norm)(x)))  # not in place: norm may be Identity
        for conv, norm in self._layer_names[1:]:
            out = getattr(self, conv)(self.relu(getattr(self, norm)(out)))
        if self.has_skip:
            out += self.skip(x)
        return out

    def zero_init_residual(self) -> None:
        _zero_conv(self.layers()[-1][0])  # its BN comes before it, so zero the conv itself


UNIT_ORDERS = {"post": PostActUnit, "linear_skip": LinearSkipUnit, "pre": PreActUnit}


def _zero_conv(conv: nn.Conv2d) -> None:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def unit_convs(
    block: str, in_channels: int, width: int, stride: int, span: int, norm: str, stride_in_1x1: bool
) -> list[nn.Conv2d]:
    """The convolutions of one unit; the first unit of a stage carries the stage's stride."""
    bias = conv_has_bias(norm)
    if block == "basic":
        convs = [conv3x3(in_channels, width, stride, bias)]
        convs += [conv3x3(width, width, 1, bias) for _ in range(span - 1)]
        return convs
    # torchvision ("v1.5") strides in the 3x3 conv; the paper strides in the first 1x1
    stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
    out_channels = width * EXPANSION["bottleneck"]
    return [
        conv1x1(in_channels, width, stride_1x1, bias),
        conv3x3(width, width, stride_3x3, bias),
        conv1x1(width, out_channels, 1, bias),
    ]


def make_unit(
    *,
    order: str,
    block: str,
    in_channels: int,
    width: int,
    stride: int,
    span: int,
    shortcut: str,
    norm: str,
    skip_weight: float | str,
    stride_in_1x1: bool,
) -> Unit:
    """One unit of the given order ('post', 'linear_skip', 'pre') and block type."""
    convs = unit_convs(block, in_channels, width, stride, span, norm, stride_in_1x1)
    preact = order == "pre"
    if preact:
        norms = [norm_layer(norm, conv.in_channels) for conv in convs]
    else:
        norms = [norm_layer(norm, conv.out_channels) for conv in convs]
    has_skip = shortcut != "none"
    option = "C" if skip_weight == "projection" else shortcut
    downsample = make_shortcut(option, in_channels, convs[-1].out_channels, stride, norm, preact) if has_skip else None
    return UNIT_ORDERS[order](convs, norms, downsample, has_skip, skip_weight, norms_first=preact)
