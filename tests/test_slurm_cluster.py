"""The SLURM test cluster works: batch jobs run, requeued jobs run again, srun starts ranks.

Start the cluster first (as root): `.ci/slurm/setup.sh`. Without `sbatch`, or when `sinfo`
cannot reach a controller, the whole module is skipped.
"""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

WAIT_S = 60


def _cluster_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return (
            subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15, check=False).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


if not _cluster_answers():
    pytest.skip("no SLURM cluster (run .ci/slurm/setup.sh as root)", allow_module_level=True)


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
    # squeue forgets a job MinJobAge seconds after it ends; scontrol still knows it then.
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=15, check=False
    ).stdout
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "GONE"


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
