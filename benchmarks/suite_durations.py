"""Two test-suite runs compared by the time their tests took, from pytest's `--durations=0` lists.

    (cd BEFORE && pytest --durations=0 -p no:cacheprovider) > before.log   # each commit's own README command
    (cd AFTER && pytest --durations=0 -p no:cacheprovider) > after.log     # right after, on the same machine
    python benchmarks/suite_durations.py before.log after.log [--json results/suite_ab.json]

Prints, for each run, the summed setup + call + teardown seconds of all its tests, and the same
sums over the tests both runs have (same node id), whose ratio after/before is the like-for-like
figure: a suite that gained tests for new capabilities is slower in total for that alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

# pytest's durations lines: "12.34s call     tests/test_x.py::test_y[param]"
DURATION_LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s (setup|call|teardown)\s+(\S+)")


def test_seconds(log: Path) -> dict[str, float]:
    """Seconds per test node id (setup, call and teardown summed)."""
    seconds: dict[str, float] = defaultdict(float)
    for line in log.read_text(errors="replace").splitlines():
        found = DURATION_LINE.match(line)
        if found:
            seconds[found.group(3)] += float(found.group(1))
    if not seconds:
        sys.exit(f"{log} holds no durations: run pytest with --durations=0")
    return dict(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    before, after = test_seconds(args.before), test_seconds(args.after)
    common = sorted(set(before) & set(after))
    figures = {
        "before": {"tests": len(before), "seconds": round(sum(before.values()), 1)},
        "after": {"tests": len(after), "seconds": round(sum(after.values()), 1)},
        "common": {
            "tests": len(common),
            "before_s": round(sum(before[t] for t in common), 1),
            "after_s": round(sum(after[t] for t in common), 1),
        },
    }
    figures["common"]["ratio"] = round(figures["common"]["after_s"] / figures["common"]["before_s"], 3)
    figures["total_ratio"] = round(figures["after"]["seconds"] / figures["before"]["seconds"], 3)
    for side in ("before", "after"):
        print(f"{side}: {figures[side]['tests']} tests, {figures[side]['seconds']} s summed")
    c = figures["common"]
    print(f"tests in both: {c['tests']}, {c['before_s']} s before, {c['after_s']} s after, after/before {c['ratio']}")
    print(f"all tests: after/before {figures['total_ratio']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
