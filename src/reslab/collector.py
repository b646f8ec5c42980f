"""When Python's cycle collector runs in ResLab's processes.

A job's start imports torch, Lightning and their dependencies: half a million objects that live
as long as the process. While they are being created, the collector walks every object it
tracks again and again; after each job of a sweep's process and at exit it walks them all once
more. Measured on the 2-core machine: a one-step `reslab-train` run makes 7 full passes
(1.2 s) before its step (`python benchmarks/startup.py`); a full pass after the imports, as at
exit, takes 0.55-0.7 s (the one-liner in benchmarks/README.md, "Start-up"). So:

- `reslab-train` starts with the collector paused (`start_paused`), and every job runs with it
  paused (`job_collection`) while it imports and builds;
- once the task's modules are imported (torch, Lightning, the task's own), what exists is
  frozen, once a process (`keep_imports`): the collector never walks it again. Frozen later,
  a sweep's next job would keep the objects of the one before;
- the collector resumes when the job's network, data, module and trainer are built
  (`started`), and runs over what training makes;
- at exit the collector's last walk is skipped (`skip_collection_at_exit`).

A sweep's own process resumes collecting in its pre-check (reslab.sweep.SweepOwner, one of the
`hydra.callbacks`); an app that drops that callback leaves its sweep's process paused (its
jobs are not affected).
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager


def start_paused() -> None:
    """For a process's entry point: no collection until `started`, none at exit."""
    skip_collection_at_exit()
    gc.disable()


@contextmanager
def job_collection() -> Iterator[None]:
    """Around one job: the collector paused until `started`, and afterwards as it was before."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


def keep_imports() -> None:
    """Freeze what exists, the first time in a process: the imports a job needs, which live as
    long as the process. Later calls do nothing, as what exists then holds jobs' objects."""
    if gc.get_freeze_count() == 0:
        gc.freeze()


def started() -> None:
    """What the job is built of exists: collect again, over what it makes from here on."""
    gc.enable()


def skip_collection_at_exit() -> None:
    """Freeze the collector's objects after every other exit handler has run.

    Registered first, so it runs last: W&B's teardown, logging's flush and every other handler
    run before it as usual, and objects are still released by reference counting; only the
    collector's final walk is skipped.
    """
    atexit.register(gc.freeze)
