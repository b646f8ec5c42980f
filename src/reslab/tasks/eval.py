"""The `eval` task: score a checkpoint (or a pretrained torchvision model) on the test split.

    reslab-train task=eval ckpt_path=multirun/.../job/checkpoints/last.ckpt   # same model/data config
    reslab-train task=eval model=torchvision model.name=resnet50 model.weights=DEFAULT data=imagenet

The job folder and results.json are the usual ones (status, metrics, params, FLOPs). Data sets
that can test on ten crops (ImageNet folders) are scored twice: `test/err` on the centre crop,
`test/err_10crop` on the ten crops, as the ResNet paper's tables report.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from omegaconf import DictConfig

from reslab import checkpoints, collector
from reslab.module import ClassificationModule
from reslab.preflight import instantiate
from reslab.tasks.train import build_network_and_data, build_trainer, scalars
from reslab.tasks.wrapper import JobRun

log = logging.getLogger("reslab")


def evaluate(cfg: DictConfig, run: JobRun) -> None:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net, datamodule = build_network_and_data(cfg, run)
    module = ClassificationModule(net, optimizer=instantiate(cfg.optimizer), scheduler=None, num_classes=cfg.data.num_classes)
    trainer = build_trainer(cfg, run)
    ckpt_path = checkpoints.resume_path(cfg.ckpt_path, run.dir)
    if ckpt_path is not None:
        run.note(checkpoint=str(ckpt_path), checkpoint_step=checkpoints.check_checkpoint(ckpt_path, module))
    collector.started()
    test = dict(model=module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, verbose=False)

    ten_crop = getattr(datamodule, "ten_crop_test", None)
    if ten_crop is not None:
        datamodule.ten_crop_test = False
    trainer.test(**test, weights_only=True)
    metrics = scalars(trainer.callback_metrics)
    if ten_crop is not None:
        datamodule.ten_crop_test = True
        trainer.test(**test, weights_only=True)
        metrics.update({f"{name}_10crop": value for name, value in scalars(trainer.callback_metrics).items()})
    run.note(metrics=metrics)
