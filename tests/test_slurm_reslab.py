"""reslab-train on a real SLURM cluster through `hydra/launcher=slurm` (submitit): a sweep, a
job requeued at its time-limit signal that resumes from the checkpoint it saved on the signal,
and a job cancelled while it runs, which ends the launching command's wait. Runs across nodes:
tests/test_slurm_multinode.py.

Start the cluster first (as root): `.ci/slurm/setup.sh`. Without `sbatch`, or when `sinfo`
cannot reach a controller, the whole module is skipped.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from conftest import FAST, run_cli
from reslab.job import read_metrics_csv
from slurm_testing import (
    NO_CLUSTER,
    WAIT_S,
    BackgroundSweep,
    cluster_answers,
    pause_once,
    results,
    submitted_job_ids,
    sweep_jobs,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

if not cluster_answers():
    pytest.skip(NO_CLUSTER, allow_module_level=True)

# The test nodes have no GPUs (trainer.accelerator=cpu asks for none) and two cores each: one
# core per task.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=5",
    "hydra.sweep.dir=sweep",
    "model.depth=8",
    "logger=csv",
]


def test_sweep_runs_as_slurm_jobs(train, tmp_path):
    train("-m", *SLURM, "seed=1,2")

    records = [results(job) for job in sweep_jobs(tmp_path / "sweep")]
    assert sorted(record["seed"] for record in records) == [1, 2]
    for record in records:
        assert record["status"] == "completed" and record["steps"] == 6 and record["world_size"] == 1


@pytest.mark.slow
def test_job_requeued_on_its_time_limit_signal_resumes_from_the_checkpoint_it_saved(tmp_path):
    overrides = [
        *FAST,
        *SLURM,
        # Enough steps after the pause that the signal, however late, lands during training.
        "trainer.max_steps=200",
        # No scheduled checkpoint before the signal: the resume can only use the one it caused.
        "callbacks.checkpoint.every_n_train_steps=1000",
        *pause_once(tmp_path, step=5),
    ]
    sweep = BackgroundSweep(tmp_path, overrides)
    try:
        wait_for(tmp_path / "paused")
        # What SLURM sends signal_delay_s before the time limit; submitit then requeues the job.
        (job_id,) = submitted_job_ids(tmp_path / "sweep")
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        time.sleep(2)
    finally:
        (tmp_path / "go").touch()
        sweep.join(timeout=300)
    assert sweep.proc.returncode == 0, sweep.proc.stderr[-3000:]

    (job,) = sweep_jobs(tmp_path / "sweep")
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


def test_job_cancelled_while_it_runs_ends_the_wait_of_the_launching_command(tmp_path):
    # Cancelled (or killed for memory, or its node lost), a job writes no result for submitit to
    # find; only the job's state says it ended. This cluster keeps no accounting (no sacct):
    # the state comes from squeue.
    overrides = [*FAST, *SLURM, *pause_once(tmp_path, step=2)]
    sweep = BackgroundSweep(tmp_path, overrides)
    try:
        wait_for(tmp_path / "paused")
        (job_id,) = submitted_job_ids(tmp_path / "sweep")
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        assert sweep.join(timeout=WAIT_S), "the launching command still waits for the cancelled job"
    finally:
        (tmp_path / "go").touch()
        sweep.join(timeout=300)

    proc = sweep.proc
    assert proc.returncode != 0
    # submitit gives up waiting for its result: the state squeue reported ended the job.
    assert "has not produced any output" in proc.stdout + proc.stderr


def test_gpus_asked_of_a_cluster_without_gpus_stop_the_sweep_with_one_line(tmp_path):
    # trainer.accelerator=auto: the launcher asks for a GPU per device, which this cluster lacks.
    proc = run_cli("reslab.train", ["-m", *SLURM, "trainer.accelerator=auto"], tmp_path, check=False)

    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "hydra.launcher.gpus_per_node=1 but no node of this cluster has GPUs" in out
    assert "trainer.accelerator=cpu" in out and "Traceback" not in out
    assert not (tmp_path / "sweep" / ".submitit").exists()
