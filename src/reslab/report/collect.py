"""Read a sweep folder: one record per job, whatever state the job is in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reslab.results import METRICS_FILE, read_metrics_csv, read_results

# Share of the last iterations whose per-batch training error is averaged into the
# "final training error" (a single last batch is too noisy to compare networks by).
FINAL_TRAIN_WINDOW = 0.1


@dataclass
class Job:
    """One Hydra job of a sweep: its choices, its results.json and its metric history."""

    path: Path
    overrides: list[str]
    choices: dict[str, str]
    config: dict[str, Any]
    results: dict[str, Any] | None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.results is None:
            # A job folder without results.json is still running, or was killed.
            return "running" if self.history else "missing"
        return self.results.get("status", "unknown")

    @property
    def model(self) -> dict[str, Any]:
        return self.config.get("model", {})

    @property
    def family(self) -> str:
        """plain, resnet, preact, or the model group choice for other networks."""
        shortcut = str(self.model.get("shortcut", "")).lower()
        if shortcut == "none":
            return "plain"
        if self.model.get("preact"):
            return "preact"
        return self.choices.get("model", "resnet")

    @property
    def depth(self) -> int | None:
        return self.model.get("depth")

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


def collect_sweep(sweep_dir: Path) -> list[Job]:
    """Every job folder below `sweep_dir` (a folder holding Hydra's `.hydra/`), sorted by path."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    for hydra_dir in sorted(sweep_dir.rglob(".hydra")):
        job_dir = hydra_dir.parent
        jobs.append(
            Job(
                path=job_dir,
                overrides=_load_yaml(hydra_dir / "overrides.yaml") or [],
                choices=(_load_yaml(hydra_dir / "hydra.yaml") or {})
                .get("hydra", {})
                .get("runtime", {})
                .get("choices", {}),
                config=_load_yaml(hydra_dir / "config.yaml") or {},
                results=read_results(job_dir),
                history=read_metrics_csv(job_dir / METRICS_FILE),
            )
        )
    return jobs


def latest_sweep(root: Path) -> Path | None:
    """The newest sweep folder under `root` (multirun/DATE/TIME_NAME)."""
    candidates = [p for p in Path(root).glob("*/*") if p.is_dir()]
    return max(candidates, key=lambda p: (p.parent.name, p.name), default=None)


def _load_yaml(path: Path) -> Any:
    if not path.exists():
        return None
    with path.open() as handle:
        return yaml.safe_load(handle)
