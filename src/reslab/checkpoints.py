"""Checkpoints a job resumes from: which one, whether it fits the configured network, and what
it holds besides Lightning's own state so that a resumed run carries on where the last stopped.

Which checkpoint a job resumes from (`ckpt_path`) and how exactly it resumes are the README's
"Checkpoints and resume". Checkpoints are read with `weights_only=True` (reslab.safe_load):
no pickled code is executed. Lightning restores the loops, the optimiser and the schedule;
`ResumeState` the random number generators that draw the next epoch's data order (the data
loaders do not record their position within an epoch).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path
from typing import Any

import fsspec
import lightning.pytorch as pl
import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from reslab.atomic_files import atomic_writer
from reslab.errors import ConfigError, JobInterrupted
from reslab.job import LAST_CHECKPOINT, METRICS_FILE, read_metrics_csv
from reslab.safe_load import HoldsPythonObjects, NotATorchFile, load_tensors_only

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- which checkpoint


def resume_path(ckpt_path: str | None, job_dir: Path) -> Path | None:
    """An explicit `ckpt_path`, else the job's own last.ckpt when a rerun finds one; None: fresh.

    `ckpt_path=last` (Lightning's word) is the job's own last.ckpt, as when no path is given.
    """
    if ckpt_path == "none":
        return None
    if not ckpt_path or ckpt_path == "last":
        last = Path(job_dir) / LAST_CHECKPOINT
        if last.is_file():
            return last
        if ckpt_path == "last":  # as Lightning does: a note, then a fresh start
            log.info("ckpt_path=last: %s has no checkpoint yet; starting fresh", job_dir)
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not exist; give a checkpoint file, ckpt_path=last "
            "(the job's own last.ckpt) or ckpt_path=none"
        )
    return path


def check_checkpoint(path: Path, module: torch.nn.Module) -> int:
    """Fail before training when `path` cannot be resumed into `module`; return its global step.

    Reads the file as Lightning will (weights_only), memory-mapped, so nothing but the shapes
    and the step is loaded twice.
    """
    try:
        checkpoint = load_tensors_only(path)
    except HoldsPythonObjects as found:
        raise ConfigError(
            f"checkpoint {path} holds Python objects ({found}), not only tensors, and ResLab reads "
            "checkpoints without running pickled code, so it is refused; resume from a checkpoint a "
            "ResLab job wrote, delete this one to start the job afresh, or start fresh with ckpt_path=none"
        ) from None
    except NotATorchFile as error:
        raise _corrupt(path, str(error)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"checkpoint {path} is not a Lightning training checkpoint (no state_dict); "
            "give a last.ckpt of a ResLab job, or start fresh with ckpt_path=none"
        )
    _check_fits(path, checkpoint["state_dict"], module.state_dict())
    return int(checkpoint.get("global_step", 0))


def _corrupt(path: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"checkpoint {path} cannot be read, it is corrupt or no checkpoint ({reason}); delete it "
        "to start this job afresh, point ckpt_path at an intact checkpoint, or start fresh with "
        "ckpt_path=none"
    )


def _check_fits(path: Path, found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = [
        f"{name}: checkpoint {tuple(found[name].shape)}, network {tuple(expected[name].shape)}"
        for name in sorted(set(found) & set(expected))
        if found[name].shape != expected[name].shape
    ]
    if not (missing or unexpected or reshaped):
        return
    problems = [
        f"{len(entries)} {what} (e.g. {entries[0]})"
        for what, entries in (("missing", missing), ("unexpected", unexpected), ("with other shapes", reshaped))
        if entries
    ]
    raise ConfigError(
        f"checkpoint {path} does not match the configured network: tensors {'; '.join(problems)}. "
        "It was written for another model or data config: resume with the config it was trained "
        "with (its job's .hydra/config.yaml), or start fresh with ckpt_path=none"
    )


# ----------------------------------------------------------------------------- writing checkpoints


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoints, each written to a temp file beside its target, fsynced and
    renamed over it (reslab.atomic_files): a job killed mid-save keeps its previous checkpoint.

    Lightning's own save writes a temp file in $TMPDIR and moves it; where $TMPDIR is on another
    filesystem than the job folder (node-local /tmp, job folders on NFS or Lustre) the move
    truncates the old checkpoint and copies into it, so a kill during the copy leaves neither.
    Remote paths (s3://, ...) keep Lightning's way.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        filesystem, local_path = fsspec.core.url_to_fs(str(path))
        if storage_options is not None or not isinstance(filesystem, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        with atomic_writer(local_path) as handle:
            torch.save(checkpoint, handle)


# ----------------------------------------------------------------------------- metric history


def keep_metrics_history(loggers: list[Logger], resume_step: int | None) -> None:
    """Keep a resumed job's metrics.csv rows from before its checkpoint.

    Lightning's CSVLogger deletes metrics.csv when it opens a folder that holds one. The rows
    logged before the checkpoint's step are written back first; the later ones are dropped,
    since the resumed run logs those steps again.
    """
    if resume_step is None or rank_zero_only.rank != 0:
        return
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / METRICS_FILE
        rows = _rows_before(path, resume_step)
        writer = logger.experiment  # opening the folder deletes the old file
        for row in rows:
            step = int(row.pop("step"))
            writer.log_metrics(row, step=step)
        writer.save()


def _rows_before(path: Path, step: int) -> list[dict[str, float]]:
    return [row for row in read_metrics_csv(path) if "step" in row and row["step"] < step]


# ----------------------------------------------------------------------------- callbacks


class ResumeState(pl.Callback):
    """What a job's checkpoints need besides ModelCheckpoint's for a resumed run to go on exactly.

    - The random number generators (Python, NumPy, torch, CUDA): the next epoch's data order
      (a RandomSampler draws its seed from torch's generator) and augmentation come from them.
      Stored as tensors and plain numbers, so `weights_only` loading reads them.
    - The metric rows logged up to a checkpoint are flushed to disk with it, so a job killed
      after a checkpoint loses no history that it will not log again.
    - last.ckpt at the end of training as well: once ModelCheckpoint has saved on its schedule
      it saves no more at the end, and a rerun of the finished job would train again.
    """

    def __init__(self) -> None:
        self._saved_at_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        states: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "position": int(position),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian),
            },
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        numpy_state = state_dict["numpy"]
        np.random.set_state(
            (
                "MT19937",
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            for device, state in enumerate(state_dict["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(state, device)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._saved_at_step = trainer.global_step
        for logger in trainer.loggers:
            logger.save()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_at_step != trainer.global_step:
            save_last_checkpoint(trainer)


def save_last_checkpoint(trainer: pl.Trainer) -> Path:
    """Save the training state to the job's last.ckpt (all ranks call this; rank 0 writes)."""
    checkpoint = trainer.checkpoint_callback
    directory = checkpoint.dirpath if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath else None
    directory = Path(directory or Path(trainer.default_root_dir) / LAST_CHECKPOINT.parent)
    path = directory / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
    trainer.save_checkpoint(path)
    return path


class CheckpointOnSignal(pl.Callback):
    """Write last.ckpt at the step reached when the job is told to stop, then let it stop.

    - The cluster's requeue signal (`signal_name`, submitit's SIGUSR2, sent `signal_delay_s`
      before the time limit or on preemption): the running step finishes, all ranks save
      last.ckpt at the same step, that step's metrics are flushed, and then the signal goes on to
      submitit's handler, which requeues the job and exits. The requeued job reruns in the same
      job folder and resumes from that checkpoint. Where no handler is installed (no submitit)
      none is installed for it here either: the signal keeps its default meaning.
    - SIGTERM (schedulers, `kill`) and SIGINT (Ctrl-C): the same checkpoint at the end of the
      running step, then `JobInterrupted`, which the job wrapper records as `interrupted` and
      turns into exit code 143 / 130. SIGTERM reaches this callback through Lightning's own
      handler (`trainer.received_sigterm`); a second Ctrl-C stops at once.
    """

    def __init__(self, signal_name: str = "USR2") -> None:
        name = signal_name.upper().removeprefix("SIG")
        if not hasattr(signal, f"SIG{name}"):
            raise ConfigError(f"callbacks.checkpoint_on_signal.signal_name={signal_name!r} is no signal; use e.g. USR2")
        self.signum = getattr(signal, f"SIG{name}")
        self._handlers: dict[int, Any] = {}  # handlers found installed, restored after training
        self._received: int | None = None  # the requeue signal or SIGINT, noted by _note
        self._requeue: tuple[int, Any] | None = None  # a requeue to hand on after the flush
        self._saved_at_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        requeue_handler = signal.getsignal(self.signum)
        if callable(requeue_handler):
            self._handlers[self.signum] = requeue_handler
            signal.signal(self.signum, self._note)
        self._handlers[signal.SIGINT] = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        # A handler interrupts the step anywhere; the checkpoint waits for the step's end.
        if signum == signal.SIGINT and self._received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self._received = signum

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        signum = self._received or (signal.SIGTERM if trainer.received_sigterm else None)
        if trainer.world_size > 1:
            # Every rank takes part, so that all save at the same step, whichever got the signal.
            if not trainer.strategy.reduce_boolean_decision(signum is not None, all=False):
                return
            signum = signum or signal.SIGTERM  # another rank's stop: the kind is not shared
        elif signum is None:
            return
        self._received = None
        self._save(trainer, signum)
        if signum == self.signum and signum in self._handlers:
            self._requeue = (signum, None)
            return  # handed on to submitit once the step's metrics are logged
        for logger in trainer.loggers:
            logger.save()
        raise JobInterrupted(signum)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._hand_on(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hand_on(trainer)
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning's own SIGTERM exit (raised between steps, on every rank at once under DDP,
        # where rank 0's SIGTERM is broadcast before the next step): the state is whole, save it.
        if isinstance(exception, SIGTERMException) and trainer.model is not None:
            self._save(trainer, signal.SIGTERM)
        self._restore()

    def _save(self, trainer: pl.Trainer, signum: int) -> None:
        if self._saved_at_step == trainer.global_step:
            return
        path = save_last_checkpoint(trainer)
        self._saved_at_step = trainer.global_step
        log.warning("%s: saved %s at step %d", signal.Signals(signum).name, path, trainer.global_step)

    def _hand_on(self, trainer: pl.Trainer) -> None:
        """After the saved step's metrics are logged: flush them, then run the handler found."""
        if self._requeue is None:
            return
        signum, frame = self._requeue
        self._requeue = None
        for logger in trainer.loggers:
            logger.save()
        handler = self._handlers.get(signum)
        self._restore()
        if callable(handler):
            handler(signum, frame)  # submitit: requeue, then exit (on rank 0)

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._handlers = {}
