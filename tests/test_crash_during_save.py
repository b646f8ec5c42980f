"""A job killed (kill -9) while it writes last.ckpt, with its folder on another filesystem than
$TMPDIR (a cluster's node-local /tmp and job folders on NFS or Lustre; here a tmpfs mounted as
the job folder): every kill leaves a loadable last.ckpt, and the rerun resumes from it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, cli_env, run_cli

pytestmark = pytest.mark.slow  # `pytest -m slow` runs it (CI does)

KILLS = 5
ARGS = [
    *[o for o in FAST if not o.startswith("trainer.max_steps")],
    "hydra.run.dir=job",
    "trainer.max_steps=200",
    "callbacks.checkpoint.every_n_train_steps=1",  # a save after every step
    "logger=csv",
]


@pytest.fixture
def job_on_its_own_filesystem(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(job)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield job
    finally:
        subprocess.run(["umount", "-l", str(job)], check=False)


def kill_during_a_save(proc: subprocess.Popen, checkpoints: Path, latest_s: float) -> bool:
    """SIGKILL `proc` at a moment last.ckpt is being written: a temp file of the write beside it,
    or last.ckpt shorter than the complete one before it (a copy over it in progress). Saves come
    after every step; once this process has saved, one is caught within a few (not always the
    first), else the kill comes after `latest_s` anyway. Returns whether the kill caught a save."""
    last = checkpoints / "last.ckpt"

    def modified() -> int | None:
        try:
            return last.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    before = modified()
    while proc.poll() is None and modified() == before:  # the process's first save
        time.sleep(0.02)
    armed = time.monotonic() + random.uniform(0.0, 1.0)
    deadline = armed + latest_s
    complete = 0
    while proc.poll() is None:
        size = last.stat().st_size if last.exists() else 0
        now = time.monotonic()
        if now >= armed:
            beside = {p.name for p in checkpoints.iterdir()} - {"last.ckpt"}
            if beside or size < complete or now > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return now <= deadline
        complete = max(complete, size)
    return False


def test_kill_9_during_saves_never_costs_the_checkpoint(job_on_its_own_filesystem, tmp_path):
    job = job_on_its_own_filesystem
    temp_dir = tmp_path / "tmpdir"  # $TMPDIR on another filesystem than the job folder
    temp_dir.mkdir()
    env = cli_env(TMPDIR=str(temp_dir))
    caught = 0
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "reslab.train", *ARGS],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            caught += kill_during_a_save(proc, job / "checkpoints", latest_s=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.communicate()[1]
        assert proc.returncode == -signal.SIGKILL, f"attempt {kill} ended itself ({proc.returncode}):\n{stderr[-3000:]}"
        last = job / "checkpoints" / "last.ckpt"
        try:
            state = torch.load(last, weights_only=True, map_location="cpu")
        except Exception as error:  # noqa: BLE001 - the failure this test is about
            pytest.fail(f"kill {kill} left {last} unreadable ({last.stat().st_size} bytes): {error}")
        assert state["global_step"] > 0
    assert caught >= KILLS - 1, f"only {caught} of {KILLS} kills landed during a save"

    # The rerun resumes from the checkpoint the kills left and completes.
    run_cli("reslab.train", ARGS, tmp_path, TMPDIR=str(temp_dir))
    record = json.loads((job / "results.json").read_text())
    assert record["status"] == "completed" and record["resumed_from_step"] > 0
    assert record["steps"] == 200
    # No temp file of a killed write is left beside the checkpoint, nor any copy in $TMPDIR.
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["last.ckpt"]
    leftovers = [p for p in temp_dir.rglob("*") if p.is_file() and p.stat().st_size > 100_000]
    assert not leftovers, leftovers
