"""`reslab-report [SWEEP_DIR]`: a sweep's tables and figures, written into the sweep folder.

Without an argument it reports the newest sweep under ./multirun.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from reslab.report.collect import Job, collect_sweep, latest_sweep
from reslab.report.figures import degradation_figure
from reslab.report.tables import csv_rows, group_by_grid_point, markdown_table, summary_rows


def build_report(sweep_dir: Path) -> dict[str, Path]:
    """Write report.md, results.csv and the figures into `sweep_dir`; return their paths."""
    jobs = collect_sweep(sweep_dir)
    if not jobs:
        raise SystemExit(f"reslab-report: no job folders (with .hydra/) under {sweep_dir}")
    points = group_by_grid_point(jobs)
    table = markdown_table(summary_rows(points))
    written = {"results.csv": _write_csv(sweep_dir / "results.csv", csv_rows(jobs))}
    figure = degradation_figure(jobs, sweep_dir / "training_curves.png", title=sweep_dir.name)
    if figure:
        written["training_curves.png"] = figure
    lines = [f"# Report: {sweep_dir.name}", "", _status_line(jobs), "", table, ""]
    lines += _problems(jobs)
    lines += [
        "Errors in %. `train err`: mean per-batch training error over the last 10% of iterations;",
        "`val err` / `test err`: at the end of training; `best val err`: lowest over the run;",
        "`n`: completed seeds / jobs at this grid point (mean ± std over seeds).",
        "",
    ]
    if figure:
        lines += [f"![training curves]({figure.name})", ""]
    report = sweep_dir / "report.md"
    report.write_text("\n".join(lines))
    written["report.md"] = report
    print(table)
    return written


def _status_line(jobs: list[Job]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    return f"{len(jobs)} jobs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _problems(jobs: list[Job]) -> list[str]:
    """Jobs that did not complete are listed by name, never silently dropped."""
    bad = [job for job in jobs if job.status != "completed"]
    if not bad:
        return []
    lines = ["## Jobs that did not complete", ""]
    for job in bad:
        reason = (job.results or {}).get("error") or "no results.json yet"
        lines.append(f"- `{job.path.name}`: {job.status} ({reason})")
    return lines + [""]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reslab-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="a sweep folder (default: newest under ./multirun)")
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir or latest_sweep(Path("multirun"))
    if sweep_dir is None or not Path(sweep_dir).is_dir():
        parser.error(f"no sweep folder found: {args.sweep_dir or 'multirun/ is empty'}")
    written = build_report(Path(sweep_dir))
    for name, path in written.items():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
