"""Checkpoints and resume through reslab-train's command line: a run killed with SIGKILL and
run again ends exactly like one that was never interrupted; `ckpt_path` resumes explicitly;
checkpoints that do not fit, are corrupt or would run pickled code stop before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import FAST, run_cli
from reslab.checkpoints import check_checkpoint
from reslab.errors import ConfigError
from reslab.job import read_metrics_csv

# 1,257 training images in batches of 32: 39 steps per epoch. Checkpoints at epoch boundaries
# (every 39 steps) make the resume exact; the kill comes 21 steps after the first of them.
STEPS_PER_EPOCH = 39
RUN = [
    *FAST,
    "model.depth=8",
    "logger=csv",
    "trainer.max_steps=100",
    "trainer.deterministic=true",
    f"callbacks.checkpoint.every_n_train_steps={STEPS_PER_EPOCH}",
]
KILL_AT_STEP = 60

# A callback that ends its own process with SIGKILL (kill -9) at a given step: no cleanup,
# no flush, exactly as the kernel or a scheduler kills a job.
KILLER = """
import os, signal
import lightning.pytorch as pl

class KillAtStep(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def train(cwd: Path, *overrides: str, check: bool = True):
    return run_cli("reslab.train", [*RUN, *overrides], cwd, check=check)


def results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """A whole run of RUN: the reference for the resumed ones, and a checkpoint to resume from."""
    root = tmp_path_factory.mktemp("uninterrupted")
    train(root, "hydra.run.dir=job")
    return root / "job"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_end(uninterrupted, tmp_path):
    (tmp_path / "killer.py").write_text(KILLER)  # importable: python -m puts the cwd first on sys.path
    killed = train(
        tmp_path,
        "hydra.run.dir=job",
        "+callbacks.kill._target_=killer.KillAtStep",
        f"+callbacks.kill.step={KILL_AT_STEP}",
        check=False,
    )
    job = tmp_path / "job"
    # Killed with no chance to record it: the record written at the start still says running.
    assert killed.returncode == -9 and json.loads((job / "results.json").read_text())["status"] == "running"
    assert (job / "checkpoints" / "last.ckpt").is_file()

    rerun = train(tmp_path, "hydra.run.dir=job")

    assert f"at step {STEPS_PER_EPOCH}" in rerun.stdout + rerun.stderr
    resumed, reference = results(job), results(uninterrupted)
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == STEPS_PER_EPOCH
    assert resumed["steps"] == reference["steps"] == 100
    assert resumed["metrics"] == reference["metrics"]
    # The whole history too: rows from before the checkpoint kept, none twice, same values.
    assert read_metrics_csv(job / "metrics.csv") == read_metrics_csv(uninterrupted / "metrics.csv")


def test_ckpt_path_resumes_from_that_checkpoint(uninterrupted, tmp_path):
    train(tmp_path, f"ckpt_path={uninterrupted}/checkpoints/last.ckpt", "trainer.max_steps=110", "hydra.run.dir=job")

    record = results(tmp_path / "job")
    assert record["status"] == "completed" and record["resumed_from_step"] == 100 and record["steps"] == 110
    assert [row["step"] for row in read_metrics_csv(tmp_path / "job" / "metrics.csv") if "train/err" in row] == list(
        range(100, 110)
    )


def _truncated(checkpoint: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(checkpoint.read_bytes()[:5000])
    return broken


@pytest.mark.parametrize(
    "make_checkpoint, overrides, expected",
    [
        (lambda ckpt, tmp: ckpt, ["model.depth=14"], "does not match the configured network"),
        (_truncated, [], "cannot be read, it is corrupt"),
    ],
    ids=["other-network", "truncated"],
)
def test_unusable_checkpoint_stops_before_training(uninterrupted, tmp_path, make_checkpoint, overrides, expected):
    checkpoint = make_checkpoint(uninterrupted / "checkpoints" / "last.ckpt", tmp_path)
    proc = train(tmp_path, f"ckpt_path={checkpoint}", *overrides, "hydra.run.dir=job", check=False)

    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and expected in output and "ckpt_path=none" in output
    assert "Traceback" not in output
    assert not (tmp_path / "job" / "metrics.csv").exists() and not (tmp_path / "job" / "checkpoints").exists()


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_are_read_without_running_pickled_code(uninterrupted, tmp_path):
    checkpoint = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "code-ran"
    checkpoint["callbacks"]["planted"] = _RunsCodeWhenUnpickled(marker)
    torch.save(checkpoint, tmp_path / "planted.ckpt")
    net = torch.nn.Module()

    with pytest.raises(ConfigError, match="without running pickled code"):
        check_checkpoint(tmp_path / "planted.ckpt", net)
    assert not marker.exists()
