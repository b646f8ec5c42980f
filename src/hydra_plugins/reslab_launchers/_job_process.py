"""A node_parallel job's own process. `python -m <this module> --serve FD` runs the jobs named by
lines PAYLOAD on stdin one after another until an empty line, writing `done` to the pipe FD after
each; `python -m <this module> PAYLOAD` runs one (as a DDP rank that Lightning starts does).
Stdin is also its lifeline: its end without the empty line means the launcher is gone (even
killed by SIGKILL), and the running job is ended as SIGTERM ends it. A job runs as Hydra's
launchers run one (`run_job`), held to its share of a shared GPU; its JobReturn is pickled
beside PAYLOAD (`result_path`), a job that ended the process (`sys.exit`) as failed. The leading
underscore keeps Hydra's plugin scan from importing it.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from reslab.atomic_files import atomic_writer
from reslab.node_plan import hold_to_gpu_share

# How long a job whose launcher died may take to save its state and exit before it is killed.
ORPHAN_GRACE_S = 60
# Named explicitly: run with `python -m`, this module is `__main__`.
log = logging.getLogger("hydra_plugins.reslab_launchers.job")


def result_path(payload_path: str | Path) -> Path:
    return Path(payload_path).with_suffix(".result.pkl")


def main(payload_path: str) -> None:
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals

    with open(payload_path, "rb") as file:
        # Modules the launching process could import (e.g. its script's folder) stay importable.
        sys.path[:0] = [path for path in pickle.load(file) if path not in sys.path]
        job = cloudpickle.load(file)
    setup_globals()
    Singleton.set_state(job["singleton_state"])
    config = job["config"]
    hold_to_gpu_share()
    error: BaseException | None = None
    stopped_by: str | None = None
    try:
        job_return = run_job(
            hydra_context=job["hydra_context"],
            task_function=job["task_function"],
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except SystemExit as exit_:  # the job ended its process: still report how
        if exit_.code not in (0, None):
            error = exit_.__context__ or RuntimeError(f"the job exited with code {exit_.code}")
            if exit_.code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # the job was interrupted
                stopped_by = signal.Signals(exit_.code - 128).name
        job_return = None
    except Exception as raised:  # noqa: BLE001 - Hydra failed around the task: still report
        error, job_return = raised, None
    if job_return is None:
        job_return = JobReturn(
            overrides=list(config.hydra.overrides.task),
            task_name=str(config.hydra.job.name),
            status=JobStatus.COMPLETED if error is None else JobStatus.FAILED,
            _return_value=error,
        )
    if stopped_by is not None:
        # A signal ended the job (its record says interrupted): no failure to show a traceback of.
        log.warning("job interrupted by %s", stopped_by)
        job_return._return_value = RuntimeError(f"the job was interrupted by {stopped_by}")
    elif job_return.status == JobStatus.FAILED:
        failure = job_return._return_value
        # The traceback exists here only: the pickled exception loses it.
        text = "".join(traceback.format_exception(type(failure), failure, failure.__traceback__))
        log.error("Job failed:\n%s", text)
        failure.add_note(f"Raised in the job's own process:\n{text}")
    # Lightning's DDP starts ranks 1..N-1 by running this same command again (LOCAL_RANK set);
    # they run the same job and config, and only rank 0 reports to the launcher.
    if os.environ.get("LOCAL_RANK", "0") == "0":
        _save_result(result_path(payload_path), job_return)


def _save_result(path: Path, job_return) -> None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(job_return)
    except Exception as error:  # noqa: BLE001 - an unpicklable value must not lose the job
        kept = job_return._return_value
        log.warning("Cannot send the job's return value back (%s); sending its repr", error)
        wrapped = RuntimeError(f"{type(kept).__name__}: {kept}")
        job_return._return_value = wrapped if isinstance(kept, BaseException) else repr(kept)
        data = cloudpickle.dumps(job_return)
    with atomic_writer(path) as result:  # the launcher never reads a half-written result
        result.write(data)


def serve(replies_fd: int) -> None:
    """Run the jobs named on stdin one after another until an empty line (or the lifeline's end)."""
    payloads: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    threading.Thread(target=_read_payloads, args=(payloads,), daemon=True).start()
    with os.fdopen(replies_fd, "w") as replies:
        while payload := payloads.get():
            # A DDP rank that Lightning starts runs this process's command line again: this job.
            sys.argv[1:] = [payload]
            try:
                main(payload)
            except Exception:  # noqa: BLE001 - no result: the launcher reports the job as lost
                log.exception("The job could not be run")
            gc.collect()  # the last job's network and data, before the next job builds its own
            replies.write("done\n")
            replies.flush()


def _read_payloads(payloads: queue.SimpleQueue) -> None:
    for line in sys.stdin:
        if not line.strip():  # the launcher has no more jobs for this slot
            payloads.put(None)
            return
        payloads.put(line.strip())
    # End of file without the empty line: the launcher died. End the job and what it started
    # (its process group: DDP ranks) as SIGTERM ends it, so that its record says interrupted and
    # no job trains on unwatched; whatever outlasts the grace is killed.
    payloads.put(None)
    log.error("The launcher is gone: ending this job")
    os.killpg(0, signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_S)
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main(sys.argv[1])
