"""A sweep's life in the launching process: the folder is held, every job is checked before the
first starts, and the end says how each job went and what the exit code is.

`SweepOwner` is a Hydra callback (conf/hydra/default.yaml). It uses Hydra's public override
parser and compose API only, so it works with any sweeper:

- grid sweeps (Hydra's basic sweeper: `a,b,c`, `range(...)`, `glob(...)`, and the experiment's
  `hydra.sweeper.params`) are expanded and every job is composed and checked before the first
  starts; one bad job stops the sweep with exit code 2 and nothing runs;
- sampling sweepers (e.g. `hydra/sweeper=optuna`) get what does not vary checked up front; each
  sampled job is checked as it starts (reslab.checks.check_at_start) (a bad one is recorded as failed).

A sweep's exit codes are the README's "Failures, exit codes, locks and resuming".
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from reslab import folder_lock, job
from reslab.atomic_files import check_writable
from reslab.errors import ConfigError, unwritable

log = logging.getLogger("reslab")

# Hydra's default (grid) sweeper, known by the class name its config's target ends with: it
# lives in Hydra's private package, which ResLab never imports.
BASIC_SWEEPER = "BasicSweeper"
CONFIG_NAME = "train"


# ----------------------------------------------------------------------------- the jobs of a sweep


def as_written(config: DictConfig, key: str, empty: Any) -> Any:
    """The node at `key` as plain Python with its interpolations left unresolved, as Hydra reads
    override strings (`hydra.sweep.subdir=job${hydra.job.num}` resolves only inside a job)."""
    node = OmegaConf.select(config, key)
    return empty if node is None else OmegaConf.to_container(node, resolve=False)


def sweep_arguments(config: DictConfig) -> list[str]:
    """The sweep's overrides as the basic sweeper reads them: `hydra.sweeper.params` first,
    then the command line's task overrides (a later key replaces an earlier one)."""
    params = as_written(config, "hydra.sweeper.params", {})
    arguments = [f"{key}={value}" for key, value in params.items()]
    return arguments + as_written(config, "hydra.overrides.task", [])


def is_grid_sweep(config: DictConfig) -> bool:
    return is_basic_sweeper(OmegaConf.select(config, "hydra.sweeper._target_"))


def is_basic_sweeper(target: str | None) -> bool:
    return str(target).rsplit(".", 1)[-1] == BASIC_SWEEPER


