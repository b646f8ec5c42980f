"""The weighted layers every unit is made of (torchvision's helpers, plus the no-norm switch)."""

from __future__ import annotations

from torch import nn

NORMS = ("bn", "none")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1 (keeps the size at stride 1)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=bias)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """BatchNorm, or an Identity in its place when the study switches normalisation off.

    The Identity keeps every module name (bn1, bn2, ...) and code path the same in both cases.
    """
    return nn.BatchNorm2d(channels) if norm == "bn" else nn.Identity()


def conv_has_bias(norm: str) -> bool:
    """Without BN nothing else shifts a feature map, so convolutions get their own bias (as in VGG)."""
    return norm == "none"
