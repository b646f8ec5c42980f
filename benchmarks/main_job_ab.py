"""The main job end to end, two versions of ResLab against each other, in interleaved pairs.

    python benchmarks/main_job_ab.py --a /tmp/base/src --pairs 4            # that tree (A) vs this install (B)
    python benchmarks/main_job_ab.py --a /tmp/base/src --b-override hydra.launcher.reuse_processes=false

Each side runs the README's first command after installation, `reslab-train -m
experiment=digits_degradation && reslab-report` (W&B offline, into a scratch folder), timed from
start to the report's last byte. A side is a source folder put first on PYTHONPATH (a copy of
another commit's `src/`, with its `conf/` linked in as `src/reslab/conf`), or the installed tree
when none is given. The runs go A, B, A, B, ... (each pair in one order, the next in the other,
so that a machine getting slower or faster weighs on both), and each pair gives a ratio B / A;
the median of the ratios is the figure, as this machine's speed drifts by a third within an hour.
Extra arguments are overrides for both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_side(src: str | None, overrides: list[str], scratch: Path) -> float:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    sweep = scratch / f"sweep-{time.monotonic_ns()}"
    train = [sys.executable, "-m", "reslab.train", "-m", "experiment=digits_degradation", f"hydra.sweep.dir={sweep}"]
    start = time.perf_counter()
    subprocess.run([*train, *overrides], cwd=scratch, env=env, check=True, capture_output=True)
    subprocess.run(
        [sys.executable, "-m", "reslab.report.cli", str(sweep)], cwd=scratch, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", help="side A's source folder (default: the installed tree)")
    parser.add_argument("--b", help="side B's source folder (default: the installed tree)")
    parser.add_argument("--b-override", action="append", default=[], help="an override for side B only")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="main-job-ab-") as scratch:
        for number in range(args.pairs):
            sides = {"a": (args.a, args.overrides), "b": (args.b, args.overrides + args.b_override)}
            order = "ab" if number % 2 == 0 else "ba"
            times = {side: run_side(*sides[side], Path(scratch)) for side in order}
            load = os.getloadavg()[0]
            pairs.append({"order": order, "a_s": round(times["a"], 1), "b_s": round(times["b"], 1), "load": load})
            print(
                f"pair {number + 1} ({order}): A {times['a']:.1f} s, B {times['b']:.1f} s, "
                f"B/A {times['b'] / times['a']:.3f}, load {load:.1f}",
                flush=True,
            )
    ratios = [p["b_s"] / p["a_s"] for p in pairs]
    print(f"median B/A over {len(pairs)} pairs: {statistics.median(ratios):.3f}")
    print("command: python " + " ".join(sys.argv))
    if args.json:
        args.json.write_text(
            json.dumps({"command": sys.argv, "pairs": pairs, "median_ratio": statistics.median(ratios)}, indent=2)
        )


if __name__ == "__main__":
    main()
