"""The LightningModule: a network, cross-entropy, top-1/top-5 error, optimiser and schedule."""

from __future__ import annotations

from typing import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


class ClassificationModule(pl.LightningModule):
    """Trains `net` with cross-entropy and logs error rates (1 - accuracy), the paper's measure.

    `optimizer` and `scheduler` are partial constructors from the configs: the optimiser gets the
    parameters here, the scheduler function gets the optimiser and returns Lightning's dict.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], dict] | None,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.topk = (1, 5) if num_classes > 5 else (1,)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.eval_acc = nn.ModuleDict(
            {
                f"{stage}_top{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("val", "test")
                for k in self.topk
            }
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 5:
            # Multi-crop testing (B, crops, C, H, W): the paper averages the crops' scores.
            batch, crops = images.shape[:2]
            return self.net(images.flatten(0, 1)).view(batch, crops, -1).softmax(-1).mean(1).log()
        return self.net(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels)
        # Error of this very batch, every step: these are the paper's training-error curves.
        err = 1.0 - self.train_acc(logits, labels)
        self.log_dict({"train/loss": loss, "train/err": err}, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _evaluate(self, stage: str, batch) -> None:
        images, labels = batch
        logits = self(images)
        # With log-probabilities from multi-crop averaging, cross-entropy is NLL of those.
        loss = F.nll_loss(logits, labels) if images.dim() == 5 else F.cross_entropy(logits, labels)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        for k in self.topk:
            self.eval_acc[f"{stage}_top{k}"].update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self._log_errors("val")

    def on_test_epoch_end(self) -> None:
        self._log_errors("test")

    def _log_errors(self, stage: str) -> None:
        # torchmetrics gathers the counts of all ranks, so each split is scored once, as a whole.
        for k in self.topk:
            metric = self.eval_acc[f"{stage}_top{k}"]
            name = f"{stage}/err" if k == 1 else f"{stage}/err_top{k}"
            self.log(name, 1.0 - metric.compute(), on_step=False, on_epoch=True)
            metric.reset()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
