"""Experiment loggers for a job: built from `cfg.logger`, closed with the job's outcome.

CSV always (the report reads metrics.csv) and, by default, Weights & Biases: one W&B run per
Hydra job, named after the job's overrides (`plain-56`), grouped per sweep, holding the whole
composed config as a nested dict. Without credentials the run is written offline into the job
folder (`wandb sync DIR` uploads it later); nothing here ever prompts or waits on a network.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from reslab.errors import ConfigError
from reslab.results import MONITORED

log = logging.getLogger("reslab")

WANDB_MODES = ("online", "offline", "disabled")
# Lightning logs every metric with the global step under this key; W&B plots against it.
STEP_KEY = "trainer/global_step"
# Override keys that say where or how a job runs, not what it computes: kept out of run names.
_HOW_KEYS = ("hydra", "trainer", "callbacks", "logger", "paths", "experiment", "experiment_name")
# Model overrides the name already says through its family (plain, preact, ...) and depth.
_NAMED_KEYS = ("model", "model.depth", "model.preact", "model.name")
# Seconds to wait for the W&B server's answer before a job with credentials goes offline.
_SERVER_PROBE_TIMEOUT_S = 5.0


def build_loggers(cfg: DictConfig, job_dir: Path, instantiate: Callable[..., Any]) -> list[Logger]:
    """One logger per non-null entry of `cfg.logger`; a W&B logger gets the job's run identity."""
    loggers = []
    for node in cfg.logger.values():
        if not node:
            continue
        if issubclass(get_class(node._target_), WandbLogger):
            # Only global rank 0 starts the run; the other ranks' loggers never need its identity.
            run_args = wandb_run_args(cfg, node, Path(job_dir)) if rank_zero_only.rank == 0 else {}
            loggers.append(instantiate(node, _partial_=True)(**run_args))
        else:
            loggers.append(instantiate(node))
    return loggers


