"""Sweep tables: one row per grid point, seeds aggregated as mean, std and n."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import yaml

from reslab.report.collect import Job, seed_free

FAMILY_ORDER = {"plain": 0, "resnet": 1, "preact": 2}


@dataclass
class Stat:
    """A metric over the seeds of one grid point."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def percent(self) -> str:
        """`12.34` or `12.34 ± 0.56` (in %), blank when no job has the value."""
        if self.mean is None:
            return "—"
        text = f"{100 * self.mean:.2f}"
        return text + (f" ± {100 * self.std:.2f}" if self.std is not None else "")


@dataclass
class GridPoint:
    """The jobs of a sweep that differ only in their seed; `missing`: how many more the sweep's
    grid defines at this point that never started."""

    key: tuple
    jobs: list[Job]
    missing: int = 0

    @property
    def first(self) -> Job:
        return self.jobs[0]

    @property
    def completed(self) -> list[Job]:
        return [job for job in self.jobs if job.status == "completed"]

    @property
    def count(self) -> str:
        """`completed/jobs`, e.g. `2/3`; jobs of the grid that never started count as jobs."""
        return f"{len(self.completed)}/{len(self.jobs) + self.missing}"

    def states(self) -> str:
        """The states of the jobs that did not complete, e.g. `1 failed, 1 not started`."""
        counts = Counter(job.status for job in self.jobs if job.status != "completed")
        if self.missing:
            counts["not started"] = self.missing
        return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))

    @property
    def sized(self) -> Job:
        """The first job that recorded its network's size (params, MACs), else the first job."""
        return next((job for job in self.jobs if (job.results or {}).get("params")), self.first)

    def stat(self, value: Callable[[Job], float | None]) -> Stat:
        values = [value(job) for job in self.completed]
        return Stat([v for v in values if v is not None])


def group_by_grid_point(jobs: Iterable[Job], missing: Iterable[list[str]] = ()) -> list[GridPoint]:
    """Jobs grouped by grid point. A never-started job (`missing`, its overrides) counts at its
    point when another seed of that point started; otherwise only the sweep's list names it."""
    points: dict[tuple, GridPoint] = {}
    for job in jobs:
        key = seed_free(job.overrides)
        points.setdefault(key, GridPoint(key, [])).jobs.append(job)
    for overrides in missing:
        if seed_free(overrides) in points:
            points[seed_free(overrides)].missing += 1
    return sorted(
        points.values(),
        key=lambda p: (FAMILY_ORDER.get(p.first.family, 9), p.first.family, p.first.depth or 0, p.key),
    )


COLUMNS = (
    "model",
    "depth",
    "shortcut",
    "params",
    "MACs",
    "images/s",
    "train err %",
    "val err %",
    "best val err %",
    "test err %",
    "n",
    "grid point",
)


def shared_overrides(keys: Iterable[Iterable[str]]) -> set[str]:
    """The overrides every grid point shares (the experiment, the data root): they say nothing
    about one point."""
    keys = [set(key) for key in keys]
    return set.intersection(*keys) if keys else set()


def summary_rows(points: list[GridPoint]) -> list[dict[str, str]]:
    shared = shared_overrides(point.key for point in points)
    rows = []
    for point in points:
        job = point.sized
        params = (job.results or {}).get("params")
        flops = (job.results or {}).get("flops")
        rows.append(
            {
                "model": job.family,
                "depth": str(job.depth if job.depth is not None else "—"),
                "shortcut": str(job.model.get("shortcut", "—")),
                "params": f"{params:,}" if params else "—",
                "MACs": _si(flops) if flops else "—",
                "images/s": _si(rate) if (rate := point.stat(images_per_s).median) else "—",
                "train err %": point.stat(Job.final_train_error).percent(),
                "val err %": point.stat(lambda j: j.metric("val/err")).percent(),
                "best val err %": point.stat(lambda j: j.best("val/err")).percent(),
                "test err %": point.stat(lambda j: j.metric("test/err")).percent(),
                "n": point.count,
                "grid point": " ".join(o for o in point.key if o not in shared) or "—",
            }
        )
    return rows