def expand_grid(config: DictConfig) -> list[list[str]]:
    """Every job's overrides, in launch order, for a grid sweep (what the basic sweeper runs).
    A sampled range (`interval(...)`) is refused with a ConfigError naming a sampling sweeper."""
    final: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(sweep_arguments(config)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            final[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            final[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(
                f"{override.input_line}: the default (grid) sweeper runs lists, range() and glob() only; "
                "to sample from an interval add hydra/sweeper=optuna"
            )
    return [list(point) for point in itertools.product(*final.values())]


def fixed_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides that do not vary between the jobs of any sweeper."""
    overrides = OverridesParser.create().parse_overrides(as_written(config, "hydra.overrides.task", []))
    return [o.input_line for o in overrides if not o.is_sweep_override()]


# ----------------------------------------------------------------------------- the callback


class SweepOwner(Callback):
    """Holds the run or sweep folder, checks every job before the first starts, and ends a
    sweep with one line per job and its exit code."""

    def __init__(self) -> None:
        # The folder, not the hold: a launcher pickles the callbacks into its job processes.
        self._held: Path | None = None
        self._unsummarised: Path | None = None  # a sweep that has started and not been summarised

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._hold(Path(config.hydra.run.dir))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._let_go()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._hold(Path(config.hydra.sweep.dir))
        try:
            self._check_jobs(config)
        except SystemExit:
            self._let_go()
            raise
        # Hydra's basic sweeper raises once a batch in which a launcher reported a job lost (a
        # killed process) has run, and then skips on_multirun_end: the summary comes at exit.
        self._unsummarised = Path(config.hydra.sweep.dir)
        atexit.register(self._summarise_at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._let_go()
        self._unsummarised = None
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = report_sweep_end(sweep_dir)
        if any(status != job.COMPLETED for status in statuses):
            raise SystemExit(1)

    def _hold(self, folder: Path) -> None:
        if _launched_rank() != 0:
            return  # every task of `srun reslab-train` runs this; rank 0 holds the folder for them all
        try:
            # Before Hydra writes its config and opens its log file there, and before the lock:
            # a full disk or a read-only folder is refused in one line with nothing written.
            check_writable(folder)
            folder_lock.hold(folder)
            self._held = folder
        except OSError as error:
            log.error(
                "%s; free space there or choose another folder (hydra.run.dir / hydra.sweep.dir)",
                unwritable(folder, error),
            )
            raise SystemExit(2) from None
        except ConfigError as error:
            log.error("%s", error)
            raise SystemExit(2) from None
        # A run that ends by SystemExit (a configuration error, an exit code) skips Hydra's
        # on_run_end / on_multirun_end; the folder is let go when the process ends all the same.
        atexit.register(self._let_go)

    def _summarise_at_exit(self) -> None:
        if self._unsummarised is not None:
            sweep_dir, self._unsummarised = self._unsummarised, None
            report_sweep_end(sweep_dir)

    def _let_go(self) -> None:
        if self._held is not None:
            folder_lock.release(self._held)
            self._held = None

    def _check_jobs(self, config: DictConfig) -> None:
        from reslab.checks import SearchRefused, check_job, check_search_objective  # torch: only when a sweep runs

        try:
            if is_grid_sweep(config):
                jobs = expand_grid(config)
                what = f"all {len(jobs)} jobs"
            else:
                jobs = [fixed_overrides(config)]
                what = "what every sampled job shares (each job is checked again as it starts)"
        except ConfigError as error:
            log.error("configuration error: %s", error)
            raise SystemExit(2) from None
        problems = []
        folders: dict[Path, list[str]] = {}
        for number, overrides in enumerate(jobs):
            try:
                # With the sweep's own hydra overrides (its launcher above all): what a job may ask
                # for depends on where it runs, e.g. GPUs on SLURM nodes, not on this login node.
                job_config = compose(
                    config_name=CONFIG_NAME,
                    overrides=[*as_written(config, "hydra.overrides.hydra", []), *overrides],
                    return_hydra_config=True,
                )
                with as_launched(job_config, number) as folder:
                    check_job(job_config)
                    if not is_grid_sweep(config):
                        check_search_objective(job_config, config)
                if folder in folders:
                    raise ConfigError(
                        f"it would share the folder {folder.name} with job {' '.join(folders[folder])}: they differ "
                        f"only in keys that do not change what a job computes ({', '.join(job.NOT_COMPUTED_KEYS)})"
                    )
                folders[folder] = overrides
            except SearchRefused as error:
                log.error("configuration error: %s", error)
                raise SystemExit(2) from None
            except ConfigError as error:
                problems.append(f"  job {' '.join(overrides)}: {error}")
            except Exception as error:  # noqa: BLE001 - Hydra would only warn of it and run the sweep unchecked
                problems.append(f"  job {' '.join(overrides)}: could not be checked: {type(error).__name__}: {error}")
        if not problems:
            refuse_held_job_folders(folders)
        if problems:
            log.error(
                "configuration error in %d of %d jobs; nothing was run:\n%s",
                len(problems),
                len(jobs),
                "\n".join(problems),
            )
            raise SystemExit(2)
        log.info("checked the configs of %s", what)


def _launched_rank() -> int:
    """The rank torchrun or srun gave this process, as Lightning reads it; 0 when none did."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def refuse_held_job_folders(folders: Iterable[Path]) -> None:
    """A rerun never runs a job whose folder a live process still writes (a job process of a
    killed sweep that is still finishing): the sweep is refused in one line (exit 2)."""
    held = [(folder, holder) for folder in folders if (holder := folder_lock.live_holder(folder)) is not None]
    if held:
        folder, holder = held[0]
        more = f" ({len(held) - 1} more job folders are held too)" if len(held) > 1 else ""
        log.error(
            "configuration error: job folder %s%s; nothing was run", folder_lock.busy_message(folder, holder), more
        )
        raise SystemExit(2)


@contextmanager
def as_launched(job_config: DictConfig, number: int) -> Iterator[Path]:
    """A sweep job's composed config as its launcher and Hydra's `run_job` complete it before the
    job runs: its number (folders may be named by it, `hydra.sweep.subdir=job${hydra.job.num}`),
    its output folder, and HydraConfig holding it, so that `${hydra:runtime.output_dir}` (the
    job's `paths.output_dir`) is this job's folder, not the sweep's. HydraConfig is the sweep's
    again afterwards. Yields the job's folder."""
    with open_dict(job_config):
        job_config.hydra.job.num = job_config.hydra.job.id = number
        folder = Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)
        job_config.hydra.runtime.output_dir = str(folder.absolute())
    hydra_config = HydraConfig.instance()
    sweeps_own = hydra_config.cfg
    hydra_config.set_config(job_config)
    try:
        yield folder
    finally:
        hydra_config.cfg = sweeps_own


def report_sweep_end(sweep_dir: Path) -> list[str]:
    """Log one line per job folder of the sweep (status, final train error, val error, wall
    time) and where its report goes; return the jobs' statuses."""
    statuses = []
    lines = []
    for hydra_dir in sorted(Path(sweep_dir).rglob(".hydra")):
        folder = hydra_dir.parent
        try:
            record = job.read_results(folder)
            history = job.read_metrics_csv(folder / job.METRICS_FILE)
        except job.UnreadableJobFile as error:
            statuses.append("unreadable")
            lines.append(f"  {folder.relative_to(sweep_dir)}: unreadable ({error})")
            continue
        status = (record or {}).get("status", job.RUNNING)
        statuses.append(status)
        lines.append(f"  {folder.relative_to(sweep_dir)}: {job.summary_line(record, history)}")
    if lines:
        counts = {status: statuses.count(status) for status in sorted(set(statuses))}
        log.info(
            "sweep %s: %s\n%s\nreport: reslab-report %s",
            sweep_dir,
            ", ".join(f"{n} {status}" for status, n in counts.items()),
            "\n".join(lines),
            sweep_dir,
        )
    return statuses
