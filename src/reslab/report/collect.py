"""Read a sweep folder: one record per job, whatever state the job is in, and the grid points
the sweep defines but never started.

Job states: `completed`, `failed`, `diverged`, `interrupted`, `running` (from the job's
results.json; a job folder without one has not started its task, or was killed before);
`unreadable` (a results.json or metrics.csv that cannot be read: listed with why, the rest of the
sweep is reported); `missing` (a grid point of the sweep with no job folder: not started).
File names, the job family and the final-training-error rule come from reslab.job.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from reslab import job as job_files
from reslab.job import METRICS_FILE, MULTIRUN_FILE, RUNNING, UnreadableJobFile, model_family
from reslab.sweep import expand_grid, is_basic_sweeper, is_grid_sweep

log = logging.getLogger("reslab")

MISSING = "missing"
UNREADABLE = "unreadable"
SEED_KEYS = ("seed", "+seed")


@dataclass
class Job:
    """One Hydra job of a sweep: its choices, its config, its results.json and its metric history."""

    path: Path
    overrides: list[str]
    choices: dict[str, str]
    config: dict[str, Any]
    results: dict[str, Any] | None
    history: list[dict[str, float]] = field(default_factory=list)
    # Why the job's files could not be read (then results and history are empty).
    unreadable: str | None = None
    # Hydra's job number in its sweep (hydra.job.num): a sampling sweeper's trial number.
    num: int | None = None
    # The sweeper that launched it (hydra.sweeper._target_).
    sweeper: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        if self.unreadable:
            return UNREADABLE
        if self.results is None:
            # A job folder without results.json is still running, or was killed.
            return RUNNING
        return self.results.get("status", "unknown")

    @property
    def error(self) -> str | None:
        if self.unreadable:
            return self.unreadable
        if self.results is None:
            return "no results.json yet: still running, or stopped before it could write one"
        if self.status == RUNNING:
            r = self.results
            return f"started {r.get('started_at')} as pid {r.get('pid')} on {r.get('host')}: still running, or killed"
        return self.results.get("error")

    @property
    def experiment(self) -> str | None:
        return (self.results or {}).get("experiment") or self.config.get("experiment_name")

    @property
    def model(self) -> dict[str, Any]:
        return self.config.get("model") or {}

    @property
    def family(self) -> str:
        """plain, resnet, preact, a torchvision model's name (reslab.job.model_family)."""
        return model_family(self.model, self.choices.get("model"))

    @property
    def depth(self) -> int | None:
        depth = self.model.get("depth")
        return depth if isinstance(depth, int) else None

    @property
    def shortcut(self) -> str | None:
        value = self.model.get("shortcut")
        return None if value is None else str(value)

    @property
    def label(self) -> str:
        return f"{self.family}-{self.depth}" if self.depth is not None else self.family

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    def metric(self, name: str) -> float | None:
        if self.results is None:
            return None
        value = self.results.get("metrics", {}).get(name)
        return None if value is None else float(value)

    def best(self, name: str) -> float | None:
        if self.results is None:
            return None
        return self.results.get("best", {}).get(name)

    def curve(self, name: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one metric from metrics.csv."""
        points = [(row["step"], row[name]) for row in self.history if name in row and "step" in row]
        return [p[0] for p in points], [p[1] for p in points]

    def final_train_error(self) -> float | None:
        return job_files.final_train_error(self.history)


@dataclass
class Sweep:
    """A sweep folder: its jobs, the grid it defines and the grid points without a job folder."""

    path: Path
    jobs: list[Job]
    grid: list[list[str]]
    missing: list[list[str]]
    experiment: str | None
    # Jobs drawn by a sampling sweeper (e.g. Optuna): trials, not grid points.
    sampled: bool = False

    @property
    def statuses(self) -> Counter[str]:
        return Counter([job.status for job in self.jobs] + [MISSING] * len(self.missing))


def read_job(job_dir: Path) -> Job:
    """One job folder; files that cannot be read make the job `unreadable`, never an error."""
    hydra_dir = job_dir / ".hydra"
    try:
        overrides = _load_yaml(hydra_dir / "overrides.yaml") or []
        hydra_yaml = _load_yaml(hydra_dir / "hydra.yaml") or {}
        config = _resolved_config(hydra_dir / "config.yaml", job_dir)
    except Exception as error:  # noqa: BLE001 - a damaged .hydra/ costs this job only
        return Job(job_dir, [], {}, {}, None, unreadable=f".hydra/ cannot be read ({type(error).__name__}: {error})")
    job = Job(
        path=job_dir,
        overrides=overrides,
        choices=hydra_yaml.get("hydra", {}).get("runtime", {}).get("choices", {}),
        config=config,
        results=None,
        num=hydra_yaml.get("hydra", {}).get("job", {}).get("num"),
        sweeper=(hydra_yaml.get("hydra", {}).get("sweeper") or {}).get("_target_"),
    )
    try:
        job.results = job_files.read_results(job_dir)
        job.history = job_files.read_metrics_csv(job_dir / METRICS_FILE)
    except UnreadableJobFile as error:
        job.results, job.history, job.unreadable = None, [], str(error)
    return job


def load_sweep(sweep_dir: Path) -> Sweep:
    """The jobs of `sweep_dir`, and the grid of its multirun.yaml with the points never started."""
    sweep_dir = Path(sweep_dir)
    # Every job folder (a folder holding Hydra's `.hydra/`), sorted by path.
    jobs = [read_job(hydra_dir.parent) for hydra_dir in sorted(sweep_dir.rglob(".hydra"))]
    multirun = OmegaConf.load(sweep_dir / MULTIRUN_FILE) if (sweep_dir / MULTIRUN_FILE).exists() else None
    grid = []
    if multirun is not None and is_grid_sweep(multirun):
        try:
            grid = expand_grid(multirun)
        except Exception as error:  # noqa: BLE001 - e.g. another sweeper's range or interval syntax
            log.warning("cannot expand the grid of %s (%s): grid points never started are not listed", sweep_dir, error)
    started = {frozenset(job.overrides) for job in jobs}
    missing = [point for point in grid if frozenset(point) not in started]
    # Hydra's basic sweeper writes multirun.yaml, sampling sweepers do not; each job names its sweeper.
    sweepers = {job.sweeper for job in jobs if job.sweeper}
    sampled = not is_grid_sweep(multirun) if multirun is not None else any(not is_basic_sweeper(s) for s in sweepers)
    return Sweep(sweep_dir, jobs, grid, missing, experiment_name(sweep_dir, jobs, multirun), sampled)


def experiment_name(sweep_dir: Path, jobs: list[Job], multirun: DictConfig | None = None) -> str | None:
    """The experiment a sweep ran: from a job's results.json or config, the sweep's
    multirun.yaml, or the sweep folder's name (multirun/DATE/TIME_NAME)."""
    for job in jobs:
        if job.experiment:
            return str(job.experiment)
    if multirun is not None and OmegaConf.select(multirun, "experiment_name"):
        return str(OmegaConf.select(multirun, "experiment_name"))
    match = re.fullmatch(r"\d{2}-\d{2}-\d{2}_(.+)", Path(sweep_dir).name)
    return match.group(1) if match else None


def latest_sweep(root: Path) -> Path | None:
    """The newest sweep folder under `root` (multirun/DATE/TIME_NAME)."""
    candidates = [p for p in Path(root).glob("*/*") if p.is_dir()]
    return max(candidates, key=lambda p: (p.parent.name, p.name), default=None)


def seed_free(overrides: list[str]) -> tuple[str, ...]:
    """A job's overrides without its seed: what identifies its grid point."""
    return tuple(sorted(o for o in overrides if o.split("=", 1)[0] not in SEED_KEYS))


def _resolved_config(path: Path, job_dir: Path) -> dict[str, Any]:
    """The job's composed config with interpolations resolved where they can be outside the
    job (the depth of `${table3_nets.${table3_net}.depth}`, num_classes from data, ...)."""
    if not path.exists():
        return {}
    cfg = OmegaConf.load(path)
    if "paths" in cfg and "output_dir" in cfg.paths:
        cfg.paths.output_dir = str(job_dir)  # the job's own folder, which `${hydra:...}` named
    resolved = OmegaConf.to_container(cfg)
    for key in cfg:
        try:
            value = cfg[key]
            resolved[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except Exception:  # noqa: BLE001 - an interpolation only the running job could resolve: kept as written
            pass
    return resolved


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None
