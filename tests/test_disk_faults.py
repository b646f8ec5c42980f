"""A job folder on a disk that fills or is read-only: one line naming the folder and the OS
error, exit 1 mid-run or 2 before any work, the earlier record and the last good checkpoint
kept, no temp files left, the folder let go.

Real filesystems: a small tmpfs as the job or sweep folder, filled by a callback of the run
(tests/job_faults.py) or beforehand, or remounted read-only. Needs root (mount); skipped where
mounting is not allowed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from job_faults import fill_disk

from conftest import FAST, run_cli
from reslab.job import LOCK_FILE

pytestmark = pytest.mark.slow  # `pytest -m slow` runs it (CI does)

TESTS = Path(__file__).resolve().parent
RUN = [*FAST, "logger=csv", "model.depth=8", "trainer.limit_test_batches=2", "trainer.limit_val_batches=2"]


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size)` mounts a tmpfs of that size in tmp_path and returns its folder; unmounted after."""
    mounts: list[Path] = []

    def _mount(size: str = "32m") -> Path:
        point = tmp_path / f"tmpfs{len(mounts)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounts.append(point)
        return point

    yield _mount
    for point in reversed(mounts):
        subprocess.run(["umount", str(point)], capture_output=True)


def train(cwd: Path, *overrides: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run_cli("reslab.train", [*flags, *RUN, *overrides], cwd, check=False, PYTHONPATH=str(TESTS))


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".partial")]


def assert_one_line_about(proc: subprocess.CompletedProcess, folder: Path, error: str) -> None:
    out = output(proc)
    assert "Traceback" not in out and "Logging error" not in out, out[-4000:]
    lines = [line for line in out.splitlines() if error in line]
    assert lines and all(str(folder) in line for line in lines), out[-4000:]


@pytest.mark.parametrize("hook", ["after_first_checkpoint", "test_end"])
def test_a_disk_that_fills_mid_run_ends_the_job_with_one_line_and_keeps_what_was_written(tmpfs, tmp_path, hook):
    job = tmpfs() / "job"
    proc = train(
        tmp_path,
        f"hydra.run.dir={job}",
        "callbacks.checkpoint.every_n_train_steps=2",
        "+callbacks.fault._target_=job_faults.FillDiskAt",
        f"+callbacks.fault.hook={hook}",
    )
    assert proc.returncode == 1, output(proc)[-4000:]
    assert_one_line_about(proc, job, "No space left on device")
    # The record written when the job started stands (a full disk takes no new one).
    record = json.loads((job / "results.json").read_text())
    assert record["status"] == "running" and record["overrides"]
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] >= 2
    assert temp_files(job) == []
    assert not (job / LOCK_FILE).exists()


def test_a_fresh_run_on_a_full_disk_is_refused_before_any_work(tmpfs, tmp_path):
    disk = tmpfs("4m")
    fill_disk(disk)
    for flags, folder in [((), "hydra.run.dir"), (("-m",), "hydra.sweep.dir")]:
        proc = train(tmp_path, f"{folder}={disk / 'out'}", flags=flags)
        assert proc.returncode == 2, output(proc)[-4000:]
        assert_one_line_about(proc, disk / "out", "No space left on device")
        assert snapshot(disk / "out") == {}  # no lock, no temp file, no Hydra config


@pytest.fixture(scope="module")
def done_job(tmp_path_factory) -> Path:
    """A completed job (its folder: results.json, checkpoints, metrics.csv, .hydra)."""
    root = tmp_path_factory.mktemp("done")
    run_cli("reslab.train", [*RUN, "hydra.run.dir=job"], root)
    return root / "job"


def test_a_rerun_on_a_full_disk_is_refused_and_the_folder_stays_as_it_was(done_job, tmpfs, tmp_path):
    disk = tmpfs("16m")
    job = disk / "job"
    shutil.copytree(done_job, job)
    fill_disk(disk)
    before = snapshot(job)
    proc = train(tmp_path, f"hydra.run.dir={job}", "trainer.max_steps=8")  # would resume and train on
    assert proc.returncode == 2, output(proc)[-4000:]
    assert_one_line_about(proc, job, "No space left on device")
    assert snapshot(job) == before


def test_a_rerun_in_a_read_only_folder_is_refused_and_the_folder_stays_as_it_was(done_job, tmpfs, tmp_path):
    disk = tmpfs("16m")
    job = disk / "job"
    shutil.copytree(done_job, job)
    before = snapshot(job)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
    assert not os.access(job, os.W_OK) or os.geteuid() == 0
    for overrides in [(), ("trainer.max_steps=8",)]:  # skipped as completed / resumed
        proc = train(tmp_path, f"hydra.run.dir={job}", *overrides)
        assert proc.returncode == 2, output(proc)[-4000:]
        assert_one_line_about(proc, job, "Read-only file system")
        assert snapshot(job) == before
