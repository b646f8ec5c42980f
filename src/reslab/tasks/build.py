"""What the network tasks (`train`, `eval`) build from a job's config, each by one function:
the network and data, the LightningModule, the Trainer with its callbacks and loggers; and what
the record keeps of a trainer once the job has ended."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, OmegaConf

from reslab import checkpoints, distributed, job
from reslab.callbacks.throughput import TrainingThroughput
from reslab.checks import instantiate
from reslab.data.imagenet import ImageNetDataModule
from reslab.loggers import build_loggers, close_loggers
from reslab.models import count_flops, count_parameters, model_summary
from reslab.module import ClassificationModule

log = logging.getLogger("reslab")


def network_and_data(cfg: DictConfig) -> tuple[Any, pl.LightningDataModule, dict[str, int]]:
    """The network, the datamodule, and the network's size and cost for the record."""
    net = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    input_shape = (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    log.info("\n%s", model_summary(net, input_shape))
    return net, datamodule, {"params": count_parameters(net), "flops": count_flops(net, input_shape)}


def module(cfg: DictConfig, net: Any, train: bool = True) -> ClassificationModule:
    """The LightningModule around `net`: optimiser and schedule (training only) and the `speed`
    knobs (conf/train.yaml)."""
    speed = OmegaConf.to_container(cfg.speed, resolve=True) if cfg.get("speed") else {}
    return ClassificationModule(
        net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if train and cfg.get("scheduler") else None,
        num_classes=cfg.data.num_classes,
        **(speed if train else {}),
    )


def trainer(cfg: DictConfig, job_dir: Path) -> pl.Trainer:
    """Lightning's Trainer from cfg.trainer with the job's callbacks and loggers."""
    return instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in cfg.callbacks.values() if c],
        logger=build_loggers(cfg, job_dir, instantiate) or False,
        plugins=[*distributed.cluster_plugins(), checkpoints.AtomicCheckpointIO()],
    )


def trainer_facts(trainer: pl.Trainer, record: dict[str, Any], job_dir: Path) -> dict[str, Any]:
    """What the record holds of a job that reached the trainer, whatever its status: the
    loggers closed with it (the W&B run's identity), the counters, the metrics, the best values
    from metrics.csv, the training time, the throughput and the images an image folder skipped."""
    facts: dict[str, Any] = close_loggers(trainer.loggers, record["status"], facts=record)
    facts.update(world_size=trainer.world_size, steps=trainer.global_step, epochs=trainer.current_epoch)
    if "metrics" not in record:
        facts["metrics"] = scalars(trainer.callback_metrics)
    facts["best"] = job.best_values(job.read_metrics_csv(Path(job_dir) / job.METRICS_FILE))
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            facts["train_time_s"] = round(callback.time_elapsed("train"), 3)
        if isinstance(callback, TrainingThroughput):
            facts.update(callback.job_facts())
    if isinstance(trainer.datamodule, ImageNetDataModule):  # the images it had to skip
        facts.update(trainer.datamodule.job_facts())
    return facts


def scalars(metrics: dict) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items() if value.numel() == 1}
