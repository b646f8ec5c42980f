"""Learning-rate schedules as Lightning scheduler configs.

Each function takes the optimiser (the config is `_partial_`) and returns the dict Lightning's
`configure_optimizers` expects, so the choice of stepping per iteration or per epoch lives in
the scheduler config next to the milestones it applies to.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
)

from reslab.errors import ConfigError

INTERVALS = ("step", "epoch")


def multistep(
    optimizer: Optimizer,
    milestones: list[int],
    gamma: float = 0.1,
    interval: str = "step",
    warmup_iters: int = 0,
    warmup_start_factor: float = 0.1,
) -> dict:
    """lr multiplied by `gamma` at each milestone (absolute iterations or epochs)."""
    if list(milestones) != sorted(milestones) or any(m < 0 for m in milestones):
        raise ConfigError(f"scheduler.milestones must be increasing non-negative counts, got {list(milestones)}")
    return _lightning_config(
        MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma),
        interval,
        warmup_iters,
        warmup_start_factor,
    )


def cosine(
    optimizer: Optimizer,
    total_iters: int,
    eta_min: float = 0.0,
    interval: str = "step",
    warmup_iters: int = 0,
    warmup_start_factor: float = 0.1,
) -> dict:
    """Cosine decay from the base lr to `eta_min` over `total_iters` intervals."""
    return _lightning_config(
        CosineAnnealingLR(optimizer, T_max=total_iters, eta_min=eta_min),
        interval,
        warmup_iters,
        warmup_start_factor,
    )


def constant(
    optimizer: Optimizer,
    interval: str = "step",
    warmup_iters: int = 0,
    warmup_start_factor: float = 0.1,
) -> dict:
    """The optimiser's own lr throughout (after the optional warm-up)."""
    return _lightning_config(
        ConstantLR(optimizer, factor=1.0, total_iters=0), interval, warmup_iters, warmup_start_factor
    )


def _lightning_config(schedule: LRScheduler, interval: str, warmup_iters: int, warmup_start_factor: float) -> dict:
    if interval not in INTERVALS:
        raise ConfigError(f"scheduler.interval must be one of {INTERVALS}, got {interval!r}")
    if warmup_iters < 0 or not 0.0 < warmup_start_factor <= 1.0:
        raise ConfigError(
            "scheduler.warmup_iters must be >= 0 and scheduler.warmup_start_factor in (0, 1], "
            f"got {warmup_iters} and {warmup_start_factor}"
        )
    if warmup_iters > 0:
        # Chained (not sequential) so milestones stay absolute: the warm-up factor and the
        # main schedule multiply at every step.
        warmup = LinearLR(schedule.optimizer, start_factor=warmup_start_factor, total_iters=warmup_iters)
        schedule = ChainedScheduler([warmup, schedule], optimizer=schedule.optimizer)
    return {"scheduler": schedule, "interval": interval, "frequency": 1}
