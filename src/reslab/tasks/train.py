"""The `train` task, one run from top to bottom: begin the job's record (or skip a job that
completed before), check the config, build network, data, module and trainer, fit, test, and
finish the record. Each step is a call into the module that owns it."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from omegaconf import DictConfig

from reslab import checkpoints, checks, distributed
from reslab.tasks import build
from reslab.tasks.wrapper import JobRun

log = logging.getLogger("reslab")


def train(cfg: DictConfig) -> float | None:
    """Train as `cfg` says; return the best `val/err`, the objective a sweeper minimises."""
    run = JobRun.begin(cfg)
    if run.skipped:
        return run.outcome()
    with run:  # from here on, however the job ends, its record says how
        checks.check_at_start(cfg)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        net, datamodule, size = build.network_and_data(cfg)
        run.note(**size)
        module = build.module(cfg, net)
        trainer = build.trainer(cfg, run.dir)
        run.use_trainer(trainer)  # it says which process writes the record, and finishes it
        ckpt_path = checkpoints.resume_path(cfg.ckpt_path, run.dir)
        if ckpt_path is not None:
            step = checkpoints.check_checkpoint(ckpt_path, module)
            log.info("resuming from %s at step %d", ckpt_path, step)
            checkpoints.keep_metrics_history(trainer.loggers, step)
            run.note(resumed_from_step=step)
        with distributed.job_ranks(trainer, cfg, run.dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path and str(ckpt_path), weights_only=True)
            # trainer.test replaces callback_metrics, so the final training values are kept first.
            run.note(metrics=build.scalars(trainer.callback_metrics))
            if cfg.test:
                trainer.test(module, datamodule=datamodule, verbose=False, weights_only=True)
                run.record["metrics"].update(build.scalars(trainer.callback_metrics))
    return run.outcome()
