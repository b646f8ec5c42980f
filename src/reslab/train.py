"""`reslab-train`: one Hydra job (or each job of a sweep) runs its task under the job wrapper.

    reslab-train                                   # ResNet-20 on the embedded digits data
    reslab-train model=plain model.depth=56        # one plain-56 run
    reslab-train -m experiment=digits_degradation  # the whole degradation sweep
    reslab-train task=eval ckpt_path=PATH          # score a checkpoint on the test split

The training run itself reads as build, fit, test in reslab/tasks/train.py; the job's record,
status and exit code belong to reslab/tasks/wrapper.py. Nothing heavy is imported here, so that
`--help` and `--cfg job` answer at once.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from reslab import cluster  # noqa: F401 - registers the resolver conf/hydra/launcher/slurm.yaml uses
from reslab import collector, distributed
from reslab.console import quiet_console


def main() -> None:
    """`reslab-train`. A DDP rank that Lightning started again runs its job, as rank 0 saved it."""
    collector.start_paused()
    sys.argv = distributed.relaunched_rank_argv(sys.argv) or sys.argv
    train_job()


@hydra.main(version_base="1.3", config_path="pkg://reslab.conf", config_name="train")
def train_job(cfg: DictConfig) -> float | None:
    # Here, not in main(): this runs in every process that runs a job (a launcher's workers too).
    quiet_console()
    with collector.job_collection():  # the collector waits while the job imports and builds: reslab.collector
        from reslab.errors import ConfigError
        from reslab.preflight import TASKS, check_choice
        from reslab.tasks import task_function
        from reslab.tasks.wrapper import run_task

        try:
            check_choice("task", cfg.task, TASKS)
        except ConfigError as error:
            import logging

            logging.getLogger("reslab").error("configuration error: %s", error)
            raise SystemExit(2) from None
        task = task_function(cfg.task)
        collector.keep_imports()  # torch, Lightning and the task's modules
        return run_task(cfg, task)


if __name__ == "__main__":
    main()
