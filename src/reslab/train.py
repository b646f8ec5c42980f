"""`reslab-train`: one Hydra job (or each job of a sweep) runs its task (`task=NAME`).

    reslab-train                                   # ResNet-20 on the embedded digits data
    reslab-train model=plain model.depth=56        # one plain-56 run
    reslab-train -m experiment=digits_degradation  # the whole degradation sweep
    reslab-train task=eval ckpt_path=PATH          # score a checkpoint on the test split

The training run itself reads top to bottom in reslab/tasks/train.py. Nothing heavy is imported
here, so that `--help` and `--cfg job` answer at once.
"""

from __future__ import annotations

import gc
import logging
import sys

import hydra
from omegaconf import DictConfig

from reslab import (
    cluster,  # noqa: F401 - registers the resolver conf/hydra/launcher/slurm.yaml uses
    distributed,
    job,  # noqa: F401 - registers the resolver that names sweep job folders (conf/hydra/default.yaml)
)
from reslab.console import quiet_console


def main() -> None:
    """`reslab-train`. A DDP rank that Lightning started again runs its job, as rank 0 saved it."""
    sys.argv = distributed.relaunched_rank_argv(sys.argv) or sys.argv
    train_job()


@hydra.main(version_base="1.3", config_path="pkg://reslab.conf", config_name="train")
def train_job(cfg: DictConfig) -> float | None:
    # Here, not in main(): this runs in every process that runs a job (a launcher's workers too).
    quiet_console()
    # No cycle collection while torch, Lightning and the task's modules are imported: each pass
    # would walk the objects they create again and again (benchmarks/README.md, "Start-up").
    gc.disable()
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from reslab.checks import check_value, check_values
    from reslab.errors import ConfigError
    from reslab.tasks import task_function

    try:
        # A single run's values before its job begins (a sweep checked its jobs before launching them).
        if HydraConfig.get().mode == RunMode.RUN:
            check_values(cfg)
        else:
            check_value("task", cfg.task)
    except ConfigError as error:
        logging.getLogger("reslab").error("configuration error: %s", error)
        raise SystemExit(2) from None
    task = task_function(cfg.task)
    # torch, Lightning and the task's modules live as long as the process: the cycle collector
    # need not walk them again (benchmarks/README.md, "Start-up"). Once a process: later, what
    # exists also holds an earlier job's objects (a launcher's process runs several jobs).
    if not gc.get_freeze_count():
        gc.freeze()
    gc.enable()
    return task(cfg)


if __name__ == "__main__":
    main()
