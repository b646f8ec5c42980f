"""The pre-check: whether a job's config can run, decided in seconds before any work.

A sweep of twenty jobs whose fourteenth has a depth the builder rejects should stop at once,
with one message naming that job, not after thirteen trainings. `check_job` is called for every
job of a grid sweep before the first starts (reslab.sweep.SweepOwner) and by the job wrapper as
each job starts (single runs, sampled sweeps). It builds what can be wrong cheaply: the settings
(reslab.checks), the optimiser and schedule on a dummy parameter, the network on the meta device
(no memory, no init cost), the datamodule (whose constructor checks its files and settings)
and the callbacks.
"""

from __future__ import annotations

import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from reslab import checks
from reslab.cluster import check_cluster_layout
from reslab.errors import ConfigError
from reslab.speed import check_speed

# What a job does (`task`), and what it does when it fails (`on_error`; conf/train.yaml).
TASKS = ("train", "eval", "toy_chain")
ON_ERROR = ("auto", "continue", "raise")
# The tasks that build a network and data from cfg.model and cfg.data.
NETWORK_TASKS = ("train", "eval")


def instantiate(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a ConfigError raised by the target comes out as itself
    (Hydra wraps it), so the user sees its message alone; and a key the target does not take
    (`+data.foo=1`) is a ConfigError naming it and the keys the config has."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        unknown = _unexpected_keyword(error.__cause__)
        if unknown is not None and isinstance(node, DictConfig):
            # Hydra's message names the node ("full_key: data"); the config's keys are the settings.
            where = re.search(r"full_key: (\S+)", str(error))
            group = where.group(1) if where else str(node.get("_target_"))
            settings = ", ".join(sorted(str(key) for key in node if not str(key).startswith("_") and key != unknown))
            raise ConfigError(
                f"{group}.{unknown} is not a setting of {node.get('_target_')}; its settings are: {settings}"
            ) from None
        raise


def _unexpected_keyword(error: BaseException | None) -> str | None:
    """The argument name of Python's "got an unexpected keyword argument 'x'" TypeError."""
    if not isinstance(error, TypeError):
        return None
    found = re.search(r"unexpected keyword argument '([^']+)'", str(error))
    return found.group(1) if found else None


def check_job(cfg: DictConfig, launcher: DictConfig | None = None) -> None:
    """Raise ConfigError if this job config cannot run on `launcher` (the `hydra.launcher` node;
    None: the one in `cfg`, a composed sweep job's config that holds its `hydra` node)."""
    check_choice("task", cfg.get("task"), TASKS)
    check_choice("on_error", cfg.get("on_error"), ON_ERROR)
    if cfg.task not in NETWORK_TASKS:
        return
    checks.check_settings(cfg)
    check_speed(**(cfg.get("speed") or {}))
    check_cluster_layout(launcher if launcher is not None else OmegaConf.select(cfg, "hydra.launcher"), cfg.trainer)
    import torch

    with torch.device("meta"):
        instantiate(cfg.model)
    instantiate(cfg.data)
    if cfg.task == "train":
        _check_optimizer(cfg)
        _check_callbacks(cfg)
    if cfg.task == "eval" and cfg.get("ckpt_path") in (None, "none") and not cfg.model.get("weights"):
        raise ConfigError(
            "task=eval scores trained weights: give ckpt_path=FILE (a checkpoint of a job with this "
            "model and data config), or a pretrained model=torchvision with model.weights"
        )


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _check_callbacks(cfg: DictConfig) -> None:
    """Each callback checks its own settings as it is built (Lightning's checkpoint its
    intervals, for one); building them all takes milliseconds and writes nothing."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException  # how Lightning refuses a setting

    for name, node in (cfg.get("callbacks") or {}).items():
        if not node:
            continue
        try:
            instantiate(node)
        except InstantiationException as error:
            if isinstance(error.__cause__, (MisconfigurationException, ValueError)):
                raise ConfigError(f"callbacks.{name}: {error.__cause__}") from None
            raise


def _check_optimizer(cfg: DictConfig) -> None:
    import torch

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
