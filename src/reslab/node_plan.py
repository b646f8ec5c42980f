"""How a node is shared among the jobs of a sweep that run side by side on it
(`hydra/launcher=node_parallel`): GPUs cut into slots of `gpus_per_job` ids, each shared by
`jobs_per_gpu` jobs, or one job per CPU core without GPUs; the CPU threads divided among the
jobs that run at once. The launcher starts each job's process with its slot's environment;
reslab.checks plans the node before a sweep starts, so that a plan the node cannot give is
refused before any work.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reslab.errors import ConfigError

log = logging.getLogger("reslab")

# Share of a shared GPU's memory the job's process lets PyTorch use (1 / jobs_per_gpu).
GPU_MEMORY_FRACTION_ENV = "RESLAB_GPU_MEMORY_FRACTION"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class NodePlan:
    """How a node is shared: one device slot per concurrently running job."""

    slots: tuple[tuple[str, ...], ...]
    threads_per_job: int
    # Share of its GPUs' memory each job may use (1.0 unless jobs_per_gpu > 1).
    gpu_memory_fraction: float = 1.0

    @property
    def max_parallel(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        if not any(self.slots):
            return f"{self.max_parallel} at a time on the CPU cores"
        slots = ", ".join(f"GPU {','.join(slot)} x{n}" for slot, n in Counter(self.slots).items())
        return f"{self.max_parallel} at a time on {slots}, {self.gpu_memory_fraction:.0%} of GPU memory each"

    def environment(self, slot: Sequence[str]) -> dict[str, str]:
        """A job's process environment: this process's, with the slot's devices and threads."""
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(slot)}
        env.update({name: str(self.threads_per_job) for name in THREAD_ENV_VARS})
        env.pop(GPU_MEMORY_FRACTION_ENV, None)
        if slot:
            env[GPU_MEMORY_FRACTION_ENV] = f"{self.gpu_memory_fraction:.4g}"
        return env


def visible_gpu_ids() -> list[str]:
    """The GPUs this process may use, named as CUDA_VISIBLE_DEVICES names them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for gpu in visible.split(","):  # CUDA ignores all from the first invalid entry on ("-1")
            if not gpu.strip() or gpu.strip().startswith("-"):
                break
            ids.append(gpu.strip())
        return ids
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def available_cpus() -> int:
    """CPU cores this process may run on (respects cpusets, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity outside Linux
        return os.cpu_count() or 1


def plan_node(
    gpus: Sequence[Any] | None = None,
    gpus_per_job: int = 1,
    jobs_per_gpu: int = 1,
    max_parallel: int | None = None,
    threads_per_job: int | None = None,
    cpus: int | None = None,
    num_jobs: int | None = None,
) -> NodePlan:
    """Cut the node's GPUs into slots of `gpus_per_job` ids, `jobs_per_gpu` jobs to a slot (one
    job per CPU core without GPUs), and divide the CPU threads among the jobs that run at once
    (no more than `num_jobs`, the sweep's jobs, when given)."""
    gpu_ids = visible_gpu_ids() if gpus is None else [str(gpu) for gpu in gpus]
    cpus = cpus or available_cpus()
    if len(set(gpu_ids)) != len(gpu_ids):
        raise ConfigError(f"hydra.launcher.gpus lists a GPU twice: {gpu_ids}; list each id once")
    for key, value, meaning in (
        ("gpus_per_job", gpus_per_job, ""),
        ("jobs_per_gpu", jobs_per_gpu, " (jobs sharing one GPU at once)"),
        ("max_parallel", max_parallel, " or null (every slot)"),
        ("threads_per_job", threads_per_job, " or null (cores / jobs at once)"),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"hydra.launcher.{key} must be >= 1{meaning}, got {value}")
    memory_fraction = 1.0
    if gpu_ids:
        if len(gpu_ids) < gpus_per_job:
            raise ConfigError(
                f"hydra.launcher.gpus_per_job={gpus_per_job} needs that many GPUs, but only {gpu_ids} are "
                "available; lower gpus_per_job or list more hydra.launcher.gpus"
            )
        gpu_slots = [
            tuple(gpu_ids[i : i + gpus_per_job]) for i in range(0, len(gpu_ids) - gpus_per_job + 1, gpus_per_job)
        ]
        if len(gpu_ids) % gpus_per_job:
            idle = gpu_ids[len(gpu_slots) * gpus_per_job :]
            log.warning("GPUs %s stay idle: they do not fill a slot of gpus_per_job=%d", idle, gpus_per_job)
        # Round robin: the first jobs spread over the GPUs before any GPU gets a second one.
        slots = [slot for _ in range(jobs_per_gpu) for slot in gpu_slots]
        if max_parallel is not None and max_parallel > len(slots):
            raise ConfigError(
                f"hydra.launcher.max_parallel={max_parallel} jobs would share GPUs beyond jobs_per_gpu={jobs_per_gpu}: "
                f"GPUs {gpu_ids} with gpus_per_job={gpus_per_job} give {len(slots)} slot(s); set max_parallel <= "
                f"{len(slots)} or null, or raise hydra.launcher.jobs_per_gpu"
            )
        memory_fraction = 1.0 / jobs_per_gpu
    else:
        # Small networks use a core far better alone than split across threads: one job per core.
        slots = [()] * (max_parallel or cpus)
    running = min(max_parallel or len(slots), num_jobs or len(slots), len(slots))
    slots = slots[: max(running, 1)]
    return NodePlan(tuple(slots), threads_per_job or max(1, cpus // len(slots)), memory_fraction)


def hold_to_gpu_share() -> None:
    """In a job's process: hold it to its share of a GPU that other jobs use at the same time."""
    fraction = float(os.environ.get(GPU_MEMORY_FRACTION_ENV) or 1)
    if fraction >= 1:
        return
    import torch

    if torch.cuda.is_available():
        # A DDP rank that Lightning started trains on the visible device of its local rank.
        device = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        log.info("GPU %d shared: this job may use %.0f%% of its memory", device, 100 * fraction)
