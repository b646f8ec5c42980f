"""`hydra/launcher=node_parallel`: run the jobs of a multirun side by side on one node.

Every job runs in a fresh Python process whose environment pins it to its own devices from
the first instruction on, so CUDA can only ever see the job's GPUs:

    CUDA_VISIBLE_DEVICES=<the job's GPU ids>   RESLAB_ASSIGNED_DEVICES=<the same ids>
    OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=<threads_per_job>

The GPUs are cut into slots of `gpus_per_job` ids. At most `max_parallel` jobs run at once,
each holding one slot, and the next job starts as soon as a slot is free again, so no GPU id
is shared by two running jobs. Without GPUs the slots are empty (CUDA_VISIBLE_DEVICES="") and
only the CPU threads are divided.

    reslab-train -m model=plain,resnet model.depth=20,56 hydra/launcher=node_parallel
    reslab-train -m ... hydra/launcher=node_parallel hydra.launcher.gpus=[0,1,2,3] \
        hydra.launcher.gpus_per_job=2

A failing job does not stop the others. Its exception comes back in its JobReturn and Hydra
raises it once the whole batch has finished, as with Hydra's basic launcher.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it
# is in sys.modules, and dataclasses cannot resolve string annotations then.
import logging
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from reslab.errors import ConfigError

log = logging.getLogger(__name__)

ASSIGNED_DEVICES_ENV = "RESLAB_ASSIGNED_DEVICES"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CPU_ONLY_MAX_PARALLEL = 2
JOB_PROCESS_MODULE = "hydra_plugins.reslab_launchers._job_process"


@dataclass
class NodeParallelLauncherConf:
    _target_: str = "hydra_plugins.reslab_launchers.node_parallel_launcher.NodeParallelLauncher"
    # GPU ids as CUDA_VISIBLE_DEVICES names them. null: the GPUs this process sees
    # (CUDA_VISIBLE_DEVICES, else torch.cuda.device_count()); []: CPU only.
    gpus: list[Any] | None = None
    gpus_per_job: int = 1
    # Jobs running at once. null: one per GPU slot; 2 on a node without GPUs.
    max_parallel: int | None = None
    # Intra-op threads of each job. null: this process's CPU cores divided by max_parallel.
    threads_per_job: int | None = None


ConfigStore.instance().store(
    group="hydra/launcher",
    name="node_parallel",
    node=NodeParallelLauncherConf,
    provider="reslab_launchers",
)


@dataclass(frozen=True)
class NodePlan:
    """How a node is shared: one device slot per concurrently running job."""

    slots: tuple[tuple[str, ...], ...]
    threads_per_job: int

    @property
    def max_parallel(self) -> int:
        return len(self.slots)


def visible_gpu_ids() -> list[str]:
    """The GPUs this process may use, named as CUDA_VISIBLE_DEVICES names them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        # CUDA ignores everything from the first invalid entry on ("-1" hides all GPUs).
        for gpu in visible.split(","):
            gpu = gpu.strip()
            if not gpu or gpu.startswith("-"):
                break
            ids.append(gpu)
        return ids
    try:
        import torch
    except ImportError:
        return []
    return [str(index) for index in range(torch.cuda.device_count())]


