"""The paper presets: each composes to the paper's recipe, its grid builds the paper's networks,
its smoke variant runs end to end; and the ResNet-110 warm-up callback switches the lr at the
step the training error first drops below 80%."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, read_write
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.io import encode_jpeg, write_file

from conftest import REPO
from reslab.callbacks.warmup import WarmupUntilError
from reslab.checks import instantiate as reslab_instantiate
from reslab.data import write_cifar_like, write_mnist_like
from reslab.errors import ConfigError
from reslab.job import read_metrics_csv
from reslab.models import count_parameters
from reslab.module import ClassificationModule
from reslab.report import paper
from reslab.schedules import multistep

CONF = REPO / "conf"
PRESETS = ("cifar_table6", "imagenet_table2", "imagenet_table3", "preact_cifar", "mnist_transfer")


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with read_write(cfg.hydra):
        cfg.hydra.runtime.output_dir = "/tmp/reslab-compose-test"
    HydraConfig.instance().set_config(cfg)
    return cfg


def resolved(cfg, node: str):
    return OmegaConf.to_container(cfg[node], resolve=True)


def grid(cfg) -> dict[str, list[str]]:
    return {key: str(value).split(",") for key, value in cfg.hydra.sweeper.params.items()}


def recipe(cfg) -> dict:
    """What a preset fixes about training, whatever network it trains."""
    return {
        "optimizer": resolved(cfg, "optimizer"),
        "scheduler": resolved(cfg, "scheduler"),
        "trainer": {k: v for k, v in resolved(cfg, "trainer").items() if k != "default_root_dir"},
        "data": {k: v for k, v in resolved(cfg, "data").items() if k != "root"},
    }


def build(cfg) -> nn.Module:
    return instantiate(resolved(cfg, "model"))


# ----------------------------------------------------------------------------- the recipes


def test_cifar_table6_is_the_papers_recipe():
    cfg = compose_train(["experiment=cifar_table6"])
    data, optimizer, scheduler, trainer = cfg.data, cfg.optimizer, cfg.scheduler, cfg.trainer
    assert data._target_ == "reslab.data.CIFAR10DataModule"
    assert data.batch_size == 128 and trainer.get("devices", 1) == 1
    assert 50_000 - data.val_size == 45_000 and data.val_size == 5_000  # 45k/5k split; 10k test
    assert data.normalize == "per_pixel_mean"
    assert data.augment == "crop_flip" and data.crop_padding == 4
    assert optimizer._target_ == "torch.optim.SGD"
    assert (optimizer.lr, optimizer.momentum, optimizer.weight_decay, optimizer.nesterov) == (0.1, 0.9, 1e-4, False)
    assert list(scheduler.milestones) == [32_000, 48_000] and scheduler.gamma == 0.1
    assert scheduler.interval == "step" and scheduler.warmup_iters == 0
    assert trainer.max_steps == 64_000 and trainer.max_epochs == -1
    warmup = cfg.callbacks.warmup_until_error
    assert (warmup.factor, warmup.error_threshold, list(warmup.only_depths)) == (0.1, 0.8, [110])
    assert grid(cfg) == {"model": ["plain", "resnet"], "model.depth": ["20", "32", "44", "56", "110"]}
    assert cfg.experiment_name == "cifar_table6"


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_table6_grid_builds_table6s_networks(depth):
    plain = build(compose_train(["experiment=cifar_table6", "model=plain", f"model.depth={depth}"]))
    resnet = build(compose_train(["experiment=cifar_table6", "model=resnet", f"model.depth={depth}"]))
    assert plain.spec.shortcut == "none" and resnet.spec.shortcut == "A"
    assert plain.spec.style == resnet.spec.style == "cifar" and plain.depth == resnet.depth == depth
    # Table 6's exact parameter counts; option A adds none, so plain-N has the same.
    assert count_parameters(resnet) == count_parameters(plain) == paper.CIFAR_PARAMS[depth]


def test_imagenet_table2_is_the_papers_recipe():
    cfg = compose_train(["experiment=imagenet_table2"])
    data, optimizer, scheduler, trainer = cfg.data, cfg.optimizer, cfg.scheduler, cfg.trainer
    assert data._target_ == "reslab.data.ImageNetDataModule"
    # batch 256 = 32 per device x 8 devices, one process per device
    assert data.batch_size * trainer.devices * trainer.num_nodes == 256 and trainer.strategy == "ddp"
    assert list(data.resize_range) == [256, 480] and data.image_size == 224 and data.augment is True
    assert data.ten_crop_test is True and data.val_resize == 256
    assert (optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (0.1, 0.9, 1e-4)
    assert list(scheduler.milestones) == [30, 60] and scheduler.interval == "epoch" and scheduler.gamma == 0.1
    assert trainer.max_steps == 600_000 and trainer.max_epochs == 120
    # 60e4 iterations of 256 images are ~120 epochs of the 1.28M training images
    assert round(trainer.max_steps * 256 / 1_281_167) == trainer.max_epochs
    assert grid(cfg) == {"model": ["plain", "resnet"], "model.depth": ["18", "34"]}


@pytest.mark.parametrize("depth, params", [(18, 11_515_688), (34, 21_623_848)])
def test_imagenet_table2_grid_builds_plain_and_option_a_nets(depth, params):
    plain = build(compose_train(["experiment=imagenet_table2", "model=plain", f"model.depth={depth}"]))
    resnet = build(compose_train(["experiment=imagenet_table2", "model=resnet", f"model.depth={depth}"]))
    assert (plain.spec.shortcut, resnet.spec.shortcut) == ("none", "A")
    assert plain.spec.style == resnet.spec.style == "imagenet"
    assert count_parameters(plain) == count_parameters(resnet) == params


def test_imagenet_table3_rows_and_recipe():
    cfg = compose_train(["experiment=imagenet_table3"])
    rows = grid(cfg)["table3_net"]
    assert rows == ["resnet34_A", "resnet34_B", "resnet34_C", "resnet50_B", "resnet101_B", "resnet152_B"]
    expected = {(34, "A"), (34, "B"), (34, "C"), (50, "B"), (101, "B"), (152, "B")}
    got = set()
    for row in rows:
        model = resolved(compose_train(["experiment=imagenet_table3", f"table3_net={row}"]), "model")
        got.add((model["depth"], model["shortcut"]))
        assert model["stride_in_1x1"] is True and model["style"] == "imagenet"
    assert got == expected
    # The same training recipe as Table 2, number for number.
    assert recipe(cfg) == recipe(compose_train(["experiment=imagenet_table2"]))


@pytest.mark.parametrize("row, params", [("resnet34_B", 21_797_672), ("resnet50_B", 25_557_032)])
def test_imagenet_table3_builds_the_papers_sizes(row, params):
    net = build(compose_train(["experiment=imagenet_table3", f"table3_net={row}"]))
    assert count_parameters(net) == params


def test_preact_cifar_pairs_depth_and_unit_and_keeps_the_cifar_recipe():
    cfg = compose_train(["experiment=preact_cifar"])
    assert grid(cfg) == {
        "model.preact": ["false", "true"],
        "model.depth": ["110", "164"],
        "seed": ["0", "1", "2", "3", "4"],
    }
    for depth, block in ((110, "basic"), (164, "bottleneck")):
        for preact in (False, True):
            net = build(compose_train(["experiment=preact_cifar", f"model.depth={depth}", f"model.preact={preact}"]))
            assert (net.depth, net.spec.block, net.spec.order == "pre") == (depth, block, preact)
    assert cfg.callbacks.warmup_until_error.only_depths is None
    table6 = recipe(compose_train(["experiment=cifar_table6"]))
    assert recipe(cfg) == table6


def test_mnist_transfer_compares_two_starts_with_the_same_budget():
    starts = {}
    for init in grid(compose_train(["experiment=mnist_transfer"]))["init"]:
        cfg = compose_train(["experiment=mnist_transfer", f"init={init}"])
        starts[init] = resolved(cfg, "model")["weights"], recipe(cfg)
    assert {init: weights for init, (weights, _) in starts.items()} == {"pretrained": "IMAGENET1K_V1", "random": None}
    assert starts["pretrained"][1] == starts["random"][1]
    model = resolved(compose_train(["experiment=mnist_transfer"]), "model")
    assert (model["name"], model["in_channels"], model["num_classes"]) == ("resnet18", 1, 10)


def test_pretrained_weights_missing_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    model = resolved(compose_train(["experiment=mnist_transfer", "init=pretrained"]), "model")
    with pytest.raises(ConfigError, match="torch hub cache"):
        reslab_instantiate(model)


@pytest.mark.parametrize("preset", PRESETS)
def test_smoke_variant_shrinks_the_run_not_the_recipe(preset):
    full, smoke = compose_train([f"experiment={preset}"]), compose_train([f"experiment={preset}_smoke"])
    assert smoke.experiment_name == f"{preset}_smoke"
    assert smoke.trainer.max_steps <= 12 and smoke.trainer.accelerator == "cpu"
    assert resolved(smoke, "optimizer") == resolved(full, "optimizer")
    assert smoke.scheduler._target_ == full.scheduler._target_ and smoke.scheduler.interval == full.scheduler.interval
    assert set(grid(smoke)) == set(grid(full))
    assert set(smoke.callbacks) == set(full.callbacks)


# ----------------------------------------------------------------------------- the warm-up callback


class FixedPredictions(nn.Module):
    """Logits are the input, so every batch's training error is set by the data; the one
    parameter shifts all logits alike (zero gradient), giving the optimiser something to hold."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.shift = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def batches_with_errors(errors: list[float], batch: int = 10) -> TensorDataset:
    """One batch per entry, in order: the network predicts class 0; a share `error` of the
    batch is labelled 1."""
    images, labels = [], []
    for error in errors:
        wrong = round(error * batch)
        images.append(torch.nn.functional.one_hot(torch.zeros(batch, dtype=torch.long), 10).float() * 5)
        labels.append(torch.tensor([1] * wrong + [0] * (batch - wrong)))
    return TensorDataset(torch.cat(images), torch.cat(labels))


