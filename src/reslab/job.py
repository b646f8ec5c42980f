"""What a job and a sweep are, in one place: file names, the job's identity (folder and W&B
names, the keys that do not change what it computes) and its record (results.json with its
statuses and attempts, metrics.csv), read and written here only.

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
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reslab.atomic_files import atomic_writer

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

# The one list of config keys that do not change what a job computes: two runs that differ only
# in such a key are meant to give the same numbers up to floating-point rounding. A key covers
# its sub-keys (`speed` covers `speed.compile`). Job folder names, W&B run names and the rerun
# rule (config_digest) all leave them out. `trainer.accelerator` is here because the data order
# and the network's arithmetic do not depend on the device type; `trainer.devices` (the global
# batch), `trainer.precision` and `data.num_workers` (the workers' random streams) are not.
NOT_COMPUTED_KEYS = (
    "speed",
    "logger",
    "on_error",
    "ckpt_path",
    "paths",
    "data.root",
    "data.download",
    "trainer.accelerator",
    "trainer.enable_progress_bar",
    "callbacks.progress_bar",
    "experiment_name",
    "hydra",
)
# Overrides a job's folder name leaves out although they change what is computed: the sweep
# folder's name says the experiment (`multirun/DATE/TIME_EXPERIMENT`).
SWEEP_NAMED_KEYS = ("experiment",)
# Model overrides the W&B run name already says through its family (plain, preact, ...) and depth.
_NAMED_KEYS = ("model", "model.depth", "model.preact", "model.name")
# Groups a W&B run name leaves out to stay short (how long and with what callbacks a job trains);
# the folder name holds them, and W&B shows them in the run's config.
_SHORT_NAME_SKIPS = ("trainer", "callbacks", "debug")
# How Hydra's `exclude_keys` named job folders before NOT_COMPUTED_KEYS was the one rule: a
# sweep made then keeps its folders (see job_folder).
_LEGACY_FOLDER_EXCLUDES = (
    "experiment",
    "experiment_name",
    "trainer.enable_progress_bar",
    "trainer",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "logger",
    "data.root",
    "data.num_workers",
    "paths.data_dir",
    "ckpt_path",
    "on_error",
)
_LEGACY_DIGEST_EXCLUDES = ("on_error", "logger", "ckpt_path", "speed")
FOLDER_RESOLVER = "reslab.job_folder"


def computes(key: str) -> bool:
    """Whether a config key (`speed.compile`, `+data.root`) may change what a job computes."""
    key = key.lstrip("+~")
    return not any(key == listed or key.startswith(f"{listed}.") for listed in NOT_COMPUTED_KEYS)


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


def job_name(model: Mapping[str, Any], overrides: Iterable[str], choices: Mapping[str, str | None]) -> str:
    """`family-depth` plus the job's other overrides that change what it computes, compactly:
    `plain-56`, `resnet-20-shortcut=B-seed=1`, `preact-110-cifar10-lr=0.05`."""
    parts = [model_family(model, choices.get("model"))]
    if model.get("depth") is not None and not model.get("stages"):
        parts.append(str(model["depth"]))
    for override in overrides:
        key, assigned, value = override.lstrip("+~").partition("=")
        if not assigned or not computes(key) or key in _NAMED_KEYS or key.split(".")[0] in _SHORT_NAME_SKIPS:
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


def config_digest(cfg: DictConfig, excluded: Iterable[str] = NOT_COMPUTED_KEYS) -> str:
    """A fingerprint of what a job computes: its composed config (interpolations unresolved, so
    the folder and the clock do not enter) without the NOT_COMPUTED_KEYS."""
    container = OmegaConf.to_container(cfg, resolve=False)
    for key in excluded:
        *parents, leaf = key.split(".")
        node = container
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_computation(record: Mapping[str, Any], cfg: DictConfig) -> bool:
    """Whether a job's record was made with a config that computes what `cfg` does (a record
    written before the key list above was the one rule carries the digest of its day)."""
    digest = record.get("config_digest")
    return digest in (config_digest(cfg), config_digest(cfg, _LEGACY_DIGEST_EXCLUDES))


def job_folder(sweep_dir: str, overrides: Iterable[str]) -> str:
    """A sweep job's folder name: its overrides that change what it computes, sorted and joined
    as Hydra's `override_dirname` (`model.depth=56,model=plain`). A sweep folder that already
    holds the job under the name of the earlier rule keeps using that folder."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    name = ",".join(
        sorted(o.input_line for o in parsed if computes(o.key_or_group) and o.key_or_group not in SWEEP_NAMED_KEYS)
    )
    legacy = ",".join(sorted(o.input_line for o in parsed if o.key_or_group not in _LEGACY_FOLDER_EXCLUDES))
    if legacy != name and not (Path(sweep_dir) / name).exists() and (Path(sweep_dir) / legacy).exists():
        return legacy
    return name


# conf/hydra/default.yaml names every sweep job's folder with it.
if not OmegaConf.has_resolver(FOLDER_RESOLVER):
    OmegaConf.register_new_resolver(FOLDER_RESOLVER, job_folder)


# ----------------------------------------------------------------------------- records


def write_results(job_dir: Path, results: Mapping[str, Any]) -> Path:
    path = Path(job_dir) / RESULTS_FILE
    # Replaced atomically: a reader never sees half a file, a crash leaves the previous record.
    with atomic_writer(path) as handle:
        handle.write((json.dumps(results, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())
    return path


def new_record(previous: dict[str, Any] | None, **facts: Any) -> dict[str, Any]:
    """A job attempt's first record (`running`, with pid, host and start time); an earlier
    attempt's record, and the attempts it kept, go under `attempts`."""
    attempts = []
    if previous is not None:
        attempts = [*_earlier_attempts(previous.pop("attempts", None)), previous]
    return {
        "status": RUNNING,
        "error": None,
        **facts,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "attempts": attempts,
    }


def _earlier_attempts(attempts: Any) -> list[dict[str, Any]]:
    """The records a results.json keeps under `attempts`, as far as they are records: a single
    record stands for itself; null, a string or a number holds none; a list keeps its records."""
    if isinstance(attempts, dict):
        return [attempts]
    if not isinstance(attempts, list):
        return []
    return [attempt for attempt in attempts if isinstance(attempt, dict)]


def record_lost(job_dir: Path, reason: str, overrides: Iterable[str]) -> None:
    """Mark a job failed whose process died before its final record (killed, out of memory):
    its results.json is missing or still says `running`. Any other record is the job's own (or
    an earlier attempt's, which must not be lost) and stays as it is."""
    try:
        record = read_results(job_dir)
    except UnreadableJobFile:
        return  # not ours to repair: the report lists it as unreadable
    if record is None:
        record = {"overrides": list(overrides)}
    elif record.get("status") != RUNNING:
        return
    record.update(status=FAILED, error=reason)
    write_results(job_dir, record)


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
