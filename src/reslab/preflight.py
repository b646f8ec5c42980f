"""Check every job of a sweep before the first one starts.

A sweep of twenty jobs whose fourteenth has a depth the builder rejects should stop at once,
with one message naming that job, not after thirteen trainings. The check composes each
job's config exactly as its launch will, and builds what can be wrong cheaply: the optimiser and schedule on a dummy parameter, the network
(on the meta device: no memory, no init cost) and the datamodule (whose constructor checks
its files and settings).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from hydra import compose
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from reslab.errors import ConfigError
from reslab.report.collect import expand_grid

log = logging.getLogger("reslab")


def instantiate(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a ConfigError raised by the target comes out as itself
    (Hydra wraps it), so the user sees its message alone."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def check_job(cfg: DictConfig) -> None:
    """Raise ConfigError if the network, the data, the optimiser or the schedule of this job
    config cannot be built."""
    if cfg.get("task", "train") != "train":
        return
    with torch.device("meta"):
        instantiate(cfg.model)
    instantiate(cfg.data)
    try:
        optimizer = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
        if cfg.get("scheduler"):
            instantiate(cfg.scheduler)(optimizer)
    except (InstantiationException, ValueError) as error:
        # torch.optim checks its own arguments (a negative lr, momentum) with ValueError.
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, ValueError):
            raise ConfigError(f"optimizer / scheduler: {cause}") from None
        raise


class SweepPreflight(Callback):
    """Hydra callback: on multirun start, compose and check every job; stop if any is bad."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = expand_grid(config)
        problems = []
        for overrides in jobs:
            try:
                check_job(compose(config_name="train", overrides=overrides))
            except ConfigError as error:
                problems.append(f"  job {' '.join(overrides)}: {error}")
        if problems:
            log.error(
                "configuration error in %d of %d jobs; nothing was run:\n%s",
                len(problems), len(jobs), "\n".join(problems),
            )
            raise SystemExit(2)
        log.info("checked the configs of all %d jobs", len(jobs))
