"""A folder is held by one live process at a time, on one host or across a cluster: a lock whose
holder is gone (a container restarted as pid 1 again, a SLURM job requeued onto another node, a
lease that ran out) is taken over; a live holder is refused with how to take over by hand; two
processes taking one folder at the same instant never both get it; a rerun never runs a job whose
folder a live process still holds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conftest import FAST, REPO, cli_env, run_cli
from reslab.job import LOCK_FILE

NEW_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
RUN = [*FAST, "logger=csv", "model.depth=8", "trainer.max_steps=3"]


def output(proc) -> str:
    return proc.stdout + proc.stderr


def start_time(pid: int) -> str:
    # /proc/<pid>/stat field 22: when the process started, in clock ticks since boot.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def plant_lock(folder: Path, **fields) -> Path:
    """A lock as a holder writes it: this host, a lease an hour long, unless `fields` say otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "token": uuid.uuid4().hex,
        "pid": 999999,
        "host": socket.gethostname(),
        "boot_id": boot_id(),
        "start_time": "1",
        "since": "2026-01-01T00:00:00",
        "started": "2026-01-01 00:00:00",
        "lease_s": 3600,
        "lease_until": time.time() + 3600,
        **fields,
    }
    path = folder / LOCK_FILE
    path.write_text(json.dumps(record))
    return path


@pytest.fixture
def sleeper():
    """A live process unrelated to ResLab."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


# ----------------------------------------------------------------------------- takeover


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare as root")
def test_a_run_restarted_as_pid_1_takes_over_the_lock_its_dead_pid_1_left(tmp_path):
    # A container's process is pid 1; restarted, it is pid 1 again in a new pid namespace.
    def in_new_namespace(*args: str) -> list[str]:
        return [*NEW_PID_NAMESPACE, sys.executable, "-m", "reslab.train", *args]

    first = subprocess.Popen(
        in_new_namespace(*RUN, "trainer.max_steps=100000", "hydra.run.dir=job"),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "job" / "results.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started its job"
            time.sleep(0.2)
    finally:
        first.kill()  # unshare's child, pid 1 of its namespace, dies with it (--kill-child)
        first.wait()
    assert json.loads((tmp_path / "job" / LOCK_FILE).read_text())["pid"] == 1

    second = subprocess.run(
        in_new_namespace(*RUN, "hydra.run.dir=job"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert second.returncode == 0, output(second)[-3000:]
    assert "taking over" in output(second)
    assert json.loads((tmp_path / "job" / "results.json").read_text())["status"] == "completed"
    assert not (tmp_path / "job" / LOCK_FILE).exists()


def test_a_slurm_job_requeued_onto_another_node_takes_over_its_own_lock(tmp_path):
    # The lock of the job's first run on node n1, which cannot be checked from here.
    plant_lock(
        tmp_path / "job", host="n1-elsewhere", boot_id="another-boot", slurm_job_id="4242", slurm_restart_count=0
    )
    proc = run_cli(
        "reslab.train", [*RUN, "hydra.run.dir=job"], tmp_path, check=False, SLURM_JOB_ID="4242", SLURM_RESTART_COUNT="1"
    )
    assert proc.returncode == 0, output(proc)[-3000:]
    assert "taking over" in output(proc) and "4242" in output(proc)
    assert not (tmp_path / "job" / LOCK_FILE).exists()


def test_an_expired_lease_is_taken_over(tmp_path):
    plant_lock(tmp_path / "job", host="n1-elsewhere", boot_id="another-boot", lease_until=time.time() - 5)
    proc = run_cli("reslab.train", [*RUN, "hydra.run.dir=job"], tmp_path, check=False)
    assert proc.returncode == 0, output(proc)[-3000:]
    assert "taking over" in output(proc) and "lease" in output(proc)


def test_a_live_holder_is_refused_with_how_to_take_over_by_hand(tmp_path, sleeper):
    lock = plant_lock(tmp_path / "job", pid=sleeper.pid, start_time=start_time(sleeper.pid))
    proc = run_cli("reslab.train", [*RUN, "hydra.run.dir=job"], tmp_path, check=False)
    lines = [line for line in output(proc).splitlines() if "in use" in line]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in output(proc), output(proc)[-3000:]
    assert f"pid {sleeper.pid} on {socket.gethostname()}" in lines[0] and "lease until" in lines[0]
    assert f"if that process is gone, delete {lock}" in lines[0]
    assert lock.exists() and not (tmp_path / "job" / "results.json").exists()


def test_a_lock_naming_a_reused_pid_is_taken_over(tmp_path, sleeper):
    # The pid now belongs to another process than the one that wrote the lock (its start time differs).
    plant_lock(tmp_path / "job", pid=sleeper.pid, start_time="1")
    proc = run_cli("reslab.train", [*RUN, "hydra.run.dir=job"], tmp_path, check=False)
    assert proc.returncode == 0, output(proc)[-3000:]
    assert "taking over" in output(proc)


# ----------------------------------------------------------------------------- the race

RACE = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, socket, sys, time, uuid
    from pathlib import Path
    from reslab.folder_lock import hold
    from reslab.errors import ConfigError

    def take(folder, start, done, wins):
        start.wait()
        try:
            hold(folder)
            wins.put(1)
        except ConfigError:
            wins.put(0)
        done.wait()  # the winner holds on until every other process has tried
        os._exit(0)

    def trial(folder, takers):
        ctx = mp.get_context("fork")
        start, done, wins = ctx.Barrier(takers), ctx.Barrier(takers), ctx.SimpleQueue()
        procs = [ctx.Process(target=take, args=(folder, start, done, wins)) for _ in range(takers)]
        for p in procs:
            p.start()
        got = sum(wins.get() for _ in procs)
        for p in procs:
            p.join()
        return got

    root, trials, takers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    gone = mp.get_context("fork").Process(target=os._exit, args=(0,))
    gone.start(); gone.join()
    results = {"fresh": [], "stale": []}
    for n in range(trials):
        results["fresh"].append(trial(root / f"fresh{n}", takers))
        stale = root / f"stale{n}"
        stale.mkdir()
        (stale / ".reslab.lock").write_text(json.dumps({
            "token": uuid.uuid4().hex, "pid": gone.pid, "host": socket.gethostname(),
            "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(), "start_time": "1",
            "since": "earlier", "started": "earlier", "lease_until": time.time() + 3600}))
        results["stale"].append(trial(stale, takers))
    print(json.dumps(results))
    """
)


