"""reslab.collector: the cycle collector waits while a job starts, runs while it trains, and
freezes only the first job's imports, so that nothing of a finished job stays uncollectable in a
process that goes on to a sweep's next job."""

import gc
import subprocess
import sys
import weakref

import pytest

from reslab import collector


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def collector_as_it_was():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_a_job_starts_paused_and_trains_collecting():
    gc.enable()
    with collector.job_collection():
        assert not gc.isenabled()  # imports and building: nothing to collect yet
        collector.started()
        assert gc.isenabled()  # training makes garbage the collector must see
    assert gc.isenabled()


def test_only_the_first_jobs_imports_are_frozen_and_a_later_jobs_objects_stay_collectable():
    gc.enable()
    with collector.job_collection():
        imported = Node()  # what the first job's imports made: kept for the process's life
        collector.keep_imports()
        collector.started()
    frozen = gc.get_freeze_count()
    assert frozen > 0

    with collector.job_collection():
        built = Node()  # the next job's network, data and trainer, say
        collector.keep_imports()
        collector.started()
        left_over = weakref.ref(built)
        del built
    assert gc.get_freeze_count() == frozen  # nothing of the second job was frozen
    gc.collect()
    assert left_over() is None  # collected before a third job starts
    assert imported.me is imported


def test_a_job_that_fails_before_it_is_built_gives_the_collector_back():
    gc.enable()
    with pytest.raises(RuntimeError), collector.job_collection():
        raise RuntimeError("the data folder is missing")
    assert gc.isenabled()


def test_a_job_in_a_process_that_started_paused_leaves_the_collector_paused():
    gc.disable()
    with collector.job_collection():
        collector.started()
    assert not gc.isenabled()


def test_a_process_started_paused_runs_its_exit_handlers_and_exits_cleanly():
    script = (
        "import atexit, gc\n"
        "from reslab import collector\n"
        "collector.start_paused()\n"
        "assert not gc.isenabled()\n"
        "atexit.register(lambda: print('exit handler ran', flush=True))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "exit handler ran\n"
