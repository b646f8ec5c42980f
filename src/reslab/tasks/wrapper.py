"""The one owner of a job's life: its record, status, error, on_error, exit code and final write.

Every task (`train`, `eval`, `toy_chain`) is a plain function `task(cfg, run)` that builds and
runs, notes its facts on `run` and registers what must happen at the end whatever the outcome
(`run.on_finish`: close the loggers, read the trainer's counters). Nothing else decides how a
job ended.

A job's results.json:
- is written when the job starts (`running`, with pid and host) and when it ends;
- keeps earlier attempts of the same job folder under `attempts`, so a failed rerun never loses
  a completed run's numbers;
- makes a rerun with an unchanged config (see reslab.job.config_digest) skip the job:
  "skipped: completed", its files untouched. An interrupted or failed job runs again and
  resumes from its checkpoints/last.ckpt.

Statuses and exit codes (single runs; a sweep's exit code is in reslab.sweep):
completed 0 · failed or diverged 1 · configuration error 2 · interrupted 130 (SIGINT) or 143
(SIGTERM). `on_error`: `continue` records a failure and returns, so that a sweep goes on;
`raise` re-raises it (a single run then ends with the error); `auto` = continue in sweeps,
raise in single runs.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from reslab import job
from reslab.errors import ConfigError, JobInterrupted
from reslab.preflight import check_job

log = logging.getLogger("reslab")

Task = Callable[[DictConfig, "JobRun"], None]
# (status) -> facts for the record; run at the end whatever the outcome, in the order registered.
Finisher = Callable[[str], dict[str, Any]]


@dataclass
class JobRun:
    """What a task sees of its job: the folder, the record it adds facts to, and the finishers."""

    dir: Path
    record: dict[str, Any]
    finishers: list[Finisher] = field(default_factory=list)
    # Whether this process writes the record: global rank 0. Before a Trainer exists the rank
    # comes from the environment; a task that builds one hands over `trainer.is_global_zero`.
    is_writer: Callable[[], bool] = field(default=lambda: _rank_from_env() == 0)

    def note(self, **facts: Any) -> None:
        self.record.update(facts)

    def on_finish(self, finisher: Finisher) -> None:
        self.finishers.append(finisher)


def run_task(cfg: DictConfig, task: Task) -> float | None:
    """Run `task` as this Hydra job; return its objective (the best `val/err`) for sweepers that
    minimise it."""
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    digest = job.config_digest(cfg)
    previous = _previous_record(job_dir)
    if previous is not None and previous.get("status") == job.COMPLETED and previous.get("config_digest") == digest:
        log.info("skipped: completed (%s)", job_dir)
        return _objective(previous)

    run = JobRun(dir=job_dir, record=_new_record(cfg, hydra_cfg, digest, previous))
    _write(run)
    start = time.perf_counter()
    failure: BaseException | None = None
    try:
        check_job(cfg, launcher=hydra_cfg.launcher)
        task(cfg, run)
        run.note(status=job.COMPLETED)
    except ConfigError as error:
        # Found during the job (a checkpoint, the trainer's devices): worded as configuration,
        # handled like any failure of the job.
        run.note(status=job.FAILED, error=f"configuration error: {error}")
        log.error("configuration error: %s", error)
        failure = error
    except JobInterrupted as error:
        run.note(status=job.INTERRUPTED, error=str(error))
        failure = error
    except (KeyboardInterrupt, SystemExit) as error:
        # Ctrl-C outside training, Lightning's SIGTERM exit, a requeue that ends the job.
        run.note(status=job.INTERRUPTED, error=repr(error))
        failure = error
    except Exception as error:  # noqa: BLE001 - recorded, then raised or let go per on_error
        if _is_divergence(error):
            run.note(status=job.DIVERGED, error=str(error))
            log.warning("run diverged: %s", error)
        else:
            run.note(status=job.FAILED, error=f"{type(error).__name__}: {error}")
            log.error("job failed: %s: %s", type(error).__name__, error, exc_info=sweeping)
        failure = error
    finally:
        _finish(run, time.perf_counter() - start)
    return _outcome(run.record, failure, cfg.on_error, sweeping)


def _outcome(record: dict[str, Any], failure: BaseException | None, on_error: str, sweeping: bool) -> float | None:
    """Return the objective, or end the process / re-raise as the status and on_error say."""
    status = record["status"]
    if status == job.COMPLETED:
        return _objective(record)
    if isinstance(failure, JobInterrupted):
        raise SystemExit(failure.exit_code) from None
    if isinstance(failure, KeyboardInterrupt):
        raise SystemExit(130) from None
    if _is_sigterm_exit(failure):
        raise SystemExit(143) from None
    if isinstance(failure, SystemExit):
        raise failure  # e.g. submitit's exit after requeueing the job: its own code
    keep_going = on_error == "continue" or (on_error == "auto" and sweeping)
    if keep_going and sweeping:
        return None  # no objective: a sampling sweeper counts the trial as failed
    if isinstance(failure, ConfigError):
        raise SystemExit(2) from None
    if keep_going or status == job.DIVERGED:
        raise SystemExit(1) from None
    raise failure  # on_error=raise: the error itself, with its traceback


def _objective(record: dict[str, Any]) -> float | None:
    """The best `val/err` (else the last one): what a sampling sweeper minimises. None when the
    job never validated: the sweeper then counts the trial as failed (NaN would be told as a
    value, which Optuna refuses)."""
    value = (record.get("best") or {}).get("val/err", (record.get("metrics") or {}).get("val/err"))
    return float(value) if value is not None else None


def _is_sigterm_exit(error: BaseException | None) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(error, SIGTERMException)


def _is_divergence(error: BaseException) -> bool:
    from reslab.callbacks.divergence import TrainingDiverged

    return isinstance(error, TrainingDiverged)


def _new_record(cfg: DictConfig, hydra_cfg: DictConfig, digest: str, previous: dict[str, Any] | None) -> dict[str, Any]:
    attempts = []
    if previous is not None:
        attempts = [*previous.pop("attempts", []), previous]
    return {
        "status": job.RUNNING,
        "error": None,
        "task": cfg.get("task"),
        "experiment": cfg.get("experiment_name"),
        "overrides": list(hydra_cfg.overrides.task),
        "seed": cfg.get("seed"),
        "config_digest": digest,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": software_versions(),
        "attempts": attempts,
    }


def _finish(run: JobRun, wall_time: float) -> None:
    for finisher in run.finishers:
        try:
            run.record.update(finisher(run.record["status"]))
        except Exception as error:  # noqa: BLE001 - the record is written whatever a finisher does
            log.warning("finishing the job's record: %s: %s", type(error).__name__, error)
    run.note(wall_time_s=round(wall_time, 3))
    _write(run)


def _write(run: JobRun) -> None:
    if run.is_writer():
        job.write_results(run.dir, run.record)


def _previous_record(job_dir: Path) -> dict[str, Any] | None:
    try:
        return job.read_results(job_dir)
    except job.UnreadableJobFile as error:
        log.warning("%s; this attempt starts a new record", error)
        return None


def _rank_from_env() -> int:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank


def software_versions() -> dict[str, str]:
    import lightning
    import torch
    import torchvision

    import reslab

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "reslab": reslab.__version__,
    }
