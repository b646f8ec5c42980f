"""The `train` task: build the network, data, module and trainer from the config; fit; test."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, OmegaConf

from reslab import checkpoints, collector, distributed, job
from reslab.loggers import build_loggers, close_loggers
from reslab.models import count_flops, count_parameters, model_summary
from reslab.module import ClassificationModule
from reslab.preflight import instantiate
from reslab.tasks.wrapper import JobRun

log = logging.getLogger("reslab")


def train(cfg: DictConfig, run: JobRun) -> None:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net, datamodule = build_network_and_data(cfg, run)
    module = ClassificationModule(
        net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=cfg.data.num_classes,
        **speed_settings(cfg),
    )
    trainer = build_trainer(cfg, run)
    ckpt_path = resume_checkpoint(cfg, run, module, trainer)
    collector.started()
    with distributed.job_ranks(trainer, cfg, run.dir):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        # trainer.test replaces callback_metrics, so the final training values are kept first.
        run.note(metrics=scalars(trainer.callback_metrics))
        if cfg.test:
            trainer.test(module, datamodule=datamodule, verbose=False, weights_only=True)
            run.record["metrics"].update(scalars(trainer.callback_metrics))


def build_network_and_data(cfg: DictConfig, run: JobRun) -> tuple[Any, pl.LightningDataModule]:
    """The network and the datamodule; the network's size and cost go into the record."""
    net = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    input_shape = (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    run.note(params=count_parameters(net), flops=count_flops(net, input_shape))
    log.info("\n%s", model_summary(net, input_shape))
    return net, datamodule


def build_trainer(cfg: DictConfig, run: JobRun, **overrides: Any) -> pl.Trainer:
    """Lightning's Trainer from cfg.trainer with the job's callbacks and loggers. From here on
    the trainer says which process writes the record, and at the end the record gets the
    trainer's counters and the loggers are closed with the job's status."""
    trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in cfg.callbacks.values() if c],
        logger=build_loggers(cfg, run.dir, instantiate) or False,
        plugins=[*distributed.cluster_plugins(), checkpoints.AtomicCheckpointIO()],
        **overrides,
    )
    run.is_writer = lambda: trainer.is_global_zero
    run.on_finish(lambda status: trainer_facts(trainer, status, run))
    distributed.check_trainer(cfg, trainer)
    return trainer


def resume_checkpoint(cfg: DictConfig, run: JobRun, module: pl.LightningModule, trainer: pl.Trainer) -> str | None:
    """The checkpoint to resume from: an explicit `ckpt_path`, else the job's own last.ckpt when
    a rerun finds one; checked against the network before any training."""
    path = checkpoints.resume_path(cfg.ckpt_path, run.dir)
    if path is None:
        return None
    step = checkpoints.check_checkpoint(path, module)
    log.info("resuming from %s at step %d", path, step)
    checkpoints.keep_metrics_history(trainer.loggers, step)
    run.note(resumed_from_step=step)
    return str(path)


def trainer_facts(trainer: pl.Trainer, status: str, run: JobRun) -> dict[str, Any]:
    """What the record holds of a job that reached the trainer, whatever its status."""
    facts: dict[str, Any] = close_loggers(trainer.loggers, status, facts=run.record)
    facts.update(world_size=trainer.world_size, steps=trainer.global_step, epochs=trainer.current_epoch)
    if "metrics" not in run.record:
        facts["metrics"] = scalars(trainer.callback_metrics)
    facts["best"] = job.best_values(job.read_metrics_csv(Path(run.dir) / job.METRICS_FILE))
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            facts["train_time_s"] = round(callback.time_elapsed("train"), 3)
        if hasattr(callback, "job_facts"):
            facts.update(callback.job_facts())
    return facts


def speed_settings(cfg: DictConfig) -> dict[str, Any]:
    """The `speed` knobs (conf/train.yaml) the module applies: compile, channels_last, ..."""
    speed = cfg.get("speed")
    return OmegaConf.to_container(speed, resolve=True) if speed else {}


def scalars(metrics: dict) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items() if value.numel() == 1}
