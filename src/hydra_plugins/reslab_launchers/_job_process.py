"""node_parallel jobs in their own process: `python -m <this module> PAYLOAD RESULT DIR_NOTE`
runs one job; `python -m <this module> --serve FD [MODULE ...]` imports the MODULEs (the
launcher's `preload`) and then runs a slot's jobs one after another, each named by a line
`PAYLOAD<TAB>RESULT<TAB>DIR_NOTE` on stdin, writing `done` to the pipe FD after each (torch and
Lightning are then imported once per slot, not once per job).

The launcher starts this module with the job's devices and thread counts already in the
environment, so whatever the job imports (torch, CUDA) sees only them. It unpickles the job,
runs it the way Hydra's launchers do (`run_job`), writes the job's output folder to DIR_NOTE as
soon as Hydra has made it, caps the job's share of GPU memory when the GPU is shared, and
pickles the JobReturn to RESULT: a failed job's exception included, and a job that ended the
process (`sys.exit`) as failed with the error that made it exit. The leading underscore keeps
Hydra's plugin scan from importing it.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import sys
import traceback
from functools import wraps
from pathlib import Path

# Named explicitly: run with `python -m`, this module is `__main__`.
log = logging.getLogger("hydra_plugins.reslab_launchers.job")


def _load_job(payload_path: str) -> dict:
    with open(payload_path, "rb") as file:
        parent_sys_path = pickle.load(file)
        # Modules the parent could import (e.g. its script's folder) stay importable here.
        sys.path[:0] = [path for path in parent_sys_path if path not in sys.path]
        import cloudpickle

        return cloudpickle.load(file)


def _describe_failure(error: BaseException) -> None:
    """Log the traceback here, where it exists: the pickled exception loses it."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    log.error("Job failed:\n%s", text)
    if hasattr(error, "add_note"):  # Python >= 3.11 prints notes with the exception
        error.add_note(f"Raised in the job's own process:\n{text}")


def _cap_gpu_memory() -> None:
    """Hold this job to its share of a GPU that other jobs use at the same time."""
    from hydra_plugins.reslab_launchers.node_parallel_launcher import GPU_MEMORY_FRACTION_ENV

    fraction = float(os.environ.get(GPU_MEMORY_FRACTION_ENV) or 1)
    if fraction >= 1:
        return
    import torch

    if not torch.cuda.is_available():
        return
    # A DDP rank that Lightning started trains on the visible device of its local rank.
    device = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.info("GPU %d shared: this job may use %.0f%% of its memory", device, 100 * fraction)


def _as_launched(task_function, dir_note: str):
    """The task, first telling the launcher the job's folder (for a job that dies unreported)
    and holding the job to its share of a shared GPU (logged in the job's log)."""

    @wraps(task_function)
    def task(cfg):
        from hydra.core.hydra_config import HydraConfig

        Path(dir_note).write_text(HydraConfig.get().runtime.output_dir)
        _cap_gpu_memory()
        return task_function(cfg)

    return task


def _exit_as_error(exit_: SystemExit) -> BaseException:
    """A job that called sys.exit: the error it exited on (e.g. a ConfigError it logged), else
    the exit itself, worded."""
    if exit_.__context__ is not None:
        return exit_.__context__
    return RuntimeError(f"the job exited with code {exit_.code}")


def _job_return(config, error: BaseException | None):
    """A JobReturn for a job that run_job could not report on: failed with `error`, or
    completed (returning None) when there is none."""
    from hydra.core.utils import JobReturn, JobStatus

    return JobReturn(
        overrides=list(config.hydra.overrides.task),
        task_name=str(config.hydra.job.name),
        status=JobStatus.COMPLETED if error is None else JobStatus.FAILED,
        _return_value=error,
    )


def _save_result(result_path: str, job_return) -> None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(job_return)
    except Exception as error:  # noqa: BLE001 - an unpicklable value must not lose the job
        kept = job_return._return_value
        log.warning("Cannot send the job's return value back (%s); sending its repr", error)
        job_return._return_value = (
            RuntimeError(f"{type(kept).__name__}: {kept}")
            if isinstance(kept, BaseException)
            else repr(kept)
        )
        data = cloudpickle.dumps(job_return)
    # Written whole, then renamed: the launcher never reads a half-written result.
    partial = f"{result_path}.partial"
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, result_path)


def main(payload_path: str, result_path: str, dir_note: str) -> None:
    job = _load_job(payload_path)

    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    setup_globals()
    Singleton.set_state(job["singleton_state"])
    config = job["config"]
    try:
        job_return = run_job(
            hydra_context=job["hydra_context"],
            task_function=_as_launched(job["task_function"], dir_note),
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except SystemExit as exit_:  # the job ended its process: still report how
        job_return = _job_return(config, None if exit_.code in (0, None) else _exit_as_error(exit_))
    except Exception as error:  # noqa: BLE001 - Hydra failed around the task: still report
        job_return = _job_return(config, error)
    if job_return.status == JobStatus.FAILED:
        _describe_failure(job_return._return_value)
    # Lightning's DDP starts ranks 1..N-1 by running this same command again (LOCAL_RANK set);
    # they run the same job and config, and only rank 0 reports to the launcher.
    if os.environ.get("LOCAL_RANK", "0") == "0":
        _save_result(result_path, job_return)


def _preload(modules: list[str]) -> None:
    """Import what the jobs will, before the first comes; with the collector paused, as a job
    imports (reslab.collector). A module that fails to import fails the job that needs it."""
    import importlib

    from reslab.collector import job_collection

    with job_collection():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as error:  # noqa: BLE001 - the job reports it, where it matters
                log.debug("could not preload %s: %s", name, error)


def serve(replies_fd: int, preload: list[str] | None = None) -> None:
    """Run the jobs named on stdin one after another until stdin closes."""
    _preload(preload or [])
    with os.fdopen(replies_fd, "w") as replies:
        for line in sys.stdin:
            payload_path, result_path, dir_note = line.rstrip("\n").split("\t")
            # A DDP rank that Lightning starts runs this process's command line again: this job.
            sys.argv[1:] = [payload_path, result_path, dir_note]
            try:
                main(payload_path, result_path, dir_note)
            except Exception:  # noqa: BLE001 - no result: the launcher reports the job as lost
                log.exception("The job could not be run")
            gc.collect()
            replies.write("done\n")
            replies.flush()


if __name__ == "__main__":
    from reslab.collector import skip_collection_at_exit

    skip_collection_at_exit()  # the job's own exit handlers (W&B's teardown) still run first
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3:])
    else:
        main(*sys.argv[1:4])