def csv_rows(jobs: Iterable[Job]) -> list[dict[str, object]]:
    """One row per job (not aggregated): the machine-readable results.csv."""
    rows = []
    for job in jobs:
        results = job.results or {}
        rows.append(
            {
                "job": job.path.name,
                "status": job.status,
                "model": job.family,
                "depth": job.depth,
                "shortcut": job.model.get("shortcut"),
                "seed": job.seed,
                "params": results.get("params"),
                "flops": results.get("flops"),
                "steps": results.get("steps"),
                "wall_time_s": results.get("wall_time_s"),
                "images_per_s": images_per_s(job),
                "final_train_err": job.final_train_error(),
                "val_err": job.metric("val/err"),
                "best_val_err": job.best("val/err"),
                "test_err": job.metric("test/err"),
                "error": results.get("error"),
            }
        )
    return rows


def images_per_s(job: Job) -> float | None:
    """Measured training throughput (results.json `throughput`, reslab.callbacks.throughput)."""
    return ((job.results or {}).get("throughput") or {}).get("images_per_s")


# ----------------------------------------------------------------------------- sampled sweeps

# A sampling sweeper's objective: each job's return value, its best validation error (lower is
# better; reslab.tasks.wrapper).
OBJECTIVE = "val/err"


def objective(job: Job) -> float | None:
    """A completed trial's objective: its lowest `val/err`; None for any other trial."""
    return job.best(OBJECTIVE) if job.status == "completed" else None


def override_values(job: Job) -> dict[str, str]:
    """The job's overrides as {key: value} (`optimizer.lr=0.01` -> {"optimizer.lr": "0.01"})."""
    pairs = (override.lstrip("+~").partition("=") for override in job.overrides)
    return {key: value for key, assigned, value in pairs if assigned}


# What Hydra's Optuna sweeper writes into the sweep folder when the sweep ends.
OPTUNA_SUMMARY = "optimization_results.yaml"


def searched_keys(jobs: Sequence[Job]) -> list[str]:
    """The hyperparameters a sampler drew: those of the sweeper's summary (the parameters of its
    best trial) and every override key whose value differs between trials, in the trials' order."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in override_values(job).items():
            values.setdefault(key, set()).add(value)
    declared = set()
    for summary in {job.path.parent / OPTUNA_SUMMARY for job in jobs}:
        if summary.is_file():
            declared |= set((yaml.safe_load(summary.read_text()) or {}).get("best_params") or {})
    varies = {key for key, seen in values.items() if len(seen) > 1 or any(key not in override_values(j) for j in jobs)}
    return [key for key in values if key in declared | varies]


def as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def by_objective(jobs: Iterable[Job]) -> list[Job]:
    """Trials best first; trials without an objective (failed, diverged, running) last, by number."""
    return sorted(jobs, key=lambda j: (objective(j) is None, objective(j) or 0.0, j.num if j.num is not None else 1e9))


def percent(value: float | None) -> str:
    return Stat([] if value is None else [value]).percent()


def trial_rows(jobs: Sequence[Job]) -> list[dict[str, str]]:
    """One row per trial, best first: rank (`best` for the first), trial number, each searched
    hyperparameter, the objective and the other errors, and the trial's state."""
    keys = searched_keys(jobs)
    rows = []
    for rank, job in enumerate(by_objective(jobs), start=1):
        values = override_values(job)
        score = objective(job)
        row = {"rank": "best" if rank == 1 and score is not None else str(rank) if score is not None else "—"}
        row["trial"] = "—" if job.num is None else str(job.num)
        for key in keys:
            number = as_number(values.get(key, ""))
            row[key] = f"{number:.4g}" if number is not None else values.get(key, "—")
        row["best val err %"] = percent(score)
        row["val err %"] = percent(job.metric("val/err"))
        row["test err %"] = percent(job.metric("test/err"))
        row["train err %"] = percent(job.final_train_error())
        row["status"] = job.status
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    """The rows as a markdown table; without rows, the generic table's header."""
    columns = list(rows[0] if rows else COLUMNS)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(int(value))
