"""The debug presets (conf/debug/): real runs of each, and Lightning's debug knobs as plain overrides."""

from __future__ import annotations

import json
import re

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import REPO
from reslab.job import read_metrics_csv


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_lightning_debug_knobs_need_no_plus():
    cfg = compose_train(
        "trainer.fast_dev_run=3",
        "trainer.overfit_batches=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=0.5",
        "trainer.limit_test_batches=2",
        "trainer.profiler=simple",
    )
    assert (cfg.trainer.fast_dev_run, cfg.trainer.overfit_batches) == (3, 2)
    assert (cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches, cfg.trainer.limit_test_batches) == (
        5,
        0.5,
        2,
    )
    assert cfg.trainer.profiler == "simple"


def test_a_debug_preset_wins_over_the_experiment():
    cfg = compose_train("experiment=digits_degradation", "debug=overfit")
    assert cfg.trainer.overfit_batches == 4 and cfg.trainer.max_steps == 300  # the experiment has 600
    assert cfg.data.augment is False and cfg.experiment_name == "digits_degradation"


def test_debug_fast_runs_one_batch_of_each_stage(train, tmp_path):
    train("debug=fast", "hydra.run.dir=job")
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == 1
    # One batch of 32 images scored in validation and in test (the splits hold 270 each).
    for name in ("val/err", "test/err"):
        wrong = 32 * results["metrics"][name]
        assert abs(wrong - round(wrong)) < 1e-6, (name, results["metrics"][name])
    # Lightning's fast_dev_run logs nothing.
    assert not (tmp_path / "job" / "metrics.csv").exists()


def test_debug_overfit_drives_the_training_loss_to_zero(train, tmp_path):
    train("debug=overfit", "trainer.max_steps=60", "hydra.run.dir=job")
    losses = [row["train/loss"] for row in read_metrics_csv(tmp_path / "job" / "metrics.csv") if "train/loss" in row]
    assert len(losses) == 60
    assert losses[0] > 1.0 and max(losses[-5:]) < 0.02, losses[::10]
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "completed" and "test/err" not in results["metrics"]


def test_debug_profile_writes_its_report_into_the_job_folder(train, tmp_path):
    train("debug=profile", "trainer.max_steps=10", "hydra.run.dir=job")
    report = (tmp_path / "job" / "fit-profile.txt").read_text()
    assert report.startswith("FIT Profiler Report")
    # Lightning's simple profiler: one row per timed action, with its number of calls.
    (row,) = [line for line in report.splitlines() if re.match(r"\|\s+run_training_batch\s", line)]
    assert [cell.strip() for cell in row.split("|")][3] == "10"
    assert (tmp_path / "job" / "test-profile.txt").is_file()
