"""Start-up time of `reslab-train --cfg job` and `--help` against `import torch`, and what the
cycle collector costs a short run with the entry point's one `gc.freeze()` and without.

    python benchmarks/startup.py            # median of 5 runs each

`--cfg job` composes and prints the config without importing Lightning, torchmetrics or
torchvision (reslab/train.py imports nothing heavy; the tasks are imported when a job starts).
The short run is `reslab-train` training one step (CSV logger, no test), start to exit, in a
process whose collector passes are timed (gc.callbacks); "Python's defaults" is the same run
with `gc.freeze` made a no-op, so the collector runs as Python sets it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "reslab-train --cfg job": [sys.executable, "-m", "reslab.train", "--cfg", "job"],
    "reslab-train --help": [sys.executable, "-m", "reslab.train", "--help"],
}
SHORT_RUN = ["trainer.max_steps=1", "logger=csv", "test=false"]
# Runs reslab-train (argv after the mode) with its collector passes timed; prints them as JSON
# at exit (the exit's own pass, after every exit handler, is in the wall time only).
TIMED_COLLECTOR = """
import atexit, gc, json, sys, time
passes, began = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}, {}
def timed(phase, info):
    if phase == "start":
        began[info["generation"]] = time.perf_counter()
    else:
        passes[info["generation"]][0] += 1
        passes[info["generation"]][1] += time.perf_counter() - began[info["generation"]]
gc.callbacks.append(timed)
atexit.register(lambda: print("PASSES", json.dumps(passes)))
mode, sys.argv = sys.argv[1], ["reslab-train", *sys.argv[2:]]
if mode == "python-defaults":
    gc.freeze = lambda: None
from reslab.train import main
main()
"""
COLLECTOR_MODES = {"gc.freeze() at start": "reslab", "Python's defaults": "python-defaults"}


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def short_run(mode: str, run_dir: str) -> dict[str, float]:
    """Wall seconds of a one-step run, and the seconds and full passes of its collector."""
    command = [sys.executable, "-c", TIMED_COLLECTOR, mode, *SHORT_RUN, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    passes = json.loads(done.stdout.rsplit("PASSES", 1)[1])
    return {"wall_s": wall, "collector_s": sum(s for _, s in passes.values()), "full_passes": passes["2"][0]}


def main(repeats: int = 5) -> None:
    medians = {}
    for name, command in COMMANDS.items():
        wall_time(command)  # warm the file cache
        medians[name] = statistics.median(wall_time(command) for _ in range(repeats))
        print(f"{name:28s} {medians[name]:6.2f} s (median of {repeats})")
    ratio = medians["reslab-train --cfg job"] / medians["import torch"]
    print(f"--cfg job / import torch: {ratio:.2f}x (target <= 1.0)")

    print(f"\nreslab-train {' '.join(SHORT_RUN)}, start to exit (median of {repeats}, interleaved):")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in COLLECTOR_MODES}
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(repeats):
            for name, mode in COLLECTOR_MODES.items():
                runs[name].append(short_run(mode, f"{workdir}/{mode}-{repeat}"))
    for name, results in runs.items():
        wall, spent, full = (
            statistics.median(r[key] for r in results) for key in ("wall_s", "collector_s", "full_passes")
        )
        print(
            f"  collector with {name:18s} {wall:6.2f} s; collector passes {spent:5.2f} s ({full:.0f} full) before exit"
        )
    print("reproduce: python benchmarks/startup.py")


if __name__ == "__main__":
    main()
