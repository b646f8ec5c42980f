"""Per-unit gradient norms and response stds during training.

The seed predicts that the first layers' gradients vanish in a deep plain network; the ResNet
paper reports that with BN they do not, and that layer responses have a smaller std in
ResNets (Figure 7). This callback measures both in real networks, unit by unit.

Units are found by torchvision's naming, which ResLab's networks share: `net.conv1` (with
`net.bn1` when present) is the stem, every element of the `nn.Sequential` stages
`net.layer1`, `net.layer2`, ... is a unit, and `net.fc` (with a pre-activation net's
`final_bn`) is the head. Keys carry a zero-padded
unit index so they sort in network order:

    grad_norm/000_stem  grad_norm/001_layer1.0 ... grad_norm/NNN_fc
    response_std/000_stem  response_std/001_layer1.0 ... response_std/NNN_fc
"""

from __future__ import annotations

import re
from typing import NamedTuple

import lightning.pytorch as pl
import torch
from torch import nn

from reslab.errors import ConfigError

GRAD_NORM_PREFIX = "grad_norm"
RESPONSE_STD_PREFIX = "response_std"

_STAGE_NAME = re.compile(r"layer(\d+)")


class Unit(NamedTuple):
    """One measured piece of the network: its name and the modules whose parameters it owns.

    Its response is the output of the last module.
    """

    name: str
    modules: tuple[nn.Module, ...]


def find_units(net: nn.Module) -> list[Unit]:
    """Stem, the elements of the stages layer1, layer2, ... in order, then the head."""
    children = dict(net.named_children())
    stages = sorted((int(match.group(1)), name) for name in children if (match := _STAGE_NAME.fullmatch(name)))
    if not stages:
        raise ConfigError(
            f"GradientNormMonitor found no stages in {type(net).__name__}: it needs children named "
            "layer1, layer2, ... (torchvision's naming) holding the units as nn.Sequential elements"
        )

    units = []
    stem = tuple(children[name] for name in ("conv1", "bn1") if name in children)
    if stem:
        units.append(Unit("stem", stem))
    for _, stage_name in stages:
        stage = children[stage_name]
        if not isinstance(stage, nn.Sequential):
            raise ConfigError(
                f"GradientNormMonitor needs net.{stage_name} to be an nn.Sequential of units, "
                f"got {type(stage).__name__}"
            )
        units += [Unit(f"{stage_name}.{i}", (unit,)) for i, unit in stage.named_children()]
    # Pre-activation networks put their last BN (ResLab's `final_bn`) in front of the head.
    head = tuple(children[name] for name in ("final_bn", "fc") if name in children)
    if "fc" in children:
        units.append(Unit("fc", head))
    return units


def unit_key(prefix: str, index: int, name: str) -> str:
    """`prefix/NNN_name`: sorts in network order up to 1000 units."""
    return f"{prefix}/{index:03d}_{name}"


class GradientNormMonitor(pl.Callback):
    """Every `every_n_steps` optimiser steps, logs each unit's gradient L2 norm and output std.

    The gradient norm covers all parameters of a unit, taken once gradients are complete
    (after accumulation and AMP unscaling, before clipping). Response stds are taken over
    the whole output tensor of the unit on that step's training batch; the forward hooks
    that record them exist only during logged steps, so other steps pay nothing.
    Values go straight to every attached logger (CSV, W&B) at step `trainer.global_step`
    and from rank zero only: `LightningModule.log` would keep them only on the steps that
    `Trainer(log_every_n_steps)` selects.
    """

    def __init__(self, every_n_steps: int = 50, log_responses: bool = True) -> None:
        if int(every_n_steps) < 1:
            raise ConfigError(f"every_n_steps must be a positive integer, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.log_responses = bool(log_responses)
        self._units: list[Unit] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._responses: dict[str, torch.Tensor] = {}
        self._responses_step: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        net = getattr(pl_module, "net", None)
        if not isinstance(net, nn.Module):
            raise ConfigError("GradientNormMonitor needs the LightningModule to keep its network at attribute `net`")
        self._units = find_units(net)

    def _is_logged_step(self, trainer: pl.Trainer) -> bool:
        return trainer.is_global_zero and trainer.global_step % self.every_n_steps == 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # With gradient accumulation several batches share one step: the first one is measured.
        if not (self.log_responses and self._is_logged_step(trainer)):
            return
        if self._responses_step == trainer.global_step:
            return
        self._responses_step = trainer.global_step
        self._responses = {}
        for unit in self._units:
            self._hooks.append(unit.modules[-1].register_forward_hook(self._recorder(unit.name)))

    def _recorder(self, name: str):
        def record(module: nn.Module, inputs, output) -> None:
            if name not in self._responses and isinstance(output, torch.Tensor):
                self._responses[name] = output.detach().float().std()

        return record

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._remove_hooks()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._is_logged_step(trainer):
            return
        metrics = {}
        for index, unit in enumerate(self._units):
            grads = [p.grad for m in unit.modules for p in m.parameters() if p.grad is not None]
            if grads:
                metrics[unit_key(GRAD_NORM_PREFIX, index, unit.name)] = torch.nn.utils.get_total_norm(grads)
        if self._responses_step == trainer.global_step:
            for index, unit in enumerate(self._units):
                if unit.name in self._responses:
                    metrics[unit_key(RESPONSE_STD_PREFIX, index, unit.name)] = self._responses[unit.name]
        if not metrics:
            return
        # One device-to-host transfer for the whole row.
        row = dict(zip(metrics, torch.stack([v.float() for v in metrics.values()]).tolist()))
        for logger in trainer.loggers:
            logger.log_metrics(row, step=trainer.global_step)

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._remove_hooks()
