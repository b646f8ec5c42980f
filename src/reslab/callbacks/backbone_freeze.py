"""Train only the new classifier head for the first epochs, then the whole network.

The usual transfer recipe: a freshly initialised head on top of pretrained features first
learns with the features fixed, so its early, large gradients do not wreck them. The head is
found with `reslab.models.classifier_head` (the last nn.Linear of the LightningModule, i.e.
the network's classifier); everything else is the backbone.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from reslab.errors import ConfigError
from reslab.models import classifier_head


class FreezeBackbone(BaseFinetuning):
    """Freeze all but the head for `epochs` epochs, then unfreeze the backbone into the optimizer.

    epochs: frozen epochs (0 = no freezing). train_bn: keep BatchNorm layers training while
    frozen (default False: the backbone, BN statistics included, stays exactly as loaded).
    backbone_lr_factor: learning rate of backbone parameters the optimizer did not hold yet,
    relative to the optimizer's first group when they join.

    Works whether `configure_optimizers` passes all parameters (frozen ones have no gradient,
    so the optimizer skips them until they are unfrozen) or only those with requires_grad
    (the backbone then joins as a new parameter group).

    Single-process only: DDP registers for gradient averaging only the parameters that require
    gradients when it wraps the model, so a backbone unfrozen later would train differently on
    every rank; the callback refuses to run with more than one process.
    """

    def __init__(self, epochs: int = 1, train_bn: bool = False, backbone_lr_factor: float = 1.0) -> None:
        super().__init__()
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            raise ConfigError(f"callbacks.freeze_backbone.epochs={epochs!r} is not allowed; use an integer >= 0")
        self.epochs = epochs
        self.train_bn = train_bn
        self.backbone_lr_factor = float(backbone_lr_factor)

    @staticmethod
    def backbone_modules(pl_module: nn.Module) -> list[nn.Module]:
        """Every module holding parameters except the classifier head."""
        head = set(classifier_head(pl_module).modules())
        return [m for m in BaseFinetuning.flatten_modules(pl_module) if m not in head]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # freeze only for fitting: validate/test after training must not undo the unfreezing
        if stage != "fit" or self.epochs == 0:
            return
        if trainer.world_size > 1:
            raise ConfigError(
                f"callbacks.freeze_backbone needs a single process (world size is {trainer.world_size}): "
                "DDP would not average the gradients of the backbone once it is unfrozen; "
                "train on one device or set callbacks.freeze_backbone.epochs=0"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(self.backbone_modules(pl_module), train_bn=self.train_bn)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        # ">=" rather than "==": a run resumed after the unfreeze epoch starts frozen again
        # (setup freezes) and must be unfrozen at its first epoch
        if self.epochs == 0 or epoch < self.epochs:
            return
        backbone = self.backbone_modules(pl_module)
        if all(p.requires_grad for m in backbone for p in m.parameters(recurse=False)):
            return
        self.make_trainable(backbone)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [p for m in backbone for p in m.parameters(recurse=False) if id(p) not in held]
        if missing:
            lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_factor
            optimizer.add_param_group({"params": missing, "lr": lr})
