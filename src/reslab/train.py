"""`reslab-train`: compose the config, build network, data and module, fit, test, record.

    reslab-train                                   # ResNet-20 on the embedded digits data
    reslab-train model=plain model.depth=56        # one plain-56 run
    reslab-train -m experiment=digits_degradation  # the whole degradation sweep
    reslab-train trainer=ddp trainer.devices=4     # one run on 4 devices (see reslab.distributed)

The whole run is `run()` below; everything it builds comes from `cfg` via `instantiate`.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Timer
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from reslab import checkpoints, distributed
from reslab.callbacks.divergence import TrainingDiverged
from reslab.errors import ConfigError
from reslab.loggers import build_loggers, close_loggers
from reslab.models import count_flops, count_parameters, model_summary
from reslab.module import ClassificationModule
from reslab.preflight import check_job, instantiate
from reslab.results import best_values, read_metrics_csv, software_versions, write_results

log = logging.getLogger("reslab")

TASKS = ("train", "toy_chain")


def main() -> None:
    """`reslab-train`. A DDP rank that Lightning started again runs its job, as rank 0 saved it."""
    sys.argv = distributed.relaunched_rank_argv(sys.argv) or sys.argv
    train_job()


@hydra.main(version_base="1.3", config_path="pkg://reslab.conf", config_name="train")
def train_job(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except ConfigError as error:
        # One clear line instead of a traceback: the message says what to change.
        log.error("configuration error: %s", error)
        sys.exit(2)


def run(cfg: DictConfig) -> float | None:
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.task == "toy_chain":
        return _run_toy_chain(cfg, job_dir)

    record: dict[str, Any] = {
        "status": "running",
        "error": None,
        "task": cfg.task,
        "experiment": cfg.experiment_name,
        "overrides": list(HydraConfig.get().overrides.task),
        "seed": cfg.seed,
        "versions": software_versions(),
    }
    start = time.perf_counter()
    trainer = None
    try:
        # Everything that can be wrong with the input fails here, before any training.
        check_job(cfg)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        net = instantiate(cfg.model)
        datamodule = instantiate(cfg.data)
        input_shape = (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
        record.update(params=count_parameters(net), flops=count_flops(net, input_shape))
        log.info("\n%s", model_summary(net, input_shape))
        module = ClassificationModule(
            net,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            num_classes=cfg.data.num_classes,
        )
        trainer = instantiate(
            cfg.trainer,
            callbacks=[instantiate(c) for c in cfg.callbacks.values() if c],
            logger=build_loggers(cfg, job_dir, instantiate) or False,
            plugins=distributed.cluster_plugins(),
        )
        distributed.check_trainer(cfg, trainer)
        ckpt_path, resumed_step = _resume_checkpoint(cfg, job_dir, module, trainer)
        record["resumed_from_step"] = resumed_step
        with distributed.job_ranks(trainer, cfg, job_dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            # trainer.test replaces callback_metrics, so the final training values are kept first.
            record["metrics"] = _scalars(trainer.callback_metrics)
            if cfg.test:
                trainer.test(module, datamodule=datamodule, verbose=False)
                record["metrics"].update(_scalars(trainer.callback_metrics))
        record["status"] = "completed"
    except ConfigError as error:
        record.update(status="failed", error=f"configuration error: {error}")
        raise
    except (KeyboardInterrupt, SystemExit) as error:
        # Ctrl-C, SIGTERM, or a requeue that ends the job: recorded, then let through.
        record.update(status="interrupted", error=repr(error))
        raise
    except TrainingDiverged as error:
        record.update(status="diverged", error=str(error))
        log.warning("run diverged: %s", error)
    except Exception as error:  # noqa: BLE001 - recorded, then raised or let go per on_error
        record.update(status="failed", error=f"{type(error).__name__}: {error}")
        log.exception("run failed")
        if not _continue_on_error(cfg):
            raise
    finally:
        if _is_rank_zero(trainer):
            _finish_record(record, trainer, job_dir, time.perf_counter() - start)
            write_results(job_dir, record)
    return record.get("best", {}).get("val/err")


def _finish_record(record: dict, trainer: pl.Trainer | None, job_dir: Path, wall_time: float) -> None:
    record["wall_time_s"] = round(wall_time, 3)
    if trainer is None:
        return
    record.update(close_loggers(trainer.loggers, record["status"], facts=record))
    record["world_size"] = trainer.world_size
    record["steps"] = trainer.global_step
    record["epochs"] = trainer.current_epoch
    record.setdefault("metrics", _scalars(trainer.callback_metrics))
    record["best"] = best_values(read_metrics_csv(job_dir / "metrics.csv"))
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            record["train_time_s"] = round(callback.time_elapsed("train"), 3)


def _is_rank_zero(trainer: pl.Trainer | None) -> bool:
    # Before the Trainer exists, the rank comes from the environment (SLURM, a re-launched rank).
    return trainer.is_global_zero if trainer is not None else rank_zero_only.rank == 0


def _scalars(metrics: dict) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items() if value.numel() == 1}


def _resume_checkpoint(
    cfg: DictConfig, job_dir: Path, module: ClassificationModule, trainer: pl.Trainer
) -> tuple[str | None, int | None]:
    """(checkpoint, its step) to resume from: an explicit `ckpt_path`, else the job's own
    last.ckpt when a rerun finds one; checked against the network before any training."""
    path = checkpoints.resume_path(cfg.ckpt_path, job_dir)
    if path is None:
        return None, None
    step = checkpoints.check_checkpoint(path, module)
    log.info("resuming from %s at step %d", path, step)
    checkpoints.keep_metrics_history(trainer.loggers, step)
    return str(path), step


def _continue_on_error(cfg: DictConfig) -> bool:
    choices = ("auto", "continue", "raise")
    if cfg.on_error not in choices:
        raise ConfigError(f"on_error must be one of {choices}, got {cfg.on_error!r}")
    if cfg.on_error == "auto":
        return HydraConfig.get().mode == RunMode.MULTIRUN
    return cfg.on_error == "continue"


def _run_toy_chain(cfg: DictConfig, job_dir: Path) -> None:
    from reslab.analysis import run_toy_chain

    start = time.perf_counter()
    summary = run_toy_chain(out_dir=job_dir, **OmegaConf.to_container(cfg.toy_chain, resolve=True))
    write_results(
        job_dir,
        {
            "status": "completed",
            "error": None,
            "task": "toy_chain",
            "experiment": cfg.experiment_name,
            "overrides": list(HydraConfig.get().overrides.task),
            "summary": summary,
            "wall_time_s": round(time.perf_counter() - start, 3),
            "versions": software_versions(),
        },
    )
    return None


if __name__ == "__main__":
    main()
