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
    Under DDP each rank sees only its own loss: the ranks agree first, so that all of them stop
    at the same step (a rank that went on alone would wait for the others forever).
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = None if loss is None else float(loss.detach())
        diverged = value is not None and not math.isfinite(value)
        if trainer.strategy.reduce_boolean_decision(diverged, all=False):
            what = f"training loss is {value}" if diverged else "another rank's training loss is not finite"
            raise TrainingDiverged(f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch})")
