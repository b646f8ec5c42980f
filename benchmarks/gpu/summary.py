"""The GPU check's summary: the key figures of benchmarks/gpu/results/*.json against their goals.

    python benchmarks/gpu/summary.py benchmarks/gpu/results [SECONDS_TAKEN] [--dry-run]

Writes summary.json beside the results and prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def load(results: Path, name: str) -> dict:
    path = results / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def tests_outcome(results: Path) -> dict:
    try:
        suite = ElementTree.parse(results / "gpu_tests.xml").getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [
        case.get("name")
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**counts, "failed": failed}


def figures(results: Path) -> list[tuple[str, str, str]]:
    """(what, measured, goal) rows."""
    rows = []
    tests = tests_outcome(results)
    if tests:
        passed = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
        rows.append(
            (
                "gpu-marked tests",
                f"{passed} passed, {tests['skipped']} skipped, {tests['failures'] + tests['errors']} failed "
                + (f"({', '.join(tests['failed'])})" if tests["failed"] else ""),
                "all pass",
            )
        )
    syncs = load(results, "host_syncs.json")
    if syncs:
        rows.append(
            (
                "host reads / CUDA syncs per step between flushes",
                f"{syncs.get('reads_per_step_outside_flushes')} / {syncs.get('cuda_syncs_per_step_outside_flushes')}",
                "0 / 0",
            )
        )
    cifar = load(results, "cifar_resnets.json")
    for row in cifar.get("rows", []):
        if "images_per_s" in row:
            peak = f", {100 * row['peak_fraction']:.1f}% of peak" if row.get("peak_fraction") else ""
            rows.append(
                (
                    f"CIFAR ResNet-{row['depth']} {row['variant']}, batch {row['batch_size']}",
                    f"{row['images_per_s']:,.0f} images/s ({row['ms_per_step']:.2f} ms/step{peak})",
                    "",
                )
            )
        else:
            rows.append((f"CIFAR ResNet-{row['depth']} {row['variant']}", row.get("skipped", "?"), ""))
    for variant, projection in cifar.get("table6_projection", {}).items():
        rows.append(
            (
                f"Table 6 grid ({projection['jobs']} jobs x 64k steps), one GPU, {variant}",
                f"{projection['hours_one_after_another']} h one job after another",
                "",
            )
        )
    loop = load(results, "loop_overhead.json")
    for case in loop.get("cases", []):
        for loggers, by_statistic in case.get("results", {}).items():
            row = by_statistic.get("median", {})
            rows.append(
                (
                    f"ResLab / plain loop, {case['case']}, logger={loggers}",
                    f"{row.get('speed_ratio', float('nan')):.3f}x speed",
                    f">= {case['goal']}",
                )
            )
    resnet50 = load(results, "resnet50.json")
    if resnet50:
        speed = resnet50.get("throughput") or {}
        peak = f", {100 * speed['peak_fraction']:.1f}% of peak" if speed.get("peak_fraction") else ""
        rows.append(
            (
                "ImageNet-shape ResNet-50 bf16, synthetic",
                f"{speed.get('images_per_s', 'n/a')} images/s{peak}",
                f">= {resnet50.get('goal_images_per_s')} (H100 class)",
            )
        )
    packing = load(results, "jobs_per_gpu.json")
    for row in packing.get("rows", []):
        if "sweep_wall_s" in row:
            rows.append(
                (
                    f"{row['jobs']} ResNet-20 jobs, jobs_per_gpu={row['jobs_per_gpu']}",
                    f"{row['sweep_wall_s']} s, {row['images_per_s_whole_sweep']:,.0f} images/s over the sweep "
                    f"({row['completed']}/{row['jobs']} completed)",
                    "",
                )
            )
        else:
            rows.append((f"jobs_per_gpu={row['jobs_per_gpu']}", row.get("skipped", "?"), ""))
    return rows


def main() -> None:
    results = Path(sys.argv[1])
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else None
    dry_run = "--dry-run" in sys.argv
    steps = []
    steps_file = results / "steps.tsv"
    if steps_file.exists():
        for line in steps_file.read_text().splitlines():
            name, rc, took = line.split("\t")
            steps.append({"step": name, "exit_code": int(rc), "seconds": int(took)})
    device = next(
        (
            load(results, name).get("device")
            for name in ("cifar_resnets.json", "resnet50.json", "jobs_per_gpu.json")
            if load(results, name).get("device")
        ),
        "unknown",
    )
    rows = figures(results)
    summary = {
        "device": device,
        "dry_run": dry_run,
        "seconds": seconds,
        "steps": steps,
        "figures": [{"what": w, "measured": m, "goal": g} for w, m, g in rows],
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\nGPU check on {device}{' (dry run on the CPU: figures are not GPU numbers)' if dry_run else ''}, "
        f"{seconds} s in all"
    )
    for step in steps:
        print(f"  {step['step']:<14} exit {step['exit_code']:<4} {step['seconds']:>4} s")
    print("\n| what | measured | goal |\n|---|---|---|")
    for what, measured, goal in rows:
        print(f"| {what} | {measured} | {goal} |")


if __name__ == "__main__":
    main()
