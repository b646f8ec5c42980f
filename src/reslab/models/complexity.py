"""Size and cost of a network: parameters, multiply-adds per image, a short summary table.

FLOPs follow the ResNet paper's convention: multiply-adds (MACs) of the convolutions and the
fc layer for one image; BN, ReLU, pooling and the skip additions are not counted. They are
measured by torch's FlopCounterMode (which counts 2 FLOPs per MAC), so they hold for any
nn.Module, including torchvision models, and for networks built on the meta device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def count_flops(net: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds for one image of shape (C, H, W) (a leading batch size is divided out)."""
    return _flops_by_module(net, input_shape)["Global"]


def weighted_depth(net: nn.Module) -> int:
    """Conv and Linear layers on the main path (projection shortcuts, named downsample, excluded)."""
    return sum(
        1
        for name, m in net.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name.split(".")
    )


def model_summary(net: nn.Module, input_shape: Sequence[int]) -> str:
    """A short table: per stage (layer1..layerK) and in total, parameters and MACs per image."""
    flops = _flops_by_module(net, input_shape)
    root = type(net).__name__
    rows = [("part", "units", "parameters", "MACs")]
    stage_params = stage_flops = 0
    for name, child in net.named_children():
        if name.startswith("layer") and isinstance(child, nn.Sequential):
            params, macs = count_parameters(child), flops.get(f"{root}.{name}", 0)
            stage_params, stage_flops = stage_params + params, stage_flops + macs
            rows.append((name, str(len(child)), f"{params:,}", _giga(macs)))
    total_params, total_flops = count_parameters(net), flops["Global"]
    if len(rows) > 1:
        rows.insert(1, ("stem+head", "", f"{total_params - stage_params:,}", _giga(total_flops - stage_flops)))
    rows.append(("total", "", f"{total_params:,}", _giga(total_flops)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{root}: depth {weighted_depth(net)}, input {tuple(_image_shape(input_shape))}"]
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _image_shape(input_shape: Sequence[int]) -> list[int]:
    shape = [int(s) for s in input_shape]
    if len(shape) not in (3, 4):
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {tuple(shape)}")
    return shape[-3:]


def _flops_by_module(net: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """MACs per image for 'Global' and every module FlopCounterMode names ('Net.layer1', ...)."""
    shape = [int(s) for s in input_shape]
    batch = shape[0] if len(shape) == 4 else 1
    _image_shape(shape)
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros([batch, *shape[-3:]], device=device, dtype=dtype)
    training = {m: m.training for m in net.modules()}
    net.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            net(x)
    finally:
        for m, mode in training.items():
            m.train(mode)
    counts = counter.get_flop_counts()
    return {name: sum(ops.values()) // (2 * batch) for name, ops in counts.items()}


def _giga(macs: int) -> str:
    return f"{macs / 1e9:.3f} G" if macs >= 1e8 else f"{macs / 1e6:.2f} M"
