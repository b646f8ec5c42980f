"""How every task's job begins and ends: skipped when it completed before, its record begun,
its status, error, on_error, exit code and final record set by how the task ended. The record's
files and rules (results.json, attempts, statuses) are reslab.job's.

A task reads:

    run = JobRun.begin(cfg)
    if run.skipped:                # completed before with this config: "skipped: completed"
        return run.outcome()
    with run:                      # whatever happens inside is recorded
        ...build, fit, test; run.note(...) facts; run.use_trainer(trainer)
    return run.outcome()           # the objective, or the exit code / error on_error asks for

What the record holds, the statuses, exit codes, `on_error`, signals and full disks are the
README's "Failures, exit codes, locks and resuming"; the rules behind them are here and in
reslab.job. SIGTERM and SIGINT anywhere in the job stop it as interrupted (see _Stops); once its
final record is being written a signal changes nothing, so the record and the exit code agree.
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from reslab import job
from reslab.errors import ConfigError, FolderUnwritable, JobInterrupted, disk_error, unwritable

log = logging.getLogger("reslab")


class JobRun:
    """One job's run as its task sees it: the folder, the record it adds facts to, and, once the
    task has built one, the trainer, which then says which process writes the record (global
    rank 0) and whose counters and loggers finish it."""

    def __init__(self, cfg: DictConfig, job_dir: Path, record: dict[str, Any], sweeping: bool, skipped: bool) -> None:
        self.cfg = cfg
        self.skipped = skipped
        self.dir = job_dir
        self.record = record
        self.sweeping = sweeping
        self.trainer: Any = None
        self.failure: BaseException | None = None
        self._folder: Any = None  # this job's hold of its folder (reslab.folder_lock), rank 0's
        self._start = time.perf_counter()
        self._stops = _Stops()

    @classmethod
    def begin(cls, cfg: DictConfig) -> JobRun:
        """Begin this Hydra job's record (`running`), or skip the job (`skipped`, its files
        untouched) when it completed before with a config that computes the same."""
        hydra_cfg = HydraConfig.get()
        job_dir = Path(hydra_cfg.runtime.output_dir)
        sweeping = hydra_cfg.mode == RunMode.MULTIRUN
        # A single run's folder is its job's, held already by reslab.sweep.SweepOwner.
        folder = _hold_folder(job_dir) if sweeping else None
        previous = _previous_record(job_dir)
        if previous is not None and previous.get("status") == job.COMPLETED and job.same_computation(previous, cfg):
            log.info("skipped: completed (%s)", job_dir)
            if folder is not None:
                folder.release()
            return cls(cfg, job_dir, previous, sweeping, skipped=True)
        facts = dict(
            task=cfg.get("task"),
            experiment=cfg.get("experiment_name"),
            overrides=list(hydra_cfg.overrides.task),
            seed=cfg.get("seed"),
            config_digest=job.config_digest(cfg),
            versions=software_versions(),
        )
        run = cls(cfg, job_dir, job.new_record(previous, **facts), sweeping, skipped=False)
        run._folder = folder
        try:
            run._write()
        except OSError as error:  # nothing has run: the folder took no record
            log.error("%s", unwritable(job_dir, error))
            run._let_go()
            raise SystemExit(1 if sweeping else 2) from None
        return run

    def note(self, **facts: Any) -> None:
        self.record.update(facts)

    def use_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    def __enter__(self) -> JobRun:
        self._stops.watch()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> bool:
        """Record how the task ended and write the final record; the error waits for `outcome`."""
        self._stops.decided = True  # a signal from here on changes nothing: the record says how it ended
        if error is None and self._stops.received is not None:
            error = JobInterrupted(self._stops.received)  # Lightning let the stage end (its last batch)
        elif _is_sigterm_exit(error):
            error = JobInterrupted(signal.SIGTERM)  # Lightning's own stop, outside training
        self.failure = error
        unwritable_because = disk_error(error, self.dir)
        if error is None:
            self.note(status=job.COMPLETED)
        elif unwritable_because is not None:
            self._unwritable(unwritable_because)
        elif isinstance(error, ConfigError):
            # Found during the job (a checkpoint, the trainer's devices): worded as configuration,
            # handled like any failure of the job.
            self.note(status=job.FAILED, error=f"configuration error: {error}")
            log.error("configuration error: %s", error)
        elif isinstance(error, JobInterrupted):
            self.note(status=job.INTERRUPTED, error=str(error))
        elif isinstance(error, (KeyboardInterrupt, SystemExit)):
            # Ctrl-C outside training, Lightning's SIGTERM exit, a requeue that ends the job.
            self.note(status=job.INTERRUPTED, error=repr(error))
        elif _is_divergence(error):
            self.note(status=job.DIVERGED, error=str(error))
            log.warning("run diverged: %s", error)
        else:
            self.note(status=job.FAILED, error=f"{type(error).__name__}: {error}")
            log.error("job failed: %s: %s", type(error).__name__, error, exc_info=error if self.sweeping else None)
        try:
            self._finish()
        finally:
            self._let_go()
        # A single run's process ends with the code its record says, whatever signal comes now; a
        # sweep's next job, or the sweep, handles signals as before.
        self._stops.release(keep=not self.sweeping)
        return True

    def outcome(self) -> float | None:
        """The objective, or the process's end / the error, as the status and on_error say."""
        return _outcome(self.record, self.failure, self.cfg.on_error, self.sweeping)

    def _finish(self) -> None:
        if self.trainer is not None:
            from reslab.tasks.build import trainer_facts

            try:
                self.record.update(trainer_facts(self.trainer, self.record, self.dir))
            except Exception as error:  # noqa: BLE001 - the record is written whatever the loggers do
                if not isinstance(self.failure, FolderUnwritable):  # already told, in one line
                    log.warning("finishing the job's record: %s: %s", type(error).__name__, error)
        self.note(wall_time_s=round(time.perf_counter() - self._start, 3))
        try:
            self._write()
        except OSError as error:  # the record written when the job began stands
            if not isinstance(self.failure, FolderUnwritable):
                self._unwritable(error)

    def _let_go(self) -> None:
        if self._folder is not None:
            self._folder.release()
            self._folder = None

    def _unwritable(self, error: OSError) -> None:
        """The folder takes no more writes: the job ends failed, told in one line (exit 1)."""
        line = unwritable(self.dir, error)
        # The job's log file (Hydra's) is in that folder: its handler's failures would each print
        # a traceback.
        logging.raiseExceptions = False
        self.note(status=job.FAILED, error=line)
        self.failure = FolderUnwritable(line)
        log.error("%s", line)

    def _write(self) -> None:
        # Global rank 0 writes: the trainer knows; before there is one, the environment does.
        writer = self.trainer.is_global_zero if self.trainer is not None else _rank_from_env() == 0
        if writer:
            job.write_results(self.dir, self.record)


