"""`reslab-report [SWEEP_DIR] [--wandb]`: a sweep's tables and figures, written into the sweep folder.
`reslab-report --compare A B`: sweep B against sweep A, network by network, written beside A.

Without an argument it reports the newest sweep under ./multirun. Sweeps of the experiments
ResLab reproduces (cifar_table6, imagenet_table2, imagenet_table3, preact_cifar,
mnist_transfer and their _smoke variants) get the paper's tables and figures with the paper's
numbers beside ours, and whether our seeds agree with them; every sweep gets the comparisons the
papers make between its networks, with confidence intervals and tests over seeds
(reslab.report.comparisons), the generic table of all grid points, and the jobs that did not
complete or never started.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reslab.report.collect import MISSING, UNREADABLE, Sweep, latest_sweep, load_sweep
from reslab.report.comparisons import (
    METRICS,
    Row,
    degradation_verdict,
    notes,
    sweep_comparisons,
    sweeps_comparisons,
    tested,
)
from reslab.report.gradients import gradient_section
from reslab.report.layouts import GENERIC_FIGURE, GENERIC_METRICS, Section, layout_for
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


def build_report(sweep_dir: Path, metrics: list[str] | None = None) -> Report:
    """Write report.md, results.csv and the figures into `sweep_dir`; `metrics`: what the
    comparisons between networks use (keys of reslab.report.comparisons.METRICS; default: the
    paper's, or the final training error for a sweep without a paper layout)."""
    sweep_dir = Path(sweep_dir)
    sweep = _load(sweep_dir)
    points = group_by_grid_point(sweep.jobs, sweep.missing)
    layout = layout_for(sweep.experiment, sampled=sweep.sampled)
    generic = Section("All grid points", summary_rows(points), GENERIC_LEGEND)
    sections = layout.tables(points) if layout else []
    metrics = metrics or list(layout.metrics if layout else GENERIC_METRICS)
    compared = sweep_comparisons(points, [METRICS[m] for m in metrics])

    title = _title(sweep)
    lines = [f"# Report: {title}", ""]
    if layout:
        lines += [f"Experiment `{sweep.experiment}`: {layout.title}.", ""]
    lines += [f"Sweep folder `{sweep_dir}`. " + _status_line(sweep), ""]
    for section in sections:
        lines += _section_lines(section, level=2)
    lines += _comparison_lines(compared)
    verdict = degradation_verdict(compared)
    if verdict:
        lines += ["## Degradation", "", verdict, ""]
    lines += _section_lines(generic, level=2 if layout else 0)
    lines += _problems(sweep)

    written: dict[str, Path] = {}
    if sweep.jobs:
        written["results.csv"] = _write_csv(sweep_dir / "results.csv", csv_rows(sweep.jobs))
    figures = []
    for spec in layout.figures if layout else (GENERIC_FIGURE,):
        path = spec.draw(sweep.jobs, sweep_dir / spec.filename, title)
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


def _load(sweep_dir: Path) -> Sweep:
    sweep = load_sweep(sweep_dir)
    if not sweep.jobs and not sweep.missing:
        raise SystemExit(f"reslab-report: no job folders (with .hydra/) under {sweep_dir}")
    return sweep


def _title(sweep: Sweep) -> str:
    """The experiment a sweep ran, which names its report and figures (its folder only without one)."""
    return sweep.experiment or sweep.path.name


def _comparison_lines(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    lines = ["## Comparisons over seeds", ""]
    if not tested(rows):
        return lines + ["One seed per network: comparisons need 2+ seeds of each (no intervals or p-values).", ""]
    lines += [markdown_table([row.cells() for row in rows]), ""]
    lines += notes(rows) + [""]
    return lines


@dataclass
class SweepComparison:
    """What `build_comparison` wrote: the file beside sweep A, and its text."""

    path: Path
    text: str
    rows: list[Row]


def build_comparison(a_dir: Path, b_dir: Path, metrics: list[str] | None = None) -> SweepComparison:
    """Sweep B against sweep A, each network both ran: the comparison table, written into
    `compare_A_vs_B.md` in A's parent folder (beside A)."""
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    a, b = _load(a_dir), _load(b_dir)
    layout = layout_for(a.experiment, sampled=a.sampled)
    chosen = metrics or list((layout.metrics if layout and layout.metrics else ("test",))[:1])
    rows, only_a, only_b = sweeps_comparisons(
        group_by_grid_point(a.jobs, a.missing), group_by_grid_point(b.jobs, b.missing), [METRICS[m] for m in chosen]
    )
    lines = [f"# Comparison: {b_dir.name} (B) against {a_dir.name} (A)", ""]
    for name, folder, sweep in (("A", a_dir, a), ("B", b_dir, b)):
        lines.append(f"- {name}: `{folder}`, experiment `{_title(sweep)}`. {_status_line(sweep)}")
    lines.append("")
    if rows and tested(rows):
        table = []
        for row in rows:
            cells = row.cells("A", "B")
            cells["network"] = cells.pop("comparison")
            cells["Δ (B − A) [95% CI]"] = cells.pop("Δ [95% CI]")
            cells["P(B better)"] = cells.pop("P(better)")
            table.append({key: cells[key] for key in COMPARE_COLUMNS})
        lines += [markdown_table(table), ""]
        lines += notes(rows) + [""]
    elif rows:
        lines += ["One seed per network in A or B: comparisons need 2+ seeds of each (no intervals or p-values).", ""]
    else:
        lines += ["The two sweeps share no network with completed runs.", ""]
    if only_a:
        lines += ["Only in A: " + ", ".join(only_a), ""]
    if only_b:
        lines += ["Only in B: " + ", ".join(only_b), ""]
    text = "\n".join(lines)
    path = a_dir.parent / f"compare_{a_dir.name}_vs_{b_dir.name}.md"
    path.write_text(text)
    return SweepComparison(path, text, rows)


COMPARE_COLUMNS = (
    "network",
    "metric",
    "A",
    "B",
    "Δ (B − A) [95% CI]",
    "p",
    "p (Holm)",
    "P(B better)",
    "seeds needed",
    "verdict",
)


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
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        help="compare sweep B against sweep A, network by network (written beside A)",
    )
    parser.add_argument(
        "--metric",
        action="append",
        choices=sorted(METRICS),
        help="what comparisons use; repeat for several (default: the paper's; final train err without a paper "
        "layout; test err for --compare)",
    )
    parser.add_argument("--wandb", action="store_true", help="also log the report's table and figures to W&B")
    parser.add_argument("--wandb-project", default=None, help="W&B project (default: W&B's own default)")
    parser.add_argument(
        "--wandb-mode",
        default=None,
        choices=["online", "offline", "disabled"],
        help="W&B mode (default: as for training jobs)",
    )
    args = parser.parse_args(argv)
    if args.compare:
        if args.sweep_dir or args.wandb:
            parser.error("--compare A B takes no other sweep folder and no --wandb")
        for folder in args.compare:
            if not folder.is_dir():
                parser.error(f"--compare: no sweep folder {folder}")
        comparison = build_comparison(*args.compare, metrics=args.metric)
        print(comparison.text)
        print(f"wrote {comparison.path}")
        return 0
    sweep_dir = args.sweep_dir or latest_sweep(Path("multirun"))
    if sweep_dir is None or not Path(sweep_dir).is_dir():
        parser.error(f"no sweep folder found: {args.sweep_dir or 'multirun/ is empty'}")
    report = build_report(Path(sweep_dir), metrics=args.metric)
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
