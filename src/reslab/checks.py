"""Settings checked before a job does any work: the trainer's, the optimiser's ranges and the
folder the job writes to. Each function takes a composed job config and raises ConfigError with
one line that names the key, what was wrong and what is allowed.

Lightning is the judge of its own arguments. The trainer's accelerator, devices, num_nodes,
strategy, precision and sync_batchnorm go to a throwaway `Trainer` (no logger, no callbacks,
no checkpointing: about 10 ms, no process started, nothing written), and what it refuses comes
back as a ConfigError naming the keys its message is about. ResLab's own rules sit beside it:
a run is measured in steps (`trainer.max_steps` >= 1; the schedules count them), and the
optimiser's lr, momentum and weight decay must lie where training can converge.

A job that runs on another machine (`hydra/launcher=slurm`, checked in the launching process)
cannot have that machine's devices checked here: there the names are checked up front and the
rest when the job starts on its node, where `check_job` runs again.

A batch larger than the training split is allowed, and said at the start of training (the data
modules log one line): the step then trains on the whole split (full-batch gradient descent),
which is a legitimate choice, and how many examples the split holds is known only once the data
is read.

Lightning is imported inside the checks that use it, so that importing this module (the
pre-check does) costs nothing; a job pays that import anyway.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reslab.errors import ConfigError

# Trainer arguments that the throwaway Trainer judges, in the order the message names them.
TRAINER_SETTINGS = ("accelerator", "devices", "num_nodes", "strategy", "precision", "sync_batchnorm")
# Words by which Lightning's messages tell which of those settings they are about.
_SETTING_WORDS = {
    "accelerator": ("accelerator", "backend"),
    "devices": ("devices", "requested", "device id"),
    "num_nodes": ("num_nodes", "nnodes"),
    "strategy": ("strategy",),
    "precision": ("precision",),
    "sync_batchnorm": ("sync_batchnorm", "syncbatchnorm"),
}
# Launchers whose jobs run on other machines (target names end so); see the module docstring.
REMOTE_LAUNCHERS = ("SlurmLauncher",)


def check_settings(cfg: DictConfig) -> None:
    """Everything of this module for one job config (a training or an evaluation job)."""
    check_trainer(cfg)
    if cfg.get("task", "train") == "train":
        check_optimizer(cfg)
    check_output_folder(cfg)


# ----------------------------------------------------------------------------- trainer


def check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    check_steps(trainer.get("max_steps"), trainer.get("max_epochs"))
    settings = {key: _setting(trainer[key]) for key in TRAINER_SETTINGS if key in trainer}
    if runs_elsewhere(cfg):
        check_setting_names(settings)
    else:
        check_on_this_machine(cfg, settings)


def check_steps(max_steps: Any, max_epochs: Any) -> None:
    if not _is_int(max_steps) or max_steps < 1:
        raise ConfigError(
            f"trainer.max_steps={max_steps!r} must be a number of training steps >= 1 "
            "(a run and its schedule are measured in steps)"
        )
    if max_epochs is not None and (not _is_int(max_epochs) or (max_epochs < 1 and max_epochs != -1)):
        raise ConfigError(
            f"trainer.max_epochs={max_epochs!r} must be a number of epochs >= 1, "
            "or -1 or null for no limit (trainer.max_steps ends the run)"
        )


def check_on_this_machine(cfg: DictConfig, settings: dict[str, Any]) -> None:
    """Lightning builds a Trainer from `settings` here, or says why not."""
    from reslab import distributed

    with _quiet():
        plugins = distributed.cluster_plugins()
    trainer = _throwaway_trainer(settings, plugins=plugins)
    # ResLab's own rules on a built trainer (e.g. sync_batchnorm needs GPUs).
    distributed.check_trainer(cfg, trainer)


def check_setting_names(settings: dict[str, Any]) -> None:
    """For a job that runs elsewhere: the accelerator and strategy are names Lightning knows,
    and Lightning accepts the precision (judged on the CPU; which precisions a GPU offers is
    judged on its node)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    accelerator = settings.get("accelerator", "auto")
    accelerators = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    if isinstance(accelerator, str) and accelerator not in accelerators:
        raise ConfigError(
            f"trainer.accelerator={accelerator!r} is not known to Lightning; use one of {', '.join(accelerators)}"
        )
    strategy = settings.get("strategy", "auto")
    if isinstance(strategy, str) and strategy != "auto" and strategy not in StrategyRegistry.available_strategies():
        raise ConfigError(f"trainer.strategy={strategy!r} is not known to Lightning; {_strategies()}")
    if "precision" in settings:
        _throwaway_trainer({"precision": settings["precision"]}, accelerator="cpu", devices=1)