def close_loggers(loggers: list[Logger], status: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finish every logger with the job's status; returns facts for results.json.

    A W&B run ends with exit code 0 when the job completed, 1 otherwise (failed, diverged,
    interrupted), so the UI shows it finished or failed; its summary gets the status and, from
    `facts` (the job's record), params, FLOPs and the error.
    """
    closed: dict[str, Any] = {}
    for logger in loggers:
        logger.finalize("success" if status == "completed" else "failed")
        if isinstance(logger, WandbLogger):
            closed["wandb"] = _finish_wandb_run(logger, status, facts or {})
    return closed


class WandbJobLogger(WandbLogger):
    """Lightning's WandbLogger whose run starts the ResLab way (see `start_wandb_run`).

    The run is still created lazily on global rank 0 only (Lightning's `rank_zero_experiment`):
    one run per job under DDP, whatever the number of processes.
    """

    @property
    @rank_zero_experiment
    def experiment(self):
        # A process that was handed the run by pickling (spawn) attaches to it the parent's way.
        if self._experiment is None and getattr(self, "_attach_id", None) is None:
            import wandb

            if wandb.run is not None:
                # A multirun job never appends to the run of the job before it.
                log.warning("W&B run %s of an earlier job was still open; marking it failed", wandb.run.id)
                wandb.run.finish(exit_code=1)
            self._experiment = start_wandb_run(self._wandb_init)
            _define_metrics(self._experiment)
        return super().experiment


def start_wandb_run(init_args: dict[str, Any]):
    """wandb.init(**init_args) with `mode` chosen by `choose_wandb_mode`, falling back to
    offline when starting online fails; an offline run logs one line on how to upload it."""
    import wandb

    # WandbLogger always passes `anonymous`, which wandb 0.31 only warns about.
    args = {k: v for k, v in init_args.items() if not (k == "anonymous" and v is None)}
    args["mode"], reason = choose_wandb_mode(args.get("mode"))
    try:
        run = wandb.init(**args)
    except wandb.Error as error:
        if args["mode"] != "online":
            raise
        reason = f"W&B online start failed: {str(error).splitlines()[0]}"
        args["mode"] = "offline"
        run = wandb.init(**args)
    if run.offline:
        sync_dir = Path(run.dir).parent
        log.info("W&B run %s is offline (%s); upload it later with: wandb sync %s", run.id, reason, sync_dir)
    return run


def choose_wandb_mode(mode: str | None) -> tuple[str, str]:
    """(mode, why): an explicit mode as given; null = the WANDB_MODE environment variable if set,
    else online when credentials exist and the server answers, else offline."""
    if mode:
        return mode, f"mode={mode}"
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
        return mode, f"WANDB_MODE={env_mode}"
    base_url = _logged_in_server()
    if base_url is None:
        return "offline", "no W&B credentials found"
    if not _server_answers(base_url, _SERVER_PROBE_TIMEOUT_S):
        return "offline", f"{base_url} is not reachable"
    return "online", "credentials found"


def wandb_run_args(cfg: DictConfig, node: DictConfig, job_dir: Path) -> dict[str, Any]:
    """wandb.init arguments of this job that the config leaves null: name, group, tags, config
    and, on a rerun in the same job folder, the id of the folder's earlier run (resumed)."""
    if node.get("mode") not in (None, *WANDB_MODES):
        allowed = ", ".join(WANDB_MODES)
        raise ConfigError(f"logger.wandb.mode must be one of {allowed} or null (auto), got {node.mode!r}")
    overrides, choices, exclude = _hydra_job_facts()
    config = OmegaConf.to_container(cfg, resolve=True)
    config["hydra"] = {"choices": choices, "overrides": overrides}
    args: dict[str, Any] = {
        "config": config,
        "tags": [*run_tags(cfg, choices), *(node.get("tags") or [])],
    }
    if not node.get("name"):
        args["name"] = run_name(cfg, overrides, choices, exclude)
    if not node.get("group"):
        args["group"] = sweep_group(_sweep_dir(job_dir))
    if not node.get("id") and cfg.get("ckpt_path") != "none":
        args["id"] = previous_run_id(job_dir / "wandb")
    return args


def run_name(
    cfg: DictConfig, overrides: Iterable[str], choices: dict[str, str | None], exclude: Iterable[str] = ()
) -> str:
    """`family-depth` plus the job's other overrides that change what it computes, compactly:
    `plain-56`, `resnet-20-shortcut=B-seed=1`, `preact-110-cifar10-lr=0.05`."""
    parts = [model_family(cfg.model, choices.get("model"))]
    if cfg.model.get("depth") is not None and not cfg.model.get("stages"):
        parts.append(str(cfg.model.depth))
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


def run_tags(cfg: DictConfig, choices: dict[str, str | None]) -> list[str]:
    """Filterable labels of what the job trains: model family, depth, shortcut, data set."""
    tags = [f"model={model_family(cfg.model, choices.get('model'))}"]
    if cfg.model.get("depth") is not None:
        tags.append(f"depth={cfg.model.depth}")
    if cfg.model.get("shortcut") is not None:
        tags.append(f"shortcut={cfg.model.shortcut}")
    if choices.get("data"):
        tags.append(f"data={choices['data']}")
    return tags


def model_family(model: DictConfig, choice: str | None) -> str:
    """plain (no shortcut), preact, a torchvision model's name, else the model group choice."""
    if str(model.get("shortcut", "")).lower() == "none":
        return "plain"
    if model.get("preact"):
        return "preact"
    return str(model.get("name") or choice or "model")


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of a sweep (or single run) folder: `DATE_TIME_EXPERIMENT` for Hydra's
    multirun/DATE/TIME_EXPERIMENT layout, else the folder's name."""
    sweep_dir = Path(sweep_dir)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", sweep_dir.parent.name):
        return f"{sweep_dir.parent.name}_{sweep_dir.name}"
    return sweep_dir.name


def previous_run_id(wandb_dir: Path) -> str | None:
    """Id of the newest W&B run in a job's wandb/ folder (its log is `run-ID.wandb`), if any."""
    logs = list(Path(wandb_dir).glob("*run-*/run-*.wandb"))
    if not logs:
        return None
    return max(logs, key=lambda p: p.stat().st_mtime).stem.removeprefix("run-")


def _finish_wandb_run(logger: WandbLogger, status: str, facts: dict[str, Any]) -> dict[str, Any]:
    # Touching `experiment` starts the run if the job failed before logging anything, so every
    # job that reached the trainer shows up in its group, failed ones included.
    run = logger.experiment
    if run.disabled:
        return {"mode": "disabled"}
    known = {key: facts[key] for key in ("params", "flops", "error") if facts.get(key) is not None}
    run.summary.update({"status": status, **known})
    identity = {
        "id": run.id,
        "dir": str(Path(run.dir).parent.absolute()),
        "mode": "offline" if run.offline else "online",
        "project": run.project,
        "group": run.group,
        "name": run.name,
        "url": None if run.offline else run.url,
    }
    run.finish(exit_code=0 if status == "completed" else 1)
    return identity


def _define_metrics(run) -> None:
    # What WandbLogger itself defines when it starts a run, plus best-and-last summaries.
    run.define_metric(STEP_KEY)
    run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
    for name in MONITORED:
        run.define_metric(name, step_metric=STEP_KEY, step_sync=True, summary="min,last")


def _hydra_job_facts() -> tuple[list[str], dict[str, str | None], list[str]]:
    """(task overrides, group choices, override keys Hydra keeps out of job folder names)."""
    if not HydraConfig.initialized():
        return [], {}, []
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    exclude = list(hydra_cfg.job.config.override_dirname.exclude_keys)
    return list(hydra_cfg.overrides.task), choices, exclude


def _sweep_dir(job_dir: Path) -> Path:
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    return job_dir


def _logged_in_server() -> str | None:
    """The W&B server's URL when there are credentials for it (an API key or identity token in
    the environment, a W&B settings file, ~/.netrc), else None. Reads files only."""
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        # The settings W&B itself would use (environment, settings files); starts no process.
        settings = wandb_setup.singleton().settings
        found = (
            os.environ.get("WANDB_API_KEY")
            or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
            or settings.api_key
            or wbauth.read_netrc_auth(host=settings.base_url)
        )
        return settings.base_url if found else None
    except Exception:  # noqa: BLE001 - an unreadable login counts as none
        return None


def _server_answers(url: str, timeout: float) -> bool:
    """Whether `url` gives any HTTP answer within `timeout` seconds, name lookup included."""
    answered: list[bool] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # an error page is an answer
        except Exception:  # noqa: BLE001 - unreachable, whatever the reason
            return
        answered.append(True)

    # A thread, because a hanging name lookup ignores socket timeouts.
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)
