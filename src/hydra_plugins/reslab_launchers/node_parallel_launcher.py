"""`hydra/launcher=node_parallel`: run the jobs of a multirun side by side on one node.

Every job runs in a Python process of its own whose environment pins it to its own devices
from the first instruction on, so CUDA can only ever see the job's GPUs:

    CUDA_VISIBLE_DEVICES=<the job's GPU ids>   RESLAB_ASSIGNED_DEVICES=<the same ids>
    RESLAB_GPU_MEMORY_FRACTION=<1 / jobs_per_gpu>          (jobs on GPUs only)
    OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=<threads_per_job>

The GPUs are cut into slots of `gpus_per_job` ids, and each slot is shared by up to
`jobs_per_gpu` jobs at once. A job sharing its GPU(s) may use 1/jobs_per_gpu of each GPU's
memory: its process caps PyTorch's allocator there (`torch.cuda.set_per_process_memory_fraction`,
see _job_process), so a job that outgrows its share fails alone with an out-of-memory error
instead of starving its neighbours (the CUDA context, some hundred MB, comes on top). Without
GPUs the slots are CPU cores: one job per core, since a small network uses a core far better
alone than split across threads. At most `max_parallel` jobs run at once; the CPU threads are
divided among them. The next job starts as soon as a slot is free again: with
`longest_first_by` (ResLab's preset: model.depth) the longest jobs first, so that the short
ones fill the gaps at the end (the order is read from the jobs' overrides where they set the
key, else from their composed configs). A job's config is composed when its slot takes it, so
the first jobs start without waiting for the whole sweep's. On CPU slots a job's process goes
on to the slot's next job, so torch and Lightning are imported once per slot, not once per job
(`reuse_processes`); it imports them (`preload`) as it starts, and with the
reslab.sweep.StartJobProcessesEarly callback it starts while the sweep still checks its jobs.

    reslab-train -m experiment=digits_degradation        # its default launcher: one job per core
    reslab-train -m ... hydra/launcher=node_parallel hydra.launcher.gpus=[0,1,2,3] \
        hydra.launcher.gpus_per_job=2
    reslab-train -m experiment=cifar_table6 hydra/launcher=node_parallel hydra.launcher.jobs_per_gpu=4

Faults stay inside their job. A job that raises, exits non-zero, or is killed (even with
SIGKILL) is reported as failed in its JobReturn, the other jobs run on (a slot whose job failed
or died gets a fresh process), and the launcher returns; Hydra then raises the first failure,
as with its basic launcher. A job's own process writes its results.json; only for a job that
died without writing its final record (killed, out of memory) does the launcher mark that
record failed, saying how the process ended. Each job process runs in a process group of its
own, so whatever a dead job leaves behind (the other ranks of a DDP run) is killed with it.
SIGINT, SIGTERM and SIGHUP sent to the launcher are passed on to the running jobs (a second
one kills them); no further job starts, and once the running ones have ended the launcher
exits with 128 + the signal's number.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it
# is in sys.modules, and dataclasses cannot resolve string annotations then.
import atexit
import contextlib
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
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
from omegaconf import DictConfig, OmegaConf, open_dict

from reslab import job as job_files
from reslab.errors import ConfigError

log = logging.getLogger(__name__)

ASSIGNED_DEVICES_ENV = "RESLAB_ASSIGNED_DEVICES"
GPU_MEMORY_FRACTION_ENV = "RESLAB_GPU_MEMORY_FRACTION"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
JOB_PROCESS_MODULE = "hydra_plugins.reslab_launchers._job_process"
# Signals the launcher passes on to its jobs (they run in process groups of their own, so a
# terminal's Ctrl-C or hang-up reaches only the launcher).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long a reused job process may take to exit once it has run its slot's last job.
CLOSE_TIMEOUT_S = 120


@dataclass
class NodeParallelLauncherConf:
    _target_: str = "hydra_plugins.reslab_launchers.node_parallel_launcher.NodeParallelLauncher"
    # GPU ids as CUDA_VISIBLE_DEVICES names them. null: the GPUs this process sees
    # (CUDA_VISIBLE_DEVICES, else torch.cuda.device_count()); []: CPU only.
    gpus: list[Any] | None = None
    gpus_per_job: int = 1
    # Jobs sharing one slot of gpus_per_job GPUs at once, each capped at 1/jobs_per_gpu of
    # the memory of its GPU(s). For small networks that leave a GPU mostly idle.
    jobs_per_gpu: int = 1
    # Jobs running at once. null: every slot (GPU slots x jobs_per_gpu; without GPUs one job
    # per CPU core), never more than the sweep has jobs.
    max_parallel: int | None = None
    # Intra-op threads of each job. null: this process's CPU cores / jobs running at once.
    threads_per_job: int | None = None
    # A key of the jobs' configs that grows with a job's length (e.g. model.depth): jobs with
    # larger values start first, so that the sweep does not end with a long job running alone
    # while the other slots idle. null (or a job without a number there): the sweep's order.
    longest_first_by: str | None = None
    # Whether a job's process goes on to its slot's next job (saving each job the seconds of
    # importing torch and Lightning) instead of a fresh process per job. A job that fails or
    # dies always leaves its slot a fresh process. null: on CPU slots; not on GPU slots, where a
    # CUDA error can leave a process unable to run anything more on its GPU.
    reuse_processes: bool | None = None
    # Modules a reused job process imports as soon as it starts, before its first job comes
    # (e.g. the task's module: torch, Lightning). With reslab.sweep.StartJobProcessesEarly that
    # happens while the sweep's own process still checks and composes the jobs.
    preload: list[str] = field(default_factory=list)


# As `hydra/launcher=reslab_node_parallel` for any Hydra app. ResLab's own preset,
# conf/hydra/launcher/node_parallel.yaml, extends it: a yaml of the same name as a ConfigStore
# entry would be matched against it implicitly, which Hydra deprecates (and warns about).
ConfigStore.instance().store(
    group="hydra/launcher",
    name="reslab_node_parallel",
    node=NodeParallelLauncherConf,
    provider="reslab_launchers",
)


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
        jobs_per_slot = Counter(self.slots)
        slots = ", ".join(
            f"GPU {','.join(slot)}" + (f" x{count}" if count > 1 else "")
            for slot, count in jobs_per_slot.items()
        )
        memory = (
            f", {self.gpu_memory_fraction:.0%} of GPU memory each"
            if self.gpu_memory_fraction < 1
            else ""
        )
        return f"{self.max_parallel} at a time on {slots}{memory}"


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
    jobs_per_gpu: int = 1,
    max_parallel: int | None = None,
    threads_per_job: int | None = None,
    cpus: int | None = None,
    num_jobs: int | None = None,
) -> NodePlan:
    """Cut the node's GPUs into slots of `gpus_per_job` ids, `jobs_per_gpu` jobs to a slot
    (one job per CPU core without GPUs), and divide the CPU threads among the jobs that run
    at once (no more than `num_jobs`, the sweep's jobs, when given)."""
    gpu_ids = visible_gpu_ids() if gpus is None else [str(gpu) for gpu in gpus]
    cpus = cpus or available_cpus()
    if len(set(gpu_ids)) != len(gpu_ids):
        raise ConfigError(f"hydra.launcher.gpus lists a GPU twice: {gpu_ids}; list each id once")
    if gpus_per_job < 1:
        raise ConfigError(f"hydra.launcher.gpus_per_job must be >= 1, got {gpus_per_job}")
    if jobs_per_gpu < 1:
        raise ConfigError(
            f"hydra.launcher.jobs_per_gpu must be >= 1 (jobs sharing one GPU at once), "
            f"got {jobs_per_gpu}"
        )
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(
            f"hydra.launcher.max_parallel must be >= 1 or null (every slot), got {max_parallel}"
        )
    if threads_per_job is not None and threads_per_job < 1:
        raise ConfigError(
            f"hydra.launcher.threads_per_job must be >= 1 or null (cores / jobs at once), "
            f"got {threads_per_job}"
        )
    memory_fraction = 1.0
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
        if len(gpu_ids) % gpus_per_job:
            log.warning(
                "GPUs %s stay idle: %d GPU(s) do not fill a slot of gpus_per_job=%d",
                gpu_ids[len(gpu_slots) * gpus_per_job :],
                len(gpu_ids) % gpus_per_job,
                gpus_per_job,
            )
        # Round robin: the first jobs spread over the GPUs before any GPU gets a second one.
        slots = [slot for _ in range(jobs_per_gpu) for slot in gpu_slots]
        if max_parallel is not None and max_parallel > len(slots):
            raise ConfigError(
                f"hydra.launcher.max_parallel={max_parallel} jobs would share GPUs beyond "
                f"jobs_per_gpu={jobs_per_gpu}: GPUs {gpu_ids} with gpus_per_job={gpus_per_job} "
                f"give {len(slots)} slot(s); set max_parallel <= {len(slots)} or null, or "
                f"raise hydra.launcher.jobs_per_gpu"
            )
        memory_fraction = 1.0 / jobs_per_gpu
    else:
        # Small networks use a core far better alone than split across threads (on 2 cores, two
        # 1-thread digits jobs train 1.5-2x as fast as one 2-thread job: benchmarks/README.md),
        # so one job per core.
        slots = [()] * (max_parallel or cpus)
    running = min(max_parallel or len(slots), num_jobs or len(slots), len(slots))
    slots = slots[: max(running, 1)]
    return NodePlan(
        slots=tuple(slots),
        threads_per_job=threads_per_job or max(1, cpus // len(slots)),
        gpu_memory_fraction=memory_fraction,
    )


def slot_settings(slot: Sequence[str], plan: NodePlan) -> dict[str, str | None]:
    """What the launcher sets in a job's environment: its devices, its share of their memory
    and of the CPU threads (None: the variable is removed)."""
    devices = ",".join(slot)
    return {
        "CUDA_VISIBLE_DEVICES": devices,
        ASSIGNED_DEVICES_ENV: devices,
        GPU_MEMORY_FRACTION_ENV: f"{plan.gpu_memory_fraction:.4g}" if slot else None,
        **{name: str(plan.threads_per_job) for name in THREAD_ENV_VARS},
    }


def job_environment(slot: Sequence[str], plan: NodePlan) -> dict[str, str]:
    """The environment of a job's process: this process's, with the slot's settings."""
    env = dict(os.environ)
    for name, value in slot_settings(slot, plan).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def record_lost_job(job_dir: Path, reason: str, overrides: Sequence[str]) -> None:
    """Mark a job failed whose process died before its final record: its results.json is
    missing or still says `running`. Any other record is the job's own (or an earlier
    attempt's, which must not be lost) and stays as it is."""
    try:
        record = job_files.read_results(job_dir)
    except job_files.UnreadableJobFile:
        return  # not ours to repair: the report lists it as unreadable
    if record is None:
        record = {"overrides": list(overrides)}
    elif record.get("status") != job_files.RUNNING:
        return
    record.update(status=job_files.FAILED, error=reason)
    job_files.write_results(job_dir, record)


def how_it_ended(exit_code: int) -> str:
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"was killed by {name}"
    return f"exited with code {exit_code}"


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    payload: Path  # what its process unpickles: see _job_process
    # The job's own (sweep) config, composed when the job is about to start (or when the start
    # order needs it), so that the first jobs start without waiting for the whole sweep's.
    config: DictConfig | None = None

    @property
    def result(self) -> Path:
        return self.payload.with_suffix(".result.pkl")

    @property
    def dir_note(self) -> Path:
        """Where the job's process writes its output folder as soon as Hydra has made it."""
        return self.payload.with_suffix(".dir")

    def describe(self) -> str:
        return f"job #{self.idx} ({' '.join(self.overrides)})"


class _Worker:
    """The process that runs a slot's jobs: a fresh one for every job, or, `reused`, one that
    runs the slot's jobs one after another while it lives, so that each job does not pay again
    for importing torch and Lightning (see _job_process's --serve). Either way in a process
    group of its own, so that what a job starts (DDP ranks) can be ended with it."""

    def __init__(self, env: dict[str, str], reused: bool, preload: Sequence[str] = ()) -> None:
        self.env = env
        self.reused = reused
        self.preload = list(preload)
        self.process: subprocess.Popen | None = None
        self._replies: Any = None  # reused: the pipe on which the process says a job is done

    def serve(self) -> None:
        """Start the reused process, which imports `preload` while it waits for its first job."""
        replies, replies_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", JOB_PROCESS_MODULE, "--serve", str(replies_end), *self.preload],
            env=self.env,
            stdin=subprocess.PIPE,
            pass_fds=(replies_end,),
            start_new_session=True,
        )
        os.close(replies_end)
        self._replies = os.fdopen(replies, "rb")

    def start(self, job: _Job) -> subprocess.Popen:
        """The process that will run `job`: started now, or the one still serving the slot."""
        command = [sys.executable, "-m", JOB_PROCESS_MODULE]
        if self.process is not None and self.process.poll() is not None:
            self._forget()  # a reused process that died while it waited: start another
        if not self.reused:
            self.process = subprocess.Popen(
                [*command, str(job.payload), str(job.result), str(job.dir_note)],
                env=self.env,
                start_new_session=True,
            )
        elif self.process is None:
            self.serve()
        if self.reused:
            with contextlib.suppress(BrokenPipeError):  # died already: wait_for says how
                self.process.stdin.write(f"{job.payload}\t{job.result}\t{job.dir_note}\n".encode())
                self.process.stdin.flush()
        return self.process

    def wait_for(self, job: _Job) -> int | None:
        """Wait until `job` is done: None while the (reused) process lives on, else its exit code."""
        assert self.process is not None
        if self.reused and self._replies.readline():
            return None
        exit_code = self.process.wait()
        self._forget()
        return exit_code

    def close(self) -> None:
        """End a reused process once its last job is done (it exits when told no more come)."""
        if self.process is not None and self.reused:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            try:
                self.process.wait(timeout=CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # e.g. a thread a job left running
                log.warning("a job process did not exit within %d s; killing it", CLOSE_TIMEOUT_S)
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        self._forget()

    def _forget(self) -> None:
        if self._replies is not None:
            self._replies.close()
        self.process, self._replies = None, None


# ----------------------------------------------------------------------------- early job processes

# Reused job processes started by start_job_processes_early before the launcher exists; a slot
# takes the one whose environment (devices, threads) is its own.
_early_workers: list[_Worker] = []
_early_lock = threading.Lock()


def _early_worker_for(settings: dict[str, str | None]) -> "_Worker | None":
    """An early process started with the slot's settings (slot_settings), taken off the list."""
    with _early_lock:
        for worker in _early_workers:
            if all(worker.env.get(name) == value for name, value in settings.items()):
                _early_workers.remove(worker)
                return worker
    return None


def _end_early_workers() -> None:
    """Kill the early processes no slot took: they never ran a job (a sweep refused by its
    pre-check, or a launch that needed other slots)."""
    with _early_lock:
        left, _early_workers[:] = list(_early_workers), []
    for worker in left:
        if worker.process is not None:
            _signal_group(worker.process, signal.SIGKILL)
            worker.process.wait()
        worker._forget()


def start_job_processes_early(config: DictConfig) -> None:
    """Start a grid sweep's reused job processes when the sweep starts, under node_parallel
    (called by reslab.sweep.StartJobProcessesEarly, a Hydra callback).

    Hydra calls the callbacks (ResLab's pre-check of every job among them) before it builds the
    sweeper and the launcher, and the sweeper composes every job once more before it launches:
    seconds in which one core works and the others wait. Started here, the processes import the
    launcher's `preload` (torch, Lightning) meanwhile; the launcher's slots take them. The
    launcher's plan is foreseen from the grid's size; a slot whose environment differs starts its
    own process, and the launch ends those it did not take. Only for slots that reuse processes
    (CPU slots by default), and only for the basic sweeper's grids.
    """
    from hydra.utils import instantiate

    from reslab.sweep import expand_grid, is_grid_sweep  # what the grid's jobs are

    if config.hydra.launcher.get("_target_") != f"{__name__}.{NodeParallelLauncher.__name__}":
        return
    launcher = instantiate(config.hydra.launcher)  # the launcher the sweeper will build
    if not launcher.preload or not is_grid_sweep(config):
        return
    try:
        plan = launcher.plan(num_jobs=len(expand_grid(config)))
    except ConfigError:
        return  # said again, as an error, when the launcher plans the node
    with _early_lock:
        for slot in plan.slots:
            if launcher.reuses_processes(slot):
                worker = _Worker(job_environment(slot, plan), reused=True, preload=launcher.preload)
                worker.serve()
                _early_workers.append(worker)
    atexit.register(_end_early_workers)  # a sweep its pre-check refused never launches


def _not_started(job: _Job, task_name: str) -> JobReturn:
    return JobReturn(overrides=job.overrides, task_name=task_name, status=JobStatus.UNKNOWN, _return_value=None)


def _failed_return(job: _Job, task_name: str, error: BaseException) -> JobReturn:
    return JobReturn(
        overrides=job.overrides,
        working_dir=os.getcwd(),
        task_name=task_name,
        status=JobStatus.FAILED,
        _return_value=error,
    )


class NodeParallelLauncher(Launcher):
    def __init__(
        self,
        gpus: Sequence[Any] | None = None,
        gpus_per_job: int = 1,
        jobs_per_gpu: int = 1,
        max_parallel: int | None = None,
        threads_per_job: int | None = None,
        longest_first_by: str | None = None,
        reuse_processes: bool | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        self.gpus = None if gpus is None else list(gpus)
        self.gpus_per_job = gpus_per_job
        self.jobs_per_gpu = jobs_per_gpu
        self.max_parallel = max_parallel
        self.threads_per_job = threads_per_job
        self.longest_first_by = longest_first_by
        self.reuse_processes = reuse_processes
        self.preload = list(preload)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._stop_signal: int | None = None
        # Jobs are composed from the slots' threads, one at a time (Hydra's config loader is
        # not made for threads), with the Singleton state Hydra had when the sweep launched.
        self._compose_lock = threading.Lock()
        self._singleton_state: Any = None

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
        plan = self.plan(num_jobs=len(job_overrides))
        log.info(
            "Launching %d jobs on this node, %s, %d thread(s) per job; sweep output dir: %s",
            len(job_overrides),
            plan.describe(),
            plan.threads_per_job,
            sweep_dir,
        )
        self._stop_signal = None
        self._singleton_state = Singleton.get_state()
        with tempfile.TemporaryDirectory(prefix="reslab-node-parallel-") as workdir:
            jobs = [
                _Job(idx, list(overrides), Path(workdir) / f"job{idx}.pkl")
                for idx, overrides in enumerate(job_overrides, start=initial_job_idx)
            ]
            try:
                with self._passing_signals_on():
                    returns = self._run_side_by_side(jobs, plan)
            finally:
                _end_early_workers()  # any a slot did not take (another plan than foreseen)
        if self._stop_signal is not None:
            name = signal.Signals(self._stop_signal).name
            not_started = sum(1 for r in returns if r.status == JobStatus.UNKNOWN)
            log.error("sweep stopped by %s; %d job(s) were not started", name, not_started)
            raise SystemExit(128 + self._stop_signal)
        return returns

    def plan(self, num_jobs: int) -> NodePlan:
        return plan_node(
            self.gpus,
            gpus_per_job=self.gpus_per_job,
            jobs_per_gpu=self.jobs_per_gpu,
            max_parallel=self.max_parallel,
            threads_per_job=self.threads_per_job,
            num_jobs=num_jobs,
        )

    def reuses_processes(self, slot: tuple[str, ...]) -> bool:
        return self.reuse_processes if self.reuse_processes is not None else not slot

    @property
    def _task_name(self) -> str:
        assert self.config is not None
        return str(self.config.hydra.job.name)

    def _prepare(self, job: _Job) -> DictConfig:
        """The job's config, composed and written where its process reads it (once)."""
        import cloudpickle  # pickles task functions defined in __main__ or wrapped by hydra.main

        assert self.config is not None and self.hydra_context is not None
        with self._compose_lock:
            if job.config is not None:
                return job.config
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides))
            with open_dict(config):
                config.hydra.job.id = job.idx
                config.hydra.job.num = job.idx
            with job.payload.open("wb") as file:
                # Plain pickle first: the job's process needs our sys.path to unpickle the rest.
                pickle.dump(sys.path, file)
                cloudpickle.dump(
                    {
                        "config": config,
                        "hydra_context": self.hydra_context,
                        "task_function": self.task_function,
                        "singleton_state": self._singleton_state,
                    },
                    file,
                )
            job.config = config
            return config

    def _run_side_by_side(self, jobs: list[_Job], plan: NodePlan) -> list[JobReturn]:
        pending: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        for job in self._start_order(jobs):
            pending.put(job)
        returns: dict[int, JobReturn] = {}
        with ThreadPoolExecutor(max_workers=plan.max_parallel) as pool:
            for slot_done in [pool.submit(self._serve_slot, slot, plan, pending, returns) for slot in plan.slots]:
                slot_done.result()
        # Hydra expects the returns in the sweep's order, whatever order the jobs ran in.
        return [returns.get(job.idx) or _not_started(job, self._task_name) for job in jobs]

    def _start_order(self, jobs: list[_Job]) -> list[_Job]:
        if not self.longest_first_by:
            return jobs
        key = self.longest_first_by
        lengths = [_number_in_overrides(job.overrides, key) for job in jobs]
        if any(length is None for length in lengths):
            # Not set by every job's overrides: the composed configs say (every job composed now).
            lengths = [self._number_in_config(job, key) for job in jobs]
        return [jobs[i] for i in longest_first(lengths)]

    def _number_in_config(self, job: _Job, key: str) -> float | None:
        try:
            config = self._prepare(job)
        except Exception:  # noqa: BLE001 - the job fails with this error when its turn comes
            return None
        return _number_at(config, key)

    def _serve_slot(
        self, slot: tuple[str, ...], plan: NodePlan, pending: "queue.SimpleQueue[_Job]", returns: dict
    ) -> None:
        """Run the waiting jobs on this slot, one after another, until none is left."""
        reused = self.reuses_processes(slot)
        early = _early_worker_for(slot_settings(slot, plan)) if reused else None
        worker = early or _Worker(job_environment(slot, plan), reused, self.preload)
        with self._lock:
            self._workers.add(worker)
        try:
            while self._stop_signal is None:
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    returns[job.idx] = self._run_job(job, slot, worker)
                except Exception as error:  # noqa: BLE001 - the launcher's own fault: this job only
                    log.exception("%s could not be run", job.describe())
                    returns[job.idx] = _failed_return(job, self._task_name, error)
        finally:
            worker.close()
            with self._lock:
                self._workers.discard(worker)

    def _run_job(self, job: _Job, slot: tuple[str, ...], worker: "_Worker") -> JobReturn:
        self._prepare(job)
        with self._lock:  # so that a stopping sweep cannot miss a process that just started
            if self._stop_signal is not None:
                return _not_started(job, self._task_name)
            log.info(
                "\t#%d on %s: %s",
                job.idx,
                f"GPU {','.join(slot)}" if slot else "CPU",
                " ".join(filter_overrides(job.overrides)),
            )
            process = worker.start(job)
            started = time.monotonic()
        exit_code = worker.wait_for(job)  # None: done, and the (reused) process lives on
        if not job.result.exists():
            lost = self._lost(job, process, exit_code)
            worker.close()
            return lost
        import cloudpickle

        with job.result.open("rb") as file:
            job_return = cloudpickle.load(file)
        log.info("\t#%d ended after %.1f s: %s", job.idx, time.monotonic() - started, job_return.status.name.lower())
        if job_return.status == JobStatus.FAILED:
            worker.close()  # whatever failed, the slot's next job starts in a fresh process
        return job_return

    def _lost(self, job: _Job, process: subprocess.Popen, exit_code: int | None) -> JobReturn:
        """A job that ended without reporting: killed, out of memory, or crashed."""
        _signal_group(process, signal.SIGKILL)  # e.g. DDP ranks still waiting for rank 0
        job_dir = Path(job.dir_note.read_text()) if job.dir_note.exists() else None
        ended = "ended" if exit_code is None else how_it_ended(exit_code)
        reason = f"{job.describe()} {ended} before reporting a result"
        if job_dir is not None:
            reason += f"; see its log in {job_dir}"
            record_lost_job(job_dir, reason, job.overrides)
        log.error("%s", reason)
        return _failed_return(job, self._task_name, RuntimeError(reason))

    @contextlib.contextmanager
    def _passing_signals_on(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set in the main thread
            return
        previous = {signum: signal.signal(signum, self._stop) for signum in FORWARDED_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop(self, signum: int, frame: Any) -> None:
        """Start no more jobs; pass the signal on to the running ones (a second: kill them)."""
        with self._lock:
            again = self._stop_signal is not None
            self._stop_signal = self._stop_signal or signum
            running = [worker.process for worker in self._workers if worker.process is not None]
            for process in running:
                _signal_group(process, signal.SIGKILL if again else signum)
        log.warning(
            "%s: %s the %d running job(s)",
            signal.Signals(signum).name,
            "killing" if again else "passing it on to",
            len(running),
        )


def longest_first(lengths: Sequence[float | None]) -> list[int]:
    """The jobs' indices in start order: the longest first. Stable: equal lengths keep the
    sweep's order, and unknown ones (None) come last."""
    return sorted(range(len(lengths)), key=lambda i: (lengths[i] is None, -(lengths[i] or 0)))


def _number_in_overrides(overrides: Sequence[str], key: str) -> float | None:
    """The number a job's overrides give `key` (read by Hydra's override parser; the last one
    that sets it wins); None where they do not set it, or not to a plain number."""
    value = None
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == key:
            value = None if override.is_delete() else override.value()
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number_at(config: DictConfig, key: str) -> float | None:
    """The number at `key` in a job's config; None where there is none (or it is no number)."""
    try:
        value = OmegaConf.select(config, key)
        return None if isinstance(value, bool) else float(value)
    except Exception:  # noqa: BLE001 - missing, not a number, or not resolvable here
        return None


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
