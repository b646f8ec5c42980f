"""Experiment loggers for a job: built from `cfg.logger`, closed with the job's outcome.

CSV always (the report reads metrics.csv) and, by default, Weights & Biases: one W&B run per
Hydra job, named after the job's overrides (`plain-56`), grouped per sweep, holding the whole
composed config as a nested dict. Without credentials the run is written offline into the job
folder (`wandb sync DIR` uploads it later); nothing here ever prompts or waits on a network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from reslab.job import MONITORED, job_name, job_tags, sweep_group
from reslab.wandb_runs import previous_run_id, start_wandb_run

log = logging.getLogger("reslab")

# Lightning logs every metric with the global step under this key; W&B plots against it.
STEP_KEY = "trainer/global_step"


def build_loggers(cfg: DictConfig, job_dir: Path, instantiate: Callable[..., Any]) -> list[Logger]:
    """One logger per non-null entry of `cfg.logger`; a W&B logger gets the job's run identity."""
    loggers = []
    for node in cfg.logger.values():
        if not node:
            continue
        if issubclass(get_class(node._target_), WandbLogger):
            # Only global rank 0 starts the run; the other ranks' loggers never need its identity.
            run_args = wandb_run_args(cfg, node, Path(job_dir)) if rank_zero_only.rank == 0 else {}
            loggers.append(instantiate(node, _partial_=True)(**run_args))
        else:
            loggers.append(instantiate(node))
            if isinstance(loggers[-1], TensorBoardLogger):
                # Its hparams: the whole composed config, as a W&B run's config.
                loggers[-1].log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def close_loggers(loggers: list[Logger], status: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finish every logger with the job's status; returns facts for results.json.

    A W&B run ends with exit code 0 when the job completed, 1 otherwise (failed, diverged,
    interrupted), so the UI shows it finished or failed; its summary gets the status and, from
    `facts` (the job's record), params, FLOPs and the error.
    """
    closed: dict[str, Any] = {}
    for logger in loggers:
        logger.finalize("success" if status == "completed" else "failed")
        if isinstance(logger, WandbLogger):
            closed["wandb"] = _finish_wandb_run(logger, status, facts or {})
    return closed


class WandbJobLogger(WandbLogger):
    """Lightning's WandbLogger whose run starts the ResLab way (see `start_wandb_run`).

    The run is still created lazily on global rank 0 only (Lightning's `rank_zero_experiment`):
    one run per job under DDP, whatever the number of processes.
    """

    @property
    @rank_zero_experiment
    def experiment(self):
        # A process that was handed the run by pickling (spawn) attaches to it the parent's way.
        if self._experiment is None and getattr(self, "_attach_id", None) is None:
            import wandb

            if wandb.run is not None:
                # A multirun job never appends to the run of the job before it.
                log.warning("W&B run %s of an earlier job was still open; marking it failed", wandb.run.id)
                wandb.run.finish(exit_code=1)
            self._experiment = start_wandb_run(self._wandb_init)
            _define_metrics(self._experiment)
        return super().experiment


def wandb_run_args(cfg: DictConfig, node: DictConfig, job_dir: Path) -> dict[str, Any]:
    """wandb.init arguments of this job that the config leaves null: name, group, tags, config
    and, on a rerun in the same job folder, the id of the folder's earlier run (resumed)."""
    overrides, choices = _hydra_job_facts()
    config = OmegaConf.to_container(cfg, resolve=True)
    config["hydra"] = {"choices": choices, "overrides": overrides}
    args: dict[str, Any] = {
        "config": config,
        "tags": [*job_tags(cfg.model, choices), *(node.get("tags") or [])],
    }
    if not node.get("name"):
        args["name"] = job_name(cfg.model, overrides, choices)
    if not node.get("group"):
        args["group"] = sweep_group(_sweep_dir(job_dir))
    if not node.get("id") and cfg.get("ckpt_path") != "none":
        args["id"] = previous_run_id(job_dir / "wandb")
    return args


def _finish_wandb_run(logger: WandbLogger, status: str, facts: dict[str, Any]) -> dict[str, Any]:
    # Touching `experiment` starts the run if the job failed before logging anything, so every
    # job that reached the trainer shows up in its group, failed ones included.
    run = logger.experiment
    if run.disabled:
        return {"mode": "disabled"}
    known = {key: facts[key] for key in ("params", "flops", "error") if facts.get(key) is not None}
    run.summary.update({"status": status, **known})
    identity = {
        "id": run.id,
        "dir": str(Path(run.dir).parent.absolute()),
        "mode": "offline" if run.offline else "online",
        "project": run.project,
        "group": run.group,
        "name": run.name,
        "url": None if run.offline else run.url,
    }
    run.finish(exit_code=0 if status == "completed" else 1)
    return identity


def _define_metrics(run) -> None:
    # What WandbLogger itself defines when it starts a run, plus best-and-last summaries.
    run.define_metric(STEP_KEY)
    run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
    for name in MONITORED:
        run.define_metric(name, step_metric=STEP_KEY, step_sync=True, summary="min,last")


def _hydra_job_facts() -> tuple[list[str], dict[str, str | None]]:
    """(task overrides, group choices)."""
    if not HydraConfig.initialized():
        return [], {}
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    return list(hydra_cfg.overrides.task), choices


def _sweep_dir(job_dir: Path) -> Path:
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    return job_dir
