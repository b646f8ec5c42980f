"""`reslab-report [SWEEP_DIR] [--wandb]`: a sweep's tables and figures, written into the sweep folder.

Without an argument it reports the newest sweep under ./multirun. Sweeps of the experiments
ResLab reproduces (cifar_table6, imagenet_table2, imagenet_table3, preact_cifar,
mnist_transfer and their _smoke variants) get the paper's tables and figures with the paper's
numbers beside ours; every sweep gets the generic table of all grid points, and the jobs that
did not complete or never started are listed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reslab.report.collect import MISSING, UNREADABLE, Sweep, latest_sweep, load_sweep
from reslab.report.gradients import gradient_section
from reslab.report.layouts import GENERIC_FIGURE, Section, degradation_verdict, layout_for
from reslab.report.tables import COLUMNS, csv_rows, group_by_grid_point, markdown_table, summary_rows

GENERIC_LEGEND = [
    "Errors in %. `train err`: mean per-batch training error over the last 10% of iterations;",
    "`val err` / `test err`: at the end of training; `best val err`: lowest over the run;",
    "`n`: completed seeds / jobs at this grid point (mean ± std over seeds).",
]


@dataclass
class Report:
    """What `build_report` wrote, and the rows of its main table (the paper's, when it has one)."""

    written: dict[str, Path]
    table_rows: list[dict[str, str]]
    figures: list[Path] = field(default_factory=list)
    text: str = ""


def build_report(sweep_dir: Path) -> Report:
    """Write report.md, results.csv and the figures into `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    sweep = load_sweep(sweep_dir)
    if not sweep.jobs and not sweep.missing:
        raise SystemExit(f"reslab-report: no job folders (with .hydra/) under {sweep_dir}")
    points = group_by_grid_point(sweep.jobs, sweep.missing)
    layout = layout_for(sweep.experiment, sampled=sweep.sampled)
    generic = Section("All grid points", summary_rows(points), GENERIC_LEGEND)
    sections = layout.tables(points) if layout else []

    lines = [f"# Report: {sweep_dir.name}", ""]
    if layout:
        lines += [f"Experiment `{sweep.experiment}`: {layout.title}.", ""]
    lines += [_status_line(sweep), ""]
    for section in sections:
        lines += _section_lines(section, level=2)
    verdict = degradation_verdict(points)
    if verdict:
        lines += ["## Degradation", "", verdict, ""]
    lines += _section_lines(generic, level=2 if layout else 0)
    lines += _problems(sweep)

    written: dict[str, Path] = {}
    if sweep.jobs:
        written["results.csv"] = _write_csv(sweep_dir / "results.csv", csv_rows(sweep.jobs))
    figures = []
    for spec in layout.figures if layout else (GENERIC_FIGURE,):
        path = spec.draw(sweep.jobs, sweep_dir / spec.filename, sweep_dir.name)
        if path:
            figures.append(path)
            written[spec.filename] = path
            lines += [f"![{spec.caption}]({path.name})", ""]
    gradient_lines, gradient_figures = gradient_section(sweep.jobs, sweep_dir)
    lines += gradient_lines
    figures += gradient_figures
    written.update((path.name, path) for path in gradient_figures)
    text = "\n".join(lines)
    report = sweep_dir / "report.md"
    report.write_text(text)
    written["report.md"] = report
    return Report(written, sections[0].rows if sections else generic.rows, figures, text)


def _section_lines(section: Section, level: int) -> list[str]:
    lines = [f"{'#' * level} {section.title}", ""] if level else []
    columns = None if section.rows else COLUMNS
    lines += [markdown_table(section.rows, columns), ""]
    lines += section.notes + ([""] if section.notes else [])
    return lines


def _status_line(sweep: Sweep) -> str:
    counts = sweep.statuses
    total = sum(counts.values())
    parts = [f"{n} {'not started' if status == MISSING else status}" for status, n in sorted(counts.items())]
    return f"{total} jobs: " + ", ".join(parts)


def _problems(sweep: Sweep) -> list[str]:
    """Jobs that did not complete, and grid points never started, by name: never dropped."""
    lines = []
    unreadable = [job for job in sweep.jobs if job.status == UNREADABLE]
    if unreadable:
        lines += ["## Jobs that could not be read", ""]
        lines += [f"- `{job.name}`: {job.error}" for job in unreadable]
        lines.append("")
    bad = [job for job in sweep.jobs if job.status not in ("completed", UNREADABLE)]
    if bad:
        lines += ["## Jobs that did not complete", ""]
        lines += [f"- `{job.name}`: {job.status} ({job.error or 'no reason recorded'})" for job in bad]
        lines.append("")
    if sweep.missing:
        # What every job of the grid shares (experiment, data root) would only hide the difference.
        shared = set.intersection(*(set(point) for point in sweep.grid))
        lines += ["## Grid points not started (no job folder)", ""]
        lines += [f"- `{' '.join(o for o in point if o not in shared)}`" for point in sweep.missing]
        lines.append("")
    return lines


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reslab-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="a sweep folder (default: newest under ./multirun)")
    parser.add_argument("--wandb", action="store_true", help="also log the report's table and figures to W&B")
    parser.add_argument("--wandb-project", default=None, help="W&B project (default: W&B's own default)")
    parser.add_argument(
        "--wandb-mode", default=None, choices=["online", "offline", "disabled"],
        help="W&B mode (default: as for training jobs)",
    )
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir or latest_sweep(Path("multirun"))
    if sweep_dir is None or not Path(sweep_dir).is_dir():
        parser.error(f"no sweep folder found: {args.sweep_dir or 'multirun/ is empty'}")
    report = build_report(Path(sweep_dir))
    print(report.text)
    for path in report.written.values():
        print(f"wrote {path}")
    if args.wandb:
        # Imported here: W&B is slow to import and only this flag needs it.
        from reslab.report.wandb_summary import log_report_to_wandb

        where = log_report_to_wandb(
            Path(sweep_dir), report.table_rows, report.figures, project=args.wandb_project, mode=args.wandb_mode
        )
        print(f"W&B report run: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