def _outcome(record: dict[str, Any], failure: BaseException | None, on_error: str, sweeping: bool) -> float | None:
    """Return the objective, or end the process / re-raise as the status and on_error say."""
    status = record["status"]
    if status == job.COMPLETED:
        return _objective(record)
    keep_going = on_error == "continue" or (on_error == "auto" and sweeping)
    if isinstance(failure, FolderUnwritable):
        if keep_going and sweeping:
            return None
        raise SystemExit(1) from None
    if isinstance(failure, JobInterrupted):
        raise SystemExit(failure.exit_code) from None
    if isinstance(failure, KeyboardInterrupt):
        raise SystemExit(130) from None
    if _is_sigterm_exit(failure):
        raise SystemExit(143) from None
    if isinstance(failure, SystemExit):
        raise failure  # e.g. submitit's exit after requeueing the job: its own code
    if keep_going and sweeping:
        return None  # no objective: a sampling sweeper counts the trial as failed
    if isinstance(failure, ConfigError):
        raise SystemExit(2) from None
    if keep_going or status == job.DIVERGED:
        raise SystemExit(1) from None
    raise failure  # on_error=raise: the error itself, with its traceback


class _Stops:
    """SIGTERM and SIGINT while a job runs, wherever they land (building the network and data,
    Lightning's setup, the test loop): the job stops with JobInterrupted, recorded `interrupted`.

    Inside a Lightning stage, SIGTERM is Lightning's: its handler calls this one after noting the
    signal, and the loop stops at the end of the running step (CheckpointOnSignal saves it), so
    here it is only noted; a stage that ends without stopping (it was on its last batch) leaves
    the job to stop when it ends. During training SIGINT is CheckpointOnSignal's. Once the job's
    end is decided (its final record being written) a signal changes nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self.decided = False
        self._previous: dict[int, Any] = {}
        self._handler = self._handle  # one bound method, told apart from Lightning's by identity

    def watch(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handler) for signum in self.SIGNALS}

    def release(self, keep: bool) -> None:
        """Hand the signals back, or (`keep`) keep noting them until the process ends."""
        if not keep and threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                if signal.getsignal(signum) is self._handler:
                    signal.signal(signum, handler)
            self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.decided:
            log.warning("%s after the job's end was recorded: it ends as recorded", signal.Signals(signum).name)
            return
        if signum == signal.SIGTERM and signal.getsignal(signum) is not self._handler:
            self.received = signum  # called by Lightning's handler: its loop stops at the step's end
            return
        raise JobInterrupted(signum)


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


def _hold_folder(job_dir: Path) -> Any:
    """Rank 0 holds a sweep job's folder while the job runs: a rerun never runs a job that a live
    process still writes. A live holder ends this job (exit 2) before it touches the folder."""
    if _rank_from_env() != 0:
        return None
    from reslab import folder_lock

    try:
        return folder_lock.hold(job_dir)
    except ConfigError as error:
        log.error("configuration error: %s", error)
        raise SystemExit(2) from None


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
