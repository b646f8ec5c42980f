"""What a search (a sampling sweeper such as `hydra/sweeper=reslab_optuna`) needs of its trials
before any runs: an objective. A trial's objective is its best `val/err` (reslab.tasks.wrapper),
so a trial that never validates within its steps has none, and a search of such trials would
only fail each of them. `check_search_objective` refuses that search up front.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reslab.errors import ConfigError

class SearchRefused(ConfigError):
    """The search's trials cannot produce its objective."""


HOW_TO_VALIDATE = (
    "validate sooner (e.g. trainer.val_check_interval=N with trainer.check_val_every_n_epoch=null: "
    "every N steps) or train longer (trainer.max_steps)"
)


def check_search_objective(job_config: DictConfig, sweep_config: DictConfig) -> None:
    """SearchRefused when the trials of a search cannot validate, so cannot produce an objective.

    `job_config` is a trial's composed config without its sampled values, `sweep_config` the
    sweep's. A search that samples a setting this depends on is left to its trials.
    """
    if any(key.startswith(("trainer.", "data.")) for key in sampled_keys(sweep_config)):
        return
    trainer = job_config.trainer
    if _number(trainer.get("limit_val_batches", 1.0)) == 0:
        raise SearchRefused(
            "the search's objective is each trial's best val/err, and trainer.limit_val_batches=0 "
            "turns validation off; give it a positive number of batches (or a fraction)"
        )
    first = first_validation(job_config)
    if first is None:
        return
    step, epoch, how = first
    max_steps = _number(trainer.get("max_steps", -1))
    max_epochs = _number(trainer.get("max_epochs"))
    if max_steps is not None and max_steps > 0 and step is not None and step > max_steps:
        raise SearchRefused(
            f"no trial can produce the search's objective (its best val/err): the first validation "
            f"comes at step {step} ({how}), after trainer.max_steps={int(max_steps)}; {HOW_TO_VALIDATE}"
        )
    if (max_steps is None or max_steps < 0) and max_epochs is not None and epoch is not None and epoch > max_epochs:
        raise SearchRefused(
            f"no trial can produce the search's objective (its best val/err): the first validation "
            f"comes in epoch {epoch} ({how}), after trainer.max_epochs={int(max_epochs)}; {HOW_TO_VALIDATE}"
        )


def sampled_keys(sweep_config: DictConfig) -> list[str]:
    """The keys a sampling sweeper varies: its `params` and the command line's sweep overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(sweep_config, "hydra.sweeper.params") or {}
    task = OmegaConf.to_container(OmegaConf.select(sweep_config, "hydra.overrides.task") or [], resolve=False)
    overrides = OverridesParser.create().parse_overrides(task)
    return [*params.keys(), *(o.key_or_group for o in overrides if o.is_sweep_override())]


def first_validation(job_config: DictConfig) -> tuple[int | None, int | None, str] | None:
    """(step, epoch, how) of the first validation as Lightning schedules it, or None when it
    cannot be told before training (a time-based interval, data whose size needs loading)."""
    trainer = job_config.trainer
    interval = _plain(trainer.get("val_check_interval"))
    every_n_epochs = _number(trainer.get("check_val_every_n_epoch", 1))
    if isinstance(interval, int) and not isinstance(interval, bool) and every_n_epochs is None:
        return interval, None, f"trainer.val_check_interval={interval} steps"
    if not (interval is None or isinstance(interval, (int, float))) or every_n_epochs is None:
        return None
    epochs = int(every_n_epochs)
    batches = training_batches_per_epoch(job_config)
    if batches is None:
        return None, epochs, f"trainer.check_val_every_n_epoch={epochs}"
    if isinstance(interval, int) and not isinstance(interval, bool):
        within = min(interval, batches)
    else:
        within = max(1, int(batches * (1.0 if interval is None else interval)))
    how = f"trainer.check_val_every_n_epoch={epochs}, {batches} training batches an epoch"
    return (epochs - 1) * batches + within, epochs, how


def training_batches_per_epoch(job_config: DictConfig) -> int | None:
    """Training batches per epoch of each process, from the datamodule's training split and the
    number of processes (devices x nodes, where given as numbers), for data held in memory
    (loaded in moments); None for other data."""
    from reslab.data.in_memory import InMemoryDataModule
    from reslab.preflight import instantiate

    datamodule = instantiate(job_config.data)
    if not isinstance(datamodule, InMemoryDataModule):
        return None
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    devices, nodes = _number(job_config.trainer.get("devices")), _number(job_config.trainer.get("num_nodes", 1))
    if isinstance(devices, int) and isinstance(nodes, int) and devices * nodes > 1:
        batches = math.ceil(batches / (devices * nodes))  # each process draws its share of the split
    limit = _number(job_config.trainer.get("limit_train_batches"))
    if limit is not None:
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)  # as Lightning reads it
    return batches


def _plain(node: Any) -> Any:
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node


def _number(value: Any) -> float | None:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value
