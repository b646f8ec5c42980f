"""The LightningModule: a network, cross-entropy, top-1/top-5 error, optimiser and schedule, and
the speed settings (`speed:` in conf/train.yaml) it applies to the network it trains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from reslab.callbacks.step_log import FlushStepLog, StepLog
from reslab.speed import channels_last_on, matmul_precision_for

# The per-step training values, in the order the module records them.
STEP_VALUES = ("train/loss", "train/err")


class ClassificationModule(pl.LightningModule):
    """Trains `net` with cross-entropy and logs error rates (1 - accuracy), the paper's measure.

    `optimizer` and `scheduler` are partial constructors from the configs: the optimiser gets the
    parameters here, the scheduler function gets the optimiser and returns Lightning's dict.

    Every training step's `train/loss` and `train/err` (the error of that very batch: the
    paper's training curves) wait on the device in `step_log` (reslab.callbacks.step_log).
    The speed settings are the README's "Speed", applied once when Lightning configures the
    model; the network is compiled in place (`nn.Module.compile`), so checkpoints hold the same
    parameter names with and without it.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], dict] | None,
        num_classes: int,
        compile: bool | str = False,
        channels_last: bool | str = "auto",
        float32_matmul_precision: str = "auto",
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_backend = "inductor" if compile is True else (compile or None)
        self.channels_last_setting = channels_last
        self.matmul_precision_setting = float32_matmul_precision
        self.channels_last = False  # decided in configure_model, once the device is known
        self._speed_applied = False
        self.step_log = StepLog(STEP_VALUES)
        self.topk = (1, 5) if num_classes > 5 else (1,)
        self.eval_acc = nn.ModuleDict(
            {
                f"{stage}_top{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("val", "test")
                for k in self.topk
            }
        )

    # ------------------------------------------------------------------ speed settings

    def configure_model(self) -> None:
        # Lightning calls this at every fit/validate/test; the network is changed once, before
        # it is moved to the device and before a checkpoint is loaded into it.
        if self._speed_applied:
            return
        self._speed_applied = True
        device_type = self.trainer.strategy.root_device.type
        precision = matmul_precision_for(self.matmul_precision_setting, device_type)
        if precision is not None:
            torch.set_float32_matmul_precision(precision)
        self.channels_last = channels_last_on(self.channels_last_setting, device_type)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_backend is not None:
            self.net.compile(backend=self.compile_backend)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def configure_callbacks(self) -> list[pl.Callback]:
        # The per-step curves depend on the flush, so it comes with the module, not the config.
        if any(isinstance(callback, FlushStepLog) for callback in self.trainer.callbacks):
            return []
        return [FlushStepLog(self.step_log)]

    # ------------------------------------------------------------------ steps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 5:
            # Multi-crop testing (B, crops, C, H, W): the paper averages the crops' scores.
            batch, crops = images.shape[:2]
            scores = self.net(self._prepare(images.flatten(0, 1)))
            return scores.view(batch, crops, -1).softmax(-1).mean(1).log()
        return self.net(self._prepare(images))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.net(self._prepare(images))
        loss = F.cross_entropy(logits, labels)
        # The error of this very batch, on the device: one comparison, no metric object.
        err = (logits.detach().argmax(dim=-1) != labels).float().mean()
        self.step_log.record(self.global_step, self.current_epoch, loss, err)
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

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
