"""reslab-train on a real SLURM cluster through `hydra/launcher=slurm` (submitit): a sweep, a
job requeued at its time-limit signal that resumes from the checkpoint it saved on the signal,
and one run on two tasks that SLURM starts as the two DDP ranks.

Start the cluster first (as root): `.ci/slurm/setup.sh`. Without `sbatch`, or when `sinfo`
cannot reach a controller, the whole module is skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import FAST, run_cli
from reslab.results import read_metrics_csv

pytestmark = pytest.mark.slurm


def _cluster_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


if not _cluster_answers():
    pytest.skip("no SLURM cluster (run .ci/slurm/setup.sh as root)", allow_module_level=True)

# The test node has no GPUs and two cores: one core per task.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=5",
    "hydra.sweep.dir=sweep",
    "model.depth=8",
    "logger=csv",
]
WAIT_S = 120

# Holds the job's first start (SLURM_RESTART_COUNT unset) at a step until the test says go;
# a requeued start runs straight through.
PAUSE = '''
import os, time
from pathlib import Path
import lightning.pytorch as pl

class PauseOnFirstStart(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            Path("paused").touch()
            while not Path("go").exists():
                time.sleep(0.1)
'''


def sweep_jobs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "sweep").glob("*/.hydra"))


def results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def submitted_job_id(tmp_path: Path) -> str:
    """SLURM's id of the (only) job the sweep submitted: submitit's folder is named after it."""
    (folder,) = [p for p in (tmp_path / "sweep" / ".submitit").iterdir() if re.fullmatch(r"[0-9_]+", p.name)]
    return folder.name


def wait_for(path: Path, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.2)


def test_sweep_runs_as_slurm_jobs(train, tmp_path):
    train("-m", *SLURM, "seed=1,2")

    records = [results(job) for job in sweep_jobs(tmp_path)]
    assert sorted(record["seed"] for record in records) == [1, 2]
    for record in records:
        assert record["status"] == "completed" and record["steps"] == 6 and record["world_size"] == 1


@pytest.mark.slow
def test_job_requeued_on_its_time_limit_signal_resumes_from_the_checkpoint_it_saved(tmp_path):
    (tmp_path / "pause_once.py").write_text(PAUSE)
    overrides = [
        *FAST,
        *SLURM,
        # Enough steps after the pause that the signal, however late, lands during training.
        "trainer.max_steps=200",
        # No scheduled checkpoint before the signal: the resume can only use the one it caused.
        "callbacks.checkpoint.every_n_train_steps=1000",
        "+callbacks.pause._target_=pause_once.PauseOnFirstStart",
        "+callbacks.pause.step=5",
    ]
    outcome: dict = {}
    sweep = threading.Thread(
        target=lambda: outcome.update(
            proc=run_cli("reslab.train", ["-m", *overrides], tmp_path, check=False, PYTHONPATH=str(tmp_path))
        )
    )
    sweep.start()
    try:
        wait_for(tmp_path / "paused")
        # What SLURM sends signal_delay_s before the time limit; submitit then requeues the job.
        job_id = submitted_job_id(tmp_path)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        time.sleep(2)
    finally:
        (tmp_path / "go").touch()
        sweep.join(timeout=300)
    assert outcome["proc"].returncode == 0, outcome["proc"].stderr[-3000:]

    (job,) = sweep_jobs(tmp_path)
    record = results(job)
    assert record["status"] == "completed" and record["steps"] == 200
    # Resumed from the checkpoint saved at the end of the step the signal came in (held at 5).
    step = record["resumed_from_step"]
    assert step is not None and 6 <= step < 200
    log = (job / "train.log").read_text()
    assert re.search(rf"SIGUSR2: saved .*last\.ckpt at step {step}\n", log)
    assert f"resuming from {job}/checkpoints/last.ckpt at step {step}" in log
    assert "Requeued job" in "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    # One history across both starts: every step once.
    assert [row["step"] for row in read_metrics_csv(job / "metrics.csv") if "train/err" in row] == list(range(200))


def test_two_task_job_trains_as_two_ddp_ranks(train, tmp_path):
    train("-m", *SLURM, "hydra.launcher.tasks_per_node=2", "trainer=ddp", "trainer.devices=2")

    (job,) = sweep_jobs(tmp_path)
    record = results(job)
    assert record["status"] == "completed" and record["world_size"] == 2 and record["steps"] == 6
    assert not (job / ".hydra" / "config.pickle").exists(), "SLURM started the ranks: nothing re-launched"
    assert [row["step"] for row in read_metrics_csv(job / "metrics.csv") if "train/err" in row] == list(range(6))
    task_logs = sorted((tmp_path / "sweep" / ".submitit").rglob("*_log.err"))
    ranks = {m for p in task_logs for m in re.findall(r"GLOBAL_RANK: (\d)", p.read_text())}
    assert ranks == {"0", "1"}
