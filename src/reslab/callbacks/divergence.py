"""Stop a run as soon as its training loss stops being a finite number."""

from __future__ import annotations

import math

import lightning.pytorch as pl


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the run is recorded as `diverged`."""


class DivergenceDetector(pl.Callback):
    """Raises `TrainingDiverged` on the first non-finite training loss.

    Raising (rather than setting `trainer.should_stop`) ends the run within the step, so no
    checkpoint of the broken weights is written, and lets the training script record why.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"training loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch})"
            )
