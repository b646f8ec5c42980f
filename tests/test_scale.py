"""One run on several processes (Lightning DDP on CPU, gloo) through reslab-train's command
line: as a single run and inside a multirun, where every job is trained once, by its own
ranks, into its own folder, and bad jobs do not stop the sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reslab.checks import check_on_this_machine
from reslab.errors import ConfigError
from reslab.job import read_metrics_csv

DDP = ["trainer=ddp", "trainer.devices=2", "model.depth=8", "logger=csv"]


def job_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob(".hydra"))


def results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def logged_steps(job: Path, metric: str) -> list[int]:
    return [int(row["step"]) for row in read_metrics_csv(job / "metrics.csv") if metric in row]


@pytest.mark.slow
def test_ddp_single_run_trains_once_on_two_ranks(train, tmp_path):
    train(*DDP, "trainer.max_steps=8", "trainer.val_check_interval=4", "hydra.run.dir=run")

    assert job_dirs(tmp_path) == [tmp_path / "run"], "the second rank made no folder of its own"
    job = tmp_path / "run"
    assert sorted(p.name for p in job.glob("*.log")) == ["train.log"]
    record = results(job)
    assert record["status"] == "completed" and record["world_size"] == 2 and record["steps"] == 8
    # Rank 0 alone writes metrics: one row per step and one per validation, not one per rank.
    assert logged_steps(job, "train/err") == list(range(8))
    assert len(logged_steps(job, "val/err")) == 2 and len(logged_steps(job, "test/err")) == 1

    # The test split is scored as a whole: one process scoring the same weights agrees exactly.
    train(
        "model.depth=8",
        "logger=csv",
        "trainer.max_steps=8",
        f"ckpt_path={job}/checkpoints/last.ckpt",
        "hydra.run.dir=one",
    )
    single = results(tmp_path / "one")
    assert single["world_size"] == 1 and single["resumed_from_step"] == 8
    for name in ("test/err", "test/err_top5", "test/loss"):
        assert single["metrics"][name] == pytest.approx(record["metrics"][name], abs=1e-6), name


# Raises in the middle of the training of the job whose learning rate is `lr`, on every rank.
FAILING = """
import lightning.pytorch as pl

class FailAtStep(pl.Callback):
    def __init__(self, lr, step):
        self.lr, self.step = lr, step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step and trainer.optimizers[0].param_groups[0]["lr"] == self.lr:
            raise RuntimeError("planted failure")
"""


@pytest.mark.slow
def test_ddp_sweep_runs_each_job_once_and_survives_bad_jobs(train, report, tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)  # importable: python -m puts the cwd on sys.path
    # lr=0.02 raises at step 3; with lr=1e6 the loss is infinite within a few steps.
    proc = train(
        # Divergence is read when the step values are flushed, every log_every_n_steps.
        "-m",
        *DDP,
        "trainer.max_steps=12",
        "trainer.log_every_n_steps=4",
        "optimizer.lr=0.05,0.02,1e6",
        "experiment_name=bad_jobs",
        "+callbacks.fail._target_=failing.FailAtStep",
        "+callbacks.fail.lr=0.02",
        "+callbacks.fail.step=3",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # not every job completed

    # Ranks started by Lightning some seconds later would name a sweep folder of their own.
    (sweep,) = (tmp_path / "multirun").glob("*/*_bad_jobs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failing.py", "multirun"]
    jobs = {_lr(results(job)): job for job in job_dirs(tmp_path)}
    assert sorted(jobs) == [0.02, 0.05, 1e6] and all(job.parent == sweep for job in jobs.values())
    good, failed, diverged = (results(jobs[lr]) for lr in (0.05, 0.02, 1e6))
    assert [r["world_size"] for r in (good, failed, diverged)] == [2, 2, 2]

    assert good["status"] == "completed" and good["steps"] == 12
    assert logged_steps(jobs[0.05], "train/err") == list(range(12))
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: planted failure" and failed["steps"] == 3
    assert diverged["status"] == "diverged" and "training loss" in diverged["error"]
    assert 0 < diverged["steps"] < 12

    report(str(sweep))
    listed = (sweep / "report.md").read_text()
    assert "3 jobs: 1 completed, 1 diverged, 1 failed" in listed
    assert f"`{jobs[1e6].name}`: diverged" in listed and f"`{jobs[0.02].name}`: failed" in listed


def _lr(record: dict) -> float:
    (value,) = [o.split("=", 1)[1] for o in record["overrides"] if o.startswith("optimizer.lr=")]
    return float(value)


def test_sync_batchnorm_on_cpu_fails_before_any_process_starts():
    cfg = OmegaConf.create({"trainer": {"sync_batchnorm": True}})
    settings = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "sync_batchnorm": True}
    with pytest.raises(ConfigError, match="sync_batchnorm=true needs GPUs"):
        check_on_this_machine(cfg, settings)
