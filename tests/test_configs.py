"""Every config group option composes with the real Hydra app config, and what it builds fits."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf, read_write

from conftest import REPO

CONF = REPO / "conf"
# Options that need files or weights that a test has to write first; composed, not built.
NEEDS_FILES = {
    ("data", "cifar10"),
    ("data", "cifar100"),
    ("data", "mnist"),
    ("data", "fashion_mnist"),
    ("data", "imagenet"),
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def resolved(cfg, node: str):
    """A node of the config with interpolations (paths, hydra:) resolved as in a real job."""
    from hydra.core.hydra_config import HydraConfig

    with read_write(cfg.hydra):
        cfg.hydra.runtime.output_dir = "/tmp/reslab-compose-test"
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.to_container(cfg[node], resolve=True)


@pytest.mark.parametrize(
    "group", ["model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment"]
)
def test_every_option_composes_and_resolves(group):
    for option in options(group):
        cfg = compose_train([f"{group}={option}"])
        assert cfg.hydra.runtime.choices[group] == option
        # every object the job builds names a class or function that exists
        targets = [resolved(cfg, node)["_target_"] for node in ("model", "data", "optimizer", "scheduler", "trainer")]
        for node in ("callbacks", "logger"):
            named = resolved(cfg, node)
            assert named and all(isinstance(entry, dict) for entry in named.values()), (group, option, node)
            targets += [entry["_target_"] for entry in named.values()]
        for target in targets:
            assert callable(get_object(target)), (group, option, target)
        if group == "experiment":
            assert cfg.experiment_name == option, "a preset names its sweep folder and W&B group after itself"


@pytest.mark.parametrize("data", [d for d in options("data") if ("data", d) not in NEEDS_FILES])
@pytest.mark.parametrize("model", ["plain", "resnet", "preact"])
def test_model_output_matches_data(model, data):
    cfg = compose_train([f"model={model}", f"data={data}", "model.depth=8" if data != "imagenet" else "model.depth=18"])
    net = instantiate(resolved(cfg, "model"))
    assert isinstance(net, torch.nn.Module)
    datamodule = instantiate(resolved(cfg, "data"))
    c, s = cfg.data.in_channels, cfg.data.image_size
    with torch.no_grad():
        logits = net.eval()(torch.zeros(2, c, s, s))
    assert logits.shape == (2, cfg.data.num_classes)
    assert datamodule.num_classes == cfg.data.num_classes


def test_digits_degradation_defines_the_grid():
    cfg = compose_train(["experiment=digits_degradation"])
    params = cfg.hydra.sweeper.params
    assert params["model"] == "plain,resnet"
    assert params["model.depth"] == "8,20,56"
    assert cfg.experiment_name == "digits_degradation"
    assert cfg.data.num_classes == 10 and cfg.model.num_classes == 10


def test_the_sweeps_hydra_callbacks_can_be_pickled_again_after_hydras_plugin_scan():
    # A SLURM job unpickles its launcher, with these callbacks, before Hydra scans its plugins;
    # the scan executes every module under hydra_plugins again as a new module, and a requeue
    # (submitit's checkpoint) then pickles the callbacks once more. A fresh interpreter, because
    # the scan happens once a process.
    script = f"""
import cloudpickle
from hydra.core.plugins import Plugins
from hydra.utils import instantiate
from omegaconf import OmegaConf

nodes = OmegaConf.load({str(CONF / "hydra" / "default.yaml")!r}).callbacks
callbacks = {{name: instantiate(node) for name, node in nodes.items()}}
Plugins.instance()
for name, callback in callbacks.items():
    try:
        cloudpickle.dumps(callback)
    except Exception as error:
        raise SystemExit(f"hydra.callbacks.{{name}}: {{type(error).__name__}}: {{error}}")
print(sorted(callbacks))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sweep_owner" in done.stdout
