"""One run across SLURM nodes, the way a cluster runs it: a 2-node x 1-task DDP job through
`hydra/launcher=slurm` on the two-node test cluster (.ci/slurm/setup.sh: two slurmd daemons on
one host), compared with the same job as 1 node x 2 tasks, requeued across nodes, and two of
them queued in a sweep where one fails; and the up-front check that the launcher's layout
agrees with the trainer's (no cluster needed).

All cluster runs train the same job: ResNet-8 on digits for 3 epochs (1,257 training images,
629 a rank, in whole batches of 128: 4 steps an epoch), checkpoints at epoch boundaries,
deterministic.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from conftest import run_cli
from reslab.checks import check_cluster_layout
from reslab.errors import ConfigError
from reslab.job import read_metrics_csv
from slurm_testing import (
    NO_CLUSTER,
    BackgroundSweep,
    cluster_answers,
    cluster_nodes,
    job_field,
    job_span,
    pause_once,
    results,
    submitted_job_ids,
    sweep_jobs,
    task_logs,
    task_places,
    wait_for,
)

# One run on two nodes, one task (one CPU process) on each, every key spelt out.
TWO_NODES = [
    "hydra/launcher=slurm",
    "hydra.launcher.nodes=2",
    "hydra.launcher.tasks_per_node=1",
    "trainer=ddp",
    "trainer.devices=1",
    "trainer.num_nodes=2",
    "trainer.accelerator=cpu",
]
# The same two ranks as two tasks of one node; the launcher's layout follows the trainer.
ONE_NODE = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
STEPS_PER_EPOCH = 4
JOB = [
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=5",
    "hydra.sweep.dir=sweep",
    "hydra.sweep.subdir=job${hydra.job.num}",
    "model.depth=8",
    "data.batch_size=128",
    f"trainer.max_steps={3 * STEPS_PER_EPOCH}",
    "trainer.deterministic=true",
    f"callbacks.checkpoint.every_n_train_steps={STEPS_PER_EPOCH}",
    "trainer.enable_progress_bar=false",
]
CSV = ["logger=csv"]
SWEEP_TIMEOUT_S = 300


def sweep(cwd: Path, *overrides: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    return run_cli("reslab.train", ["-m", *overrides], cwd, timeout=SWEEP_TIMEOUT_S, check=check, **env)


def train_rows(job: Path) -> list[dict]:
    return [row for row in read_metrics_csv(job / "metrics.csv") if "train/err" in row]


@pytest.fixture(scope="module")
def two_nodes() -> None:
    """A cluster of at least two nodes answers; skipped where none does."""
    if not cluster_answers():
        pytest.skip(NO_CLUSTER)
    assert cluster_nodes() >= 2, "the multi-node tests need a cluster of two nodes: .ci/slurm/setup.sh 2"


@pytest.fixture(scope="module")
def one_node_run(two_nodes, tmp_path_factory) -> Path:
    """The job as 1 node x 2 tasks: the reference the 2-node runs must match."""
    cwd = tmp_path_factory.mktemp("one_node")
    sweep(cwd, *ONE_NODE, *JOB, *CSV)
    (job,) = sweep_jobs(cwd / "sweep")
    return job


@pytest.fixture
def cancel_at_end(tmp_path):
    """Whatever the test's sweep left in the queue is cancelled when the test ends."""
    yield
    if (tmp_path / "sweep" / ".submitit").exists():
        for job_id in submitted_job_ids(tmp_path / "sweep"):
            subprocess.run(["scancel", job_id.split("_")[0]], capture_output=True, timeout=15, check=False)


# ----------------------------------------------------------------------------- on the cluster


