"""Experiment loggers for a job: built from `cfg.logger`, closed with the job's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def build_loggers(cfg: DictConfig, job_dir: Path, instantiate: Callable[..., Any]) -> list[Logger]:
    """One logger per non-null entry of `cfg.logger`."""
    return [instantiate(node) for node in cfg.logger.values() if node]


def close_loggers(loggers: list[Logger], status: str) -> dict[str, Any]:
    """Finish every logger with the job's status; returns facts for results.json."""
    for logger in loggers:
        logger.finalize("success" if status == "completed" else "failed")
    return {}
