"""The SLURM test cluster works: batch jobs run, requeued jobs run again, srun starts ranks, and
a job spans the cluster's nodes (.ci/slurm/setup.sh starts two, n1 and n2, on this host).

Start the cluster first (as root): `.ci/slurm/setup.sh`. Without `sbatch`, or when `sinfo`
cannot reach a controller, the whole module is skipped.
"""

import socket
import subprocess
import time
from pathlib import Path

import pytest

from slurm_testing import NO_CLUSTER, cluster_answers, cluster_nodes, job_field

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

WAIT_S = 60

if not cluster_answers():
    pytest.skip(NO_CLUSTER, allow_module_level=True)


def _run(*cmd: str, timeout: float = WAIT_S) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def _sbatch(script: Path, *options: str) -> str:
    """Submit `script`; return its job id."""
    return _run("sbatch", "--parsable", *options, str(script)).strip()


def _write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def _wait_until(condition, what: str, timeout: float = WAIT_S, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _job_state(job_id: str) -> str:
    return job_field(job_id, "JobState") or "GONE"


@pytest.fixture
def submitted_jobs():
    """Job ids a test submits; whatever is still queued at the end is cancelled."""
    job_ids: list[str] = []
    yield job_ids
    for job_id in job_ids:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=15, check=False)


def test_batch_job_runs_and_writes_its_output(tmp_path, submitted_jobs):
    script = _write_script(tmp_path / "hello.sh", 'echo "hello from job $SLURM_JOB_ID"\n')
    out_file = tmp_path / "hello.out"

    job_id = _sbatch(script, "--wait", "-n1", "-t", "1", f"--output={out_file}")
    submitted_jobs.append(job_id)

    assert out_file.read_text().strip() == f"hello from job {job_id}"


def test_requeued_job_runs_again(tmp_path, submitted_jobs):
    starts = tmp_path / "starts.txt"
    # The first start waits to be requeued; the second start (restart count 1) just finishes.
    script = _write_script(
        tmp_path / "requeue.sh",
        f'echo "start ${{SLURM_RESTART_COUNT:-0}}" >> {starts}\n'
        'if [ "${SLURM_RESTART_COUNT:-0}" -eq 0 ]; then sleep 120; fi\n',
    )
    job_id = _sbatch(script, "--requeue", "-n1", "-t", "5", "--output=/dev/null")
    submitted_jobs.append(job_id)

    def start_count() -> int:
        return len(starts.read_text().splitlines()) if starts.exists() else 0

    _wait_until(lambda: start_count() == 1, "the job's first start")
    _run("scontrol", "requeue", job_id)
    # SLURM holds a requeued job back for AuthInfo's cred_expire seconds: 10 s on the test
    # cluster (setup.sh), 120 s by default.
    _wait_until(lambda: start_count() == 2, "the requeued job's second start")
    _wait_until(lambda: _job_state(job_id) in ("COMPLETED", "GONE"), "the job to complete")

    assert starts.read_text().splitlines() == ["start 0", "start 1"]


def test_srun_starts_one_rank_per_task():
    out = _run("srun", "-N1", "-n2", "-t", "1", "bash", "-c", 'echo "rank $SLURM_PROCID"')

    assert sorted(out.split("\n")[:-1]) == ["rank 0", "rank 1"]


def test_one_job_runs_one_task_on_each_node_and_the_node_names_resolve():
    nodes = cluster_nodes()
    assert nodes >= 2, "setup.sh starts two nodes by default"

    out = _run(
        "srun", f"-N{nodes}", "--ntasks-per-node=1", "-t", "1", "bash", "-c", 'echo "$SLURMD_NODENAME $SLURM_PROCID"'
    )
    tasks = sorted(line.split() for line in out.splitlines())
    assert tasks == [[f"n{i + 1}", str(i)] for i in range(nodes)]
    names = [name for name, _ in tasks]
    # A job's first node is where its ranks meet (Lightning's MASTER_ADDR).
    assert {socket.gethostbyname(name) for name in names} == {"127.0.0.1"}
