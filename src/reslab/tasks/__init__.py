"""Tasks a job can run (`task=NAME`): plain functions `task(cfg)` that read top to bottom (begin
the job's record, check, build, run, finish) and return the job's objective for a sweeper.

Imported by name when a job starts, so that `reslab-train --help` and `--cfg job` load none of
them (nor Lightning, which they need).
"""

from __future__ import annotations

from importlib import import_module

# task name -> "module:function"
TASKS = {
    "train": "reslab.tasks.train:train",
    "eval": "reslab.tasks.eval:evaluate",
    "toy_chain": "reslab.tasks.toy_chain:toy_chain",
}


def task_function(name: str):
    module, function = TASKS[name].split(":")
    return getattr(import_module(module), function)
