"""Where a job's processes come from, so that every rank of a multi-device run trains exactly
its own job, in its own folder, once.

A run on N devices is N processes (ranks). Who starts them depends on where it runs:

- One node, `trainer=ddp`: the job as Hydra started it is rank 0, and Lightning starts ranks
  1..N-1 by running the program again (`_SubprocessScriptLauncher`). Lightning's command for
  that repeats the command line plus `hydra.run.dir=...` (`_hydra_subprocess_cmd`): right for
  a single run, wrong for a multirun, where `-m` starts the whole sweep again in every rank
  (its own sweep folder, its own job folders). So before fitting, rank 0 writes its job's
  composed config, the `hydra` node included, to `.hydra/config.pickle` in the job folder and
  names it in RESLAB_RERUN_JOB; a `reslab-train` started with LOCAL_RANK > 0 and that variable
  runs exactly that job through Hydra's `--experimental-rerun` (same config, same job folder,
  no sweep, nothing composed anew). Hydra's `hydra.run.dir` and `-m` arguments are ignored.
- Under `hydra/launcher=node_parallel` the job's process re-runs its pickled job the same way
  (see hydra_plugins/reslab_launchers/_job_process.py).
- SLURM (`hydra/launcher=slurm` with tasks_per_node = trainer.devices): SLURM starts every
  rank, submitit runs the same job function in each task, and Lightning's SLURMEnvironment
  reads the ranks from SLURM_PROCID and friends; nothing is re-launched. Lightning's own
  auto-requeue is off there: submitit requeues (see reslab.checkpoints.CheckpointOnSignal).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from omegaconf import DictConfig, open_dict

from reslab.atomic_files import atomic_writer

if TYPE_CHECKING:
    import lightning.pytorch as pl

# Lightning and torch are imported where they are used: `reslab-train` imports this module for
# `relaunched_rank_argv` before it knows whether the command only prints a config.

RERUN_ENV = "RESLAB_RERUN_JOB"
RERUN_CONFIG = Path(".hydra") / "config.pickle"
# What Lightning puts into this process's environment when it starts ranks; a sweep's next
# job in the same process must start from a clean slate (LOCAL_RANK alone would make Lightning
# believe the ranks were started by someone else).
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", RERUN_ENV)


def relaunched_rank_argv(argv: list[str]) -> list[str] | None:
    """The command line that makes a rank Lightning re-launched run its job (and Hydra ready
    for that rerun); None in any other process (rank 0, torchrun and SLURM ranks, one device)."""
    job_config = os.environ.get(RERUN_ENV)
    if not job_config or os.environ.get("LOCAL_RANK", "0") == "0":
        return None
    # Hydra's rerun path skips the registration of its resolvers; the job's config uses
    # ${hydra:runtime.output_dir}.
    setup_globals()
    warnings.filterwarnings("ignore", message="Experimental rerun CLI option")
    return [argv[0], "--experimental-rerun", job_config]


def cluster_plugins() -> list:
    """Lightning plugins for where this process runs. Under SLURM: Lightning's SLURM environment
    with its auto-requeue off, so that SLURM's signal leaves the requeue to submitit."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


@contextmanager
def job_ranks(trainer: pl.Trainer, cfg: DictConfig, job_dir: Path) -> Iterator[None]:
    """Around one job's fit and test: ranks that Lightning re-launches run exactly this job;
    afterwards this process is a single process again, ready for a sweep's next job."""
    import torch

    saved_env = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    if _relaunches_ranks(trainer):
        os.environ[RERUN_ENV] = str(save_job_config(cfg, job_dir))
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def save_job_config(cfg: DictConfig, job_dir: Path) -> Path:
    """The job's whole config, `hydra` node included, as `--experimental-rerun` reads it."""
    config = copy.deepcopy(cfg)
    with open_dict(config):
        config.hydra = copy.deepcopy(HydraConfig.get())
    path = Path(job_dir) / RERUN_CONFIG
    import cloudpickle

    with atomic_writer(path) as file:  # whole or not at all: ranks read it while rank 0 waits for them
        # cloudpickle: a launcher plugin's config class that Hydra's plugin scan loaded outside
        # sys.modules (node_parallel) cannot be pickled by name; plain pickle reads the result.
        cloudpickle.dump(config, file, protocol=4)
    return path


def _relaunches_ranks(trainer: pl.Trainer) -> bool:
    # Lightning's launcher for ranks it starts itself; no public name tells this case apart.
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    launcher = trainer.strategy.launcher
    return (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        and not launcher.cluster_environment.creates_processes_externally
    )
