"""`hydra/sweeper=reslab_optuna`: Hydra's Optuna sweeper whose search goes on when trials fail.

Hydra's Optuna sweeper (hydra-optuna-sweeper 1.3.0) ends the study with the traceback of a
trial that was lost (a killed job process, which the launcher reports as failed) as soon as one
batch has more failures than `max_failure_rate` allows, and a study in which no trial completed
dies in Optuna ("No trials are completed yet"). This one:

- tells Optuna every trial that did not produce an objective as failed: a job that failed,
  diverged or was interrupted (its results.json says so), one that returned no objective, and
  one the launcher lost; the job's own record and log say why;
- goes on while the failed trials are at most `max_failure_rate` of `n_trials` (0: the first
  failure stops the search; 1: never), and otherwise stops before the next batch with one line
  and exit code 1;
- ends a search in which no trial completed with one line and exit code 1 instead of Optuna's
  error (no optimization_results.yaml). A ResLab sweep prints its summary as it exits.

The public extension points are the sweeper class and its config; what is not public is the
launcher that the plugin's implementation object holds (`self.sweeper.launcher`), wrapped here
to see each batch's returns: hence the exact version pin in pyproject.toml.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from reslab import job as job_files

log = logging.getLogger("reslab")


class _SearchStopped(Exception):
    """Too many trials failed: no further batch is launched."""


class TrialJudge(Launcher):
    """Wraps the sweeper's launcher: every trial without an objective comes back as a completed
    job that returned None, which the Optuna sweeper tells Optuna as a failed trial and never
    raises; the failures are counted against the search's budget of failures."""

    def __init__(self, launcher: Launcher, n_trials: int, max_failure_rate: float) -> None:
        self.launcher = launcher
        self.allowed_failures = max_failure_rate * n_trials
        self.completed = 0
        self.failures: list[str] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        if len(self.failures) > self.allowed_failures:
            raise _SearchStopped
        returns = list(self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx))
        judged = []
        for number, ret in enumerate(returns, start=initial_job_idx):
            why_not = _why_no_objective(ret)
            if why_not is None:
                self.completed += 1
                judged.append(ret)
                continue
            self.failures.append(f"trial {number}: {why_not}")
            failed = copy.copy(ret)
            failed.status = JobStatus.COMPLETED
            failed.return_value = None  # told to Optuna as a failed trial
            judged.append(failed)
        return judged


def _why_no_objective(ret: JobReturn) -> str | None:
    if ret.status != JobStatus.COMPLETED:
        try:
            ret.return_value  # raises what the launcher saw of the lost job
        except Exception as error:  # noqa: BLE001 - any failure of the job is the trial's
            first_line = str(error).splitlines()[0] if str(error) else ""
            return f"lost ({type(error).__name__}: {first_line})"
        return "lost"
    status = _record_status(_output_dir(ret))
    if status not in (None, job_files.COMPLETED):
        return status
    value = ret.return_value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "no objective (no validation)" if value is None else f"objective {value!r} is not a number"
    return None if math.isfinite(number) else f"objective {number}"


def _output_dir(ret: JobReturn) -> str | None:
    """The job's folder (its working_dir is the folder it ran in: the sweep's with job.chdir=false)."""
    return OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else ret.working_dir


def _record_status(working_dir: str | None) -> str | None:
    """The status in the trial's record, where the job wrote one (other apps' jobs do not)."""
    if not working_dir:
        return None
    try:
        record = job_files.read_results(working_dir)
    except job_files.UnreadableJobFile as error:
        return f"unreadable record ({error})"
    return None if record is None else record.get("status")


class ReslabOptunaSweeper(OptunaSweeper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.judge: TrialJudge | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        implementation = self.sweeper
        self.judge = TrialJudge(implementation.launcher, implementation.n_trials, implementation.max_failure_rate)
        implementation.launcher = self.judge

    def sweep(self, arguments: list[str]) -> None:
        assert self.judge is not None
        try:
            super().sweep(arguments)
        except _SearchStopped:
            log.error(
                "search stopped: %d trials failed, more than max_failure_rate=%g of n_trials=%d allows (%s)",
                len(self.judge.failures),
                self.sweeper.max_failure_rate,
                self.sweeper.n_trials,
                "; ".join(self.judge.failures),
            )
            raise SystemExit(1) from None
        except ValueError:
            if self.judge.completed:
                raise
            # Optuna's study.best_trial with no completed trial: the search has no result.
            log.error(
                "search without result: none of its %d trials completed (%s)",
                len(self.judge.failures),
                "; ".join(self.judge.failures),
            )
            raise SystemExit(1) from None


@dataclass
class ReslabOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.reslab_sweepers.reslab_optuna_sweeper.ReslabOptunaSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="reslab_optuna", node=ReslabOptunaSweeperConf, provider="reslab_sweepers"
)
