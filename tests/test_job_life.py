"""A job's life through the CLI: faults stay inside their job, nothing finished is lost, sweep
folders are owned, sweeps resume, signals and exit codes say how a run ended."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, cli_env, run_cli
from reslab.job import LOCK_FILE

SWEEP = ["logger=csv", "model.depth=8,14", "trainer.max_steps=24", "callbacks.checkpoint.every_n_train_steps=8"]


def sweep_args(sweep_dir: Path, *overrides: str) -> list[str]:
    return ["-m", *FAST, f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=job${hydra.job.num}", *SWEEP, *overrides]


def record(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def done_sweep(tmp_path_factory) -> Path:
    """A completed two-job sweep (depth 8 and 14, 24 steps, checkpoints every 8)."""
    root = tmp_path_factory.mktemp("done")
    run_cli("reslab.train", sweep_args(root / "sweep"), root)
    return root / "sweep"


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    return copy


def test_rerun_of_a_completed_sweep_retrains_nothing(done_sweep, tmp_path):
    sweep = copy_of(done_sweep, tmp_path)
    before = {p: p.read_bytes() for p in sweep.glob("job*/metrics.csv")}
    records = {p: p.read_bytes() for p in sweep.glob("job*/results.json")}
    proc = run_cli("reslab.train", sweep_args(sweep), tmp_path)
    assert output(proc).count("skipped: completed") == 2
    assert {p: p.read_bytes() for p in sweep.glob("job*/metrics.csv")} == before and len(before) == 2
    assert {p: p.read_bytes() for p in sweep.glob("job*/results.json")} == records


def test_a_rerun_that_adds_only_keys_that_compute_nothing_finds_and_skips_the_completed_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, f"hydra.sweep.dir={sweep}", "logger=csv", "model.depth=8,14"]
    run_cli("reslab.train", args, tmp_path)
    folders = sorted(p.parent.name for p in sweep.glob("*/results.json"))
    # The progress bar, the accelerator and the logger compute nothing: not in the names.
    assert folders == [f"data.batch_size=32,model.depth={d},trainer.max_steps=6" for d in (14, 8)]
    records = {p: p.read_bytes() for p in sweep.glob("*/results.json")}

    proc = run_cli("reslab.train", [*args, "speed.channels_last=false", "on_error=raise"], tmp_path)
    assert output(proc).count("skipped: completed") == 2
    assert sorted(p.parent.name for p in sweep.glob("*/results.json")) == folders
    assert {p: p.read_bytes() for p in sweep.glob("*/results.json")} == records

    # A sweep made when trainer.devices stayed out of folder names keeps its folders.
    proc = run_cli("reslab.train", [*args, "trainer.devices=1"], tmp_path)
    assert output(proc).count("skipped: completed") == 2
    assert sorted(p.parent.name for p in sweep.glob("*/.hydra")) == folders


def test_a_sweep_whose_jobs_would_share_a_folder_is_refused_before_it_starts(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, f"hydra.sweep.dir={sweep}", "logger=csv", "model.depth=8", "speed.channels_last=true,false"]
    proc = run_cli("reslab.train", args, tmp_path, check=False)
    assert proc.returncode == 2, output(proc)[-3000:]
    assert "would share the folder data.batch_size=32,model.depth=8,trainer.max_steps=6" in output(proc)
    assert not list(sweep.rglob("results.json"))


def test_a_corrupt_checkpoint_fails_its_job_alone_and_keeps_the_completed_attempt(done_sweep, tmp_path):
    sweep = copy_of(done_sweep, tmp_path)
    (sweep / "job0" / "checkpoints" / "last.ckpt").write_bytes(os.urandom(4096))
    # A longer run: both jobs re-enter and resume; job0's checkpoint turns out unreadable.
    proc = run_cli("reslab.train", sweep_args(sweep, "trainer.max_steps=40"), tmp_path, check=False)
    assert proc.returncode == 1, output(proc)[-3000:]
    assert "Traceback" not in output(proc)

    failed, completed = record(sweep / "job0"), record(sweep / "job1")
    assert failed["status"] == "failed" and "corrupt" in failed["error"] and "configuration error" in failed["error"]
    (earlier,) = failed["attempts"]
    assert earlier["status"] == "completed" and earlier["steps"] == 24 and "test/err" in earlier["metrics"]
    assert completed["status"] == "completed" and completed["steps"] == 40 and completed["resumed_from_step"] == 24
    assert completed["attempts"][0]["steps"] == 24
    # The end of the sweep lists every job with its status.
    assert "job0: failed" in output(proc) and "job1: completed" in output(proc)


def test_a_truncated_record_costs_the_report_only_that_job(done_sweep, tmp_path):
    sweep = copy_of(done_sweep, tmp_path)
    results = sweep / "job1" / "results.json"
    results.write_text(results.read_text()[:40])
    proc = run_cli("reslab.report.cli", [str(sweep)], tmp_path)
    unreadable = proc.stdout.split("## Jobs that could not be read")[1].split("##")[0]
    assert "job1" in unreadable and "JSONDecodeError" in unreadable and "job0" not in unreadable
    assert "1 completed" in proc.stdout and "1 unreadable" in proc.stdout


def test_a_second_sweep_into_a_held_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    sweep = tmp_path / "sweep"
    first = subprocess.Popen(
        [sys.executable, "-m", "reslab.train", *sweep_args(sweep, "trainer.max_steps=100000")],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (sweep / "job0" / "results.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first sweep never started its job"
            time.sleep(0.5)
        second = run_cli("reslab.train", sweep_args(sweep), tmp_path, check=False)
        assert second.returncode == 2
        assert f"is in use by pid {first.pid}" in output(second) and "Traceback" not in output(second)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (sweep / "job1").exists()  # the refused sweep started nothing

    # The killed sweep's lock is left behind; its process is gone, so the next sweep takes over.
    assert (sweep / LOCK_FILE).exists()
    third = run_cli("reslab.train", sweep_args(sweep, "model.depth=8", "trainer.max_steps=4"), tmp_path)
    assert "taking over" in output(third) and record(sweep / "job0")["status"] == "completed"
    assert not (sweep / LOCK_FILE).exists()


def test_a_sweep_whose_folders_are_named_by_job_number_is_checked_before_it_starts(tmp_path):
    # `hydra.sweep.subdir=job${hydra.job.num}` holds an interpolation that only a launched job can
    # resolve; the pre-check reads the overrides as written and still checks every job.
    sweep = tmp_path / "sweep"
    proc = run_cli("reslab.train", sweep_args(sweep, "model.depth=8", "optimizer.lr=0,0.1"), tmp_path, check=False)

    assert proc.returncode == 2, output(proc)[-3000:]
    assert "checked" not in output(proc) and output(proc).count("optimizer.lr=0 must be a number > 0") == 1
    assert not list(sweep.rglob("results.json"))


def test_a_killed_job_costs_the_sweep_neither_its_summary_nor_its_lock(tmp_path):
    # A job process killed from outside reports nothing; the launcher records it lost and Hydra's
    # sweeper raises once the batch has run, skipping the sweep's end: the summary comes at exit.
    sweep = tmp_path / "sweep"
    args = sweep_args(
        sweep, "model.depth=8", "trainer.max_steps=24,100000", "hydra/launcher=node_parallel", "hydra.launcher.gpus=[]"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reslab.train", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    long_job = sweep / "job1"
    deadline = time.monotonic() + 180
    while not (long_job / "metrics.csv").exists():  # the long job is training
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    os.kill(record(long_job)["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=180)

    assert proc.returncode == 1, out[-3000:]
    assert record(sweep / "job0")["status"] == "completed"
    assert record(long_job)["status"] == "failed" and "SIGKILL" in record(long_job)["error"]
    assert f"sweep {sweep}: 1 completed, 1 failed" in out
    assert not (sweep / LOCK_FILE).exists()


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_the_step_reached_and_exits_non_zero(tmp_path, signum, exit_code):
    job = tmp_path / "job"
    command = [
        sys.executable,
        "-m",
        "reslab.train",
        *FAST,
        "logger=csv",
        "model.depth=8",
        "hydra.run.dir=job",
        "trainer.max_steps=100000",
        "callbacks.checkpoint.every_n_train_steps=100000",
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not (job / "metrics.csv").exists():  # training has logged its first rows
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == exit_code, out[-3000:]
    interrupted = record(job)
    assert interrupted["status"] == "interrupted" and signal.Signals(signum).name in interrupted["error"]
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == interrupted["steps"] > 0

    # Running it again resumes from that step.
    resumed = run_cli(
        "reslab.train",
        [*FAST, "logger=csv", "model.depth=8", "hydra.run.dir=job", f"trainer.max_steps={interrupted['steps'] + 4}"],
        tmp_path,
    )
    assert f"at step {interrupted['steps']}" in output(resumed)
    assert record(job)["status"] == "completed" and record(job)["attempts"][-1]["status"] == "interrupted"


def test_a_sampled_range_on_the_grid_sweeper_names_a_sampling_sweeper(train):
    proc = train("-m", "optimizer.lr=interval(0.01,0.1)", check=False)
    assert proc.returncode == 2
    assert "hydra/sweeper=optuna" in output(proc) and "Traceback" not in output(proc)


def test_single_run_exit_codes_follow_the_status(train, tmp_path):
    diverged = train("logger=csv", "model.depth=8", "optimizer.lr=1e30", "hydra.run.dir=diverged", check=False)
    assert diverged.returncode == 1 and record(tmp_path / "diverged")["status"] == "diverged"
    bad = train("logger=csv", "on_error=sometimes", "hydra.run.dir=bad", check=False)
    assert bad.returncode == 2 and "on_error='sometimes' must be one of auto, continue, raise" in output(bad)
    assert "Traceback" not in output(bad)


TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    "hook, signum",
    [
        ("init", signal.SIGTERM),  # while the task builds the trainer
        ("setup_fit", signal.SIGTERM),  # Lightning's setup, before training starts
        ("setup_test", signal.SIGTERM),  # after fit, before the test loop
        ("test_start", signal.SIGTERM),  # in the test loop (its one batch: Lightning does not stop it)
        ("setup_test", signal.SIGINT),
    ],
)
def test_a_signal_outside_training_records_interrupted_and_exits_with_its_code(train, tmp_path, hook, signum):
    proc = train(
        "logger=csv",
        "model.depth=8",
        "hydra.run.dir=job",
        "trainer.limit_test_batches=1",
        "+callbacks.fault._target_=job_faults.SignalAt",
        f"+callbacks.fault.hook={hook}",
        f"+callbacks.fault.signum={int(signum)}",
        check=False,
        PYTHONPATH=str(TESTS),
    )
    assert proc.returncode == 128 + signum, output(proc)[-3000:]
    interrupted = record(tmp_path / "job")
    assert interrupted["status"] == "interrupted" and signal.Signals(signum).name in interrupted["error"]
    assert "Traceback" not in output(proc)


def test_a_signal_after_the_final_record_does_not_change_how_the_run_ended(tmp_path):
    # The record and the exit code always agree: a job whose final record says completed exits 0.
    job = tmp_path / "job"
    command = [sys.executable, "-m", "reslab.train", *FAST, "logger=csv", "model.depth=8", "hydra.run.dir=job"]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not (job / "results.json").exists() or record(job)["status"] == "running":
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert record(job)["status"] == "completed"
    assert proc.returncode == 0, out[-3000:]


@pytest.mark.parametrize("attempts", [None, "lost", {"status": "failed"}, [{"status": "completed"}, 3, None]])
def test_a_record_with_malformed_attempts_keeps_what_can_be_kept(attempts):
    from reslab.job import new_record

    previous = {"status": "failed", "error": "boom", "attempts": attempts}
    kept = [attempts] if isinstance(attempts, dict) else [a for a in attempts or [] if isinstance(a, dict)]
    assert new_record(dict(previous), task="train")["attempts"] == [*kept, {"status": "failed", "error": "boom"}]


def test_a_rerun_over_a_record_whose_attempts_is_null_runs_and_keeps_it(train, tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "results.json").write_text(json.dumps({"status": "failed", "error": "x", "attempts": None}))
    train("logger=csv", "model.depth=8", "hydra.run.dir=job")
    assert record(tmp_path / "job")["status"] == "completed"
    assert record(tmp_path / "job")["attempts"] == [{"status": "failed", "error": "x"}]
