"""`task=eval`: a checkpoint scored on the test split through the same job wrapper."""

from __future__ import annotations

import json

import pytest
from test_data import write_image_tree


def results(path):
    return json.loads((path / "results.json").read_text())


def test_eval_of_a_training_jobs_last_checkpoint_gives_its_test_error(train, tmp_path):
    train("logger=csv", "model.depth=8", "trainer.max_steps=12", "hydra.run.dir=trained")
    trained = results(tmp_path / "trained")
    train(
        "task=eval",
        "logger=csv",
        "model.depth=8",
        f"ckpt_path={tmp_path}/trained/checkpoints/last.ckpt",
        "hydra.run.dir=scored",
    )
    scored = results(tmp_path / "scored")
    assert scored["status"] == "completed" and scored["task"] == "eval" and scored["checkpoint_step"] == 12
    assert scored["metrics"]["test/err"] == trained["metrics"]["test/err"]
    assert scored["metrics"]["test/loss"] == trained["metrics"]["test/loss"]
    assert scored["steps"] == 0 and scored["params"] == trained["params"]


def test_eval_needs_weights_to_score(train):
    proc = train("task=eval", "logger=csv", "hydra.run.dir=nothing", check=False)
    assert proc.returncode == 2 and "task=eval scores trained weights" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_eval_on_an_image_folder_gives_centre_and_ten_crop_errors(train, tmp_path):
    root = write_image_tree(tmp_path / "imagenet", per_class=3, height=40, width=50)
    data = [
        "data=imagenet",
        f"data.root={root}",
        "data.num_classes=2",
        "data.image_size=32",
        "data.val_resize=36",
        "data.resize_range=[36,44]",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.pin_memory=false",
        "model.depth=8",
        "logger=csv",
    ]
    train(*data, "trainer.max_steps=2", "hydra.run.dir=trained")
    train(*data, "task=eval", f"ckpt_path={tmp_path}/trained/checkpoints/last.ckpt", "hydra.run.dir=scored")
    metrics = results(tmp_path / "scored")["metrics"]
    assert 0 <= metrics["test/err"] <= 1 and 0 <= metrics["test/err_10crop"] <= 1
    assert metrics["test/err"] == results(tmp_path / "trained")["metrics"]["test/err"]