class LrRecorder(pl.Callback):
    """The lr each optimiser step uses."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


# training error per step: first below 80% at step 3 (index), then noisy again
ERRORS = [0.9, 0.9, 0.8, 0.7, 0.9, 0.9, 0.5, 0.5, 0.4, 0.3]


def fit_with_warmup(warmup: WarmupUntilError, depth: int = 110, max_steps: int = 10, ckpt_path=None, trainer_dir=None):
    recorder = LrRecorder()
    module = ClassificationModule(
        FixedPredictions(depth),
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        scheduler=partial(multistep, milestones=[8], interval="step"),
        num_classes=10,
    )
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[warmup, recorder],
        default_root_dir=trainer_dir,
        log_every_n_steps=1,  # the rule acts where the step values are flushed
    )
    loader = DataLoader(batches_with_errors(ERRORS), batch_size=10, shuffle=False)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer, recorder.lrs


def test_warmup_switches_at_the_first_step_below_80_percent():
    warmup = WarmupUntilError(factor=0.1, error_threshold=0.8, only_depths=[110])
    _, lrs = fit_with_warmup(warmup)
    # steps 0-3 at 0.01; step 3's error 0.7 < 0.8 ends it (0.8 itself does not); from step 8
    # the milestone divides the restored 0.1 by 10
    assert lrs == pytest.approx([0.01] * 4 + [0.1] * 4 + [0.01] * 2)
    assert warmup.switch_step == 4 and warmup.state == "done"


def test_warmup_scales_a_milestone_that_falls_inside_it():
    warmup = WarmupUntilError(error_threshold=0.45, only_depths=None)
    _, lrs = fit_with_warmup(warmup)
    # still warming up when the milestone at 8 divides by 10: 0.01 -> 0.001, then x10 after
    # step 8 (error 0.4): 0.01, the schedule's own value
    assert lrs == pytest.approx([0.01] * 8 + [0.001, 0.01])


def test_warmup_window_averages_steps():
    warmup = WarmupUntilError(window=2)
    _, lrs = fit_with_warmup(warmup)
    # means of two steps: (0.8+0.7)/2 = 0.75 after step 3
    assert lrs[:5] == pytest.approx([0.01] * 4 + [0.1])


def test_warmup_leaves_other_depths_alone():
    warmup = WarmupUntilError(only_depths=[110])
    _, lrs = fit_with_warmup(warmup, depth=20)
    assert lrs == pytest.approx([0.1] * 8 + [0.01] * 2)
    assert warmup.state == "inactive"


def test_warmup_resumes_without_scaling_twice(tmp_path):
    first = WarmupUntilError()
    trainer, lrs = fit_with_warmup(first, max_steps=2, trainer_dir=tmp_path)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    assert lrs == pytest.approx([0.01, 0.01]) and first.state == "warming_up"
    resumed = WarmupUntilError()
    _, lrs = fit_with_warmup(resumed, ckpt_path=str(tmp_path / "mid.ckpt"), trainer_dir=tmp_path)
    # Steps 2..9. Lightning replays this loader from its start after a mid-epoch checkpoint, so
    # the switch step depends on it; what matters: still warming up at 0.01 (not scaled again
    # to 0.001), 0.1 after the switch, and the milestone at step 8 as scheduled.
    switch = resumed.switch_step - 2
    assert 2 < resumed.switch_step <= 8
    assert lrs == pytest.approx([0.01] * switch + [0.1] * (6 - switch) + [0.01] * 2)


@pytest.mark.parametrize("kwargs", [{"factor": 1.5}, {"error_threshold": 80}, {"window": 0}])
def test_warmup_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        WarmupUntilError(**kwargs)


# ----------------------------------------------------------------------------- smoke runs through the CLI

CPU_QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


def sweep_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "multirun").glob("*/*") if p.is_dir())


@pytest.mark.slow
def test_cifar_table6_smoke_sweep_and_its_table6_report(train, report, tmp_path):
    data = write_cifar_like(tmp_path / "tiny_cifar", n_train=60, n_test=20)
    train("-m", "experiment=cifar_table6_smoke", f"data.root={data}", *CPU_QUIET, fast=False)
    (sweep,) = sweep_dirs(tmp_path)
    assert sweep.name.endswith("_cifar_table6_smoke")
    jobs = {p.parent.name: json.loads((p.parent / "results.json").read_text()) for p in sweep.rglob(".hydra")}
    assert sorted(jobs) == sorted(f"model.depth={d},model={m}" for d in (20, 110) for m in ("plain", "resnet"))
    assert {r["status"] for r in jobs.values()} == {"completed"}
    # plain and ResNet of a depth: same parameters (option A), different networks
    assert jobs["model.depth=110,model=plain"]["params"] == jobs["model.depth=110,model=resnet"]["params"]
    # the warm-up acts on the 110-layer jobs only: their first step runs at 0.1 x 0.1
    for name, lr in (("model.depth=110,model=resnet", 0.01), ("model.depth=20,model=resnet", 0.1)):
        first = next(r for r in read_metrics_csv(sweep / name / "metrics.csv") if "lr-SGD" in r)
        assert first["lr-SGD"] == pytest.approx(lr), name

    out = report(str(sweep)).stdout
    assert "Table 6: CIFAR-10 test error" in out
    table6 = out.split("## Table 6")[1].split("\n## ")[0]
    rows = {
        cells[0]: cells[1:]
        for cells in (
            [c.strip() for c in line.split("|")[1:-1]] for line in table6.splitlines() if line.startswith("| ResNet-")
        )
    }
    assert list(rows) == ["ResNet-20", "ResNet-32", "ResNet-44", "ResNet-56", "ResNet-110", "ResNet-1202"]
    for depth, paper_error in paper.CIFAR_TABLE6.items():
        layers, params, paper_params, ours, paper_col, delta, nabla, akamaster = rows[f"ResNet-{depth}"]
        assert paper_col == f"{paper_error:.2f}" and paper_params == f"{paper.CIFAR_PARAMS[depth]:,}"
        if depth in (20, 110):
            ours_value = 100 * jobs[f"model.depth={depth},model=resnet"]["metrics"]["test/err"]
            assert float(ours) == pytest.approx(ours_value, abs=0.006)
            assert float(delta) == pytest.approx(ours_value - paper_error, abs=0.011)
        else:
            assert ours == "—" and delta == ""
    assert rows["ResNet-110"][6] == "7.14" and rows["ResNet-110"][7] == "6.32"
    assert "| plain-110 |" in out
    # one seed per network: no intervals, and the paper's numbers cannot be tested against one run
    assert "comparisons need 2+ seeds of each" in out and "needs 2+ seeds" in out.split("## Against the paper")[1]
    assert "## Degradation\n\nToo few seeds to judge the degradation problem" in out
    assert (sweep / "figure6_cifar10.png").stat().st_size > 10_000
    with (sweep / "results.csv").open() as handle:
        assert {row["shortcut"] for row in csv.DictReader(handle) if row["model"] == "plain"} == {"none"}


def write_image_tree(root: Path, classes: int = 6, train: int = 2, val: int = 1) -> Path:
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=generator)
                write_file(str(folder / f"{i}.JPEG"), encode_jpeg(pixels))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["imagenet_table2", "imagenet_table3", "preact_cifar", "mnist_transfer"])
def test_smoke_sweeps_of_the_other_presets_run_and_report(preset, train, report, tmp_path):
    data_dir = tmp_path / "data"
    if preset.startswith("imagenet"):
        write_image_tree(data_dir / "tiny_imagenet")
    elif preset == "preact_cifar":
        write_cifar_like(data_dir / "tiny_cifar", n_train=60, n_test=20)
    else:
        write_mnist_like(data_dir / "tiny_mnist", n_train=60, n_test=20)
        import torchvision

        torch.save(torchvision.models.resnet18().state_dict(), data_dir / "resnet18.pth")
    train("-m", f"experiment={preset}_smoke", f"paths.data_dir={data_dir}", *CPU_QUIET, fast=False)
    (sweep,) = sweep_dirs(tmp_path)
    statuses = [json.loads(p.read_text())["status"] for p in sweep.rglob("results.json")]
    assert statuses and set(statuses) == {"completed"}
    out = report(str(sweep)).stdout
    heading = {
        "imagenet_table2": "Table 2: ImageNet val top-1 error",
        "imagenet_table3": "Table 3: ImageNet val error",
        "preact_cifar": "Table 2: CIFAR-10 test error (%) of residual unit variants",
        "mnist_transfer": "Pretrained vs random initialisation",
    }[preset]
    assert heading in out
    assert list(sweep.glob("*.png"))
