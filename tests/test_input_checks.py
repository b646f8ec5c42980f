"""Bad settings are refused before any work, alone and inside a sweep: the trainer's (judged by
Lightning), the optimiser's ranges, and the folder a job writes to. One line each, naming the
key and what is allowed, exit code 2, no traceback, the folder's lock let go. A batch larger than the training split is
allowed and said."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import REPO
from reslab.checks import check_settings
from reslab.errors import ConfigError
from reslab.job import LOCK_FILE

CONF = REPO / "conf"
# An accelerator Lightning knows that this machine does not have.
ABSENT_ACCELERATOR = "mps" if torch.cuda.is_available() else "gpu"

# (override, the key the message names, a word of what is allowed)
BAD_INPUTS = [
    ("trainer.precision=bogus", "trainer.precision", "32-true"),
    ("trainer.devices=0", "trainer.devices", ">= 1"),
    (f"trainer.accelerator={ABSENT_ACCELERATOR}", "trainer.accelerator", "cpu"),
    ("trainer.max_steps=-5", "trainer.max_steps", ">= 1"),
    ("trainer.max_steps=0", "trainer.max_steps", ">= 1"),
    ("optimizer.momentum=1.5", "optimizer.momentum", "[0, 1)"),
    ("optimizer.lr=0", "optimizer.lr", "> 0"),
    ("optimizer.weight_decay=-1e-4", "optimizer.weight_decay", ">= 0"),
    ("paths.output_dir=blocker/out", "paths.output_dir", "blocker is a file"),
    ("callbacks.checkpoint.every_n_train_steps=-1", "callbacks.checkpoint.every_n_train_steps=-1", ">= 0, or null"),
    # a key the target does not take: named, with the keys the config has
    ("+data.foo=1", "data.foo is not a setting of reslab.data.DigitsDataModule", "batch_size, crop_padding"),
    ("+model.widht=16", "model.widht is not a setting", "stride_in_1x1, style, width, zero_init_residual"),
]


def compose_job(*overrides: str, with_hydra: bool = False):
    """A job's config as Hydra composes it: a running job's own (no `hydra` node), or the
    launching process's copy of a sweep job (with it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=with_hydra)


def refusal(*overrides: str, with_hydra: bool = False) -> str:
    with pytest.raises(ConfigError) as error:
        check_settings(compose_job(*overrides, with_hydra=with_hydra))
    return str(error.value)


def error_lines(proc) -> list[str]:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    return [line for line in output.splitlines() if "configuration error" in line]


def trained_anything(folder: Path) -> bool:
    return any(folder.rglob("metrics.csv")) or any(folder.rglob("*.ckpt"))


# ----------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("override, key, allowed", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_in_one_line(train, tmp_path, override, key, allowed):
    (tmp_path / "blocker").write_text("a file where a folder should go")

    proc = train(override, "hydra.run.dir=job", check=False)

    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1
    assert key in lines[0] and allowed in lines[0]
    assert not trained_anything(tmp_path)
    # The refused run let its folder go: the next run there starts without taking over a lock.
    assert not (tmp_path / "job" / LOCK_FILE).exists()


def test_bad_inputs_stop_a_sweep_before_its_first_job(train, tmp_path):
    proc = train(
        "-m",
        "hydra.sweep.dir=sweep",
        "trainer.precision=bogus,32-true",
        "optimizer.lr=0,0.1",
        "callbacks.checkpoint.every_n_train_steps=5,-1",
        check=False,
    )

    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output
    # Seven of the eight jobs are bad, each named with its first fault (the values, in the config's
    # order, before Lightning judges the trainer's); the good one did not run either.
    assert output.count("optimizer.lr=0 must be a number > 0") == 4
    assert output.count("callbacks.checkpoint.every_n_train_steps=-1 must be a whole number >= 0") == 2
    assert output.count("trainer.precision='bogus': Lightning refuses it") == 1
    assert not trained_anything(tmp_path / "sweep") and not list((tmp_path / "sweep").rglob("results.json"))


def test_a_batch_larger_than_the_training_split_is_said(train, tmp_path):
    proc = train("data.batch_size=5000", "trainer.max_steps=2", "logger=csv", "hydra.run.dir=job")

    notes = [line for line in (proc.stdout + proc.stderr).splitlines() if "data.batch_size=5000" in line]
    # digits: 1,797 images, 15% each held out for validation and test.
    assert len(notes) == 1 and "1257 training examples" in notes[0]
    assert (tmp_path / "job" / "metrics.csv").exists()


# ----------------------------------------------------------------------------- the checks


def test_the_defaults_and_every_option_of_the_checked_groups_pass():
    for group in ("trainer", "optimizer"):
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            # Options for hardware this machine lacks are refused, rightly (see the CLI test).
            if (option == "gpu" and not torch.cuda.is_available()) or (
                option == "ddp" and torch.cuda.device_count() == 1
            ):
                continue
            check_settings(compose_job(f"{group}={option}"))


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
def test_every_optimizer_option_has_its_ranges_checked(option):
    keys = OmegaConf.load(CONF / "optimizer" / f"{option}.yaml")
    bad = {"lr": [0, -0.1], "momentum": [1.0, -0.1], "weight_decay": [-1e-4]}
    checked = [key for key in bad if key in keys]
    assert "lr" in checked and "weight_decay" in checked
    for key in checked:
        for value in bad[key]:
            assert f"optimizer.{key}={value}" in refusal(f"optimizer={option}", f"optimizer.{key}={value}")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be"),
        (["+trainer.strategy=bogus"], "trainer.strategy='bogus'"),
        (["trainer=ddp", "trainer.num_nodes=0"], "trainer.num_nodes=0"),
        (
            ["trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"],
            "trainer.sync_batchnorm=true needs GPUs",
        ),
        (["optimizer=adam", "+optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0] must be"),
    ],
    ids=["max_epochs", "strategy", "num_nodes", "sync_batchnorm", "betas"],
)
def test_other_trainer_and_optimizer_settings_are_checked(overrides, expected):
    assert expected in refusal(*overrides)


def test_a_sweep_for_another_machine_checks_names_not_this_machines_devices():
    slurm = ["hydra/launcher=slurm", f"trainer.accelerator={ABSENT_ACCELERATOR}"]
    check_settings(compose_job(*slurm, with_hydra=True))  # the launching process: the name is known
    assert "trainer.accelerator" in refusal(*slurm)  # the job on its node: this machine lacks it
    assert "trainer.precision='bogus'" in refusal(*slurm, "trainer.precision=bogus", with_hydra=True)
    assert "trainer.accelerator='gpux'" in refusal("hydra/launcher=slurm", "trainer.accelerator=gpux", with_hydra=True)
