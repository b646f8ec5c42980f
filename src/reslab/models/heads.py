"""The head of ResLab's networks, and finding any network's classifier head.

`Head` is what a ResLab network computes after its last stage. `classifier_head` finds the
layer that produces the logits in any network, for transfer surgery and backbone freezing.
Convention: the classifier head is the last nn.Linear the network registers (ResLab's `Network.fc`,
torchvision's `fc`, `classifier[-1]`, `heads.head`, `head`). torchvision's classification
models all register their classifier last; SqueezeNet has no Linear and classifies with a
1x1 conv, so for a network without any Linear the last Conv2d is the head. The search works
on any module that contains the network (e.g. a LightningModule holding it as an attribute).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from reslab.errors import ConfigError
from reslab.models.layers import norm_layer


class Head(nn.Sequential):
    """final_bn and final_relu where the unit order calls for them, then avgpool, flatten, fc.

    By unit order:

    - post (the paper): pooling and fc only, since the last unit ends with its ReLU;
    - linear_skip: final_relu, since the last unit hands over its pre-activation;
    - pre (identity mappings): final_bn and final_relu, the BN-ReLU that the paper puts before
      pooling, since pre-activation units end with a conv.
    """

    def __init__(self, *, in_channels: int, num_classes: int, norm: str, order: str) -> None:
        layers = OrderedDict()
        if order == "pre":
            layers["final_bn"] = norm_layer(norm, in_channels)
        if order != "post":
            layers["final_relu"] = nn.ReLU(inplace=True)
        layers["avgpool"] = nn.AdaptiveAvgPool2d((1, 1))
        layers["flatten"] = nn.Flatten(1)
        layers["fc"] = nn.Linear(in_channels, num_classes)
        super().__init__(layers)


def classifier_head_name(net: nn.Module) -> str:
    """Qualified name of the head inside `net` (e.g. 'fc', 'classifier.6', 'net.fc')."""
    last_linear = last_conv = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last_linear = name
        elif isinstance(module, nn.Conv2d):
            last_conv = name
    head = last_linear if last_linear is not None else last_conv
    if head is None:
        raise ConfigError(f"{type(net).__name__} has no nn.Linear or nn.Conv2d to use as classifier head")
    return head


def classifier_head(net: nn.Module) -> nn.Module:
    """The module that produces the logits (see the module docstring for the rule)."""
    return net.get_submodule(classifier_head_name(net))


def replace_submodule(net: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule called `name` (dotted path) was."""
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, new)
