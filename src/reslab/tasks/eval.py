"""The `eval` task: score a checkpoint (or a pretrained torchvision model) on the test split.

    reslab-train task=eval ckpt_path=multirun/.../job/checkpoints/last.ckpt   # same model/data config
    reslab-train task=eval model=torchvision model.name=resnet50 model.weights=DEFAULT data=imagenet

The job folder and results.json are the usual ones (status, metrics, params, FLOPs). Data sets
that can test on ten crops (ImageNet folders) are scored twice: `test/err` on the centre crop,
`test/err_10crop` on the ten crops, as the ResNet paper's tables report.
"""

from __future__ import annotations

import lightning.pytorch as pl
from omegaconf import DictConfig

from reslab import checkpoints, checks
from reslab.tasks import build
from reslab.tasks.wrapper import JobRun


def evaluate(cfg: DictConfig) -> float | None:
    run = JobRun.begin(cfg)
    if run.skipped:
        return run.outcome()
    with run:
        checks.check_at_start(cfg)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        net, datamodule, size = build.network_and_data(cfg)
        run.note(**size)
        module = build.module(cfg, net, train=False)
        trainer = build.trainer(cfg, run.dir)
        run.use_trainer(trainer)
        ckpt_path = checkpoints.resume_path(cfg.ckpt_path, run.dir)
        if ckpt_path is not None:
            run.note(checkpoint=str(ckpt_path), checkpoint_step=checkpoints.check_checkpoint(ckpt_path, module))
        test = dict(model=module, datamodule=datamodule, ckpt_path=ckpt_path and str(ckpt_path), verbose=False)

        ten_crop = getattr(datamodule, "ten_crop_test", None)
        if ten_crop is not None:
            datamodule.ten_crop_test = False
        trainer.test(**test, weights_only=True)
        metrics = build.scalars(trainer.callback_metrics)
        if ten_crop is not None:
            datamodule.ten_crop_test = True
            trainer.test(**test, weights_only=True)
            metrics.update({f"{name}_10crop": value for name, value in build.scalars(trainer.callback_metrics).items()})
        run.note(metrics=metrics)
    return run.outcome()
