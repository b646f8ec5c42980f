"""Start-up time of `reslab-train --cfg job` and `--help` against `import torch`.

    python benchmarks/startup.py            # median of 5 runs each

`--cfg job` composes and prints the config without importing Lightning, torchmetrics or
torchvision (reslab/train.py imports nothing heavy; the tasks are imported when a job starts).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "reslab-train --cfg job": [sys.executable, "-m", "reslab.train", "--cfg", "job"],
    "reslab-train --help": [sys.executable, "-m", "reslab.train", "--help"],
}


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(repeats: int = 5) -> None:
    medians = {}
    for name, command in COMMANDS.items():
        wall_time(command)  # warm the file cache
        medians[name] = statistics.median(wall_time(command) for _ in range(repeats))
        print(f"{name:28s} {medians[name]:6.2f} s (median of {repeats})")
    ratio = medians["reslab-train --cfg job"] / medians["import torch"]
    print(f"--cfg job / import torch: {ratio:.2f}x (target <= 1.0)")
    print("reproduce: python benchmarks/startup.py")


if __name__ == "__main__":
    main()
