"""hydra/launcher=node_parallel: a sweep's jobs run side by side, each with its own devices,
and a job's fault stays inside it.

A tiny Hydra app (its own config root, so the launcher config comes from the plugin's
ConfigStore entry, `reslab_node_parallel`) records when it ran and which devices, memory share and threads it was
given; on request it fails in the ways a real job can (raise, exit, be killed). Jobs that must
run at the same time meet at a rendezvous (files in a shared folder), so concurrency is shown
by who met, not by timing. Hydra's own launcher test suites run on the plugin as on Hydra's
launchers, and the reslab CLI runs a real sweep under it with a corrupt checkpoint in one job.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from omegaconf import OmegaConf

from hydra_plugins.reslab_launchers.node_parallel_launcher import NodeParallelLauncher, NodeParallelLauncherConf
from reslab.errors import ConfigError
from reslab.node_plan import available_cpus, plan_node, visible_gpu_ids

REPO = Path(__file__).resolve().parents[1]

APP = """
import json, os, signal, subprocess, sys, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


def meet(folder, name, expected):
    # Wait until `expected` jobs have arrived (or give up): True when they all met.
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    (folder / str(name)).touch()
    deadline = time.time() + 60
    while time.time() < deadline:
        if len(list(folder.iterdir())) >= expected:
            return True
        time.sleep(0.05)
    return False


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def record(cfg):
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    signal.signal(signal.SIGTERM, lambda *_: ((job_dir / "got_sigterm").touch(), os._exit(143)))
    started = time.time()
    if cfg.x == cfg.fail_on:
        raise RuntimeError(f"job x={cfg.x} fails on purpose")
    if cfg.x == cfg.exit_on:
        sys.exit(3)
    if cfg.x == cfg.kill_on:
        # A process of the job's own that would outlive it (like a DDP rank) and holds stdout.
        orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        (job_dir / "orphan.pid").write_text(str(orphan.pid))
        os.kill(os.getpid(), signal.SIGKILL)
    met = meet(cfg.rendezvous_dir, cfg.x, cfg.rendezvous) if cfg.rendezvous else None
    time.sleep(cfg.sleep_s)
    record = {
        "x": cfg.x,
        "start": started,
        "end": time.time(),
        "met": met,
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_memory_fraction": os.environ.get("RESLAB_GPU_MEMORY_FRACTION"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if cfg.count_cuda:
        import torch

        record["cuda_device_count"] = torch.cuda.device_count()
    if cfg.allocate_fraction is not None:  # of the GPU's memory
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        try:
            torch.empty(int(cfg.allocate_fraction * total), dtype=torch.uint8, device="cuda")
            record["allocated"] = True
        except torch.OutOfMemoryError:
            record["allocated"] = False
    (job_dir / "job.json").write_text(json.dumps(record))
    return cfg.x


if __name__ == "__main__":
    record()
"""

APP_CONFIG = """
fail_on: null
exit_on: null
kill_on: null
rendezvous: 0
rendezvous_dir: ${hydra:sweep.dir}/../rendezvous
sleep_s: 0.2
count_cuda: false
allocate_fraction: null
"""


def start_sweep(tmp_path: Path, *overrides: str, **env: str) -> subprocess.Popen:
    (tmp_path / "conf").mkdir(parents=True, exist_ok=True)
    (tmp_path / "conf" / "app.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.py").write_text(APP)
    return subprocess.Popen(
        [
            sys.executable,
            "app.py",
            "-m",
            "hydra/launcher=reslab_node_parallel",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *overrides,
        ],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_sweep(tmp_path: Path, *overrides: str, **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the app's multirun with the node_parallel launcher; return it and the job records."""
    process = start_sweep(tmp_path, *overrides, **env)
    # Returns once the launcher has ended and nothing of its jobs holds its output any more.
    stdout, stderr = process.communicate(timeout=120)
    proc = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    plugin_missing = any(sign in proc.stderr for sign in ("Unknown plugin class", "launcher/reslab_node_parallel'"))
    assert not plugin_missing, (
        "Hydra did not find the hydra_plugins.reslab_launchers plugin: is the project installed "
        "(pip install -e .) with `hydra_plugins` listed in pyproject's packages?\n" + proc.stderr
    )
    return proc, job_records(tmp_path)


def job_records(tmp_path: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((tmp_path / "sweep").glob("*/job.json"))]


def job_dir(tmp_path: Path, num: int) -> Path:
    return tmp_path / "sweep" / str(num)


def most_at_once(records: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        running += change
        peak = max(peak, running)
    return peak


def is_alive(pid: int) -> bool:
    try:
        # A zombie (dead, not yet reaped by whoever adopted it) counts as gone.
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- devices and threads


def test_each_job_gets_its_own_gpu_and_two_run_at_once(tmp_path):
    proc, records = run_sweep(tmp_path, "hydra.launcher.gpus=[0,1]", "+x=1,2,3,4", "sleep_s=0.5", "rendezvous=2")

    assert proc.returncode == 0, proc.stderr
    assert sorted(r["x"] for r in records) == [1, 2, 3, 4]
    assert len({r["pid"] for r in records}) == 4  # a fresh process per job
    assert [r["met"] for r in records[:2]] == [True, True]  # the first two ran at the same time
    for r in records:
        assert r["cuda_visible_devices"] in ("0", "1")
        assert r["gpu_memory_fraction"] == "1"  # a GPU of its own: all of its memory
    for gpu in ("0", "1"):
        on_gpu = sorted((r for r in records if r["cuda_visible_devices"] == gpu), key=lambda r: r["start"])
        for earlier, later in itertools.pairwise(on_gpu):
            assert earlier["end"] <= later["start"], f"two jobs held GPU {gpu} at once"
    assert most_at_once(records) == 2


def test_jobs_per_gpu_shares_each_gpu_and_splits_its_memory(tmp_path):
    proc, records = run_sweep(
        tmp_path, "hydra.launcher.gpus=[0,1]", "hydra.launcher.jobs_per_gpu=2", "+x=1,2,3,4,5,6", "rendezvous=4"
    )

    assert proc.returncode == 0, proc.stderr
    assert sorted(r["x"] for r in records) == [1, 2, 3, 4, 5, 6]
    assert all(r["met"] for r in records[:4])  # the first four ran at the same time
    for r in records:
        assert r["cuda_visible_devices"] in ("0", "1")
        assert r["gpu_memory_fraction"] == "0.5"
    first_four = [r["cuda_visible_devices"] for r in records[:4]]
    assert sorted(first_four) == ["0", "0", "1", "1"]  # two on each GPU, not four on one
    for gpu in ("0", "1"):
        assert most_at_once([r for r in records if r["cuda_visible_devices"] == gpu]) <= 2
    assert most_at_once(records) <= 4


def test_the_longest_jobs_start_first_and_keep_their_numbers(tmp_path):
    proc, records = run_sweep(
        tmp_path,
        "hydra.launcher.gpus=[]",
        "hydra.launcher.max_parallel=1",
        "hydra.launcher.longest_first_by=x",
        "+x=1,3,2",
    )

    assert proc.returncode == 0, proc.stderr
    assert [r["x"] for r in sorted(records, key=lambda r: r["start"])] == [3, 2, 1]
    assert [r["x"] for r in records] == [1, 3, 2]  # job folders 0, 1, 2 in the sweep's order


def test_the_start_order_comes_from_the_composed_configs_when_the_overrides_do_not_give_it(tmp_path):
    # The jobs' overrides give `length` no number (an interpolation): their configs must be read.
    proc, records = run_sweep(
        tmp_path,
        "hydra.launcher.gpus=[]",
        "hydra.launcher.max_parallel=1",
        "hydra.launcher.longest_first_by=length",
        "+x=1,3,2",
        "+length=${x}",
    )

    assert proc.returncode == 0, proc.stderr
    assert [r["x"] for r in sorted(records, key=lambda r: r["start"])] == [3, 2, 1]


def test_cpu_jobs_share_the_cores(tmp_path):
    proc, records = run_sweep(
        tmp_path,
        "hydra.launcher.gpus=[]",
        "hydra.launcher.max_parallel=2",
        "+x=1,2",
        "rendezvous=2",
        OMP_NUM_THREADS="7",  # the launcher must replace what the parent had
        RESLAB_GPU_MEMORY_FRACTION="0.1",  # and must not pass a GPU share on to CPU jobs
    )

    assert proc.returncode == 0, proc.stderr
    assert len(records) == 2
    for r in records:
        assert r["met"] is True
        assert r["cuda_visible_devices"] == ""
        assert r["gpu_memory_fraction"] is None
        assert r["omp_num_threads"] == str(max(1, available_cpus() // 2))


def test_a_cpu_slot_runs_its_jobs_in_one_process_until_one_fails(tmp_path):
    proc, records = run_sweep(tmp_path, "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=1", "+x=1,2,3")
    assert proc.returncode == 0, proc.stderr
    assert len({r["pid"] for r in records}) == 1  # torch and the rest imported once

    proc, records = run_sweep(
        tmp_path / "failing", "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=1", "+x=1,2,3", "fail_on=2"
    )
    assert proc.returncode != 0
    assert [r["x"] for r in records] == [1, 3]
    assert records[0]["pid"] != records[1]["pid"]  # after a failure: a fresh process

    proc, records = run_sweep(
        tmp_path / "fresh", "hydra.launcher.gpus=[]", "hydra.launcher.reuse_processes=false", "+x=1,2,3"
    )
    assert proc.returncode == 0, proc.stderr
    assert len({r["pid"] for r in records}) == 3


def test_return_values_come_back_to_hydra(hydra_sweep_runner, hydra_restore_singletons, tmp_path):
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=_ten_times_a,
        config_path="configs",
        config_name="compose",
        overrides=[
            "hydra/launcher=reslab_node_parallel",
            "hydra.launcher.gpus=[]",
            "hydra.launcher.longest_first_by=a",  # started 3, 2, 1: still returned in order
            "+a=1,2,3",
        ],
        temp_dir=tmp_path,
    )
    with sweep:
        returns = sweep.returns[0]

    assert [r.return_value for r in returns] == [10, 20, 30]
    assert [r.overrides for r in returns] == [["+a=1"], ["+a=2"], ["+a=3"]]
    assert [r.hydra_cfg.hydra.job.num for r in returns] == [0, 1, 2]


def _ten_times_a(cfg):
    return cfg.a * 10


@pytest.mark.gpu
@pytest.mark.skipif(not visible_gpu_ids(), reason="needs a CUDA device")
def test_each_job_sees_only_its_own_gpu(tmp_path):
    proc, records = run_sweep(tmp_path, "count_cuda=true", "+x=1,2")

    assert proc.returncode == 0, proc.stderr
    for r in records:
        assert r["cuda_visible_devices"] in visible_gpu_ids()
        assert r["cuda_device_count"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not visible_gpu_ids(), reason="needs a CUDA device")
def test_jobs_sharing_a_gpu_are_held_to_their_share_of_its_memory(tmp_path):
    gpu = visible_gpu_ids()[0]
    shared = [f"hydra.launcher.gpus=[{gpu}]", "hydra.launcher.jobs_per_gpu=2", "+x=1,2", "rendezvous=2", "sleep_s=2"]

    proc, records = run_sweep(tmp_path, *shared, "allocate_fraction=0.4")
    assert proc.returncode == 0, proc.stderr
    assert [(r["met"], r["allocated"]) for r in records] == [(True, True), (True, True)]

    proc, records = run_sweep(tmp_path / "more", *shared, "allocate_fraction=0.6")
    assert proc.returncode == 0, proc.stderr
    assert [r["allocated"] for r in records] == [False, False]  # more than half: refused


def test_visible_gpus_come_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert plan_node(gpus=None).slots == (("3",), ("5",))

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # hides every GPU
    assert plan_node(gpus=None, cpus=2).slots == ((), ())  # CPU only, one job per core


def test_gpus_are_cut_into_slots_of_gpus_per_job():
    plan = plan_node(gpus=[0, 1, 2, 3, 4], gpus_per_job=2, cpus=8)

    assert plan.slots == (("0", "1"), ("2", "3"))  # GPU 4 fills no slot and stays idle
    assert plan.threads_per_job == 4
    assert plan.gpu_memory_fraction == 1


def test_jobs_per_gpu_spreads_jobs_over_the_gpus_first():
    plan = plan_node(gpus=[0, 1], jobs_per_gpu=2, cpus=8)

    assert plan.slots == (("0",), ("1",), ("0",), ("1",))
    assert plan.threads_per_job == 2
    assert plan.gpu_memory_fraction == 0.5


def test_without_gpus_one_job_runs_per_core_and_the_threads_follow_the_jobs():
    assert plan_node(gpus=[], cpus=4).slots == ((),) * 4
    assert plan_node(gpus=[], cpus=4).threads_per_job == 1
    # Fewer jobs than cores: the cores are divided among the jobs there are.
    assert plan_node(gpus=[], cpus=16, num_jobs=6).max_parallel == 6
    assert plan_node(gpus=[], cpus=16, num_jobs=6).threads_per_job == 2
    assert plan_node(gpus=[0, 1, 2, 3], cpus=16, num_jobs=2).threads_per_job == 8


@pytest.mark.parametrize(
    "gpus, gpus_per_job, jobs_per_gpu, max_parallel, allowed",
    [
        ([0, 1], 1, 1, 3, "max_parallel <= 2"),
        ([0, 1], 1, 2, 5, "max_parallel <= 4"),
        ([0], 2, 1, None, "gpus_per_job=2 needs"),
        ([0, 0], 1, 1, None, "lists a GPU twice"),
        ([], 1, 1, 0, "max_parallel must be >= 1"),
        ([0], 1, 0, None, "jobs_per_gpu must be >= 1"),
    ],
)
def test_plans_that_would_share_or_lack_gpus_are_refused(gpus, gpus_per_job, jobs_per_gpu, max_parallel, allowed):
    with pytest.raises(ConfigError, match=allowed):
        plan_node(gpus=gpus, gpus_per_job=gpus_per_job, jobs_per_gpu=jobs_per_gpu, max_parallel=max_parallel)


def test_a_sweep_asking_the_node_for_what_it_cannot_give_is_refused_before_any_job(train, tmp_path):
    proc = train(
        "-m",
        "model.depth=8,20",
        "hydra/launcher=node_parallel",
        "hydra.launcher.gpus=[0]",
        "hydra.launcher.gpus_per_job=2",
        "hydra.sweep.dir=sweep",
        check=False,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    assert "hydra.launcher.gpus_per_job=2 needs that many GPUs" in said
    assert "Traceback" not in said and not list((tmp_path / "sweep").glob("*/.hydra"))


def test_the_project_preset_extends_the_plugin_and_changes_only_the_start_order():
    preset = OmegaConf.load(REPO / "conf" / "hydra" / "launcher" / "node_parallel.yaml")
    # ResLab's sweeps start their deepest networks first; the keys and other defaults are the plugin's.
    assert OmegaConf.to_container(preset) == {
        "defaults": ["reslab_node_parallel", "_self_"],
        "longest_first_by": "model.depth",
    }
    plugin = OmegaConf.to_container(OmegaConf.structured(NodeParallelLauncherConf))
    assert plugin["longest_first_by"] is None and "longest_first_by" in plugin


# ----------------------------------------------------------------------------- faults stay inside their job


def test_a_job_that_raises_exits_or_is_killed_costs_no_other_job(tmp_path):
    proc, records = run_sweep(
        tmp_path,
        "hydra.launcher.gpus=[]",
        "hydra.launcher.max_parallel=2",
        "+x=1,2,3,4,5",
        "fail_on=2",
        "exit_on=3",
        "kill_on=4",
    )

    # Every job ran; Hydra raises the first failure once the whole sweep has run.
    assert sorted(r["x"] for r in records) == [1, 5]
    assert proc.returncode != 0
    assert "job x=2 fails on purpose" in proc.stderr
    output = proc.stdout + proc.stderr
    assert "the job exited with code 3" in output
    # The killed job is reported and marked failed; what it started is gone with it.
    killed = job_dir(tmp_path, 3)
    assert "was killed by SIGKILL before reporting a result" in output
    record = json.loads((killed / "results.json").read_text())
    assert record["status"] == "failed"
    assert "+x=4" in record["error"] and "SIGKILL" in record["error"]
    assert not is_alive(int((killed / "orphan.pid").read_text()))
    # Jobs that reported their own end (raised, exited) keep their folders as they left them.
    assert not (job_dir(tmp_path, 1) / "results.json").exists()
    assert not (job_dir(tmp_path, 2) / "results.json").exists()


def test_a_killed_job_keeps_its_earlier_attempts_and_a_finished_record_stays(tmp_path):
    # A rerun into the same folder finds what the job wrote before: its record of the start
    # (`running`, with earlier attempts) or a finished record.
    record_file = job_dir(tmp_path, 0) / "results.json"
    record_file.parent.mkdir(parents=True)
    running = {"status": "running", "attempts": [{"status": "completed", "steps": 60}]}
    record_file.write_text(json.dumps(running))

    proc, _ = run_sweep(tmp_path, "hydra.launcher.gpus=[]", "+x=1", "kill_on=1")

    assert proc.returncode != 0
    record = json.loads(record_file.read_text())
    assert record["status"] == "failed" and "SIGKILL" in record["error"]
    assert record["attempts"] == running["attempts"]

    # A record that is not `running` is the job's own (or an earlier attempt's): left alone.
    completed = {"status": "completed", "steps": 60}
    record_file.write_text(json.dumps(completed))
    proc, _ = run_sweep(tmp_path, "hydra.launcher.gpus=[]", "+x=1", "kill_on=1")
    assert proc.returncode != 0
    assert json.loads(record_file.read_text()) == completed


def test_sigterm_reaches_the_running_jobs_and_nothing_more_starts(tmp_path):
    process = start_sweep(
        tmp_path, "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=2", "+x=1,2,3", "sleep_s=300", "rendezvous=2"
    )
    rendezvous = tmp_path / "rendezvous"
    deadline = time.time() + 90
    while time.time() < deadline and len(list(rendezvous.glob("*")) if rendezvous.exists() else []) < 2:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert [(job_dir(tmp_path, num) / "got_sigterm").exists() for num in (0, 1)] == [True, True]
    assert not job_dir(tmp_path, 2).exists()  # the third job never started
    assert "sweep stopped by SIGTERM; 1 job(s) were not started" in stdout + stderr


def test_the_jobs_end_when_their_sweep_is_killed_outright(tmp_path):
    # SIGKILL of the launcher leaves no handler to pass anything on: each job process watches
    # its stdin from the launcher, and its end of file ends the job (SIGTERM, as a requeue would).
    process = start_sweep(
        tmp_path, "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=2", "+x=1,2", "sleep_s=300", "rendezvous=2"
    )
    rendezvous = tmp_path / "rendezvous"
    deadline = time.time() + 90
    while time.time() < deadline and len(list(rendezvous.glob("*")) if rendezvous.exists() else []) < 2:
        time.sleep(0.1)
    process.kill()
    process.wait()
    deadline = time.time() + 60
    ended = [job_dir(tmp_path, num) / "got_sigterm" for num in (0, 1)]
    while time.time() < deadline and not all(path.exists() for path in ended):
        time.sleep(0.1)
    process.stdout.close()
    process.stderr.close()
    assert [path.exists() for path in ended] == [True, True]


# ----------------------------------------------------------------------------- reslab's own sweeps


def test_experiment_digits_degradation_packs_its_jobs_by_default(hydra_restore_singletons):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="reslab.conf", version_base="1.3"):
        packed = compose("train", ["experiment=digits_degradation"], return_hydra_config=True)
        on_slurm = compose("train", ["experiment=digits_degradation", "hydra/launcher=slurm"], return_hydra_config=True)

    assert packed.hydra.launcher._target_.endswith("NodeParallelLauncher")
    assert "submitit" in on_slurm.hydra.launcher._target_  # the command line still chooses


def cpu_sweep(sweep):
    """A node_parallel sweep of `reslab-train` on the CPU cores into `sweep`, job folders job0, job1, ..."""
    return [
        "-m",
        "hydra/launcher=node_parallel",
        "hydra.launcher.gpus=[]",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=job${hydra.job.num}",
        "logger=csv",
    ]


def test_a_corrupt_checkpoint_fails_its_job_and_the_other_completes(train, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*cpu_sweep(sweep), "model.depth=8,20", "callbacks.checkpoint.every_n_train_steps=20"]
    train(*args, "trainer.max_steps=60")
    (sweep / "job0" / "checkpoints" / "last.ckpt").write_bytes(os.urandom(4096))

    rerun = train(*args, "trainer.max_steps=100", check=False)

    assert rerun.returncode == 1, rerun.stderr[-3000:]  # not every job completed
    other = json.loads((sweep / "job1" / "results.json").read_text())
    assert other["status"] == "completed" and other["steps"] == 100
    corrupt = json.loads((sweep / "job0" / "results.json").read_text())
    assert corrupt["status"] == "failed" and "checkpoint" in corrupt["error"]
    assert any(attempt.get("status") == "completed" for attempt in corrupt.get("attempts", [])), (
        "the job's completed first attempt was lost"
    )


def test_an_interrupted_job_is_logged_as_interrupted_not_as_a_failure(train, tmp_path):
    sweep = tmp_path / "sweep"
    proc = train(
        *cpu_sweep(sweep),
        "model.depth=8",
        "+callbacks.fault._target_=job_faults.SignalAt",
        "+callbacks.fault.hook=setup_fit",
        check=False,
        PYTHONPATH=str(REPO / "tests"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]  # the sweep: not every job completed
    assert json.loads((sweep / "job0" / "results.json").read_text())["status"] == "interrupted"
    assert "Job failed" not in out and "][ERROR]" not in out, out[-3000:]
    assert "job interrupted by SIGTERM" in out and "#0 ended after" in out and "s: interrupted" in out, out[-3000:]


def test_ddp_jobs_run_one_after_another_in_a_slot(train, tmp_path):
    # Both 2-process jobs on one CPU slot: the second runs in the process the first ran in,
    # and Lightning's second rank of each is started anew for its own job.
    sweep = tmp_path / "sweep"
    train(
        "-m",
        "hydra/launcher=node_parallel",
        "hydra.launcher.gpus=[]",
        "hydra.launcher.max_parallel=1",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=job${hydra.job.num}",
        "logger=csv",
        "trainer=ddp",
        "trainer.devices=2",
        "model.depth=8",
        "seed=0,1",
    )
    records = [json.loads((sweep / job / "results.json").read_text()) for job in ("job0", "job1")]
    assert [(r["status"], r["world_size"], r["steps"]) for r in records] == [("completed", 2, 6)] * 2
    assert records[0]["pid"] == records[1]["pid"]


# ----------------------------------------------------------------------------- Hydra's launcher test suites


def test_hydra_discovers_the_launcher():
    assert NodeParallelLauncher.__name__ in [plugin.__name__ for plugin in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("reslab_node_parallel", ["hydra.launcher.gpus=[]"])])
class TestNodeParallelLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (
            {},
            [
                "-m",
                "hydra/job_logging=hydra_debug",
                "hydra/job_logging=disabled",
                "hydra/launcher=reslab_node_parallel",
                "hydra.launcher.gpus=[]",
            ],
        )
    ],
)
class TestNodeParallelLauncherIntegration(IntegrationTestSuite):
    pass
