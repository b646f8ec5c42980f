"""Per-unit gradient norms and response stds of runs, from their metrics.csv.

Reads what `reslab.callbacks.grad_norms.GradientNormMonitor` logs (`grad_norm/NNN_unit`,
`response_std/NNN_unit`) and answers the seed's question in real networks: does the first
layers' gradient vanish in a deep plain net? Profiles are plotted against the unit index
(0 = stem, last = fc) at the earliest and latest logged steps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reslab.errors import ConfigError
from reslab.job import read_metrics_csv

# The callback's key prefixes (repeated here so reading a CSV does not import Lightning).
GRAD_NORM_PREFIX = "grad_norm"
RESPONSE_STD_PREFIX = "response_std"

# step -> [(unit index, unit name, value)] in network order
Profiles = dict[int, list[tuple[int, str, float]]]
# The steps the report looks at: name -> (index among the logged steps, panel title).
STEPS = {"early": (0, "earliest logged step"), "late": (-1, "latest logged step")}


def read_unit_profiles(metrics_csv: str | Path, prefix: str = GRAD_NORM_PREFIX) -> Profiles:
    """Every logged step's per-unit values of `prefix/NNN_name` columns, steps ascending."""
    path = Path(metrics_csv)
    if not path.is_file():
        raise ConfigError(f"metrics file not found: {path}")
    key = re.compile(rf"{re.escape(prefix)}/(\d+)_(.+)")
    by_step: dict[int, dict[int, tuple[str, float]]] = {}
    # CSVLogger writes one row per logging call, so other metrics of the same step sit in
    # rows of their own; the callback's values all share one row, a later row wins.
    for row in read_metrics_csv(path):
        units = {
            int(match.group(1)): (match.group(2), value)
            for column, value in row.items()
            if (match := key.fullmatch(column))
        }
        if units and "step" in row:
            by_step.setdefault(int(row["step"]), {}).update(units)
    if not by_step:
        raise ConfigError(
            f"no {prefix}/* metrics in {path}: train with the gradient-norm callback, "
            "e.g. reslab-train 'callbacks=[default,grad_norms]'"
        )
    return {
        step: [(index, name, value) for index, (name, value) in sorted(units.items())]
        for step, units in sorted(by_step.items())
    }


def _plot_profiles(
    runs: Sequence[tuple[str, str | Path]], out_png: str | Path, prefix: str, ylabel: str, log_y: bool
) -> Path:
    profiles = [(label, read_unit_profiles(path, prefix)) for label, path in runs]

    fig = Figure(figsize=(5.5 * len(STEPS), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(STEPS), sharey=True, squeeze=False)[0]
    for ax, (which, title) in zip(axes, STEPS.values()):
        for label, run_profiles in profiles:
            step = list(run_profiles)[which]
            indices, _, values = zip(*run_profiles[step])
            ax.plot(indices, values, marker=".", label=f"{label} (step {step})")
        ax.set_title(title)
        ax.set_xlabel("unit index (0 = stem, last = fc)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log_y:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel(ylabel)

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return out_png


# Gradient L2 norm per unit (log y), one line per (label, metrics.csv), one panel per step.
plot_gradient_norms = partial(_plot_profiles, prefix=GRAD_NORM_PREFIX, ylabel="gradient L2 norm", log_y=True)
# Std of each unit's output per unit (the paper's Figure 7), one panel per step.
plot_response_stds = partial(_plot_profiles, prefix=RESPONSE_STD_PREFIX, ylabel="std of unit response", log_y=False)


def summarize_gradient_norms(metrics_csv: str | Path) -> dict:
    """First-unit over last-unit gradient norm at the early and late step.

    A ratio far below one means the gradient reaching the first layers has vanished.
    """
    profiles = read_unit_profiles(metrics_csv, GRAD_NORM_PREFIX)
    summary = {}
    for choice, (which, _) in STEPS.items():
        step = list(profiles)[which]
        units = profiles[step]
        (_, first_name, first), (_, last_name, last) = units[0], units[-1]
        summary[choice] = {
            "step": step,
            "first_unit": first_name,
            "last_unit": last_name,
            "first": first,
            "last": last,
            "first_over_last": first / last if last != 0 else math.inf,
        }
    return summary


def describe_gradient_norms(label: str, summary: dict) -> str:
    """One line for a report, from `summarize_gradient_norms`."""
    early, late = summary["early"], summary["late"]
    return (
        f"{label}: the first unit's ({early['first_unit']}) gradient norm is "
        f"{early['first_over_last']:.3g} times the last unit's ({early['last_unit']}) at step "
        f"{early['step']} and {late['first_over_last']:.3g} times at step {late['step']}."
    )


def gradient_section(jobs: Sequence, sweep_dir: str | Path) -> tuple[list[str], list[Path]]:
    """The report's gradient section for the jobs that logged gradient norms (none: nothing).

    Labels add `(norm=none)` for networks without BN, so the paper's question (do plain nets'
    gradients vanish with BN?) reads straight off the sentences and the figures.
    """
    runs = []
    for job in jobs:
        metrics = Path(job.path) / "metrics.csv"
        if not metrics.is_file() or f"{GRAD_NORM_PREFIX}/" not in metrics.open().readline():
            continue
        norm = job.model.get("norm", "bn")
        runs.append((job.label if norm == "bn" else f"{job.label} (norm={norm})", metrics, job))
    if not runs:
        return [], []
    sweep_dir = Path(sweep_dir)
    pairs = [(label, path) for label, path, _ in runs]
    figures = [
        plot_gradient_norms(pairs, sweep_dir / "gradient_norms.png"),
        plot_response_stds(pairs, sweep_dir / "response_stds.png"),
    ]
    lines = [
        "## Gradient norms per unit",
        "",
        "First unit (stem) against last unit (fc): a ratio far below 1 means the gradient has",
        "vanished on its way back to the first layer.",
        "",
    ]
    for label, path, job in runs:
        status = "" if job.status == "completed" else f" (job {job.status})"
        lines.append(f"- {describe_gradient_norms(label, summarize_gradient_norms(path))}{status}")
    lines += ["", "![gradient norms](gradient_norms.png)", "", "![response stds](response_stds.png)", ""]
    return lines, figures
