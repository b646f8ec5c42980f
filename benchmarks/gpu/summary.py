"""The GPU check's summary, kept up to date while benchmarks/gpu/run.sh runs (standard library only).

    summary.py WORK OUT [--rehearsal] record STEP OUTCOME EXIT_CODE SECONDS   # a step ended
    summary.py WORK OUT [--rehearsal] refresh STEP                            # STEP is running
    summary.py WORK OUT [--rehearsal] finish SECONDS                          # the run ended
    summary.py WORK OUT [--rehearsal] check                                   # the rehearsal's checks

WORK holds plan.tsv (the steps and their limits, in order), steps.jsonl (one line per ended
step), results/STEP.json (each step's own JSON, written as the step goes) and logs/STEP.log.
Each call rewrites OUT/summary.json (every step's outcome, its JSON, the key figures against
their goals) and OUT/details.tar.gz (the results and logs), each atomically: whatever stops the
run, OUT holds what had finished.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from pathlib import Path
from xml.etree import ElementTree

MAX_FILES_BACK = 8  # what the device tool brings back from $OUT
ERROR_LINES = 25


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def log_tail(work: Path, step: str, lines: int = ERROR_LINES) -> str:
    try:
        return "\n".join((work / "logs" / f"{step}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def tests_outcome(path: Path) -> dict:
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        outcome = "failed" if bad is not None else "skipped" if skipped is not None else "ok"
        row = {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome}
        if bad is not None:
            row["error"] = "\n".join((bad.get("message", "") + "\n" + (bad.text or "")).splitlines()[-ERROR_LINES:])
        cases.append(row)
    return {
        **counts,
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "cases": cases,
    }


def step_result(work: Path, step: str) -> dict:
    if step == "tests":
        return tests_outcome(work / "results" / "tests.xml")
    return read_json(work / "results" / f"{step}.json")


# ----------------------------------------------------------------------------- key figures


def figures(steps: dict[str, dict]) -> list[dict]:
    rows: list[dict] = []

    def add(what: str, measured: object, goal: str = "") -> None:
        rows.append({"what": what, "measured": measured, "goal": goal})

    for name, step in steps.items():
        result = step.get("result") or {}
        try:
            FIGURES.get(name, lambda r, a: None)(result, add)
        except Exception as error:  # noqa: BLE001  (a figure that cannot be read must not lose the summary)
            add(f"{name}: figures", f"unreadable ({type(error).__name__}: {error})")
    return rows


def setup_figures(r: dict, add) -> None:
    if r:
        add(
            "machine",
            f"{r.get('device')}, Python {r.get('python_version')}, torch {r.get('torch')}, "
            f"Lightning {r.get('lightning')}; from the carried wheels: {len(r.get('installed_from_wheels', []))} packages",
            "",
        )


def syncs_figures(r: dict, add) -> None:
    if r.get("status"):
        add(
            "host reads / CUDA syncs per training step between flushes, Table 6 recipe",
            f"{r.get('reads_per_step_outside_flushes')} / {r.get('cuda_syncs_per_step_outside_flushes')}",
            "0 / 0",
        )


def loop_figures(r: dict, add) -> None:
    if r.get("speed_ratio_median") is not None:
        add(
            f"ResLab / plain loop steady speed, {r.get('case')} ({r.get('repeats_done')} repeats)",
            f"{r['speed_ratio_median']:.3f}x median ({r.get('speed_ratio_min', 0):.3f}-{r.get('speed_ratio_max', 0):.3f})",
            f">= {r.get('goal')}",
        )


def resnet50_figures(r: dict, add) -> None:
    for v in r.get("variants", []):
        if v.get("outcome") == "ok":
            add(
                f"ResNet-50 {v.get('image_size')}px {v.get('compute_dtype')} channels_last, batch {v.get('batch_size')}",
                f"{v.get('images_per_s')} images/s ({v.get('peak_fraction')} of peak)",
                f">= {r.get('goal_images_per_s')}",
            )


def jobs_figures(r: dict, add) -> None:
    for v in r.get("variants", []):
        if v.get("outcome") == "ok":
            add(
                f"{v['jobs_per_gpu']} job(s) per GPU, {r.get('job')}",
                f"{v.get('images_per_s_overlapping')} images/s together while overlapping "
                f"({v.get('speedup_vs_one_job')}x one job); peak memory {v.get('peak_memory_max_gib')} GiB "
                f"of a {v.get('memory_share_gib')} GiB share",
                "",
            )
    projection = r.get("table6_projection") or {}
    if projection.get("hours"):
        add(
            f"Table 6 grid ({projection['jobs']} jobs x {projection['steps_per_job']} steps), one GPU",
            f"{projection['hours']} h ({projection['jobs_per_gpu']} per GPU; one after another "
            f"{projection['hours_one_after_another']} h)",
            "",
        )


def compile_figures(r: dict, add) -> None:
    rows = {v.get("variant"): v for v in r.get("variants", [])}
    first, resumed = rows.get("compiled run", {}), rows.get("resumed from its checkpoint", {})
    if first:
        add("speed.compile through reslab-train", f"{first.get('outcome')}: {first.get('images_per_s')} images/s", "")
    if resumed:
        add(
            "compiled run resumed from its checkpoint",
            f"{resumed.get('outcome')}: from step {resumed.get('resumed_from_step')} to {resumed.get('steps')}",
            "",
        )


def tests_figures(r: dict, add) -> None:
    if r:
        failed = [c["test"] for c in r.get("cases", []) if c["outcome"] == "failed"]
        add(
            "gpu-marked tests",
            f"{r['passed']} passed, {r['skipped']} skipped, {len(failed)} failed"
            + (f" ({', '.join(failed)})" if failed else ""),
            "all pass",
        )


def ddp_figures(r: dict, add) -> None:
    for v in r.get("variants", []):
        add(
            "1-device DDP run",
            f"{v.get('outcome')}: backend {v.get('backend')}, world size {v.get('world_size')}",
            "nccl on a GPU",
        )


FIGURES = {
    "setup": setup_figures,
    "syncs": syncs_figures,
    "loop": loop_figures,
    "resnet50": resnet50_figures,
    "jobs_per_gpu": jobs_figures,
    "compile": compile_figures,
    "tests": tests_figures,
    "ddp": ddp_figures,
}


# ----------------------------------------------------------------------------- writing


def plan(work: Path) -> list[tuple[str, int]]:
    lines = (work / "plan.tsv").read_text().splitlines()
    return [(name, int(limit)) for name, limit in (line.split("\t") for line in lines if line)]


def build(work: Path, rehearsal: bool, running: str | None, seconds: int | None) -> dict:
    ended = {}
    if (work / "steps.jsonl").exists():
        for line in (work / "steps.jsonl").read_text().splitlines():
            record = json.loads(line)
            ended[record["step"]] = record
    steps = {}
    for name, limit in plan(work):
        record = ended.get(name) or {"step": name, "outcome": "running" if name == running else "not started"}
        steps[name] = {**record, "limit_s": limit, "result": step_result(work, name)}
    device = next((s["result"].get("device") for s in steps.values() if s["result"].get("device")), None)
    return {
        "what": "ResLab's GPU check (benchmarks/gpu/run.sh)"
        + (", rehearsed on the CPU: not GPU figures" if rehearsal else ""),
        "rehearsal": rehearsal,
        "device": device,
        "updated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "finished": seconds is not None,
        "seconds": seconds,
        "limit_s": sum(limit for _, limit in plan(work)),
        "outcomes": {name: step["outcome"] for name, step in steps.items()},
        "figures": figures(steps),
        "steps": list(steps.values()),
    }


def write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write(work: Path, out: Path, summary: dict) -> None:
    write_atomically(out / "summary.json", lambda h: h.write((json.dumps(summary, indent=1) + "\n").encode()))

    def pack(handle) -> None:
        with tarfile.open(fileobj=handle, mode="w:gz") as tar:
            for folder in ("results", "logs"):
                if (work / folder).is_dir():
                    tar.add(work / folder, arcname=folder)

    write_atomically(out / "details.tar.gz", pack)


def check(out: Path, work: Path) -> int:
    """The rehearsal's checks: what comes back fits the device tool, and every step ran and passed."""
    files = [p for p in out.rglob("*") if p.is_file()]
    summary = read_json(out / "summary.json")
    problems = []
    if len(files) > MAX_FILES_BACK:
        problems.append(f"{len(files)} files under {out}, more than the {MAX_FILES_BACK} that come back")
    outcomes = summary.get("outcomes", {})
    for name, _ in plan(work):
        if name not in outcomes:
            problems.append(f"the summary does not name the step {name}")
        elif outcomes[name] != "ok":
            problems.append(f"step {name}: {outcomes[name]}")
        elif name != "setup" and not step_result(work, name):
            problems.append(f"step {name} wrote no results")
        variants = step_result(work, name).get("variants") or step_result(work, name).get("cases") or []
        for row in variants:
            if row.get("outcome") == "failed":
                problems.append(f"step {name}, {row.get('variant') or row.get('test')}: failed\n{row.get('error', '')}")
        if variants and not any(row.get("outcome") == "ok" for row in variants):
            problems.append(f"step {name}: no variant ran")
    for problem in problems:
        print(f"rehearsal: {problem}")
    print(
        f"rehearsal: {len(files)} files in {out} ({', '.join(sorted(p.name for p in files))}); "
        + ("passed" if not problems else "FAILED")
    )
    return 1 if problems else 0


