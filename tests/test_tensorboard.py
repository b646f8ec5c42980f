"""logger=tensorboard: a real run's event files read back with TensorBoard's own event reader."""

from __future__ import annotations

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import REPO
from reslab.job import read_metrics_csv


def logger_names(choice: str) -> list[str]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return list(compose(config_name="train", overrides=[f"logger={choice}"]).logger)


@pytest.mark.parametrize(
    "choice, names",
    [
        ("tensorboard", ["csv", "tensorboard"]),  # metrics.csv always: the report reads it
        ("[csv,tensorboard]", ["csv", "tensorboard"]),
        ("[default,tensorboard]", ["csv", "wandb", "tensorboard"]),
    ],
)
def test_tensorboard_combines_with_the_other_loggers(choice, names):
    assert logger_names(choice) == names


def csv_curve(rows: list[dict[str, float]], name: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), row[name]) for row in rows if name in row]


def test_tensorboard_run_holds_every_step_every_validation_and_the_config(train, tmp_path):
    train(
        "logger=[default,tensorboard]",
        "trainer.max_steps=12",
        "trainer.val_check_interval=4",
        "optimizer.lr=0.03",
        "model.depth=8",
        "hydra.run.dir=job",
    )
    job = tmp_path / "job"
    assert (job / "metrics.csv").is_file() and list((job / "wandb").glob("offline-run-*"))
    events = EventAccumulator(str(job / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()

    rows = read_metrics_csv(job / "metrics.csv")
    for name in ("train/loss", "train/err", "val/err", "val/loss", "test/err"):
        steps, values = zip(*csv_curve(rows, name))
        assert [event.step for event in events.Scalars(name)] == list(steps), name
        assert [event.value for event in events.Scalars(name)] == pytest.approx(values), name
    assert [step for step, _ in csv_curve(rows, "train/err")] == list(range(12))  # every step
    assert len(events.Scalars("val/err")) == 3  # every validation

    content = events.PluginTagToContent("hparams")
    hparams = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info.hparams
    config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    assert hparams["optimizer/lr"].number_value == config["optimizer"]["lr"] == 0.03
    assert hparams["model/depth"].number_value == 8
    assert hparams["data/_target_"].string_value == config["data"]["_target_"]
    assert hparams["trainer/max_steps"].number_value == 12
    # resolved as the job ran it: num_classes interpolated from the data config
    assert hparams["model/num_classes"].number_value == 10
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == ["val/err", "val/loss"]
    assert "hp_metric" not in events.Tags()["scalars"]
