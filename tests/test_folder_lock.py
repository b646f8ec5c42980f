"""A folder is held by one live process at a time, on one host or across a cluster: a lock whose
holder is gone (a container restarted as pid 1 again, a SLURM job requeued onto another node, a
lease that ran out) is taken over; a live holder is refused with how to take over by hand; two
processes taking one folder at the same instant never both get it; a rerun never runs a job whose
folder a live process still holds."""

from __future__ import annotations

import json
import logging
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
from reslab import folder_lock
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


needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="unshare as root")


@needs_unshare
def test_a_process_restarted_as_pid_1_takes_over_the_lock_its_dead_pid_1_left(tmp_path):
    # A container's process is pid 1; restarted, it is pid 1 again, in a new pid namespace.
    take = "import os, sys; from reslab.folder_lock import hold; hold(sys.argv[1]); print(os.getpid()); os._exit(0)"
    runs = [
        subprocess.run(
            [*NEW_PID_NAMESPACE, sys.executable, "-c", take, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        for _ in range(2)
    ]
    # The first ended without letting go (as a killed one does); the second took over.
    assert [(run.returncode, run.stdout.strip()) for run in runs] == [(0, "1"), (0, "1")], runs[1].stderr
    assert "taking over" not in runs[0].stderr and "taking over" in runs[1].stderr
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == 1


@pytest.mark.slow
@needs_unshare
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


def taking(folder: Path, caplog) -> str:
    """Take `folder` as a job would, let it go; what the takeover logged."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reslab"):
        folder_lock.hold(folder).release()
    assert not (folder / LOCK_FILE).exists()
    return caplog.text


@pytest.mark.parametrize("restarts", [("0", "1"), ("1", "1")], ids=["requeued", "same-count-other-node"])
def test_a_slurm_job_requeued_onto_another_node_takes_over_its_own_lock(tmp_path, caplog, monkeypatch, restarts):
    # The lock of the job's earlier run on node n1, whose process cannot be checked from here.
    theirs, ours = restarts
    plant_lock(tmp_path, host="n1-elsewhere", boot_id="another-boot", slurm_job_id="4242", slurm_restart_count=theirs)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", ours)
    assert "taking over" in taking(tmp_path, caplog) and "SLURM job 4242" in caplog.text


def test_a_lock_of_another_slurm_job_on_another_node_is_refused_while_its_lease_runs(tmp_path, monkeypatch):
    lock = plant_lock(tmp_path, host="n1-elsewhere", boot_id="another-boot", slurm_job_id="4241")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with pytest.raises(folder_lock.FolderBusy, match="SLURM job 4241.*lease until.*delete"):
        folder_lock.hold(tmp_path)
    assert json.loads(lock.read_text())["slurm_job_id"] == "4241"


def test_an_expired_lease_is_taken_over(tmp_path, caplog):
    plant_lock(tmp_path, host="n1-elsewhere", boot_id="another-boot", lease_until=time.time() - 5)
    assert "taking over" in taking(tmp_path, caplog) and "lease ran out" in caplog.text


def test_a_lock_naming_a_reused_pid_is_taken_over(tmp_path, caplog, sleeper):
    # The pid now belongs to another process than the one that wrote the lock (its start time differs).
    plant_lock(tmp_path, pid=sleeper.pid, start_time="1")
    assert "taking over" in taking(tmp_path, caplog)


def test_the_holder_renews_its_lease_and_lets_go_only_its_own_lock(tmp_path, monkeypatch):
    monkeypatch.setenv(folder_lock.LEASE_ENV, "3")
    held = folder_lock.hold(tmp_path)
    lock = tmp_path / LOCK_FILE
    first = json.loads(lock.read_text())
    time.sleep(4)  # longer than the lease
    renewed = json.loads(lock.read_text())
    assert renewed["token"] == first["token"] and renewed["lease_until"] > first["lease_until"]
    other = subprocess.run(
        [sys.executable, "-c", f"from reslab.folder_lock import hold; hold({str(tmp_path)!r})"],
        capture_output=True,
        text=True,
    )
    assert other.returncode != 0 and f"in use by pid {os.getpid()}" in other.stderr
    # Another holder's lock (ours was taken over meanwhile) is not removed by our release.
    plant_lock(tmp_path)
    held.release()
    assert lock.exists() and json.loads(lock.read_text())["token"] != first["token"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a read-only tmpfs")
def test_a_lock_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "job").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        proc = run_cli("reslab.train", [*RUN, f"hydra.run.dir={mount / 'job'}"], tmp_path, check=False)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    # Found by the folder's write check, before the lock is taken.
    lines = [line for line in output(proc).splitlines() if "cannot write to" in line]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in output(proc), output(proc)[-3000:]
    assert str(mount / "job") in lines[0] and "Read-only file system" in lines[0]


def test_a_live_holder_is_refused_with_how_to_take_over_by_hand(tmp_path, sleeper):
    lock = plant_lock(tmp_path / "job", pid=sleeper.pid, start_time=start_time(sleeper.pid))
    proc = run_cli("reslab.train", [*RUN, "hydra.run.dir=job"], tmp_path, check=False)
    lines = [line for line in output(proc).splitlines() if "in use" in line]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in output(proc), output(proc)[-3000:]
    assert f"pid {sleeper.pid} on {socket.gethostname()}" in lines[0] and "lease until" in lines[0]
    assert f"if that process is gone, delete {lock}" in lines[0]
    assert lock.exists() and not (tmp_path / "job" / "results.json").exists()


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


@pytest.mark.slow
def test_a_rerun_refuses_a_sweep_whose_job_folder_a_live_process_holds(tmp_path, sleeper):
    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job${hydra.job.num}"]
    # A job process of an earlier sweep, whose launcher was killed, still writing job0.
    lock = plant_lock(sweep / "job0", pid=sleeper.pid, start_time=start_time(sleeper.pid))
    proc = run_cli("reslab.train", args, tmp_path, check=False)
    errors = [line for line in output(proc).splitlines() if "in use" in line]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in output(proc), output(proc)[-3000:]
    assert "job0" in errors[0] and f"pid {sleeper.pid}" in errors[0] and f"delete {lock}" in errors[0]
    assert not list(sweep.rglob("results.json"))  # nothing ran

    sleeper.send_signal(signal.SIGKILL)
    sleeper.wait()
    proc = run_cli("reslab.train", args, tmp_path)
    assert "taking over" in output(proc)
    assert not list(sweep.rglob(LOCK_FILE))
