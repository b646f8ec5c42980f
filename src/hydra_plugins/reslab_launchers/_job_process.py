"""One node_parallel job in its own process: `python -m <this module> PAYLOAD RESULT`.

The launcher starts this module with the job's devices and thread counts already in the
environment, so whatever the job imports (torch, CUDA) sees only them. It unpickles the job,
runs it the way Hydra's launchers do (`run_job`) and pickles the JobReturn to RESULT, a failed
job's exception included. The leading underscore keeps Hydra's plugin scan from importing it.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import traceback

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


def main(payload_path: str, result_path: str) -> None:
    job = _load_job(payload_path)

    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals

    setup_globals()
    Singleton.set_state(job["singleton_state"])
    config = job["config"]
    try:
        job_return = run_job(
            hydra_context=job["hydra_context"],
            task_function=job["task_function"],
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except Exception as error:  # noqa: BLE001 - Hydra failed around the task: still report
        job_return = JobReturn(
            overrides=list(config.hydra.overrides.task),
            task_name=str(config.hydra.job.name),
            status=JobStatus.FAILED,
            _return_value=error,
        )
    if job_return.status == JobStatus.FAILED:
        _describe_failure(job_return._return_value)
    # Lightning's DDP starts ranks 1..N-1 by running this same command again (LOCAL_RANK set);
    # they run the same job and config, and only rank 0 reports to the launcher.
    if os.environ.get("LOCAL_RANK", "0") == "0":
        _save_result(result_path, job_return)


if __name__ == "__main__":
    main(*sys.argv[1:3])
