"""Every key of every config group is checked the same way (reslab.checks.VALUE_RULES): its type,
its range, a finite number where a number is meant, refused in one line that names the key and
what is allowed, exit code 2, before the job writes anything. A key that no rule covers and that is
not listed as free text fails the coverage test, so a new key comes with its rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from conftest import REPO
from reslab.checks import check_values, value_rule
from reslab.errors import ConfigError
from reslab.folder_lock import GUARD_SUFFIX

CONF = REPO / "conf"
GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "debug")


def compose_job(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def shipped_configs() -> list[list[str]]:
    """The main experiment, every experiment and recipe, and every option of every group."""
    experiments = sorted(
        str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").glob("*.yaml")
    )
    options = [f"{group}={p.stem}" for group in GROUPS for p in sorted((CONF / group).glob("*.yaml"))]
    return [[], *([f"experiment={name}"] for name in experiments), *([option] for option in options)]


def leaf_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        child = node._get_node(key)
        full = f"{prefix}{key}"
        keys += leaf_keys(child, f"{full}.") if isinstance(child, DictConfig) and not child._is_none() else [full]
    return keys


def test_every_key_of_every_shipped_config_has_a_rule():
    uncovered = set()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides in shipped_configs():
            cfg = compose(config_name="train", overrides=overrides)
            uncovered |= {key for key in leaf_keys(cfg) if value_rule(key) is None}
            check_values(cfg)  # and every shipped value keeps to its rule
    assert not uncovered, f"keys without a rule in reslab.checks.VALUE_RULES: {sorted(uncovered)}"


# (override, the words the one line must hold): a few of each kind of rule.
BAD_VALUES = [
    # whole numbers: type, range, bounds of the seed
    ("seed=99999999999999999999", "seed=99999999999999999999 must be a whole number in [0, 4294967295]"),
    ("seed=-1", "seed=-1 must be a whole number in [0, 4294967295]"),
    ("seed=1.5", "seed=1.5 must be a whole number"),
    ("seed=abc", "seed='abc' must be a whole number"),
    ("seed=true", "seed=True must be a whole number"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 must be a whole number >= 1"),
    ("trainer.max_steps=1e3", "trainer.max_steps=1000.0 must be a whole number >= 1"),
    ("trainer.max_epochs=-2", "trainer.max_epochs=-2 must be a whole number >= 1, or -1, or null"),
    ("data.batch_size=0", "data.batch_size=0 must be a whole number >= 1"),
    ("data.num_workers=-1", "data.num_workers=-1 must be a whole number >= 0"),
    ("model.depth=abc", "model.depth='abc' must be a whole number >= 1"),
    ("callbacks.checkpoint.save_top_k=-2", "callbacks.checkpoint.save_top_k=-2 must be a whole number >= -1"),
    ("scheduler.warmup_iters=-1", "scheduler.warmup_iters=-1 must be a whole number >= 0"),
    # numbers: finite, in range
    ("optimizer.lr=nan", "optimizer.lr=nan must be a number > 0"),
    ("optimizer.lr=inf", "optimizer.lr=inf must be a number > 0"),
    ("optimizer.lr=abc", "optimizer.lr='abc' must be a number > 0"),
    ("optimizer.momentum=-inf", "optimizer.momentum=-inf must be a number in [0, 1)"),
    ("optimizer.weight_decay=nan", "optimizer.weight_decay=nan must be a number >= 0"),
    ("scheduler.gamma=0", "scheduler.gamma=0 must be a number > 0"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be a number >= 0, or null"),
    ("callbacks.divergence.max_loss_factor=nan", "callbacks.divergence.max_loss_factor=nan must be a number"),
    # counts or fractions
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5 must be a count"),
    ("trainer.overfit_batches=nan", "trainer.overfit_batches=nan must be a count"),
    ("data.val_size=-3", "data.val_size=-3 must be a count"),
    # true or false
    ("test=maybe", "test='maybe' must be true or false"),
    ("trainer.enable_progress_bar=1", "trainer.enable_progress_bar=1 must be true or false"),
    ("model.preact=yes", "model.preact='yes' must be true or false"),
    # one of a few
    ("on_error=ignore", "on_error='ignore' must be one of auto, continue, raise"),
    ("task=bogus", "task='bogus' must be one of"),
    ("scheduler.interval=week", "scheduler.interval='week' must be one of step, epoch"),
    ("speed.channels_last=maybe", "speed.channels_last='maybe' must be one of true, false, auto"),
    ("speed.compile=fastest", "speed.compile='fastest' must be one of false, true, "),
    ("speed.float32_matmul_precision=low", "speed.float32_matmul_precision='low' must be one of auto"),
    ("model.shortcut=D", "model.shortcut='D' must be one of A, B, C, none"),
    ("data.normalize=zscore", "data.normalize='zscore' must be one of"),
    # lists
    ("scheduler.milestones=abc", "scheduler.milestones='abc' must be a list of whole numbers >= 0"),
    ("scheduler.milestones=[10,x]", "scheduler.milestones=[10, 'x'] must be a list of whole numbers >= 0"),
    ("scheduler.milestones=[10,-1]", "scheduler.milestones=[10, -1] must be a list of whole numbers >= 0"),
    ("+optimizer.betas=[0.9,nan]", "optimizer.betas=[0.9, nan] must be 2 numbers in [0, 1)"),
    ("+optimizer.betas=[0.9]", "optimizer.betas=[0.9] must be 2 numbers in [0, 1)"),
    # a speed setting that does not exist
    ("+speed.fast=true", "speed.fast is not a setting"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[case[0] for case in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as error:
        check_values(compose_job(override))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_interpolated_key_is_checked_where_its_value_is_set():
    # data.seed is ${seed}: the message names the key the user set.
    with pytest.raises(ConfigError, match=r"^seed=-5 must be"):
        check_values(compose_job("seed=-5"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=99999999999999999999", "seed=99999999999999999999 must be a whole number in [0, 4294967295]"),
        ("scheduler.milestones=abc", "scheduler.milestones='abc' must be a list of whole numbers >= 0"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 must be a whole number >= 1"),
        ("optimizer.lr=nan", "optimizer.lr=nan must be a number > 0"),
    ],
)
def test_the_cli_refuses_a_bad_value_before_the_job_writes_anything(train, tmp_path, override, message):
    proc = train(override, "hydra.run.dir=job", check=False)

    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "configuration error" in line]
    assert len(lines) == 1 and message in lines[0], output[-3000:]
    # Before any work: no job record, nothing trained, the folder's lock let go.
    written = sorted(str(p.relative_to(tmp_path)) for p in Path(tmp_path, "job").rglob("*") if ".hydra" not in p.parts)
    # The folder's guard file stays (reslab.folder_lock); the lock itself is gone.
    assert not [name for name in written if not name.endswith((".log", GUARD_SUFFIX))], written


@pytest.mark.parametrize(
    "override, message",
    [("data.foo=1", "Could not override 'data.foo'"), ("model=resnt", "Could not find 'model/resnt'")],
)
def test_a_key_or_option_the_config_lacks_is_hydras_error_exit_1(train, tmp_path, override, message):
    # Hydra refuses these while composing, before ResLab runs (README, "Exit codes").
    proc = train(override, "hydra.run.dir=job", check=False)

    assert proc.returncode == 1 and message in proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert not (tmp_path / "job").exists()
