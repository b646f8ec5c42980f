"""Per-step training values: every step reaches metrics.csv and W&B, handed over in batches of
`trainer.log_every_n_steps`; no tensor is read on the host between the batches; divergence
(NaN, inf, or a loss that explodes) is found where the batches are flushed."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import Logger
from test_wandb import history, wandb_runs
from torch.utils.data import DataLoader, TensorDataset

from conftest import REPO, cli_env
from reslab.callbacks.divergence import DivergenceDetector
from reslab.errors import ConfigError
from reslab.job import read_metrics_csv
from reslab.models import build_network
from reslab.module import ClassificationModule


def steps_with(rows: list[dict], name: str) -> list[int]:
    return [int(row["step"]) for row in rows if name in row]


# ----------------------------------------------------------------------------- through the CLI


def test_every_step_reaches_metrics_csv_and_wandb(train, tmp_path):
    # 12 steps, flushed after steps 4 and 9 and at the end; W&B offline (the default loggers).
    train("trainer.max_steps=12", "trainer.log_every_n_steps=5", "hydra.run.dir=job", "test=false")
    job = tmp_path / "job"
    rows = read_metrics_csv(job / "metrics.csv")
    assert steps_with(rows, "train/err") == list(range(12))
    assert steps_with(rows, "train/loss") == list(range(12))
    (run_dir,) = wandb_runs(job)
    logged = history(run_dir, "train/loss")
    assert [step for step, _ in logged] == list(range(12))
    csv_losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert [value for _, value in logged] == pytest.approx(csv_losses)
    results = json.loads((job / "results.json").read_text())
    assert results["metrics"]["train/loss"] == pytest.approx(csv_losses[-1]), "the last step's values are final"


def test_a_loss_that_explodes_is_recorded_as_diverged(train, tmp_path):
    # lr 50: the loss jumps from 2.4 to about 1e5 within five steps and stays huge but finite.
    args = ("optimizer.lr=50", "trainer.max_steps=40", "trainer.log_every_n_steps=10", "logger=csv", "test=false")
    train(*args, "hydra.run.dir=exploded", check=False)
    results = json.loads((tmp_path / "exploded" / "results.json").read_text())
    assert results["status"] == "diverged"
    assert "max_loss_factor" in results["error"] and "x its first value" in results["error"]
    assert results["steps"] <= 10, "stopped at the first flush after the explosion"
    rows = read_metrics_csv(tmp_path / "exploded" / "metrics.csv")
    assert steps_with(rows, "train/loss") == list(range(results["steps"])), "every step up to the stop is logged"

    # The same run without the factor only stops on NaN/inf, which this loss never reaches.
    train(*args, "hydra.run.dir=kept", "callbacks.divergence.max_loss_factor=null")
    assert json.loads((tmp_path / "kept" / "results.json").read_text())["status"] == "completed"


def test_a_nan_loss_stops_training_within_one_flush_interval(train, tmp_path):
    train(
        "optimizer.lr=1e30",
        "trainer.max_steps=60",
        "trainer.log_every_n_steps=20",
        "logger=csv",
        "hydra.run.dir=job",
        check=False,
    )
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "diverged" and "nan" in results["error"]
    assert results["steps"] <= 20
    assert not (tmp_path / "job" / "checkpoints" / "last.ckpt").exists(), "no checkpoint of broken weights"


def test_no_tensor_is_read_on_the_host_between_flushes(tmp_path):
    out = tmp_path / "syncs.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "host_syncs.py"),
            "--json",
            str(out),
            "trainer.max_steps=30",
            "trainer.log_every_n_steps=10",
        ],
        cwd=tmp_path,
        env=cli_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    counts = json.loads(out.read_text())
    assert counts["status"] == "completed" and counts["steps"] == 30
    between = [row for row in counts["per_step"] if not row["flush"]]
    assert len(between) == 27 and all(row["reads"] == 0 for row in between), between
    assert all(row["reads"] == 1 for row in counts["per_step"] if row["flush"]), "one transfer per flush"


# ----------------------------------------------------------------------------- in process


class RecordingLogger(Logger):
    """A Lightning logger that notes, for every row, the trainer's step when it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.trainer: pl.Trainer | None = None
        self.rows: list[tuple[int, int, dict]] = []  # (global step at arrival, row's step, metrics)

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((self.trainer.global_step, step, dict(metrics)))


class FailAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"stopped at step {self.step}")


def fit_digits_shaped(max_steps: int, log_every: int, callbacks=(), lr: float = 0.05):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    module = ClassificationModule(
        build_network(depth=8, num_classes=10, in_channels=1, input_size=8),
        optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9),
        scheduler=None,
        num_classes=10,
    )
    logger = RecordingLogger()
    trainer = pl.Trainer(
        max_steps=max_steps,
        log_every_n_steps=log_every,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    logger.trainer = trainer
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=8, shuffle=True))
    return trainer, logger


def train_rows(logger: RecordingLogger) -> list[tuple[int, int, dict]]:
    return [row for row in logger.rows if "train/loss" in row[2]]


def test_values_arrive_in_batches_each_under_its_own_step():
    trainer, logger = fit_digits_shaped(max_steps=12, log_every=5)
    arrivals = {step: arrived for arrived, step, _ in train_rows(logger)}
    assert arrivals == {**dict.fromkeys(range(5), 5), **dict.fromkeys(range(5, 10), 10), 10: 12, 11: 12}
    # Lightning's epoch key, as its own step logging adds it: 8 batches per epoch.
    assert [row["epoch"] for _, _, row in train_rows(logger)] == [0] * 8 + [1] * 4
    last = train_rows(logger)[-1][2]
    assert trainer.progress_bar_metrics["train/loss"] == pytest.approx(last["train/loss"])
    assert float(trainer.callback_metrics["train/err"]) == pytest.approx(last["train/err"])


def test_training_that_raises_still_logs_every_step_it_took():
    kept = {}

    class KeepLogger(FailAtStep):
        def on_train_start(self, trainer, pl_module) -> None:
            kept["logger"] = trainer.logger

    with pytest.raises(RuntimeError, match="stopped at step 7"):
        fit_digits_shaped(max_steps=20, log_every=5, callbacks=[KeepLogger(7)])
    # Step 6 ends with global step 7, where the callback raises: steps 0..6 were taken; 5 and 6
    # had not been flushed yet.
    assert [step for _, step, _ in train_rows(kept["logger"])] == list(range(7))


class Logits(torch.nn.Module):
    """The input is the logits: each batch's error is set by its labels."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def test_the_step_error_is_the_share_of_wrong_top1_predictions():
    wrong = [0, 3, 8, 5]  # of 8 images per batch, predicted class 0, this many labelled 1
    logits = torch.nn.functional.one_hot(torch.zeros(32, dtype=torch.long), 10).float() * 5
    labels = torch.tensor([1 if i < n else 0 for n in wrong for i in range(8)])
    module = ClassificationModule(Logits(), optimizer=partial(torch.optim.SGD, lr=0.1), scheduler=None, num_classes=10)
    logger = RecordingLogger()
    trainer = pl.Trainer(
        max_steps=4,
        log_every_n_steps=2,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    logger.trainer = trainer
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(logits, labels), batch_size=8))
    assert [row["train/err"] for _, _, row in train_rows(logger)] == pytest.approx([n / 8 for n in wrong])


def test_divergence_settings_and_start_loss_survive_a_checkpoint():
    with pytest.raises(ConfigError, match="max_loss_factor"):
        DivergenceDetector(max_loss_factor=0.5)
    detector = DivergenceDetector(max_loss_factor=10)
    trainer, _ = fit_digits_shaped(max_steps=3, log_every=1, callbacks=[detector])
    assert detector.start_loss == pytest.approx(2.3, abs=0.5)
    resumed = DivergenceDetector(max_loss_factor=10)
    resumed.load_state_dict(detector.state_dict())
    assert resumed.first_divergence([7], [10.5 * detector.start_loss]).startswith("training loss")
    assert resumed.first_divergence([7], [9 * detector.start_loss]) is None
    assert "nan" in resumed.first_divergence([7], [float("nan")])
