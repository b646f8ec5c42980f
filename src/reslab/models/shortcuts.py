"""Skip paths: the paper's shortcut options A/B/C and the seed's skip weight W.

A skip carries a unit's input to its last pre-activation. Where the unit changes the shape
(stride 2, more channels) the skip has to change it too; how it does that is the shortcut
option (paper section 3.3):

- A: identity; subsample by striding and zero-pad the extra channels (no parameters);
- B: 1x1 projection (conv + BN) only where the shape changes, identity elsewhere;
- C: 1x1 projection on every skip;
- none: no skip at all (the plain network).

The module that changes the shape is stored under torchvision's name `downsample` (a
Sequential(conv, bn) for projections), so torchvision's state dicts load into option B nets.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from reslab.errors import ConfigError
from reslab.models.layers import conv1x1, conv_has_bias, norm_layer

SHORTCUTS = ("A", "B", "C", "none")
SKIP_WEIGHT_WORDS = ("learned", "projection")


class ZeroPadSubsample(nn.Module):
    """Option A: keep every `stride`-th pixel and append zero channels up to the unit's width."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # pad spec runs from the last dimension backwards: (W, W, H, H, C_front, C_back)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def projection(in_channels: int, out_channels: int, stride: int, norm: str, preact: bool) -> nn.Sequential:
    """1x1 conv (+ BN) on the skip, named like torchvision's `downsample` (0 = conv, 1 = bn).

    Pre-activation units leave the BN out: their skip stream is normalised by the next unit's
    first BN, as in the identity-mappings paper's projection shortcuts.
    """
    conv = conv1x1(in_channels, out_channels, stride, bias=conv_has_bias(norm))
    if preact:
        return nn.Sequential(conv)
    return nn.Sequential(conv, norm_layer(norm, out_channels))


def make_shortcut(
    option: str, in_channels: int, out_channels: int, stride: int, norm: str, preact: bool
) -> nn.Module | None:
    """The module that brings a unit's input to the unit's output shape; None means identity."""
    shape_changes = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and shape_changes):
        return projection(in_channels, out_channels, stride, norm, preact)
    if option == "A" and shape_changes:
        # Stage widths double (network.py), so a unit never has fewer channels than its input.
        return ZeroPadSubsample(stride, out_channels - in_channels)
    return None


def parse_skip_weight(value: object) -> float | str:
    """A fixed number, 'learned' or 'projection'; numbers given as strings are accepted too."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in SKIP_WEIGHT_WORDS:
            return word
        try:
            return float(word)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(
        f"model.skip_weight={value!r} is not allowed; use a number (fixed scale, 1.0 = identity), "
        f"'learned' (one trainable scalar per unit, starting at 1) or 'projection' (1x1 conv on every skip)"
    )