@pytest.mark.slurm
@pytest.mark.slow
def test_one_node_two_task_job_trains_as_two_ddp_ranks(one_node_run):
    record = results(one_node_run)
    assert record["status"] == "completed" and record["world_size"] == 2 and record["steps"] == 3 * STEPS_PER_EPOCH
    assert not (one_node_run / ".hydra" / "config.pickle").exists(), "SLURM started the ranks: nothing re-launched"
    assert [row["step"] for row in train_rows(one_node_run)] == list(range(3 * STEPS_PER_EPOCH))
    # 4 steps an epoch: the checkpoints every 4 steps are at epoch boundaries.
    assert [row["epoch"] for row in train_rows(one_node_run)] == [e for e in range(3) for _ in range(STEPS_PER_EPOCH)]
    (job_id,) = submitted_job_ids(one_node_run.parent)
    places = set().union(*map(task_places, task_logs(one_node_run.parent, job_id).values()))
    assert places == {(0, 0), (0, 1)}


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("cancel_at_end")
def test_two_node_job_trains_once_as_two_ranks_and_matches_one_node_with_two_tasks(tmp_path, one_node_run):
    # With W&B (offline): one W&B run for the job, not one per node.
    proc = sweep(tmp_path, *TWO_NODES, *JOB)

    (job,) = sweep_jobs(tmp_path / "sweep")
    record = results(job)
    assert record["status"] == "completed" and record["world_size"] == 2
    assert record["steps"] == 3 * STEPS_PER_EPOCH
    assert list((tmp_path / "sweep").rglob("results.json")) == [job / "results.json"]
    assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    # Rank 0 on the first node, rank 1 on the second: one task each.
    (job_id,) = submitted_job_ids(tmp_path / "sweep")
    places = set().union(*map(task_places, task_logs(tmp_path / "sweep", job_id).values()))
    assert places == {(0, 0), (1, 1)}
    assert not (job / ".hydra" / "config.pickle").exists(), "SLURM started the ranks: nothing re-launched"
    # Every step once, and the same numbers as the same two ranks on one node: gloo sums the
    # same gradients whichever node a rank is on.
    assert [row["step"] for row in train_rows(job)] == list(range(3 * STEPS_PER_EPOCH))
    assert read_metrics_csv(job / "metrics.csv") == read_metrics_csv(one_node_run / "metrics.csv")
    assert record["metrics"] == results(one_node_run)["metrics"]
    assert "Traceback" not in proc.stderr


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("cancel_at_end")
def test_two_node_job_requeued_resumes_on_both_nodes_from_rank_zeros_checkpoint(tmp_path, one_node_run):
    # Held inside the second epoch, after the checkpoint at its start.
    overrides = [*TWO_NODES, *JOB, *CSV, *pause_once(tmp_path, step=STEPS_PER_EPOCH + 2)]
    launch = BackgroundSweep(tmp_path, overrides, timeout=SWEEP_TIMEOUT_S)
    try:
        wait_for(tmp_path / "paused")
        (job_id,) = submitted_job_ids(tmp_path / "sweep")
        assert job_field(job_id, "NumNodes") == "2"
        # What an administrator or a lost node does: the job goes back to the queue and its
        # processes on both nodes are killed mid-step (held there: SIGTERM cannot end the step
        # with a checkpoint before SLURM's KillWait runs out), then it starts again.
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    except BaseException:
        (tmp_path / "go").touch()  # let the first start go on, so that the launch ends
        raise
    finally:
        launch.join(timeout=SWEEP_TIMEOUT_S + 30)
    proc = launch.proc
    assert proc.returncode == 0, proc.stderr[-3000:]

    (job,) = sweep_jobs(tmp_path / "sweep")
    record = results(job)
    assert record["status"] == "completed" and record["world_size"] == 2
    assert record["steps"] == 3 * STEPS_PER_EPOCH
    assert record["resumed_from_step"] == STEPS_PER_EPOCH
    # Both nodes ran twice, and both read the checkpoint rank 0 wrote in the job folder.
    logs = task_logs(tmp_path / "sweep", job_id)
    assert sorted(logs) == [0, 1]
    resumed = f"resuming from {job}/checkpoints/last.ckpt at step {STEPS_PER_EPOCH}"
    for task, log in logs.items():
        assert log.count("Starting with JobEnvironment") == 2, f"task {task} did not start again"
        assert resumed in log, f"task {task} did not resume from rank 0's checkpoint"
    # One history, every step once; from an epoch boundary the end is the uninterrupted run's.
    assert [row["step"] for row in train_rows(job)] == list(range(3 * STEPS_PER_EPOCH))
    assert read_metrics_csv(job / "metrics.csv") == read_metrics_csv(one_node_run / "metrics.csv")
    assert record["metrics"] == results(one_node_run)["metrics"]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("cancel_at_end")
