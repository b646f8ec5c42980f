"""What the tests of the SLURM test cluster (.ci/slurm/setup.sh) share: whether a cluster
answers, and reading back what a sweep under `hydra/launcher=slurm` left behind."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

from conftest import run_cli

WAIT_S = 120
NO_CLUSTER = "no SLURM cluster (run .ci/slurm/setup.sh as root)"


def cluster_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def cluster_nodes() -> int:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=15, check=True)
    return len(set(out.stdout.split()))


# A callback (PYTHONPATH=the test's folder, +callbacks.pause._target_=pause_once.PauseOnFirstStart
# +callbacks.pause.step=N) that holds every rank of a job's first start (SLURM_RESTART_COUNT
# unset) before step N until the file `go` exists; rank 0 says so with the file `paused`. A
# requeued start runs straight through.
PAUSE_ONCE = """
import os, time
from pathlib import Path
import lightning.pytorch as pl

class PauseOnFirstStart(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            if trainer.is_global_zero:
                Path("paused").touch()
            while not Path("go").exists():
                time.sleep(0.1)
"""


def pause_once(folder: Path, step: int) -> list[str]:
    """The overrides that hold a job's first start before `step` (see PAUSE_ONCE); run with
    PYTHONPATH=folder."""
    (folder / "pause_once.py").write_text(PAUSE_ONCE)
    return ["+callbacks.pause._target_=pause_once.PauseOnFirstStart", f"+callbacks.pause.step={step}"]


class BackgroundSweep:
    """`reslab-train -m OVERRIDES` run in `cwd` (on PYTHONPATH, for pause_once) while the test
    acts on its jobs; `join()` waits for it, `proc` is the finished process."""

    def __init__(self, cwd: Path, overrides: list[str], timeout: int = 300) -> None:
        self.proc: subprocess.CompletedProcess | None = None
        self._thread = threading.Thread(
            target=lambda: setattr(
                self,
                "proc",
                run_cli("reslab.train", ["-m", *overrides], cwd, timeout=timeout, check=False, PYTHONPATH=str(cwd)),
            )
        )
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Whether the launching command has returned within `timeout` seconds."""
        self._thread.join(timeout=timeout)
        return not self._thread.is_alive()


def wait_for(path: Path, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.2)


def job_field(job_id: str, name: str) -> str | None:
    """A field of `scontrol show job` (squeue forgets a job MinJobAge seconds after it ends)."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=15).stdout
    for field in out.split():
        if field.startswith(f"{name}="):
            return field.split("=", 1)[1]
    return None


# ----------------------------------------------------------------------------- a sweep's folders


def sweep_jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/.hydra"))


def results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def submitted_job_ids(sweep: Path) -> list[str]:
    """SLURM's ids of the jobs the sweep submitted (31 for one job, 31_0 31_1 for an array):
    submitit keeps each job's pickle and logs in a folder named after it."""
    return sorted(p.parent.name for p in (sweep / ".submitit").glob("*/*_submitted.pkl"))


def task_logs(sweep: Path, job_id: str, stream: str = "out") -> dict[int, str]:
    """Each SLURM task's log of one job, by task id (SLURM_PROCID); a requeued job appends."""
    folder = sweep / ".submitit" / job_id
    return {
        int(p.name[len(job_id) + 1 :].split("_")[0]): p.read_text() for p in folder.glob(f"{job_id}_*_log.{stream}")
    }


_STAMP = r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\)"


def job_span(sweep: Path, job_id: str) -> tuple[datetime, datetime]:
    """When the job's first task started and its last task finished, from submitit's log lines."""
    logs = "".join(task_logs(sweep, job_id).values())
    starts = re.findall(_STAMP + r" - Starting with JobEnvironment", logs)
    ends = re.findall(_STAMP + r" - Exiting after successful completion", logs)
    assert starts and ends, f"job {job_id} has no start or end in its logs"

    def parse(stamp: str) -> datetime:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")

    return min(map(parse, starts)), max(map(parse, ends))


def task_places(log: str) -> set[tuple[int, int]]:
    """(node index, global rank) of every start of a task, as submitit's JobEnvironment logs them."""
    return {(int(n), int(r)) for n, r in re.findall(r"JobEnvironment\(.*?node=(\d+)\(\d+\), global_rank=(\d+)", log)}
