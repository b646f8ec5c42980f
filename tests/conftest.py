"""Shared fixtures: run the real CLIs in a scratch folder, with small, fast settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Settings that make a run take seconds: few steps, no progress bar, one thread per process.
FAST = [
    "trainer.max_steps=6",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "data.batch_size=32",
]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "WANDB_MODE": env.get("WANDB_MODE", "offline"),
            "WANDB_SILENT": "true",
            "HYDRA_FULL_ERROR": "1",
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.pop("WANDB_API_KEY", None)
    env.update(extra)
    # A None value unsets the variable (e.g. WANDB_MODE=None lets a run choose its own mode).
    for name in [name for name, value in extra.items() if value is None]:
        del env[name]
    return env


def run_cli(module: str, args: list[str], cwd: Path, timeout: int = 300, check: bool = True, **env: str):
    """Run `python -m MODULE ARGS` in `cwd`; return the CompletedProcess (stdout+stderr text)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(autouse=True)
def _hydra_version_base_per_test():
    """Hydra's `initialize*(version_base=...)` sets the version base for the whole process and
    never restores it; Hydra's own plugin test suites (the node_parallel launcher's) expect the
    unset default. Each test starts from the base the one before it found."""
    from hydra.version import VersionBase

    saved = VersionBase.instance().getbase()
    yield
    VersionBase.instance().version_base = saved


@pytest.fixture
def train(tmp_path):
    """`train(*overrides)` runs reslab-train in tmp_path and returns the process."""

    def _train(*args: str, check: bool = True, fast: bool = True, **env: str):
        # Hydra's flags (-m, --cfg) must come before the overrides.
        flags = [a for a in args if a.startswith("-")]
        overrides = [a for a in args if not a.startswith("-")]
        return run_cli("reslab.train", [*flags, *(FAST if fast else []), *overrides], tmp_path, check=check, **env)

    return _train


@pytest.fixture
def report(tmp_path):
    def _report(*args: str, check: bool = True):
        return run_cli("reslab.report.cli", list(args), tmp_path, check=check)

    return _report
