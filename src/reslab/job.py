"""What a job and a sweep are, in one place: file names, the job's identity and its records.

Pure: nothing here imports Lightning, W&B or torch. Loggers, the task wrapper, the sweep
callback and the report all read these rules from here, so that a job is named, grouped and
read the same way everywhere.

A job is one Hydra job folder. It holds `results.json` (its record: status, metrics, earlier
attempts), `metrics.csv` (every logged value), `checkpoints/last.ckpt` and `.hydra/`. A sweep is
a folder of job folders plus Hydra's `multirun.yaml`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
MULTIRUN_FILE = "multirun.yaml"
LOCK_FILE = ".reslab.lock"

# A job's status, as results.json records it. A job folder without results.json has not started
# its task yet (or was killed before it could write).
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
DIVERGED = "diverged"
INTERRUPTED = "interrupted"

# Metrics where lower is better and the report wants the best value over the run.
MONITORED = ("val/err", "val/loss", "val/err_top5")

# Share of the last logged steps whose per-batch training error is averaged into the
# "final training error".
FINAL_TRAIN_WINDOW = 0.1

# Top-level config keys that change how a job runs or reports, not what it computes: a rerun
# that differs only in these finds its completed job unchanged and skips it.
NOT_COMPUTED_KEYS = ("on_error", "logger", "ckpt_path", "speed")

# Override keys that say where or how a job runs, not what it computes: kept out of job names.
_HOW_KEYS = ("hydra", "trainer", "callbacks", "logger", "paths", "experiment", "experiment_name", "debug")
# Model overrides the name already says through its family (plain, preact, ...) and depth.
_NAMED_KEYS = ("model", "model.depth", "model.preact", "model.name")


class UnreadableJobFile(ValueError):
    """A job's results.json or metrics.csv exists but cannot be read (truncated, not JSON)."""


# ----------------------------------------------------------------------------- identity


def model_family(model: Mapping[str, Any], choice: str | None = None) -> str:
    """plain (no shortcut), preact, resnet (ResLab's builder), a torchvision model's name, else
    the model group choice."""
    if str(model.get("shortcut", "")).lower() == "none":
        return "plain"
    if model.get("preact") is True:
        return "preact"
    if str(model.get("_target_", "")).endswith("build_network"):
        return "resnet"
    return str(model.get("name") or choice or "model")


def job_name(
    model: Mapping[str, Any], overrides: Iterable[str], choices: Mapping[str, str | None], exclude: Iterable[str] = ()
) -> str:
    """`family-depth` plus the job's other overrides that change what it computes, compactly:
    `plain-56`, `resnet-20-shortcut=B-seed=1`, `preact-110-cifar10-lr=0.05`."""
    parts = [model_family(model, choices.get("model"))]
    if model.get("depth") is not None and not model.get("stages"):
        parts.append(str(model["depth"]))
    skipped = set(exclude) | set(_NAMED_KEYS)
    for override in overrides:
        key, assigned, value = override.lstrip("+~").partition("=")
        if not assigned or key in skipped or key.split(".")[0] in _HOW_KEYS:
            continue
        if key == "model.shortcut" and value.lower() == "none":
            continue  # the family says it: plain
        # A group choice reads as itself (`cifar10`); a knob as `leaf=value` (`lr=0.05`).
        parts.append(value if key in choices else f"{key.rsplit('.', 1)[-1]}={value}")
    return "-".join(parts)


def job_tags(model: Mapping[str, Any], choices: Mapping[str, str | None]) -> list[str]:
    """Filterable labels of what the job trains: model family, depth, shortcut, data set."""
    tags = [f"model={model_family(model, choices.get('model'))}"]
    if model.get("depth") is not None:
        tags.append(f"depth={model['depth']}")
    if model.get("shortcut") is not None:
        tags.append(f"shortcut={model['shortcut']}")
    if choices.get("data"):
        tags.append(f"data={choices['data']}")
    return tags


def sweep_group(sweep_dir: Path) -> str:
    """The group of a sweep (or single run) folder: `DATE_TIME_EXPERIMENT` for Hydra's
    multirun/DATE/TIME_EXPERIMENT layout, else the folder's name."""
    sweep_dir = Path(sweep_dir)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", sweep_dir.parent.name):
        return f"{sweep_dir.parent.name}_{sweep_dir.name}"
    return sweep_dir.name


def config_digest(cfg: DictConfig) -> str:
    """A fingerprint of what a job computes: its composed config (interpolations unresolved, so
    the folder and the clock do not enter) without the NOT_COMPUTED_KEYS."""
    container = OmegaConf.to_container(cfg, resolve=False)
    for key in NOT_COMPUTED_KEYS:
        container.pop(key, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- records


def write_results(job_dir: Path, results: Mapping[str, Any]) -> Path:
    path = Path(job_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    # Written to a temporary name first so a reader never sees half a file.
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def read_results(job_dir: Path) -> dict[str, Any] | None:
    """The job's record; None when it has none; UnreadableJobFile when it cannot be read."""
    path = Path(job_dir) / RESULTS_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableJobFile(f"{path} cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(record, dict):
        raise UnreadableJobFile(f"{path} holds {type(record).__name__}, not a record")
    return record


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of Lightning's CSVLogger file, with empty cells dropped and values as floats."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with path.open(newline="") as handle:
            return [
                {key: float(value) for key, value in row.items() if key is not None and value not in ("", None)}
                for row in csv.DictReader(handle)
            ]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as error:
        raise UnreadableJobFile(f"{path} cannot be read ({type(error).__name__}: {error})") from None


def best_values(rows: Iterable[Mapping[str, float]], names: Iterable[str] = MONITORED) -> dict[str, float]:
    """Minimum of each monitored metric over the run (lower is better for all of them)."""
    best: dict[str, float] = {}
    names = tuple(names)
    for row in rows:
        for name in names:
            value = row.get(name)
            if value is not None and math.isfinite(value):
                best[name] = min(best.get(name, value), value)
    return best


def final_train_error(history: Iterable[Mapping[str, float]]) -> float | None:
    """Mean per-batch training error over the last FINAL_TRAIN_WINDOW of the logged steps (a
    single last batch is too noisy to compare networks by)."""
    values = [row["train/err"] for row in history if "train/err" in row]
    if not values:
        return None
    window = max(1, int(len(values) * FINAL_TRAIN_WINDOW))
    return sum(values[-window:]) / window


def summary_line(record: Mapping[str, Any] | None, history: Iterable[Mapping[str, float]]) -> str:
    """`completed  train err 0.00%  val err 1.39%  41.2 s` (what is known of the job)."""
    if record is None:
        return f"{RUNNING} (no {RESULTS_FILE} yet)"
    parts = [str(record.get("status", "unknown"))]
    train_err = final_train_error(history)
    val_err = (record.get("metrics") or {}).get("val/err")
    if train_err is not None:
        parts.append(f"train err {100 * train_err:.2f}%")
    if val_err is not None:
        parts.append(f"val err {100 * float(val_err):.2f}%")
    if record.get("wall_time_s") is not None:
        parts.append(f"{float(record['wall_time_s']):.1f} s")
    if record.get("status") not in (COMPLETED, RUNNING) and record.get("error"):
        parts.append(f"({str(record['error']).splitlines()[0][:160]})")
    return "  ".join(parts)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