def _throwaway_trainer(settings: dict[str, Any], **fixed: Any) -> Any:
    """A Trainer from `settings` that does nothing and writes nothing; what Lightning refuses
    comes out as a ConfigError that names the settings its message is about."""
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    with _quiet():
        try:
            return pl.Trainer(
                **settings,
                **fixed,
                logger=False,
                callbacks=[],
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        # Lightning's refusals; ImportError: a strategy or precision whose package is missing.
        except (MisconfigurationException, ValueError, TypeError, ImportError, RuntimeError) as error:
            raise _refused(settings, error) from None


def runs_elsewhere(cfg: DictConfig) -> bool:
    """Whether `cfg` is the launching process's copy of a sweep job (it holds the `hydra` node;
    a running job's own config does not) and the sweep's launcher runs jobs on other machines."""
    if "hydra" not in cfg:
        return False
    # The sweep's pre-check composes each job with the sweep's hydra overrides (its launcher).
    target = OmegaConf.select(cfg, "hydra.launcher._target_", default=None)
    return isinstance(target, str) and target.endswith(REMOTE_LAUNCHERS)


def _refused(settings: dict[str, Any], error: Exception) -> ConfigError:
    message = " ".join(str(error).split()) or type(error).__name__
    words = message.lower()
    # A message that quotes an argument or its value (`Trainer(devices=0)`, `fsdp`) is about it.
    keys = (
        [key for key in settings if _quoted(key, settings[key], words)]
        or [key for key in settings if any(word in words for word in _SETTING_WORDS[key])]
        or list(settings)
    )
    named = ", ".join(f"trainer.{key}={settings[key]!r}" for key in keys)
    hint = f"; {_ALLOWED[keys[0]]()}" if len(keys) == 1 and keys[0] in _ALLOWED else ""
    return ConfigError(f"{named}: Lightning refuses {'it' if len(keys) == 1 else 'them'}: {message.rstrip('.')}{hint}")


def _quoted(key: str, value: Any, words: str) -> bool:
    if f"{key}=" in words or f"`{key}`" in words:
        return True
    value = str(value).lower()
    return len(value) > 2 and (f"`{value}`" in words or f"'{value}'" in words)


def _accelerators_here() -> str:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    available = [name for name in sorted(AcceleratorRegistry.available_accelerators())
                 if AcceleratorRegistry[name]["accelerator"].is_available()]
    gpu = ["gpu"] if {"cuda", "mps"} & set(available) else []
    return f"use auto or one this machine has: {', '.join(available + gpu)}"


def _strategies() -> str:
    from lightning.pytorch.strategies import StrategyRegistry

    names = StrategyRegistry.available_strategies()
    return f"use auto or a Lightning strategy such as {', '.join(names[:3])}, fsdp ({len(names)} in StrategyRegistry)"


# What each setting allows, where Lightning's own message does not say it.
_ALLOWED = {
    "accelerator": _accelerators_here,
    "devices": lambda: "use a number of devices >= 1, a list of device indices, auto, or -1 for all",
    "num_nodes": lambda: "use a number of nodes >= 1",
    "strategy": _strategies,
}


@contextmanager
def _quiet() -> Iterator[None]:
    """No device banner or warning from the throwaway Trainer: the job's own Trainer says them."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# ----------------------------------------------------------------------------- optimiser


def check_optimizer(cfg: DictConfig) -> None:
    """lr > 0, 0 <= momentum < 1, weight_decay >= 0, betas in [0, 1), for any optimiser config
    that has these keys (torch.optim accepts lr=0 and momentum >= 1, which never train)."""
    optimizer = cfg.optimizer
    if "lr" in optimizer and not (_is_real(optimizer.lr) and optimizer.lr > 0):
        raise ConfigError(f"optimizer.lr={optimizer.lr!r} must be a number > 0 (the learning rate, e.g. 0.1 for SGD)")
    if "momentum" in optimizer and not (_is_real(optimizer.momentum) and 0 <= optimizer.momentum < 1):
        raise ConfigError(
            f"optimizer.momentum={optimizer.momentum!r} must lie in [0, 1): 0 is plain SGD, the paper uses 0.9, "
            "and from 1 on the steps grow without bound"
        )
    if "weight_decay" in optimizer and not (_is_real(optimizer.weight_decay) and optimizer.weight_decay >= 0):
        raise ConfigError(f"optimizer.weight_decay={optimizer.weight_decay!r} must be a number >= 0 (0: none)")
    betas = optimizer.get("betas")
    if betas is not None and not (len(betas) == 2 and all(_is_real(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"optimizer.betas={_plain(betas)!r} must be two numbers in [0, 1), e.g. [0.9, 0.999]")


# ----------------------------------------------------------------------------- output folder


def check_output_folder(cfg: DictConfig) -> None:
    """The folder the job writes to (`paths.output_dir`) can be created, or is a writable folder.

    Nothing is created here. In the launching process a sweep job's default folder is not named
    yet (Hydra names it at launch, inside the sweep folder, which the sweep creates and holds
    before its jobs are checked); a `paths.output_dir` set to a path is checked there as well.
    """
    folder = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    if folder is None:
        return
    reason = why_not_creatable(Path(str(folder)))
    if reason:
        raise ConfigError(f"paths.output_dir={folder} cannot be created: {reason}; choose another folder")


def why_not_creatable(folder: Path) -> str | None:
    """Why `folder` cannot be created and written to, or None. Looks, creates nothing."""
    for existing in (folder, *folder.parents):
        if not os.path.lexists(existing):
            continue
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable"
        return None
    return None


# ----------------------------------------------------------------------------- helpers


def _setting(node: Any) -> Any:
    """A trainer setting as Lightning takes it: a config with a _target_ (a Strategy) built."""
    if isinstance(node, DictConfig) and "_target_" in node:
        from hydra.utils import instantiate

        return instantiate(node)
    return _plain(node)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)
