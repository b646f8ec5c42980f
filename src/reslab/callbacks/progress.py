"""The console's progress bar (conf/callbacks/progress_bar.yaml)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar for runs that are counted in steps: the training bar reads
    `Epoch 31, step 3,200/64,000` where Lightning's own reads `Epoch 31/-2` (max_epochs -1), and
    it is redrawn, its metrics read from the device, every `every_n_steps` steps, not every step.
    Runs counted in epochs keep Lightning's `Epoch 3/89`. The logger's version is not shown."""

    def __init__(self, every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every_n_steps = max(1, int(every_n_steps))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.describe_training(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last = batch_idx + 1 >= trainer.num_training_batches or trainer.global_step == trainer.max_steps
        if trainer.global_step % self.every_n_steps and not last:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.describe_training(trainer)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        # `v_num` is the first logger's version (here the W&B run id): no number to watch.
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def describe_training(self, trainer: pl.Trainer) -> None:
        if self.is_disabled or self.progress is None or self.train_progress_bar_id is None:
            return
        # Only for runs that end at `max_steps` with no epoch limit (max_epochs -1 or None).
        if not (trainer.max_steps is not None and trainer.max_steps > 0 and trainer.max_epochs in (None, -1)):
            return
        description = f"Epoch {trainer.current_epoch}, step {trainer.global_step:,}/{trainer.max_steps:,}"
        self.progress.update(self.train_progress_bar_id, description=description)


def progress_bar(enabled: bool = True, every_n_steps: int = 1) -> Callback:
    """The StepProgressBar; with `trainer.enable_progress_bar=false` a callback that does nothing
    instead, since Lightning refuses a progress bar callback then."""
    return StepProgressBar(every_n_steps=every_n_steps) if enabled else Callback()
