"""`hydra/launcher=node_parallel`: run the jobs of a multirun side by side on one node; what users
see of it (slots, failures, signals, a sweep killed outright) is the README's "Scaling out".
Each job runs in a process of its own, in a process group of its own (its DDP ranks end with
it), held to its slot of the node (reslab.node_plan) before torch is imported. Jobs are
composed up front; a job lost without a final record has it marked failed (reslab.job.record_lost).
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it
# is in sys.modules, and dataclasses cannot resolve string annotations then.
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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.reslab_launchers._job_process import result_path
from reslab import job as job_files
from reslab.node_plan import NodePlan, plan_node

log = logging.getLogger(__name__)

JOB_PROCESS_MODULE = "hydra_plugins.reslab_launchers._job_process"
# Signals passed on to the jobs (in process groups of their own, a terminal's Ctrl-C or hang-up
# reaches only the launcher).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long a reused job process may take to exit once it has run its slot's last job.
CLOSE_TIMEOUT_S = 120


@dataclass
class NodeParallelLauncherConf:
    _target_: str = "hydra_plugins.reslab_launchers.node_parallel_launcher.NodeParallelLauncher"
    # GPU ids as CUDA_VISIBLE_DEVICES names them. null: the GPUs this process sees; []: CPU only.
    gpus: list[Any] | None = None
    gpus_per_job: int = 1
    # Jobs sharing one slot of gpus_per_job GPUs at once, each held to 1/jobs_per_gpu of the
    # memory of its GPU(s). For small networks that leave a GPU mostly idle.
    jobs_per_gpu: int = 1
    # Jobs running at once. null: every slot (GPU slots x jobs_per_gpu; without GPUs one job per
    # CPU core), never more than the sweep has jobs.
    max_parallel: int | None = None
    # Intra-op threads of each job. null: this node's cores / jobs running at once.
    threads_per_job: int | None = None
    # A config key that grows with a job's length (e.g. model.depth): jobs with larger values
    # start first, so that the sweep does not end with a long job running alone. null: the
    # sweep's order.
    longest_first_by: str | None = None
    # Whether a job's process goes on to its slot's next job (torch and Lightning imported once
    # per slot); a job that fails or dies leaves its slot a fresh process. null: on CPU slots,
    # not on GPU slots, where a CUDA error can leave a process unable to go on.
    reuse_processes: bool | None = None


# `hydra/launcher=reslab_node_parallel` for any Hydra app; ResLab's preset
# conf/hydra/launcher/node_parallel.yaml extends it.
ConfigStore.instance().store(
    group="hydra/launcher", name="reslab_node_parallel", node=NodeParallelLauncherConf, provider="reslab_launchers"
)


def how_it_ended(exit_code: int) -> str:
    if exit_code >= 0:
        return f"exited with code {exit_code}"
    try:
        return f"was killed by {signal.Signals(-exit_code).name}"
    except ValueError:
        return f"was killed by signal {-exit_code}"


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    payload: Path  # what its process unpickles: see _job_process
    folder: Path | None = None  # where Hydra puts the job's files
    length: float | None = None  # its value of longest_first_by

    def describe(self) -> str:
        return f"job #{self.idx} ({' '.join(self.overrides)})"

    def returned(self, task_name: str, status: JobStatus, error: BaseException | None = None) -> JobReturn:
        return JobReturn(overrides=self.overrides, task_name=task_name, status=status, _return_value=error)


class _Worker:
    """A slot's job process, in a process group of its own so that what a job starts (DDP ranks)
    ends with it. It runs the jobs written to its stdin one after another (_job_process --serve),
    saying so on a pipe after each, until told that no more come (an empty line) — right after
    its first job unless it is `reused`."""

    def __init__(self, env: dict[str, str], reused: bool) -> None:
        self.env, self.reused = env, reused
        self.process: subprocess.Popen | None = None
        self._replies: Any = None

    def start(self, job: _Job) -> subprocess.Popen:
        if self.process is not None and self.process.poll() is not None:
            self.close()  # died while it waited: start another
        if self.process is None:
            replies, replies_end = os.pipe()
            command = [sys.executable, "-m", JOB_PROCESS_MODULE, "--serve", str(replies_end)]
            self.process = subprocess.Popen(
                command, env=self.env, stdin=subprocess.PIPE, pass_fds=(replies_end,), start_new_session=True
            )
            os.close(replies_end)
            self._replies = os.fdopen(replies, "rb")
        with contextlib.suppress(BrokenPipeError):  # died already: wait_for says how
            self.process.stdin.write(f"{job.payload}\n{'' if self.reused else chr(10)}".encode())
            self.process.stdin.flush()
        return self.process

    def wait_for(self) -> int | None:
        """Wait for the job: None while the (reused) process lives on, else its exit code."""
        if self._replies.readline() and self.reused:
            return None
        return self.close()

    def close(self) -> int | None:
        """End the process (it exits once told that no more jobs come); its exit code."""
        if self.process is None:
            return None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(b"\n")  # no more jobs; closing stdin alone would end a running one
            self.process.stdin.close()
        try:
            exit_code = self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # e.g. a thread a job left running
            log.warning("a job process did not exit within %d s; killing it", CLOSE_TIMEOUT_S)
            _signal_group(self.process, signal.SIGKILL)
            exit_code = self.process.wait()
        self._replies.close()
        self.process = self._replies = None
        return exit_code


class NodeParallelLauncher(Launcher):
    def __init__(self, longest_first_by: str | None = None, reuse_processes: bool | None = None, **plan: Any) -> None:
        self.longest_first_by, self.reuse_processes = longest_first_by, reuse_processes
        self.plan = plan  # gpus, gpus_per_job, jobs_per_gpu, max_parallel, threads_per_job: see plan_node
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._stop_signal: int | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.task_name = str(config.hydra.job.name)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        # Resolving the sweep dir here also fixes ${now:...} for every job's config.
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        plan = plan_node(**self.plan, num_jobs=len(job_overrides))
        log.info(
            f"Launching {len(job_overrides)} jobs on this node, {plan.describe()}, {plan.threads_per_job} thread(s) "
            f"per job; sweep output dir: {sweep_dir}"
        )
        self._stop_signal = None
        with tempfile.TemporaryDirectory(prefix="reslab-node-parallel-") as workdir:
            jobs = [self._prepare(idx, list(o), Path(workdir)) for idx, o in enumerate(job_overrides, initial_job_idx)]
            pending: queue.SimpleQueue[_Job] = queue.SimpleQueue()
            # The longest first; equal lengths keep the sweep's order, unknown ones (None) come last.
            for job in sorted(jobs, key=lambda job: (job.length is None, -(job.length or 0))):
                pending.put(job)
            returns: dict[int, JobReturn] = {}
            with self._passing_signals_on(), ThreadPoolExecutor(max_workers=plan.max_parallel) as pool:
                for done in [pool.submit(self._serve_slot, slot, plan, pending, returns) for slot in plan.slots]:
                    done.result()
        # Hydra expects the returns in the sweep's order, whatever order the jobs ran in.
        returns = [returns.get(job.idx) or job.returned(self.task_name, JobStatus.UNKNOWN) for job in jobs]
        if self._stop_signal is not None:
            not_started = sum(1 for r in returns if r.status == JobStatus.UNKNOWN)
            name = signal.Signals(self._stop_signal).name
            log.error("sweep stopped by %s; %d job(s) were not started", name, not_started)
            raise SystemExit(128 + self._stop_signal)
        return returns

    def _prepare(self, idx: int, overrides: list[str], workdir: Path) -> _Job:
        """Compose the job's config and write it where its process reads it."""
        import cloudpickle  # pickles task functions defined in __main__ or wrapped by hydra.main

        job = _Job(idx, overrides, workdir / f"job{idx}.pkl")
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = idx
        with contextlib.suppress(Exception):  # a folder named by what only the job knows: none
            job.folder = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        if self.longest_first_by:
            value = OmegaConf.select(config, self.longest_first_by, throw_on_resolution_failure=False)
            job.length = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        with job.payload.open("wb") as file:
            pickle.dump(sys.path, file)  # plain pickle first: the job's process needs it to unpickle the rest
            state = Singleton.get_state()
            payload = {"config": config, "hydra_context": self.hydra_context, "singleton_state": state}
            cloudpickle.dump({**payload, "task_function": self.task_function}, file)
        return job

    def _serve_slot(self, slot: tuple[str, ...], plan: NodePlan, pending: "queue.SimpleQueue[_Job]", returns: dict):
        """Run the waiting jobs on this slot, one after another, until none is left."""
        reused = self.reuse_processes if self.reuse_processes is not None else not slot
        worker = _Worker(plan.environment(slot), reused)
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
                    returns[job.idx] = job.returned(self.task_name, JobStatus.FAILED, error)
        finally:
            worker.close()
            with self._lock:
                self._workers.discard(worker)

    def _run_job(self, job: _Job, slot: tuple[str, ...], worker: _Worker) -> JobReturn:
        with self._lock:  # so that a stopping sweep cannot miss a process that just started
            if self._stop_signal is not None:
                return job.returned(self.task_name, JobStatus.UNKNOWN)
            where = f"GPU {','.join(slot)}" if slot else "CPU"
            log.info("\t#%d on %s: %s", job.idx, where, " ".join(filter_overrides(job.overrides)))
            process = worker.start(job)
            started = time.monotonic()
        exit_code = worker.wait_for()  # None: done, and the (reused) process lives on
        if not result_path(job.payload).exists():  # ended without reporting: killed, out of memory, crashed
            worker.close()
            _signal_group(process, signal.SIGKILL)  # e.g. DDP ranks still waiting for rank 0
            reason = f"{job.describe()} {'ended' if exit_code is None else how_it_ended(exit_code)} before reporting a result"
            if job.folder is not None and job.folder.exists():  # Hydra made it: the job had started
                reason += f"; see its log in {job.folder}"
                job_files.record_lost(job.folder, reason, job.overrides)
            log.error("%s", reason)
            return job.returned(self.task_name, JobStatus.FAILED, RuntimeError(reason))
        import cloudpickle

        with result_path(job.payload).open("rb") as file:
            job_return = cloudpickle.load(file)
        how = job_return.status.name.lower()
        if job_return.status == JobStatus.FAILED and job.folder is not None:
            with contextlib.suppress(job_files.UnreadableJobFile):  # its record tells an interrupted job apart
                how = str((job_files.read_results(job.folder) or {}).get("status", how))
        log.info("\t#%d ended after %.1f s: %s", job.idx, time.monotonic() - started, how)
        if job_return.status == JobStatus.FAILED:
            worker.close()  # whatever failed, the slot's next job starts in a fresh process
        return job_return

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
        what = "killing" if again else "passing it on to"
        log.warning("%s: %s the %d running job(s)", signal.Signals(signum).name, what, len(running))


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
