"""A quiet console: what Lightning and its dependencies print that a ResLab user can do nothing
about is silenced where it comes from, one exact filter per message; every other warning (data,
resume, divergence, anything new) still shows.

`quiet_console()` is called once by the entry point, before anything is built. It imports
nothing heavy, so `reslab-train --help` stays fast. The progress bar of step-based runs is a
callback: reslab.callbacks.progress.
"""

from __future__ import annotations

import logging
import warnings

# (message, category, module) of warnings that tell a ResLab user nothing to act on. The message
# is a regular expression matched at the start; the module, where set, is the one that warns.
SILENCED_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Every job's folder holds .hydra/ before the CSV logger writes metrics.csv next to it, and a
    # resumed job keeps its earlier rows (reslab.checkpoints): nothing of value is deleted.
    (
        r"Experiment logs directory .* exists and is not empty\. Previous log files in this directory will be deleted",
        UserWarning,
        r"lightning\.fabric\.loggers\.csv_logs",
    ),
    # Lightning's own use of a torch API that torch deprecated; nothing in ResLab uses it.
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
    ),
    # On a host with SLURM's tools: a run started without srun is meant to run right here, and
    # hydra/launcher=slurm starts each task with srun itself. Lightning warns from wherever it
    # first looks for SLURM, so the message alone says which warning this is.
    (r"The `srun` command is available on your system but is not used", UserWarning, ""),
    # Every training step is logged under its own step whatever the epoch's length: the values
    # only leave the device in batches of log_every_n_steps (reslab.callbacks.step_log).
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        UserWarning,
        r"lightning\.pytorch\.loops\.fit_loop",
    ),
)

# Lightning's advertisements (litlogger, litmodels), logged through its rank-zero loggers.
ADVERTISEMENT_PREFIX = "💡 Tip: "
LIGHTNING_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def not_an_advertisement(record: logging.LogRecord) -> bool:
    """False for Lightning's "💡 Tip: try installing ..." records, true for every other record."""
    return not str(record.msg).startswith(ADVERTISEMENT_PREFIX)


def quiet_console() -> None:
    """Install the filters above (a second call adds nothing)."""
    for message, category, module in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(not_an_advertisement)  # added once, however often called
    # Lightning, imported after Hydra set up logging (the job's console and train.log), still
    # gives its "lightning" logger a console handler of its own: each of its lines would print
    # twice. Its lines go to that handler only.
    logging.getLogger("lightning").propagate = False
