"""When Python's cycle collector runs in ResLab's processes.

A job's start imports torch, Lightning and their dependencies: half a million objects that live
as long as the process. While they are being created, the collector walks every object it
tracks again and again, and at exit once more, for memory the operating system frees at once.
Measured on the 2-core machine (a digits job, `reslab-train`): 8 full passes, 1.3 s, before the
first training step; 1.2 s at exit (0.2 s frozen). So:

- `reslab-train` starts with the collector paused (`start_paused`), and a job runs with it
  paused (`job_collection`), until what lives on has been made: the job's network, data,
  module and trainer built, or, in a sweep's process, the pre-check's first job checked
  (which imports torch and Lightning). Then `started`: what exists is frozen (`gc.freeze`,
  never walked again) and the collector runs on, over what comes next;
- when a job ends the freeze is lifted, so that a process that goes on to a sweep's next job
  can collect this one's leftovers;
- at exit the collector's last walk is skipped (`skip_collection_at_exit`).
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


def started() -> None:
    """What the start made lives on: freeze it, and collect from here on."""
    gc.freeze()
    gc.enable()


@contextmanager
def job_collection() -> Iterator[None]:
    """Around one job: the collector paused until `started`, and afterwards as it was before
    the job, with the job's frozen objects collectable again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


def skip_collection_at_exit() -> None:
    """Freeze the collector's objects after every other exit handler has run.

    Registered first, so it runs last: W&B's teardown, logging's flush and every other handler
    run before it as usual, and objects are still released by reference counting; only the
    collector's final walk over the frozen objects is skipped.
    """
    atexit.register(gc.freeze)
