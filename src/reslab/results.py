"""A job's results.json: what ran, how it ended, and the numbers the report reads."""

from __future__ import annotations

import csv
import json
import math
import platform
from pathlib import Path
from typing import Any, Iterable

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"

# Metrics where lower is better and the report wants the best value over the run.
MONITORED = ("val/err", "val/loss", "val/err_top5")


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


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of Lightning's CSVLogger file, with empty cells dropped and values as floats."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def best_values(rows: Iterable[dict[str, float]], names: Iterable[str] = MONITORED) -> dict[str, float]:
    """Minimum of each monitored metric over the run (lower is better for all of them)."""
    best: dict[str, float] = {}
    for row in rows:
        for name in names:
            value = row.get(name)
            if value is not None and math.isfinite(value):
                best[name] = min(best.get(name, value), value)
    return best


def write_results(job_dir: Path, results: dict[str, Any]) -> Path:
    path = Path(job_dir) / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    # Written to a temporary name first so a reader never sees half a file.
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def read_results(job_dir: Path) -> dict[str, Any] | None:
    path = Path(job_dir) / RESULTS_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
