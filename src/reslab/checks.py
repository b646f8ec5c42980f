"""Validation, all of it: whether a job's config can run, decided in seconds before any work.
Each check raises ConfigError with one line that names the key, what was wrong and what is
allowed.

When: every job of a grid sweep is checked before the first starts (reslab.sweep.SweepOwner);
a single run, and each job of a sampling sweeper (Optuna), is checked as it starts
(`check_at_start`). So each check runs once per job. A job that runs on another machine
(`hydra/launcher=slurm`) cannot have that machine's devices checked in the launching process:
there the names are checked up front and the whole job again when it starts on its node.

What: first every value of the config against its key's rule (`check_values`, VALUE_RULES:
type, range, a finite number where a number is meant; a single run's values are checked so
before its job begins). Then `check_job` builds what can be wrong cheaply: the settings (the
trainer's, the output folder, the SLURM layout), the optimiser and schedule
on a dummy parameter, the network on the meta device (no memory, no init cost), the datamodule
(whose constructor checks its files and settings) and the callbacks. Lightning is the judge of
its own arguments: the trainer's accelerator, devices, num_nodes, strategy, precision and
sync_batchnorm go to a throwaway `Trainer` (no logger, no callbacks, no checkpointing: nothing
started, nothing written), and what it refuses comes back naming the keys its message is
about. ResLab's own rules are in VALUE_RULES: a run is measured in steps (`trainer.max_steps`
>= 1; the schedules count them), and the optimiser's lr, momentum and weight decay must lie
where training can converge (torch.optim accepts lr=0 and momentum >= 1, which never train).

A batch larger than the training split is allowed, and said at the start of training (the data
modules log one line): the step then trains on the whole split (full-batch gradient descent),
which is a legitimate choice, and how many examples the split holds is known only once the data
is read. Lightning and torch are imported inside the checks that use them, so that importing
this module costs nothing; a job pays those imports anyway.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from numbers import Integral, Real
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from reslab.cluster import GPU_ACCELERATORS, is_slurm_launcher
from reslab.errors import ConfigError
from reslab.node_plan import plan_node
from reslab.speed import MATMUL_PRECISIONS
from reslab.tasks import TASKS

# What a job does when it fails (`on_error`; conf/train.yaml).
ON_ERROR = ("auto", "continue", "raise")
# The tasks that build a network and data from cfg.model and cfg.data.
NETWORK_TASKS = ("train", "eval")


def check_at_start(cfg: DictConfig) -> None:
    """Check a job as it starts, unless its sweep checked it before launching it: a grid sweep
    whose jobs run on this kind of machine."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from reslab.sweep import is_basic_sweeper

        checked = is_basic_sweeper(OmegaConf.select(hydra_cfg, "sweeper._target_"))
        if checked and not is_slurm_launcher(hydra_cfg.launcher):
            return
    check_job(cfg, launcher=hydra_cfg.launcher)


