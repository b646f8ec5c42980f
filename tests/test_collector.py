"""reslab.collector: the cycle collector waits while a job starts, runs while it trains, and
leaves nothing of a finished job uncollectable for the process's next job."""

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


def test_a_job_starts_paused_trains_collecting_and_leaves_its_objects_collectable():
    gc.enable()
    with collector.job_collection():
        assert not gc.isenabled()
        built = Node()
        collector.started()
        assert gc.isenabled()  # training creates garbage the collector must see
        assert gc.get_freeze_count() > 0  # what the start made is not walked again
        left_over = weakref.ref(built)
        del built
        gc.collect()
        assert left_over() is not None  # frozen while the job runs
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert left_over() is None  # the job's leftovers go before the next job


def test_a_job_that_fails_before_it_is_built_gives_the_collector_back():
    gc.enable()
    with pytest.raises(RuntimeError), collector.job_collection():
        raise RuntimeError("the data folder is missing")
    assert gc.isenabled()


def test_a_job_inside_a_paused_process_start_leaves_the_collector_paused():
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