def available_cpus() -> int:
    """CPU cores this process may run on (respects cpusets, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity outside Linux
        return os.cpu_count() or 1


def plan_node(
    gpus: Sequence[Any] | None,
    gpus_per_job: int = 1,
    max_parallel: int | None = None,
    threads_per_job: int | None = None,
    cpus: int | None = None,
) -> NodePlan:
    """Cut the node's GPUs into slots of `gpus_per_job` ids and divide its CPU threads."""
    gpu_ids = visible_gpu_ids() if gpus is None else [str(gpu) for gpu in gpus]
    if len(set(gpu_ids)) != len(gpu_ids):
        raise ConfigError(f"hydra.launcher.gpus lists a GPU twice: {gpu_ids}; list each id once")
    if gpus_per_job < 1:
        raise ConfigError(f"hydra.launcher.gpus_per_job must be >= 1, got {gpus_per_job}")
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(
            f"hydra.launcher.max_parallel must be >= 1 or null (one job per GPU slot), "
            f"got {max_parallel}"
        )
    if gpu_ids:
        if len(gpu_ids) < gpus_per_job:
            raise ConfigError(
                f"hydra.launcher.gpus_per_job={gpus_per_job} needs that many GPUs, but only "
                f"{gpu_ids} are available; lower gpus_per_job or list more hydra.launcher.gpus"
            )
        gpu_slots = [
            tuple(gpu_ids[start : start + gpus_per_job])
            for start in range(0, len(gpu_ids) - gpus_per_job + 1, gpus_per_job)
        ]
        if max_parallel is not None and max_parallel > len(gpu_slots):
            raise ConfigError(
                f"hydra.launcher.max_parallel={max_parallel} jobs would share GPUs: GPUs "
                f"{gpu_ids} with gpus_per_job={gpus_per_job} give {len(gpu_slots)} slot(s); "
                f"set max_parallel <= {len(gpu_slots)} or null"
            )
        if len(gpu_ids) % gpus_per_job:
            log.warning(
                "GPUs %s stay idle: %d GPU(s) do not fill a slot of gpus_per_job=%d",
                gpu_ids[len(gpu_slots) * gpus_per_job :],
                len(gpu_ids) % gpus_per_job,
                gpus_per_job,
            )
        slots = gpu_slots[: max_parallel or len(gpu_slots)]
    else:
        slots = [()] * (max_parallel or CPU_ONLY_MAX_PARALLEL)

    if threads_per_job is None:
        threads_per_job = max(1, (cpus or available_cpus()) // len(slots))
    elif threads_per_job < 1:
        raise ConfigError(
            f"hydra.launcher.threads_per_job must be >= 1 or null (cores / max_parallel), "
            f"got {threads_per_job}"
        )
    return NodePlan(slots=tuple(slots), threads_per_job=threads_per_job)


def job_environment(slot: Sequence[str], threads_per_job: int) -> dict[str, str]:
    """The environment of a job's process: its devices and its share of the CPU threads."""
    env = dict(os.environ)
    devices = ",".join(slot)
    env["CUDA_VISIBLE_DEVICES"] = devices
    env[ASSIGNED_DEVICES_ENV] = devices
    env.update({name: str(threads_per_job) for name in THREAD_ENV_VARS})
    return env


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    config: DictConfig  # the job's own (sweep) config
    payload: Path  # what its process unpickles: see _job_process


def _failed_return(job: _Job, error: BaseException) -> JobReturn:
    return JobReturn(
        overrides=job.overrides,
        working_dir=os.getcwd(),
        task_name=str(job.config.hydra.job.name),
        status=JobStatus.FAILED,
        _return_value=error,
    )


class NodeParallelLauncher(Launcher):
    def __init__(
        self,
        gpus: Sequence[Any] | None = None,
        gpus_per_job: int = 1,
        max_parallel: int | None = None,
        threads_per_job: int | None = None,
    ) -> None:
        self.gpus = None if gpus is None else list(gpus)
        self.gpus_per_job = gpus_per_job
        self.max_parallel = max_parallel
        self.threads_per_job = threads_per_job
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        # Resolving the sweep dir here also fixes ${now:...} for every job's config.
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        plan = plan_node(self.gpus, self.gpus_per_job, self.max_parallel, self.threads_per_job)
        log.info(
            "Launching %d jobs on this node, %d at a time, devices per job: %s, "
            "%d thread(s) per job; sweep output dir: %s",
            len(job_overrides),
            plan.max_parallel,
            " ".join(f"[{','.join(slot)}]" for slot in plan.slots if slot) or "CPU only",
            plan.threads_per_job,
            sweep_dir,
        )
        self._stopping.clear()
        with tempfile.TemporaryDirectory(prefix="reslab-node-parallel-") as workdir:
            jobs = self._prepare_jobs(job_overrides, initial_job_idx, Path(workdir))
            return self._run_side_by_side(jobs, plan)

    def _prepare_jobs(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, workdir: Path
    ) -> list[_Job]:
        import cloudpickle  # pickles task functions defined in __main__ or wrapped by hydra.main

        assert self.config is not None and self.hydra_context is not None
        singleton_state = Singleton.get_state()
        jobs = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(config):
                config.hydra.job.id = idx
                config.hydra.job.num = idx
            payload = workdir / f"job{idx}.pkl"
            with payload.open("wb") as file:
                # Plain pickle first: the job's process needs our sys.path to unpickle the rest.
                pickle.dump(sys.path, file)
                cloudpickle.dump(
                    {
                        "config": config,
                        "hydra_context": self.hydra_context,
                        "task_function": self.task_function,
                        "singleton_state": singleton_state,
                    },
                    file,
                )
            jobs.append(_Job(idx, list(overrides), config, payload))
        return jobs

    def _run_side_by_side(self, jobs: list[_Job], plan: NodePlan) -> list[JobReturn]:
        free_slots: queue.SimpleQueue[tuple[str, ...]] = queue.SimpleQueue()
        for slot in plan.slots:
            free_slots.put(slot)

        def run_on_a_free_slot(job: _Job) -> JobReturn:
            slot = free_slots.get()  # never blocks long: there are as many slots as workers
            try:
                return self._run_in_own_process(job, slot, plan.threads_per_job)
            finally:
                free_slots.put(slot)

        with ThreadPoolExecutor(max_workers=plan.max_parallel) as pool:
            futures = [pool.submit(run_on_a_free_slot, job) for job in jobs]
            try:
                return [future.result() for future in futures]
            except BaseException:  # e.g. Ctrl-C: start nothing more, stop what runs
                for future in futures:
                    future.cancel()
                self._stop_all()
                raise

    def _run_in_own_process(self, job: _Job, slot: tuple[str, ...], threads: int) -> JobReturn:
        result = job.payload.with_suffix(".result.pkl")
        with self._lock:  # so that a stopping sweep cannot miss a process that just started
            if self._stopping.is_set():
                return _failed_return(job, RuntimeError("not started: the sweep was stopped"))
            log.info(
                "\t#%d on %s: %s",
                job.idx,
                f"GPU {','.join(slot)}" if slot else "CPU",
                " ".join(filter_overrides(job.overrides)),
            )
            process = subprocess.Popen(
                [sys.executable, "-m", JOB_PROCESS_MODULE, str(job.payload), str(result)],
                env=job_environment(slot, threads),
            )
            self._running.add(process)
        exit_code = process.wait()
        with self._lock:
            self._running.discard(process)
        if result.exists():
            import cloudpickle

            with result.open("rb") as file:
                return cloudpickle.load(file)
        return _failed_return(
            job,
            RuntimeError(
                f"job #{job.idx} ({' '.join(job.overrides)}) ended with exit code {exit_code} "
                "before reporting a result (killed, out of memory, or crashed; see its log)"
            ),
        )

    def _stop_all(self) -> None:
        with self._lock:
            self._stopping.set()
            for process in self._running:
                process.terminate()
