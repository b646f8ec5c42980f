"""The schedule configs give the learning rates the recipes say, at the iterations they say."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from reslab.errors import ConfigError
from reslab.schedules import constant, cosine, multistep


def lrs(config: dict, steps: int) -> list[float]:
    """The lr the optimiser uses at each of the first `steps` iterations."""
    scheduler = config["scheduler"]
    optimizer = scheduler.optimizer
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_multistep_divides_by_ten_at_absolute_milestones():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    seen = lrs(multistep(opt, milestones=[3, 5]), 7)
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_warmup_keeps_milestones_absolute():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    config = multistep(opt, milestones=[4], warmup_iters=2, warmup_start_factor=0.1)
    seen = lrs(config, 6)
    assert seen[0] == pytest.approx(0.01)
    assert seen[2] == pytest.approx(0.1) and seen[3] == pytest.approx(0.1)
    assert seen[4] == pytest.approx(0.01)
    assert config["interval"] == "step"


def test_cosine_ends_at_eta_min_and_constant_stays():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    seen = lrs(cosine(opt, total_iters=10, eta_min=0.0), 11)
    assert seen[0] == pytest.approx(0.1) and seen[5] == pytest.approx(0.05) and seen[10] == pytest.approx(0.0, abs=1e-9)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert lrs(constant(opt, interval="epoch"), 5) == pytest.approx([0.1] * 5)


def test_scheduler_config_files_instantiate():
    from conftest import REPO

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for name in ("multistep", "cosine", "constant"):
        cfg = OmegaConf.load(REPO / "conf" / "scheduler" / f"{name}.yaml")
        cfg = OmegaConf.merge({"trainer": {"max_steps": 100}, "s": cfg}).s
        config = instantiate(cfg)(opt)
        assert config["interval"] == "step"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(milestones=[5, 3]), "increasing"),
        (dict(milestones=[3], interval="iteration"), "interval"),
        (dict(milestones=[3], warmup_iters=-1), "warmup_iters"),
    ],
)
def test_bad_schedule_settings_are_config_errors(kwargs, message):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match=message):
        multistep(opt, **kwargs)
