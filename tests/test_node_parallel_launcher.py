"""hydra/launcher=node_parallel: a sweep's jobs run side by side, each with its own devices.

A tiny Hydra app (its own config root, so the launcher config must come from the plugin's
ConfigStore entry) records when it ran and which devices and threads it was given.
"""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.reslab_launchers.node_parallel_launcher import (
    NodeParallelLauncherConf,
    available_cpus,
    plan_node,
    visible_gpu_ids,
)
from reslab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

APP = """
import json, os, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def record(cfg):
    started = time.time()
    if cfg.x == cfg.fail_on:
        raise RuntimeError(f"job x={cfg.x} fails on purpose")
    time.sleep(cfg.sleep_s)
    record = {
        "x": cfg.x,
        "start": started,
        "end": time.time(),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "assigned_devices": os.environ.get("RESLAB_ASSIGNED_DEVICES"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if cfg.count_cuda:
        import torch

        record["cuda_device_count"] = torch.cuda.device_count()
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    (job_dir / "job.json").write_text(json.dumps(record))
    return cfg.x


if __name__ == "__main__":
    record()
"""


def run_sweep(
    tmp_path: Path, *overrides: str, **env: str
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the app's multirun with the node_parallel launcher; return it and the job records."""
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "app.yaml").write_text("fail_on: null\nsleep_s: 1.5\ncount_cuda: false\n")
    (tmp_path / "app.py").write_text(APP)
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "app.py",
            "-m",
            "hydra/launcher=node_parallel",
            f"hydra.sweep.dir={sweep_dir}",
            *overrides,
        ],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    plugin_missing = any(
        sign in proc.stderr for sign in ("Unknown plugin class", "launcher/node_parallel'")
    )
    assert not plugin_missing, (
        "Hydra did not find the hydra_plugins.reslab_launchers plugin: is the project installed "
        "(pip install -e .) with `hydra_plugins` listed in pyproject's packages?\n" + proc.stderr
    )
    records = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/job.json"))]
    return proc, records


def most_at_once(records: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        running += change
        peak = max(peak, running)
    return peak


def test_each_job_gets_its_own_gpu_and_two_run_at_once(tmp_path):
    proc, records = run_sweep(tmp_path, "hydra.launcher.gpus=[0,1]", "+x=1,2,3,4")

    assert proc.returncode == 0, proc.stderr
    assert sorted(r["x"] for r in records) == [1, 2, 3, 4]
    assert len({r["pid"] for r in records}) == 4  # a fresh process per job
    for r in records:
        assert r["cuda_visible_devices"] in ("0", "1")
        assert r["assigned_devices"] == r["cuda_visible_devices"]
    for gpu in ("0", "1"):
        on_gpu = sorted(
            (r for r in records if r["cuda_visible_devices"] == gpu), key=lambda r: r["start"]
        )
        for earlier, later in itertools.pairwise(on_gpu):
            assert earlier["end"] <= later["start"], f"two jobs held GPU {gpu} at once"
    assert most_at_once(records) == 2


def test_cpu_jobs_share_the_cores(tmp_path):
    proc, records = run_sweep(
        tmp_path,
        "hydra.launcher.gpus=[]",
        "hydra.launcher.max_parallel=2",
        "+x=1,2",
        OMP_NUM_THREADS="7",  # the launcher must replace what the parent had
    )

    assert proc.returncode == 0, proc.stderr
    assert len(records) == 2
    for r in records:
        assert r["cuda_visible_devices"] == ""
        assert r["omp_num_threads"] == str(max(1, available_cpus() // 2))


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    proc, records = run_sweep(
        tmp_path, "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=2", "+x=1,2,3", "fail_on=2"
    )

    # Hydra raises the failed job's error once the whole sweep has run.
    assert proc.returncode != 0
    assert "job x=2 fails on purpose" in proc.stderr
    assert sorted(r["x"] for r in records) == [1, 3]


def _ten_times_a(cfg):
    return cfg.a * 10


def test_return_values_come_back_to_hydra(hydra_sweep_runner, hydra_restore_singletons, tmp_path):
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=_ten_times_a,
        config_path="configs",
        config_name="compose",
        overrides=["hydra/launcher=node_parallel", "hydra.launcher.gpus=[]", "+a=1,2"],
        temp_dir=tmp_path,
    )
    with sweep:
        returns = sweep.returns[0]

    assert [r.return_value for r in returns] == [10, 20]
    assert [r.overrides for r in returns] == [["+a=1"], ["+a=2"]]
    assert [r.hydra_cfg.hydra.job.num for r in returns] == [0, 1]


@pytest.mark.gpu
@pytest.mark.skipif(not visible_gpu_ids(), reason="needs a CUDA device")
def test_each_job_sees_only_its_own_gpu(tmp_path):
    proc, records = run_sweep(tmp_path, "count_cuda=true", "+x=1,2")

    assert proc.returncode == 0, proc.stderr
    for r in records:
        assert r["cuda_visible_devices"] in visible_gpu_ids()
        assert r["cuda_device_count"] == 1


def test_visible_gpus_come_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert plan_node(gpus=None).slots == (("3",), ("5",))

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # hides every GPU
    assert plan_node(gpus=None).slots == ((), ())  # CPU only, two jobs at a time


def test_gpus_are_cut_into_slots_of_gpus_per_job():
    plan = plan_node(gpus=[0, 1, 2, 3, 4], gpus_per_job=2, cpus=8)

    assert plan.slots == (("0", "1"), ("2", "3"))  # GPU 4 fills no slot and stays idle
    assert plan.threads_per_job == 4


@pytest.mark.parametrize(
    "gpus, gpus_per_job, max_parallel, allowed",
    [
        ([0, 1], 1, 3, "max_parallel <= 2"),
        ([0], 2, None, "gpus_per_job=2 needs"),
        ([0, 0], 1, None, "lists a GPU twice"),
        ([], 1, 0, "max_parallel must be >= 1"),
    ],
)
def test_plans_that_would_share_or_lack_gpus_are_refused(gpus, gpus_per_job, max_parallel, allowed):
    with pytest.raises(ConfigError, match=allowed):
        plan_node(gpus=gpus, gpus_per_job=gpus_per_job, max_parallel=max_parallel)


def test_the_project_preset_has_the_plugins_keys_and_defaults():
    preset = OmegaConf.load(REPO / "conf" / "hydra" / "launcher" / "node_parallel.yaml")

    assert preset == OmegaConf.structured(NodeParallelLauncherConf)
