"""Sweep tables: one row per grid point, seeds aggregated as mean, std and n."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Iterable

from reslab.report.collect import Job

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

    def percent(self) -> str:
        """`12.34` or `12.34 ± 0.56` (in %), blank when no job has the value."""
        if self.mean is None:
            return "—"
        text = f"{100 * self.mean:.2f}"
        return text + (f" ± {100 * self.std:.2f}" if self.std is not None else "")


@dataclass
class GridPoint:
    """The jobs of a sweep that differ only in their seed."""

    key: tuple
    jobs: list[Job]

    @property
    def first(self) -> Job:
        return self.jobs[0]

    @property
    def completed(self) -> list[Job]:
        return [job for job in self.jobs if job.status == "completed"]

    def stat(self, value: Callable[[Job], float | None]) -> Stat:
        values = [value(job) for job in self.completed]
        return Stat([v for v in values if v is not None])


def grid_key(job: Job) -> tuple:
    """What identifies a grid point: every override except the seed."""
    return tuple(sorted(o for o in job.overrides if not o.startswith(("seed=", "+seed="))))


def group_by_grid_point(jobs: Iterable[Job]) -> list[GridPoint]:
    points: dict[tuple, GridPoint] = {}
    for job in jobs:
        points.setdefault(grid_key(job), GridPoint(grid_key(job), [])).jobs.append(job)
    return sorted(
        points.values(),
        key=lambda p: (FAMILY_ORDER.get(p.first.family, 9), p.first.family, p.first.depth or 0, p.key),
    )


COLUMNS = (
    "model", "depth", "shortcut", "params", "MACs", "train err %", "val err %",
    "best val err %", "test err %", "n",
)


def summary_rows(points: list[GridPoint]) -> list[dict[str, str]]:
    rows = []
    for point in points:
        job = point.first
        params = (job.results or {}).get("params")
        flops = (job.results or {}).get("flops")
        rows.append(
            {
                "model": job.family,
                "depth": str(job.depth if job.depth is not None else "—"),
                "shortcut": str(job.model.get("shortcut", "—")),
                "params": f"{params:,}" if params else "—",
                "MACs": _si(flops) if flops else "—",
                "train err %": point.stat(Job.final_train_error).percent(),
                "val err %": point.stat(lambda j: j.metric("val/err")).percent(),
                "best val err %": point.stat(lambda j: j.best("val/err")).percent(),
                "test err %": point.stat(lambda j: j.metric("test/err")).percent(),
                "n": f"{len(point.completed)}/{len(point.jobs)}",
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
                "final_train_err": job.final_train_error(),
                "val_err": job.metric("val/err"),
                "best_val_err": job.best("val/err"),
                "test_err": job.metric("test/err"),
                "error": results.get("error"),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, str]], columns: Iterable[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else COLUMNS))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(int(value))
