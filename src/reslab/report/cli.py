"""`reslab-report [SWEEP_DIR] [--wandb]`: a sweep's tables and figures, written into the sweep folder.
`reslab-report --compare A B`: sweep B against sweep A, network by network, written beside A.

Without an argument it reports the newest sweep under ./multirun. What a report holds: the
README's "Reproductions" and "How sure each comparison is".
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from reslab.report import stats
from reslab.report.collect import MISSING, UNREADABLE, Sweep, latest_sweep, load_sweep
from reslab.report.comparisons import (
    METRICS,
    Row,
    degradation_verdict,
    sweep_comparisons,
    sweeps_comparisons,
)
from reslab.report.gradients import gradient_section
from reslab.report.layouts import GENERIC_FIGURE, GENERIC_METRICS, Section, layout_for
from reslab.report.tables import csv_rows, group_by_grid_point, markdown_table, shared_overrides, summary_rows
from reslab.wandb_runs import WANDB_MODES

GENERIC_LEGEND = [
    "Errors in %. `train err`: mean per-batch training error over the last 10% of iterations;",
    "`val err` / `test err`: at the end of training; `best val err`: lowest over the run;",
    "`n`: completed seeds / jobs at this grid point (mean ± std over seeds).",
]


def build_report(sweep_dir: Path, metrics: list[str] | None = None) -> tuple[dict[str, Path], list[dict], str]:
    """Write report.md, results.csv and the figures into `sweep_dir`; `metrics`: what the
    comparisons between networks use (keys of reslab.report.comparisons.METRICS; default: the
    paper's, or the final training error for a sweep without a paper layout). Returns the files
    written, the rows of the main table (the paper's, when it has one) and the report's text."""
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
    if compared:
        lines += ["## Comparisons over seeds", ""] + _comparison_lines(compared)
    verdict = degradation_verdict(compared)
    if verdict:
        lines += ["## Degradation", "", verdict, ""]
    lines += _section_lines(generic, level=2 if layout else 0)
    lines += _problems(sweep)

    written: dict[str, Path] = {}
    if sweep.jobs:
        rows = csv_rows(sweep.jobs)
        written["results.csv"] = sweep_dir / "results.csv"
        with written["results.csv"].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for filename, caption, draw in layout.figures if layout else (GENERIC_FIGURE,):
        path = draw(sweep.jobs, sweep_dir / filename, title=title)
        if path:
            written[filename] = path
            lines += [f"![{caption}]({path.name})", ""]
    gradient_lines, gradient_figures = gradient_section(sweep.jobs, sweep_dir)
    lines += gradient_lines
    written.update((path.name, path) for path in gradient_figures)
    text = "\n".join(lines)
    report = sweep_dir / "report.md"
    report.write_text(text)
    written["report.md"] = report
    return written, sections[0].rows if sections else generic.rows, text


def _load(sweep_dir: Path) -> Sweep:
    sweep = load_sweep(sweep_dir)
    if not sweep.jobs and not sweep.missing:
        raise SystemExit(f"reslab-report: no job folders (with .hydra/) under {sweep_dir}")
    return sweep


def _title(sweep: Sweep) -> str:
    """The experiment a sweep ran, which names its report and figures (its folder only without one)."""
    return sweep.experiment or sweep.path.name


def _comparison_lines(rows: list[Row], whose: str = "", columns: dict[str, str] | None = None) -> list[str]:
    """The table of `rows` (`columns` renames its columns) and how to read it; without 2+ seeds on
    both sides of any comparison, why there is none."""
    if not any(min(row.comparison.n) >= 2 for row in rows):
        return [f"One seed per network{whose}: comparisons need 2+ seeds of each (no intervals or p-values).", ""]
    columns = columns or {}
    table = [{columns.get(key, key): cell for key, cell in row.cells().items()} for row in rows]
    tests = sum(row.comparison.p is not None for row in rows)
    return [markdown_table(table), "", stats.describe_method(tests), ""]


# The comparison table's columns as `--compare` names them (B against A).
COMPARE_COLUMNS = {
    "comparison": "network",
    "first": "A",
    "second": "B",
    "Δ [95% CI]": "Δ (B − A) [95% CI]",
    "P(better)": "P(B better)",
}


def build_comparison(a_dir: Path, b_dir: Path, metrics: list[str] | None = None) -> tuple[Path, str]:
    """Sweep B against sweep A, each network both ran: the comparison table, written into
    `compare_A_vs_B.md` in A's parent folder (beside A); returns that file and its text."""
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
    if rows:
        lines += _comparison_lines(rows, " in A or B", COMPARE_COLUMNS)
    else:
        lines += ["The two sweeps share no network with completed runs.", ""]
    if only_a:
        lines += ["Only in A: " + ", ".join(only_a), ""]
    if only_b:
        lines += ["Only in B: " + ", ".join(only_b), ""]
    text = "\n".join(lines)
    path = a_dir.parent / f"compare_{a_dir.name}_vs_{b_dir.name}.md"
    path.write_text(text)
    return path, text


def _section_lines(section: Section, level: int) -> list[str]:
    lines = [f"{'#' * level} {section.title}", ""] if level else []
    lines += [markdown_table(section.rows), ""]
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
        shared = shared_overrides(sweep.grid)
        lines += ["## Grid points not started (no job folder)", ""]
        lines += [f"- `{' '.join(o for o in point if o not in shared)}`" for point in sweep.missing]
        lines.append("")
    return lines


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
        choices=WANDB_MODES,
        help="W&B mode (default: as for training jobs)",
    )
    args = parser.parse_args(argv)
    if args.compare:
        if args.sweep_dir or args.wandb:
            parser.error("--compare A B takes no other sweep folder and no --wandb")
        for folder in args.compare:
            if not folder.is_dir():
                parser.error(f"--compare: no sweep folder {folder}")
        path, text = build_comparison(*args.compare, metrics=args.metric)
        print(text)
        print(f"wrote {path}")
        return 0
    sweep_dir = args.sweep_dir or latest_sweep(Path("multirun"))
    if sweep_dir is None or not Path(sweep_dir).is_dir():
        parser.error(f"no sweep folder found: {args.sweep_dir or 'multirun/ is empty'}")
    written, table_rows, text = build_report(Path(sweep_dir), metrics=args.metric)
    print(text)
    for path in written.values():
        print(f"wrote {path}")
    if args.wandb:
        # Imported here: W&B is slow to import and only this flag needs it.
        from reslab.report.wandb_summary import log_report_to_wandb

        figures = [path for path in written.values() if path.suffix == ".png"]
        where = log_report_to_wandb(
            Path(sweep_dir), table_rows, figures, project=args.wandb_project, mode=args.wandb_mode
        )
        print(f"W&B report run: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
