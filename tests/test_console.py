"""A quiet console: a default run prints none of the messages a user cannot act on, and the
warnings that matter (resume, divergence) still show."""

from __future__ import annotations

import logging
import os

from reslab.console import not_an_advertisement

# A default run's settings, with the progress bar on (the fixtures' FAST turns it off).
SHORT = ["trainer.accelerator=cpu", "data.batch_size=32"]
# What a default run printed before (Lightning 2.6, torch 2.14), and what must not come back.
NOISE = (
    "litlogger",
    "Tip:",
    "exists and is not empty. Previous log files in this directory will be deleted",
    "LeafSpec",
    "srun",
    "/-2",
    "is smaller than the logging interval",
)


def console_of(proc) -> str:
    return proc.stdout + proc.stderr


def test_default_run_is_quiet_and_real_warnings_still_show(train, tmp_path):
    # SLURM's tools on PATH, as on a cluster's login node; Python's warnings as a user sees them.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONWARNINGS": None}

    first = console_of(train("trainer.max_steps=12", "hydra.run.dir=job", *SHORT, fast=False, **env))
    for noise in NOISE:
        assert noise not in first, noise
    assert "Epoch 0, step 12/12" in first  # the progress bar of a run counted in steps
    assert first.count("GPU available:") == 1  # Lightning's lines once, not once per handler

    # The same job again with a longer budget resumes mid-epoch: Lightning's resume warning stays.
    again = console_of(train("trainer.max_steps=20", "hydra.run.dir=job", *SHORT, fast=False, **env))
    assert "resuming from" in again
    assert "You're resuming from a checkpoint that ended before the epoch ended" in again
    for noise in NOISE:
        assert noise not in again, noise

    diverged = train(
        "trainer.max_steps=5", "optimizer.lr=1e30", "hydra.run.dir=diverges", *SHORT, fast=False, check=False, **env
    )
    assert diverged.returncode != 0 and "run diverged: training loss is nan" in console_of(diverged)


def test_only_advertisements_are_dropped():
    def record(msg):
        return logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, "", 0, msg, None, None)

    assert not not_an_advertisement(
        record("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    )
    assert not_an_advertisement(record("GPU available: False, used: False"))
