"""Stop a run whose training loss stops being a finite number or explodes."""

from __future__ import annotations

import math

import lightning.pytorch as pl

from reslab.callbacks.step_log import FlushedSteps
from reslab.errors import ConfigError


class TrainingDiverged(RuntimeError):
    """The training loss became NaN, infinite or exploded; the run is recorded as `diverged`."""


class DivergenceDetector(pl.Callback):
    """Raises `TrainingDiverged` when a training step's loss is NaN or infinite, or more than
    `max_loss_factor` times the loss of the run's first step (null: only NaN/inf count).

    The losses are read where the module hands its per-step values to the loggers
    (reslab.callbacks.step_log), every `trainer.log_every_n_steps` steps, not at every step:
    reading a number off the device at every step would stall a GPU. So a run that diverges
    stops within one such interval of the step where it did (and before any checkpoint of
    later weights is written); every step's loss up to there is in metrics.csv. An explosion
    is caught even when the loss never reaches inf (momentum > 1, a huge lr: 1e17 and growing).

    The first step's loss is kept in checkpoints, so a resumed run compares with the same start.
    Raising (rather than setting `trainer.should_stop`) ends the run at once and lets the job
    record why. Under DDP each rank sees only its own losses: the ranks agree at each flush, so
    that all of them stop together (a rank that went on alone would wait for the others forever).
    """

    def __init__(self, max_loss_factor: float | None = 100.0, monitor: str = "train/loss") -> None:
        if max_loss_factor is not None and not (
            isinstance(max_loss_factor, (int, float)) and not isinstance(max_loss_factor, bool) and max_loss_factor > 1
        ):
            raise ConfigError(
                f"callbacks.divergence.max_loss_factor={max_loss_factor!r} is not allowed; use a number > 1 "
                "(e.g. 100: stop when the loss exceeds 100 x its first value) or null (stop on NaN/inf only)"
            )
        self.max_loss_factor = None if max_loss_factor is None else float(max_loss_factor)
        self.monitor = monitor
        self.start_loss: float | None = None

    def on_train_steps_flushed(self, trainer: pl.Trainer, pl_module: pl.LightningModule, steps: FlushedSteps) -> None:
        losses = steps.values.get(self.monitor)
        if losses is None:
            raise ConfigError(
                f"callbacks.divergence.monitor={self.monitor!r} is not a per-step training value; "
                f"the module records: {', '.join(steps.values)}"
            )
        if self.start_loss is None and math.isfinite(losses[0]):
            self.start_loss = losses[0]
        found = self.first_divergence(steps.steps, losses)
        if trainer.strategy.reduce_boolean_decision(found is not None, all=False):
            raise TrainingDiverged(found or f"another rank's training loss diverged by step {steps.steps[-1]}")

    def first_divergence(self, steps: list[int], losses: list[float]) -> str | None:
        """Why the first diverged step of these counts as diverged, or None."""
        limit = None
        if self.max_loss_factor is not None and self.start_loss is not None and self.start_loss > 0:
            limit = self.max_loss_factor * self.start_loss
        for step, loss in zip(steps, losses):
            if not math.isfinite(loss):
                return f"training loss is {loss} at step {step}"
            if limit is not None and loss > limit:
                return (
                    f"training loss {loss:.4g} at step {step} is more than {self.max_loss_factor:g} x its first "
                    f"value {self.start_loss:.4g} (callbacks.divergence.max_loss_factor)"
                )
        return None

    def state_dict(self) -> dict:
        return {"start_loss": self.start_loss}

    def load_state_dict(self, state_dict: dict) -> None:
        self.start_loss = state_dict.get("start_loss")
