"""The stem: what a network computes before its first stage, under torchvision's layer names."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from reslab.models.layers import conv_has_bias, norm_layer


class Stem(nn.Sequential):
    """conv1, then bn1, relu and maxpool where the style and the unit order call for them.

    CIFAR style (paper section 4.2): a 3x3 conv at stride 1. ImageNet style (section 3.4): a
    7x7 conv at stride 2, then a 3x3 max pool at stride 2. After the conv, by unit order:

    - post (the paper): bn1 and relu;
    - linear_skip: bn1 only, since the units carry pre-activations and each opens with the ReLU;
    - pre (identity mappings): nothing, since pre-activation units open with their own BN-ReLU.
    """

    def __init__(self, *, style: str, in_channels: int, width: int, norm: str, order: str) -> None:
        bias = conv_has_bias(norm)
        if style == "imagenet":
            conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=bias)
        else:
            conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=bias)
        layers = OrderedDict(conv1=conv1)
        if order != "pre":
            layers["bn1"] = norm_layer(norm, width)
        if order == "post":
            layers["relu"] = nn.ReLU(inplace=True)
        if style == "imagenet":
            layers["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        super().__init__(layers)
        self.out_channels = width
