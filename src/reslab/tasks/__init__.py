"""Tasks a job can run (`task=NAME`): plain functions `task(cfg, run)` that build and run, while
reslab.tasks.wrapper owns the job's record, status and exit code.

Imported by name when a job starts, so that `reslab-train --help` and `--cfg job` load none of
them (nor Lightning, which they need).
"""

from __future__ import annotations

from importlib import import_module

from reslab.preflight import TASKS

# task name -> "module:function"
_TASK_FUNCTIONS = {
    "train": "reslab.tasks.train:train",
    "eval": "reslab.tasks.eval:evaluate",
    "toy_chain": "reslab.tasks.toy_chain:toy_chain",
}
assert set(_TASK_FUNCTIONS) == set(TASKS)


def task_function(name: str):
    module, function = _TASK_FUNCTIONS[name].split(":")
    return getattr(import_module(module), function)
