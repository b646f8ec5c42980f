"""GradientNormMonitor in a real (tiny) Lightning run, and the report that reads its metrics."""

import csv
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reslab.callbacks.grad_norms import GradientNormMonitor, find_units
from reslab.errors import ConfigError
from reslab.report.gradients import (
    describe_gradient_norms,
    plot_gradient_norms,
    plot_response_stds,
    read_unit_profiles,
    summarize_gradient_norms,
)

UNITS = ["000_stem", "001_layer1.0", "002_layer1.1", "003_layer2.0", "004_fc"]
LOGGED_STEPS = {0, 2, 4}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)) + x)


class TinyNet(nn.Module):
    """torchvision's naming: conv1/bn1, stages layer1/layer2, fc."""

    def __init__(self, channels: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(Block(channels), Block(channels))
        self.layer2 = nn.Sequential(Block(channels))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean((2, 3)))


class TinyModule(pl.LightningModule):
    """Records, independently of the callback, what the callback should have logged."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.hooks_seen: dict[int, int] = {}
        self.logits_std: dict[int, float] = {}
        self.layer2_grad_norm: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.hooks_seen[self.global_step] = len(self.net.layer1[0]._forward_hooks)
        logits = self.net(images)
        self.logits_std[self.global_step] = logits.detach().std().item()
        loss = F.cross_entropy(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def on_before_optimizer_step(self, optimizer):
        grads = torch.cat([p.grad.flatten() for p in self.net.layer2.parameters()])
        self.layer2_grad_norm[self.global_step] = grads.norm().item()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module: pl.LightningModule, log_dir, callback: GradientNormMonitor) -> CSVLogger:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,)))
    logger = CSVLogger(log_dir, name="", version="")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=6,
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    return logger


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    module = TinyModule(TinyNet())
    logger = fit(module, tmp_path_factory.mktemp("run"), GradientNormMonitor(every_n_steps=2))
    metrics_csv = Path(logger.log_dir) / "metrics.csv"
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return module, metrics_csv, rows


def steps_with(rows, key):
    return {int(row["step"]) for row in rows if row.get(key, "") != ""}


def test_one_value_per_unit_at_every_second_step(run):
    _, _, rows = run
    for unit in UNITS:
        assert steps_with(rows, f"grad_norm/{unit}") == LOGGED_STEPS
        assert steps_with(rows, f"response_std/{unit}") == LOGGED_STEPS
    unit_columns = [k for k in rows[0] if k.startswith(("grad_norm/", "response_std/"))]
    assert len(unit_columns) == 2 * len(UNITS)
    # Lightning's own metrics still arrive in their rows, at every step.
    assert steps_with(rows, "train/loss") == set(range(6))


def test_logged_values_are_the_true_norms_and_stds(run):
    module, metrics_csv, _ = run
    grads = read_unit_profiles(metrics_csv, "grad_norm")
    stds = read_unit_profiles(metrics_csv, "response_std")
    for step in LOGGED_STEPS:
        by_name = {name: value for _, name, value in grads[step]}
        assert by_name["layer2.0"] == pytest.approx(module.layer2_grad_norm[step], rel=1e-5)
        assert stds[step][-1][1:] == ("fc", pytest.approx(module.logits_std[step], rel=1e-5))
        assert all(value > 0 and math.isfinite(value) for _, _, value in grads[step])


def test_response_hooks_exist_only_on_logged_steps(run):
    module, _, _ = run
    assert module.hooks_seen == {0: 1, 1: 0, 2: 1, 3: 0, 4: 1, 5: 0}
    assert not module.net.layer1[0]._forward_hooks


def test_without_responses_only_gradient_norms_are_logged(tmp_path):
    module = TinyModule(TinyNet())
    logger = fit(module, tmp_path, GradientNormMonitor(every_n_steps=3, log_responses=False))
    with (Path(logger.log_dir) / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert not any(k.startswith("response_std/") for k in rows[0])
    assert steps_with(rows, "grad_norm/000_stem") == {0, 3}
    assert set(module.hooks_seen.values()) == {0}


def test_units_follow_torchvision_naming():
    torchvision = pytest.importorskip("torchvision")
    units = find_units(torchvision.models.resnet18())
    names = [u.name for u in units]
    assert names[0] == "stem" and names[-1] == "fc" and len(names) == 1 + 4 * 2 + 1
    assert names[1:3] == ["layer1.0", "layer1.1"]


def test_network_without_stages_is_rejected():
    with pytest.raises(ConfigError, match="layer1"):
        find_units(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ConfigError):
        GradientNormMonitor(every_n_steps=0)


def test_report_plots_and_summarizes(run, tmp_path):
    _, metrics_csv, _ = run
    runs = [("plain-tiny", metrics_csv), ("resnet-tiny", metrics_csv)]
    assert plot_gradient_norms(runs, tmp_path / "grads.png").read_bytes()[:8] == PNG_MAGIC
    assert plot_response_stds(runs, tmp_path / "stds.png").read_bytes()[:8] == PNG_MAGIC

    summary = summarize_gradient_norms(metrics_csv)
    early = summary["early"]
    assert (early["step"], summary["late"]["step"]) == (0, 4)
    assert (early["first_unit"], early["last_unit"]) == ("stem", "fc")
    assert early["first_over_last"] == pytest.approx(early["first"] / early["last"])
    line = describe_gradient_norms("plain-tiny", summary)
    assert line.startswith("plain-tiny: ") and "step 0" in line and "step 4" in line


def test_report_explains_missing_metrics(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        summarize_gradient_norms(tmp_path / "metrics.csv")
    (tmp_path / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    with pytest.raises(ConfigError, match="grad_norms"):
        summarize_gradient_norms(tmp_path / "metrics.csv")