def test_processes_taking_one_folder_at_the_same_instant_never_both_get_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", RACE, str(tmp_path), "40", "4"],
        env=cli_env(RESLAB_LOCK_LEASE_S="3600"),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert proc.returncode == 0, output(proc)[-3000:]
    winners = json.loads(proc.stdout.splitlines()[-1])
    assert winners == {"fresh": [1] * 40, "stale": [1] * 40}


# ----------------------------------------------------------------------------- job folders


def test_a_rerun_refuses_a_sweep_whose_job_folder_a_live_process_holds(tmp_path, sleeper):
    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job${hydra.job.num}", "seed=1,2"]
    # A job process of an earlier sweep, killed with its launcher, still writing job1.
    lock = plant_lock(sweep / "job1", pid=sleeper.pid, start_time=start_time(sleeper.pid))
    proc = run_cli("reslab.train", args, tmp_path, check=False)
    errors = [line for line in output(proc).splitlines() if "in use" in line]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in output(proc), output(proc)[-3000:]
    assert "job1" in errors[0] and f"pid {sleeper.pid}" in errors[0] and f"delete {lock}" in errors[0]
    assert not list(sweep.rglob("results.json"))  # nothing ran

    sleeper.send_signal(signal.SIGKILL)
    sleeper.wait()
    proc = run_cli("reslab.train", args, tmp_path)
    assert "taking over" in output(proc)
    assert not list(sweep.rglob(LOCK_FILE))