def instantiate(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a ConfigError raised by the target comes out as itself
    (Hydra wraps it), so the user sees its message alone; and a key the target does not take
    (`+data.foo=1`) is a ConfigError naming it and the keys the config has."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        # Python's "got an unexpected keyword argument 'x'" TypeError.
        found = re.search(r"unexpected keyword argument '([^']+)'", str(error.__cause__))
        if isinstance(error.__cause__, TypeError) and found and isinstance(node, DictConfig):
            unknown = found.group(1)
            # Hydra's message names the node ("full_key: data"); the config's keys are the settings.
            where = re.search(r"full_key: (\S+)", str(error))
            group = where.group(1) if where else str(node.get("_target_"))
            settings = ", ".join(sorted(str(key) for key in node if not str(key).startswith("_") and key != unknown))
            raise ConfigError(
                f"{group}.{unknown} is not a setting of {node.get('_target_')}; its settings are: {settings}"
            ) from None
        raise


def check_job(cfg: DictConfig, launcher: DictConfig | None = None) -> None:
    """Raise ConfigError if this job config cannot run on `launcher` (the `hydra.launcher` node;
    None: the one in `cfg`, a composed sweep job's config that holds its `hydra` node)."""
    if cfg.get("task") not in NETWORK_TASKS:
        check_values(cfg)
        return
    check_settings(cfg, launcher)
    import torch

    with torch.device("meta"):
        instantiate(cfg.model)
    instantiate(cfg.data)
    if cfg.task == "train":
        check_optimizer_builds(cfg)
        check_callbacks(cfg)
    if cfg.task == "eval" and cfg.get("ckpt_path") in (None, "none") and not cfg.model.get("weights"):
        raise ConfigError(
            "task=eval scores trained weights: give ckpt_path=FILE (a checkpoint of a job with this "
            "model and data config), or a pretrained model=torchvision with model.weights"
        )


def check_settings(cfg: DictConfig, launcher: DictConfig | None = None) -> None:
    """The settings of a training or evaluation job: every value (check_values), the trainer's,
    the output folder and the SLURM layout (see check_job for `launcher`)."""
    check_values(cfg)
    check_trainer(cfg)
    check_output_folder(cfg)
    launcher = launcher if launcher is not None else OmegaConf.select(cfg, "hydra.launcher")
    check_cluster_layout(launcher, cfg.trainer)
    check_node_layout(launcher)


# ----------------------------------------------------------------------------- every value


class Rule(NamedTuple):
    """What a key allows. kind: "int" (a whole number), "number" (a finite one), "share" (a
    count, a whole number >= 0, or a fraction within `bounds`), "bool", "one of" (`also` alone),
    "free" (text: paths, names; not checked). bounds: ">= 1", "> 0", "[0, 1)". also: values
    allowed besides (null, -1, auto), and functions that list more (called only when needed).
    many: None a single value, 0 a list of any length, n a list of n."""

    kind: str
    bounds: str = ""
    also: tuple[Any, ...] = ()
    many: int | None = None


def _backends() -> tuple[Any, ...]:
    import torch

    # Every registered backend (debug ones such as aot_eager included), but not torch's own test fixtures.
    return tuple(sorted(b for b in torch.compiler.list_backends(exclude_tags=()) if "TESTING_ONLY" not in b))


def _one_of(*allowed: Any) -> Rule:
    return Rule("one of", also=allowed)


# Every key of every config group, as (rule, the keys it covers). A key's rule applies to the value
# it is set to; an interpolation (`${seed}`) is checked where its value is set. Whose rules are
# richer (the model's and data's constructors, Lightning's Trainer, the callbacks) checks them again
# as it is built; free text (paths, names) is theirs alone, and Lightning judges its four settings.
_RULES: tuple[tuple[Rule, str], ...] = (
    (
        Rule("free"),
        """experiment_name ckpt_path paths.* *._target_ *._partial_ *._convert_ table3_net init init_weights.*
        model.name model.weights data.root trainer.default_root_dir trainer.profiler.* trainer.accelerator
        trainer.devices trainer.strategy trainer.precision callbacks.checkpoint.dirpath callbacks.*.monitor
        callbacks.checkpoint_on_signal.signal_name logger.*.name logger.*.save_dir logger.*.version
        logger.tensorboard.hparams_metrics logger.wandb.entity logger.wandb.group logger.wandb.id
        logger.wandb.job_type logger.wandb.notes logger.wandb.project logger.wandb.tags toy_chain.activations""",
    ),
    (
        Rule("bool"),
        """test model.preact model.stride_in_1x1 model.zero_init_residual optimizer.nesterov data.download
        data.learnable data.on_device data.persistent_workers data.pin_memory data.ten_crop_test
        data.verify_checksums trainer.deterministic trainer.enable_model_summary trainer.enable_progress_bar
        trainer.sync_batchnorm trainer.use_distributed_sampler callbacks.checkpoint.enable_version_counter
        callbacks.freeze_backbone.train_bn callbacks.grad_norms.log_responses callbacks.progress_bar.enabled
        logger.tensorboard.log_graph logger.wandb.settings.silent""",
    ),
    (
        Rule("int", ">= 1"),
        """model.depth model.in_channels model.input_size model.num_classes table3_nets.*.depth data.batch_size
        data.image_size data.in_channels data.num_classes data.num_train data.num_test data.val_resize trainer.max_steps
        trainer.log_every_n_steps trainer.num_nodes scheduler.total_iters callbacks.grad_norms.every_n_steps
        callbacks.progress_bar.every_n_steps callbacks.warmup_until_error.window
        logger.csv.flush_logs_every_n_steps""",
    ),
    (
        Rule("int", ">= 0"),
        """data.crop_padding data.num_workers data.num_val scheduler.warmup_iters
        callbacks.throughput.skip_steps""",
    ),
    (Rule("int", ">= 1", (None,)), "model.width model.skip_span data.eval_batch_size trainer.check_val_every_n_epoch"),
    (Rule("int", ">= 0", (True, False)), "callbacks.freeze_backbone.epochs trainer.fast_dev_run"),
    (Rule("int", "[0, 4294967295]"), "seed toy_chain.seed data.seed"),  # numpy's, so Lightning's seed_everything
    (Rule("int", ">= 1", (None,), many=0), "model.stages callbacks.warmup_until_error.only_depths"),
    (Rule("int", ">= 1", many=0), "toy_chain.depths"),
    (Rule("int", ">= 0", many=0), "scheduler.milestones"),
    (Rule("int", ">= 1", many=2), "data.resize_range"),
    (Rule("int", ">= 1", (-1, None)), "trainer.max_epochs"),
    (Rule("int", ">= -1"), "trainer.num_sanity_val_steps callbacks.checkpoint.save_top_k"),
    (Rule("int", ">= 0", (None,)), "callbacks.checkpoint.every_n_train_steps"),
    (
        Rule("number", "> 0"),
        "optimizer.lr scheduler.gamma toy_chain.tolerance callbacks.freeze_backbone.backbone_lr_factor",
    ),
    (Rule("number", ">= 0"), "optimizer.weight_decay optimizer.eps scheduler.eta_min data.color_jitter"),
    (Rule("number", "[0, 1)"), "optimizer.momentum"),
    (Rule("number", "[0, 1)", many=2), "optimizer.betas"),
    (Rule("number", "(0, 1]"), "scheduler.warmup_start_factor callbacks.warmup_until_error.error_threshold"),
    (Rule("number", "(0, 1)"), "callbacks.warmup_until_error.factor"),
    (Rule("number", many=0), "data.mean"),
    (Rule("number", "> 0", many=0), "data.std"),
    (Rule("number", many=2), "toy_chain.weight_range"),
    (Rule("number"), "toy_chain.x"),
    (Rule("number", also=(None,)), "toy_chain.target"),
    (Rule("number", also=("learned", "projection")), "model.skip_weight"),
    (Rule("number", ">= 0", (None,)), "trainer.gradient_clip_val"),
    (Rule("number", "> 1", (None,)), "callbacks.divergence.max_loss_factor"),
    # Lightning's limit_*_batches: a count of batches or a fraction of them.
    (
        Rule("share", "[0, 1]", (None,)),
        "trainer.limit_train_batches trainer.limit_val_batches trainer.limit_test_batches",
    ),
    (Rule("share", "[0, 1]", (None,)), "trainer.val_check_interval"),
    (Rule("share", "[0, 1]"), "trainer.overfit_batches"),
    (Rule("share", "(0, 1)"), "data.val_size data.test_size"),
    (_one_of(*TASKS), "task"),
    (_one_of(*ON_ERROR), "on_error"),
    (_one_of(False, True, _backends), "speed.compile"),
    (_one_of(True, False, "auto"), "speed.channels_last"),
    (_one_of(*MATMUL_PRECISIONS), "speed.float32_matmul_precision"),
    (_one_of("auto", "basic", "bottleneck"), "model.block"),
    (_one_of("basic", "bottleneck"), "block_for_depth.*"),
    (_one_of("auto", "cifar", "imagenet"), "model.style"),
    (_one_of("bn", "none"), "model.norm"),
    (_one_of("A", "B", "C", "none"), "model.shortcut table3_nets.*.shortcut"),
    (_one_of("Y", "Z", "y", "z"), "model.skip_source"),
    (_one_of(True, False, "none", "crop", "flip", "crop_flip"), "data.augment"),
    (_one_of("per_pixel_mean", "per_channel", "none"), "data.normalize"),
    (_one_of("cpu", "device", "auto"), "data.decode"),
    (_one_of("step", "epoch"), "scheduler.interval callbacks.timer.interval"),
    (_one_of(True, False, None), "trainer.benchmark callbacks.checkpoint.save_on_train_epoch_end"),
    (_one_of(None, "simple", "advanced", "pytorch", "xla"), "trainer.profiler"),
    (_one_of(True, False, None, "link"), "callbacks.checkpoint.save_last"),
    (_one_of("step", "epoch", None), "callbacks.lr_monitor.logging_interval"),
    (_one_of(True, False, "all"), "logger.wandb.log_model"),
    (_one_of(None, "online", "offline", "disabled"), "logger.wandb.mode"),
)
VALUE_RULES: dict[str, Rule] = {key: rule for rule, keys in _RULES for key in keys.split()}


def value_rule(key: str) -> Rule | None:
    """The rule for a dotted key (`trainer.max_steps`), or None."""
    if key in VALUE_RULES:
        return VALUE_RULES[key]
    return next((rule for pattern, rule in VALUE_RULES.items() if "*" in pattern and fnmatchcase(key, pattern)), None)


def check_values(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value of `cfg` that its key's rule refuses (VALUE_RULES);
    the `hydra` node is Hydra's and the launcher's."""
    for key, value in _values(cfg):
        rule = value_rule(key)
        # No constructor takes the speed settings: a key of them that no rule names is refused here.
        if rule is None and key.startswith("speed."):
            names = [name.removeprefix("speed.") for name in VALUE_RULES if name.startswith("speed.")]
            raise ConfigError(f"{key} is not a setting; the settings of speed are {', '.join(names)}")
        check_value(key, value, rule)


def check_value(key: str, value: Any, rule: Rule | None = None) -> None:
    """Raise ConfigError when `value` is not what the rule of `key` allows (a key without one: any)."""
    rule = rule or value_rule(key)
    if rule is not None and rule.kind != "free" and not _allowed(value, rule):
        raise ConfigError(f"{key}={value!r} must be {_describe(rule)}")


def _values(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key in node:
        if not prefix and key == "hydra":
            continue
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            yield from _values(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", _plain(value)


def _allowed(value: Any, rule: Rule) -> bool:
    plain = [other for other in rule.also if not callable(other)]
    if _among(value, plain) or (len(plain) < len(rule.also) and _among(value, _also(rule))):
        return True
    if rule.many is not None:
        one = rule._replace(also=(), many=None)
        return (
            isinstance(value, list) and len(value) == (rule.many or len(value)) and all(_allowed(v, one) for v in value)
        )
    if rule.kind == "bool":
        return isinstance(value, bool)
    if rule.kind == "share":
        return (_is_int(value) and value >= 0) or (isinstance(value, float) and _within(value, rule.bounds))
    is_kind = (
        _is_int(value) if rule.kind == "int" else rule.kind == "number" and _is_real(value) and math.isfinite(value)
    )
    return is_kind and _within(value, rule.bounds)


def _within(value: Real, bounds: str) -> bool:
    if bounds[:1] in ("[", "("):
        low, high = (float(end) for end in bounds[1:-1].split(","))
        above = low <= value if bounds[0] == "[" else low < value
        return above and (value <= high if bounds[-1] == "]" else value < high)
    op, _, limit = bounds.partition(" ")
    return {"": True, ">=": value >= float(limit or 0), ">": value > float(limit or 0)}[op]


def _among(value: Any, allowed: Any) -> bool:
    return any(type(value) is type(other) and value == other for other in allowed)  # 1 is not true


def _also(rule: Rule) -> list[Any]:
    return [value for other in rule.also for value in (other() if callable(other) else (other,))]


def _describe(rule: Rule) -> str:
    also = _also(rule)
    if rule.kind == "one of":
        return f"one of {', '.join(map(_written, also))}"
    bounds = f" in {rule.bounds}" if rule.bounds[:1] in ("[", "(") else f" {rule.bounds}" if rule.bounds else ""
    if rule.kind == "share":
        what = f"a count (a whole number >= 0) or a fraction{bounds}"
    elif rule.kind == "bool":
        what = "true or false"
    else:
        noun = "whole number" if rule.kind == "int" else "number"
        what = {None: f"a {noun}", 0: f"a list of {noun}s"}.get(rule.many, f"{rule.many} {noun}s") + bounds
    return what + "".join(f", or {_written(other)}" for other in also)


def _written(value: Any) -> str:
    """A value as YAML and the command line write it: true, null."""
    return {True: "true", False: "false", None: "null"}.get(value, str(value)) if not _is_int(value) else str(value)


def check_callbacks(cfg: DictConfig) -> None:
    """Each callback checks its own settings as it is built (Lightning's checkpoint its
    intervals, for one); building them all takes milliseconds and writes nothing."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException  # how Lightning refuses a setting

    for name, node in (cfg.get("callbacks") or {}).items():
        if not node:
            continue
        try:
            instantiate(node)
        except InstantiationException as error:
            if isinstance(error.__cause__, (MisconfigurationException, ValueError)):
                raise ConfigError(f"callbacks.{name}: {error.__cause__}") from None
            raise


def check_optimizer_builds(cfg: DictConfig) -> None:
    import torch

    # Both are partial (`_partial_: true`): what they refuse comes from the call, not from Hydra.
    try:
        optimizer = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
        if cfg.get("scheduler"):
            instantiate(cfg.scheduler)(optimizer)
    except ValueError as error:  # how torch.optim refuses its own arguments (nesterov without momentum)
        raise ConfigError(f"optimizer / scheduler: {error}") from None


# Trainer arguments that the throwaway Trainer judges, in the order the message names them.
TRAINER_SETTINGS = ("accelerator", "devices", "num_nodes", "strategy", "precision", "sync_batchnorm")


# ----------------------------------------------------------------------------- trainer


def check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    check_value("trainer.max_steps", trainer.get("max_steps"))  # also when left out: runs are measured in steps
    settings = {key: _setting(trainer[key]) for key in TRAINER_SETTINGS if key in trainer}
    # The launching process's copy of a sweep job (it holds the `hydra` node, composed with the
    # sweep's launcher; a running job's own config does not) that runs on other machines.
    if "hydra" in cfg and is_slurm_launcher(OmegaConf.select(cfg, "hydra.launcher")):
        check_setting_names(settings)
    else:
        check_on_this_machine(cfg, settings)


def check_on_this_machine(cfg: DictConfig, settings: dict[str, Any]) -> None:
    """Lightning builds a Trainer from `settings` here, or says why not; then ResLab's own rule
    on it: torch's SyncBatchNorm does not run on CPUs."""
    from lightning.pytorch.accelerators import CPUAccelerator

    from reslab import distributed

    with _quiet():
        plugins = distributed.cluster_plugins()
    trainer = _throwaway_trainer(settings, plugins=plugins)
    if cfg.trainer.get("sync_batchnorm") and trainer.world_size > 1 and isinstance(trainer.accelerator, CPUAccelerator):
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm does not run on CPU; "
            "drop it or train on GPUs (trainer.accelerator=gpu)"
        )


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
    strategies = StrategyRegistry.available_strategies()
    if isinstance(strategy, str) and strategy != "auto" and strategy not in strategies:
        raise ConfigError(
            f"trainer.strategy={strategy!r} is not known to Lightning; use auto or one of {', '.join(strategies)}"
        )
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


def _refused(settings: dict[str, Any], error: Exception) -> ConfigError:
    message = " ".join(str(error).split()) or type(error).__name__
    words = message.lower()
    # A message is about the settings it quotes (`Trainer(devices=0)`, 'bogus'), else about those
    # whose value it names ("No supported gpu backend found"), else about them all.
    keys = (
        [key for key in settings if _quoted(key, settings[key], words)]
        or [key for key in settings if _named(settings[key], words)]
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


def _named(value: Any, words: str) -> bool:
    value = str(value).lower()
    return len(value) > 2 and re.search(rf"\b{re.escape(value)}\b", words) is not None


def _accelerators_here() -> str:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    available = [
        name
        for name in sorted(AcceleratorRegistry.available_accelerators())
        if AcceleratorRegistry[name]["accelerator"].is_available()
    ]
    gpu = ["gpu"] if {"cuda", "mps"} & set(available) else []
    return f"use auto or one this machine has: {', '.join(available + gpu)}"


# What a setting allows, where Lightning's own message does not say it.
_ALLOWED = {
    "accelerator": _accelerators_here,
    "devices": lambda: "use a number of devices >= 1, a list of device indices, auto, or -1 for all",
}


@contextmanager
def _quiet() -> Iterator[None]:
    """No device banner or warning from the throwaway Trainer: the job's own Trainer says them."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


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
    # The nearest of the folder and its parents that exists decides.
    path = Path(str(folder))
    existing = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
    if existing is not None and not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable"
    else:
        return
    raise ConfigError(f"paths.output_dir={folder} cannot be created: {reason}; choose another folder")


# ----------------------------------------------------------------------------- helpers


def _setting(node: Any) -> Any:
    """A trainer setting as Lightning takes it: a config with a _target_ (a Strategy) built."""
    if isinstance(node, DictConfig) and "_target_" in node:
        return instantiate(node)
    return _plain(node)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- cluster


def check_node_layout(launcher: DictConfig | None) -> None:
    """Raise ConfigError when this node cannot be shared as a node_parallel `launcher` asks
    (reslab.node_plan: GPUs it lacks, a GPU listed twice, counts below 1). Any other launcher,
    or none: nothing to check."""
    if launcher is None or not str(launcher.get("_target_")).endswith(".NodeParallelLauncher"):
        return
    keys = ("gpus", "gpus_per_job", "jobs_per_gpu", "max_parallel", "threads_per_job")
    plan_node(**{key: launcher[key] for key in keys if key in launcher})


def check_cluster_layout(launcher: DictConfig | None, trainer: DictConfig) -> None:
    """Raise ConfigError when the SLURM resources of `launcher` (a `hydra.launcher` node) cannot
    run `trainer` (a job's `trainer` node) as one run of num_nodes x devices ranks. Any other
    launcher, or none: nothing to check."""
    if not is_slurm_launcher(launcher):
        return
    devices, num_nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
    # trainer.num_nodes is a whole number >= 1 already (VALUE_RULES); devices may be auto elsewhere.
    if not _allowed(devices, Rule("int", ">= 1")):
        raise ConfigError(
            f"trainer.devices={devices!r}: under hydra/launcher=slurm give a whole number >= 1 (SLURM starts one task per device on each node)"
        )
    nodes, tasks = launcher.get("nodes"), launcher.get("tasks_per_node")
    if nodes != num_nodes:
        raise ConfigError(
            f"hydra.launcher.nodes={nodes} but trainer.num_nodes={num_nodes}: one run spans the nodes "
            "SLURM gives it, so they must be equal (leave hydra.launcher.nodes out: it follows trainer.num_nodes)"
        )
    if tasks != devices:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node={tasks} but trainer.devices={devices}: SLURM starts one task "
            "per device, so they must be equal (leave hydra.launcher.tasks_per_node out: it follows trainer.devices)"
        )
    accelerator = trainer.get("accelerator")
    gpus = launcher.get("gpus_per_node") or 0
    if gpus and accelerator == "cpu":
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus} asks SLURM for GPUs that trainer.accelerator=cpu leaves "
            "idle; set hydra.launcher.gpus_per_node=null, or train on them with trainer.accelerator=gpu"
        )
    if (gpus or accelerator in GPU_ACCELERATORS) and gpus != devices:
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus or 'null'} but trainer.devices={devices} on "
            f"trainer.accelerator={accelerator}: each task trains on one GPU, so ask for {devices} per node "
            "(leave hydra.launcher.gpus_per_node out: it follows trainer.devices)"
        )


# --- A search's objective -------------------------------------------------------------------
# What a search (a sampling sweeper such as `hydra/sweeper=reslab_optuna`) needs of its trials
# before any runs: an objective. A trial's objective is its best `val/err`, so a trial that never
# validates within its steps has none, and a search of such trials would only fail each of them.


class SearchRefused(ConfigError):
    """The search's trials cannot produce its objective."""


def check_search_objective(job_config: DictConfig, sweep_config: DictConfig) -> None:
    """SearchRefused when the trials of a search cannot validate, so cannot produce an objective.

    `job_config` is a trial's composed config without its sampled values, already checked
    (check_job: its values obey VALUE_RULES, and trainer.max_steps >= 1 ends every run);
    `sweep_config` the sweep's. A search that samples a setting this depends on is left to its
    trials.
    """
    if any(key.startswith(("trainer.", "data.")) for key in sampled_keys(sweep_config)):
        return
    trainer = job_config.trainer
    if trainer.get("limit_val_batches", 1.0) == 0:
        raise SearchRefused(
            "the search's objective is each trial's best val/err, and trainer.limit_val_batches=0 "
            "turns validation off; give it a positive number of batches (or a fraction)"
        )
    first = first_validation(job_config)
    max_steps = trainer.get("max_steps")
    if first is not None and _is_int(max_steps) and first[0] > max_steps:
        step, how = first
        raise SearchRefused(
            f"no trial can produce the search's objective (its best val/err): the first validation "
            f"comes at step {step} ({how}), after trainer.max_steps={max_steps}; validate sooner (e.g. "
            "trainer.val_check_interval=N with trainer.check_val_every_n_epoch=null: every N steps) or train "
            "longer (trainer.max_steps)"
        )


def sampled_keys(sweep_config: DictConfig) -> list[str]:
    """The keys a sampling sweeper varies: its `params` and the command line's sweep overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(sweep_config, "hydra.sweeper.params") or {}
    task = OmegaConf.to_container(OmegaConf.select(sweep_config, "hydra.overrides.task") or [], resolve=False)
    overrides = OverridesParser.create().parse_overrides(task)
    return [*params.keys(), *(o.key_or_group for o in overrides if o.is_sweep_override())]


def first_validation(job_config: DictConfig) -> tuple[int, str] | None:
    """(step, how) of the first validation as Lightning schedules it, or None when it cannot be
    told before training (data whose size needs loading)."""
    trainer = job_config.trainer
    interval = trainer.get("val_check_interval")  # steps (an int), a share of an epoch, or null
    every_n_epochs = trainer.get("check_val_every_n_epoch", 1)
    if every_n_epochs is None:
        return (interval, f"trainer.val_check_interval={interval} steps") if _is_int(interval) else None
    batches = training_batches_per_epoch(job_config)
    if batches is None:
        return None
    if _is_int(interval):
        within = min(interval, batches)
    else:
        within = max(1, int(batches * (1.0 if interval is None else interval)))
    how = f"trainer.check_val_every_n_epoch={every_n_epochs}, {batches} training batches an epoch"
    return (every_n_epochs - 1) * batches + within, how


def training_batches_per_epoch(job_config: DictConfig) -> int | None:
    """Training batches per epoch of each process, from the datamodule's training split and the
    number of processes (devices x nodes, where given as numbers), for data held in memory
    (loaded in moments); None for other data."""
    from reslab.data.in_memory import InMemoryDataModule

    datamodule = instantiate(job_config.data)
    if not isinstance(datamodule, InMemoryDataModule):
        return None
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    devices, nodes = job_config.trainer.get("devices"), job_config.trainer.get("num_nodes", 1)
    if _is_int(devices) and devices * nodes > 1:
        batches = math.ceil(batches / (devices * nodes))  # each process draws its share of the split
    limit = job_config.trainer.get("limit_train_batches")
    if limit is not None:
        batches = min(batches, limit) if _is_int(limit) else int(batches * limit)  # as Lightning reads it
    return batches


def _plain(node: Any) -> Any:
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node
