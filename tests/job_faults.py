"""Lightning callbacks that make a job meet a fault at a known point of its life, added to a real
`reslab-train` run through the config's `callbacks` group (`+callbacks.fault._target_=job_faults.X`)
with this folder on PYTHONPATH."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import lightning.pytorch as pl


def fill_disk(folder: str | os.PathLike) -> None:
    """Write into `folder` until its filesystem has no space left."""
    chunk = b"\0" * (1 << 20)
    with open(Path(folder) / "filler", "ab", buffering=0) as handle:
        while len(chunk) >= 512:
            try:
                handle.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]


class SignalAt(pl.Callback):
    """Sends this process `signum` at `hook`: `init` (while the task builds the trainer, before
    fit), `setup_fit` / `setup_test` (Lightning's setup of each stage), `test_start`."""

    def __init__(self, hook: str, signum: int = int(signal.SIGTERM)) -> None:
        self.hook, self.signum = hook, int(signum)
        self._fire("init")

    def _fire(self, hook: str) -> None:
        if hook == self.hook:
            os.kill(os.getpid(), self.signum)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._fire(f"setup_{getattr(stage, 'value', stage)}")  # Lightning passes its TrainerFn

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fire("test_start")


class FillDiskAt(pl.Callback):
    """Fills the job folder's filesystem at `hook`: `after_first_checkpoint` (the first training
    batch that ends with checkpoints/last.ckpt on disk), or `test_end`."""

    def __init__(self, hook: str) -> None:
        self.hook = hook
        self._filled = False

    def _fill(self, trainer: pl.Trainer) -> None:
        if not self._filled:
            self._filled = True
            fill_disk(trainer.default_root_dir)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        if self.hook == "after_first_checkpoint" and last.exists():
            self._fill(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.hook == "test_end":
            self._fill(trainer)
