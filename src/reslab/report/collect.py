"""Read a sweep folder: one record per job, whatever state the job is in, and the grid points
the sweep defines but never started.

Job states: `completed`, `failed`, `diverged` (from the job's results.json); `running` (a job
folder without results.json: still running, or killed before it could write one); `missing`
(a grid point of the sweep with no job folder: not started).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from reslab.results import METRICS_FILE, read_metrics_csv, read_results

# Share of the last iterations whose per-batch training error is averaged into the
# "final training error" (a single last batch is too noisy to compare networks by).
FINAL_TRAIN_WINDOW = 0.1

log = logging.getLogger("reslab")

MULTIRUN_FILE = "multirun.yaml"
RUNNING = "running"
MISSING = "missing"
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

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        if self.results is None:
            # A job folder without results.json is still running, or was killed.
            return RUNNING
        return self.results.get("status", "unknown")

    @property
    def error(self) -> str | None:
        if self.results is None:
            return "no results.json yet: still running, or stopped before it could write one"
        return self.results.get("error")

    @property
    def experiment(self) -> str | None:
        return (self.results or {}).get("experiment") or self.config.get("experiment_name")

    @property
    def model(self) -> dict[str, Any]:
        return self.config.get("model") or {}

    @property
    def family(self) -> str:
        """plain, resnet, preact, or the model group choice for other networks."""
        shortcut = str(self.model.get("shortcut", "")).lower()
        if shortcut == "none":
            return "plain"
        if self.model.get("preact") is True:
            return "preact"
        if str(self.model.get("_target_", "")).endswith("build_network"):
            return "resnet"
        return self.choices.get("model", "resnet")

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
        _, values = self.curve("train/err")
        if not values:
            return None
        window = max(1, int(len(values) * FINAL_TRAIN_WINDOW))
        return sum(values[-window:]) / window


@dataclass
class Sweep:
    """A sweep folder: its jobs, the grid it defines and the grid points without a job folder."""

    path: Path
    jobs: list[Job]
    grid: list[list[str]]
    missing: list[list[str]]
    experiment: str | None

    @property
    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in [job.status for job in self.jobs] + [MISSING] * len(self.missing):
            counts[status] = counts.get(status, 0) + 1
        return counts


def collect_sweep(sweep_dir: Path) -> list[Job]:
    """Every job folder below `sweep_dir` (a folder holding Hydra's `.hydra/`), sorted by path."""
    return [read_job(hydra_dir.parent) for hydra_dir in sorted(Path(sweep_dir).rglob(".hydra"))]


def read_job(job_dir: Path) -> Job:
    hydra_dir = job_dir / ".hydra"
    return Job(
        path=job_dir,
        overrides=_load_yaml(hydra_dir / "overrides.yaml") or [],
        choices=((_load_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra", {}).get("runtime", {}).get("choices", {})),
        config=_resolved_config(hydra_dir / "config.yaml", job_dir),
        results=read_results(job_dir),
        history=read_metrics_csv(job_dir / METRICS_FILE),
    )


def load_sweep(sweep_dir: Path) -> Sweep:
    """The jobs of `sweep_dir`, and the grid of its multirun.yaml with the points never started."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_sweep(sweep_dir)
    multirun = _load_multirun(sweep_dir)
    grid = []
    if multirun is not None:
        try:
            grid = expand_grid(multirun)
        except Exception as error:  # noqa: BLE001 - e.g. another sweeper's range or interval syntax
            log.warning("cannot expand the grid of %s (%s): grid points never started are not listed", sweep_dir, error)
    started = {frozenset(job.overrides) for job in jobs}
    missing = [point for point in grid if frozenset(point) not in started]
    return Sweep(sweep_dir, jobs, grid, missing, experiment_name(sweep_dir, jobs, multirun))


def expand_grid(multirun: DictConfig) -> list[list[str]]:
    """Every job's overrides, in launch order, as Hydra's basic sweeper expands them: the
    sweeper's `params` first, then the command line's `hydra.overrides.task` (comma lists are
    sweeps; a later key replaces an earlier one)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(multirun, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.select(multirun, "hydra.overrides.task") or [])
    overrides = OverridesParser.create().parse_overrides(arguments)
    (batch,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [list(job) for job in batch]


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
    resolved: dict[str, Any] = {}
    for key in cfg:
        try:
            resolved[key] = _plain(cfg, key, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation only the running job could resolve
            resolved[key] = _plain(cfg, key, resolve=False)
    return resolved


def _plain(cfg: DictConfig, key: str, resolve: bool) -> Any:
    node = cfg._get_node(key)
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=resolve)
    return cfg[key] if resolve else node._value()


def _load_multirun(sweep_dir: Path) -> DictConfig | None:
    path = sweep_dir / MULTIRUN_FILE
    return OmegaConf.load(path) if path.exists() else None


def _load_yaml(path: Path) -> Any:
    if not path.exists():
        return None
    with path.open() as handle:
        return yaml.safe_load(handle)
