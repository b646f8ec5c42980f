"""The ResNet paper's warm-up for ResNet-110 on CIFAR-10 (section 4.2): train at lr 0.01 until
the training error drops below 80%, then go back to 0.1 and follow the usual schedule.

The callback does not own the learning rate; it scales it. At the start of training every
parameter group's lr is multiplied by `factor` (0.1: 0.1 -> 0.01), and when the training error
falls below `error_threshold` it is divided by `factor` again. PyTorch's MultiStepLR (and the
warm-up and constant schedules of `reslab.schedules`) update the group's current lr in place,
multiplying at each milestone, so a milestone inside the warm-up scales the warm-up lr and
the two never fight: the lr is always schedule(step) x (factor while warming up, else 1).

The rule reads the per-step training errors where the module hands them to the loggers
(reslab.callbacks.step_log), every `trainer.log_every_n_steps` steps, so that training never
waits for the device to report a number: the step whose error crossed the threshold is found
exactly, and the lr goes back at the end of the flush interval it falls in. With the paper's
recipe (a warm-up of about 400 steps of 64,000) a lag of up to log_every_n_steps steps at
0.01 does not matter; `trainer.log_every_n_steps=1` makes the switch immediate.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import lightning.pytorch as pl
import torch

from reslab.callbacks.step_log import FlushedSteps, StepLog
from reslab.errors import ConfigError

log = logging.getLogger("reslab")

# Where the warm-up stands; saved in checkpoints so a resumed run neither scales twice nor forgets.
PENDING, WARMING_UP, DONE, INACTIVE = "pending", "warming_up", "done", "inactive"


class WarmupUntilError(pl.Callback):
    """lr x `factor` until the mean training error of the last `window` steps is below
    `error_threshold`, then the configured lr.

    only_depths: act only when the network's depth (`pl_module.net.depth`, as the builder of
    `reslab.models` sets it) is one of these; null acts on every network. This is how one
    sweep over depths warms up only its 110-layer jobs. monitor: the per-step training error
    the LightningModule records. `switch_step` is the step from which the lr is back (the end of
    the flush interval), `crossed_step` the step whose error ended the warm-up.
    """

    def __init__(
        self,
        factor: float = 0.1,
        error_threshold: float = 0.8,
        window: int = 1,
        only_depths: Sequence[int] | None = None,
        monitor: str = "train/err",
    ) -> None:
        super().__init__()
        if not isinstance(factor, (int, float)) or not 0.0 < factor < 1.0:
            raise ConfigError(f"callbacks.warmup_until_error.factor={factor!r} must be in (0, 1), e.g. 0.1")
        if not isinstance(error_threshold, (int, float)) or not 0.0 < error_threshold <= 1.0:
            raise ConfigError(
                f"callbacks.warmup_until_error.error_threshold={error_threshold!r} must be a fraction in (0, 1], "
                "e.g. 0.8 for 80%"
            )
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ConfigError(f"callbacks.warmup_until_error.window={window!r} must be an integer >= 1")
        self.factor = float(factor)
        self.error_threshold = float(error_threshold)
        self.window = window
        self.only_depths = None if only_depths is None else [int(d) for d in only_depths]
        self.monitor = monitor
        self.state = PENDING
        self.switch_step: int | None = None
        self.crossed_step: int | None = None
        self._recent: deque[float] = deque(maxlen=window)

    def applies_to(self, pl_module: pl.LightningModule) -> bool:
        if self.only_depths is None:
            return True
        depth = getattr(getattr(pl_module, "net", pl_module), "depth", None)
        if depth is None:
            raise ConfigError(
                "callbacks.warmup_until_error.only_depths needs a network with a `depth` attribute "
                "(model=plain/resnet/preact); set only_depths=null to warm up any network"
            )
        return int(depth) in self.only_depths

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run restores both this state and the already scaled lrs from its checkpoint.
        if self.state != PENDING:
            return
        if not self.applies_to(pl_module):
            self.state = INACTIVE
            return
        if not isinstance(getattr(pl_module, "step_log", None), StepLog):
            raise ConfigError(
                "callbacks.warmup_until_error needs the per-step training errors that "
                "reslab.module.ClassificationModule records (its step_log)"
            )
        self._scale_lr(trainer, self.factor)
        self.state = WARMING_UP
        log.info("warm-up: lr x %g until the training error is below %g", self.factor, self.error_threshold)

    def on_train_steps_flushed(self, trainer: pl.Trainer, pl_module: pl.LightningModule, steps: FlushedSteps) -> None:
        if self.state != WARMING_UP:
            return
        errors = steps.values.get(self.monitor)
        if errors is None:
            raise ConfigError(
                f"callbacks.warmup_until_error.monitor={self.monitor!r} is not a per-step training value; "
                f"the module records: {', '.join(steps.values)}"
            )
        if trainer.world_size > 1:
            # Every rank must switch at the same step, or the replicas would train with different
            # lrs: the rule reads the errors averaged over the ranks (one all-reduce per flush).
            errors = trainer.strategy.reduce(torch.tensor(errors, device=pl_module.device), reduce_op="mean").tolist()
        for step, error in zip(steps.steps, errors):
            self._recent.append(float(error))
            if len(self._recent) == self.window and sum(self._recent) / self.window < self.error_threshold:
                self._scale_lr(trainer, 1.0 / self.factor)
                self.state = DONE
                self.crossed_step = step
                self.switch_step = trainer.global_step
                log.info(
                    "warm-up ended: training error %.3f at step %d; lr back to the schedule from step %d",
                    error,
                    step,
                    self.switch_step,
                )
                return

    def _scale_lr(self, trainer: pl.Trainer, scale: float) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= scale

    def state_dict(self) -> dict:
        return {
            "state": self.state,
            "switch_step": self.switch_step,
            "crossed_step": self.crossed_step,
            "recent": list(self._recent),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.state = state_dict["state"]
        self.switch_step = state_dict.get("switch_step")
        self.crossed_step = state_dict.get("crossed_step")
        self._recent = deque(state_dict.get("recent", []), maxlen=self.window)