def test_sweep_of_two_node_jobs_queues_them_and_a_failing_job_does_not_stop_the_other(tmp_path, two_nodes):
    # Each job holds both nodes whole (as multi-node jobs on a cluster usually do), so the
    # second waits in the queue for the first.
    overrides = [*TWO_NODES, *JOB, *CSV, "+hydra.launcher.additional_parameters.exclusive=true", "seed=1,2"]
    first = sweep(tmp_path, *overrides, f"trainer.max_steps={2 * STEPS_PER_EPOCH}")

    jobs = sweep_jobs(tmp_path / "sweep")
    assert [results(job)["status"] for job in jobs] == ["completed", "completed"]
    assert [results(job)["world_size"] for job in jobs] == [2, 2]
    spans = sorted(job_span(tmp_path / "sweep", job_id) for job_id in submitted_job_ids(tmp_path / "sweep"))
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], f"the two jobs overlapped: {spans}"
    # A cluster without accounting: said once, no sacct errors.
    console = first.stdout + first.stderr
    assert console.count("job states come from squeue") == 1
    assert "Bypassing sacct error" not in console and "accounting storage is disabled" not in console

    # A longer rerun: both jobs resume; job0's checkpoint turns out unreadable.
    (jobs[0] / "checkpoints" / "last.ckpt").write_bytes(os.urandom(4096))
    second = sweep(tmp_path, *overrides, check=False)  # returns: a hang fails on the timeout

    assert second.returncode == 1, (second.stdout + second.stderr)[-3000:]
    failed, completed = results(jobs[0]), results(jobs[1])
    assert failed["status"] == "failed" and "checkpoint" in failed["error"]
    (earlier,) = failed["attempts"]
    assert earlier["status"] == "completed" and earlier["steps"] == 2 * STEPS_PER_EPOCH
    assert completed["status"] == "completed" and completed["steps"] == 3 * STEPS_PER_EPOCH
    assert completed["resumed_from_step"] == 2 * STEPS_PER_EPOCH and completed["world_size"] == 2


# ----------------------------------------------------------------------------- the up-front check


def launch_config(*overrides: str) -> DictConfig:
    """The composed config, `hydra` node included, of a launch with these overrides."""
    with initialize_config_module("reslab.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    "overrides, gpus",
    [
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "trainer.accelerator=cpu"], None),
        (["trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"], 8),
        (["trainer=gpu"], 1),
        ([], 1),
    ],
    ids=["cpu", "auto", "gpu", "defaults"],
)
def test_the_launcher_asks_slurm_for_what_the_trainer_uses(overrides, gpus):
    cfg = launch_config("hydra/launcher=slurm", *overrides)
    launcher = cfg.hydra.launcher

    assert launcher.nodes == cfg.trainer.get("num_nodes", 1)
    assert launcher.tasks_per_node == cfg.trainer.devices
    assert launcher.gpus_per_node == gpus
    check_cluster_layout(launcher, cfg.trainer)  # agrees


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["hydra.launcher.nodes=2", "trainer=ddp", "trainer.devices=1", "trainer.accelerator=cpu"],
            "hydra.launcher.nodes=2 but trainer.num_nodes=1",
        ),
        (
            ["hydra.launcher.tasks_per_node=1", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"],
            "hydra.launcher.tasks_per_node=1 but trainer.devices=2",
        ),
        (
            ["hydra.launcher.gpus_per_node=2", "trainer.accelerator=cpu"],
            "hydra.launcher.gpus_per_node=2 asks SLURM for GPUs that trainer.accelerator=cpu leaves idle",
        ),
        (
            ["hydra.launcher.gpus_per_node=null", "trainer=gpu"],
            "hydra.launcher.gpus_per_node=null but trainer.devices=1 on trainer.accelerator=gpu",
        ),
        (["hydra.launcher.tasks_per_node=1", "trainer.devices=auto"], "trainer.devices='auto'"),
    ],
    ids=["nodes", "tasks", "gpus_on_cpu", "no_gpus_for_gpu", "devices_auto"],
)
def test_a_layout_that_disagrees_is_refused_with_one_line(overrides, message):
    cfg = launch_config("hydra/launcher=slurm", *overrides)

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as refused:
        check_cluster_layout(cfg.hydra.launcher, cfg.trainer)
    assert "\n" not in str(refused.value)


def test_other_launchers_are_not_checked():
    cfg = launch_config("trainer.devices=auto")
    check_cluster_layout(cfg.hydra.launcher, cfg.trainer)
    check_cluster_layout(None, cfg.trainer)


def test_a_sweep_whose_layout_disagrees_stops_before_anything_is_submitted(tmp_path):
    # No cluster needed: the pre-check refuses before submitit is asked for anything.
    proc = run_cli(
        "reslab.train",
        ["-m", *TWO_NODES, "hydra.launcher.tasks_per_node=2", "hydra.sweep.dir=sweep", "model.depth=8", "logger=csv"],
        tmp_path,
        check=False,
    )

    assert proc.returncode == 2
    assert "hydra.launcher.tasks_per_node=2 but trainer.devices=1" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()