def print_table(summary: dict) -> None:
    print(
        f"\nGPU check on {summary['device'] or '?'}{' (rehearsal on the CPU)' if summary['rehearsal'] else ''}: "
        f"{summary['seconds']} s of {summary['limit_s']} s"
    )
    for step in summary["steps"]:
        print(f"  {step['step']:<14} {step['outcome']:<11} {step.get('seconds', '-'):>4} s of {step['limit_s']}")
    print("\n| what | measured | goal |\n|---|---|---|")
    for row in summary["figures"]:
        print(f"| {row['what']} | {row['measured']} | {row['goal']} |")


def main() -> int:
    args = sys.argv[1:]
    rehearsal = "--rehearsal" in args
    args = [a for a in args if a != "--rehearsal"]
    work, out, command, rest = Path(args[0]), Path(args[1]), args[2], args[3:]
    running = seconds = None
    if command == "record":
        name, outcome, exit_code, took = rest
        record = {"step": name, "outcome": outcome, "exit_code": int(exit_code), "seconds": int(took)}
        if outcome in ("failed", "timed_out"):
            record["error"] = log_tail(work, name)
        with open(work / "steps.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
    elif command == "refresh":
        running = rest[0]
    elif command == "finish":
        seconds = int(rest[0])
    elif command == "check":
        return check(out, work)
    summary = build(work, rehearsal, running, seconds)
    write(work, out, summary)
    if command == "finish":
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
