"""Every training step's values, kept on the device and handed to the loggers in batches.

Reading a tensor on the host (`float(loss)`, `.item()`, `.tolist()`, `bool(t)`) makes the host
wait until the device has finished all the work queued so far. Done on every step, as
`LightningModule.log(..., on_step=True, prog_bar=True)` does, that wait decides the wall time
of small networks on a GPU: the device idles while the host logs, then the host idles while the
device catches up. So the module records each step's values as device tensors
(`StepLog.record`: no transfer, no kernel) and `FlushStepLog` moves them to the host in one
transfer every `trainer.log_every_n_steps` steps, writing each value to every logger under the
step it belongs to: metrics.csv and W&B still hold every step.

A flush also happens
- before validation, so that a validation's rows come after the training rows of its step;
- whenever a checkpoint is written, so that the rows up to it are on disk with it;
- at the end of training and when training raises, so that nothing recorded is lost.
The loggers' runs are opened before training (W&B starts a service process), not at the first
flush.

What acts on these values does so at a flush, one flush interval late at most: callbacks that
define `on_train_steps_flushed(trainer, pl_module, steps: FlushedSteps)` are called at every
flush (after the loggers, on every rank). The divergence detector and the warm-up rule work
this way. `trainer.callback_metrics` and the progress bar get the newest values at each flush.
(Under DDP with several processes Lightning itself still reads a tensor every step: its
SIGTERM broadcast.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger("reslab")

# The method a callback defines to see every flushed batch of steps.
FLUSH_HOOK = "on_train_steps_flushed"


@dataclass(frozen=True)
class FlushedSteps:
    """Consecutive training steps as host numbers: `values[name][i]` belongs to `steps[i]`."""

    steps: list[int]
    epochs: list[int]
    values: dict[str, list[float]]

    def rows(self) -> Iterator[tuple[int, dict[str, float]]]:
        """(step, {name: value, ..., "epoch": epoch}) per step, as a logger takes them."""
        for i, (step, epoch) in enumerate(zip(self.steps, self.epochs)):
            yield step, {**{name: column[i] for name, column in self.values.items()}, "epoch": epoch}

    def last(self) -> dict[str, float]:
        return {name: column[-1] for name, column in self.values.items()}


class StepLog:
    """Per-step scalar tensors (one per name) waiting on the device for the next flush."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._steps: list[int] = []
        self._epochs: list[int] = []
        self._columns: list[list[torch.Tensor]] = [[] for _ in self.names]

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def last_step(self) -> int | None:
        return self._steps[-1] if self._steps else None

    def record(self, step: int, epoch: int, *values: torch.Tensor) -> None:
        """Keep this step's values (0-d tensors, in the order of `names`). With gradient
        accumulation several batches make one step: the last one's values stand for it, as
        with Lightning's own step logging."""
        if self._steps and self._steps[-1] == step:
            self._steps.pop()
            self._epochs.pop()
            for column in self._columns:
                column.pop()
        self._steps.append(step)
        self._epochs.append(epoch)
        for column, value in zip(self._columns, values, strict=True):
            column.append(value.detach())

    def drain(self) -> FlushedSteps | None:
        """Everything recorded since the last drain, on the host; None if nothing was."""
        if not self._steps:
            return None
        # One device-to-host transfer for the whole table.
        table = torch.stack([torch.stack(column).float() for column in self._columns]).tolist()
        flushed = FlushedSteps(self._steps, self._epochs, dict(zip(self.names, table)))
        self._steps, self._epochs = [], []
        self._columns = [[] for _ in self.names]
        return flushed


class FlushStepLog(pl.Callback):
    """Hands a `StepLog` to the loggers, the progress bar and the flush hooks (see the module
    docstring). The LightningModule that owns the log adds this callback itself
    (`configure_callbacks`), so a run's per-step curves never depend on the callback config."""

    def __init__(self, step_log: StepLog) -> None:
        self.step_log = step_log

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Open every logger's run now (W&B starts a service process, seconds), not at the first
        # flush in the middle of training, where it would stall the loop.
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                getattr(logger, "experiment", None)  # the property starts the run (not every logger has one)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        every = trainer.log_every_n_steps
        last = self.step_log.last_step
        # `last < global_step`: the optimiser has stepped (not a batch in the middle of accumulation).
        if every > 0 and last is not None and last < trainer.global_step and trainer.global_step % every == 0:
            self.flush(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self.flush(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Raising here (a diverged run) stops the checkpoint of broken weights from being written.
        self.flush(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Only the loggers: another rank may not have failed, so nothing that talks to the
        # other ranks may run; and a device that broke must not hide the original error.
        try:
            self.flush(trainer, pl_module, hooks=False)
        except Exception as error:  # noqa: BLE001 - the exception being handled is the one to report
            log.warning("could not log the last %d training steps: %s", len(self.step_log), error)

    def flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule, hooks: bool = True) -> None:
        steps = self.step_log.drain()
        if steps is None:
            return
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                for step, row in steps.rows():
                    logger.log_metrics(row, step=step)
                logger.save()
        newest = steps.last()
        trainer.progress_bar_metrics.update(newest)
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in newest.items()})
        if hooks:
            for callback in trainer.callbacks:
                hook = getattr(callback, FLUSH_HOOK, None)
                if callable(hook):
                    hook(trainer, pl_module, steps)
