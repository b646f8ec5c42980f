"""Paper-style figures: training error (thin or dashed) and validation error (bold) against
iterations, one panel per group of networks (plain beside residual), one colour per depth, as
the ResNet paper's Figure 4 (ImageNet) and Figure 6 (CIFAR-10).

`curves_figure` draws any such figure; `degradation_figure` (any sweep), `figure4` and
`figure6` are its paper-shaped uses.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reslab.report.collect import Job  # noqa: E402

# Panels as (title, which jobs it shows).
Panel = tuple[str, Callable[[Job], bool]]

FAMILY_NAMES = {"plain": "plain", "resnet": "ResNet", "preact": "pre-act ResNet"}
# Above this many iterations the x axis counts in units of 1e4, as the paper's figures do.
TEN_THOUSANDS = 2e4


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average: per-batch training error is too noisy to read raw."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def curves_figure(
    jobs: Sequence[Job],
    out_png: Path,
    panels: Sequence[Panel],
    colour_of: Callable[[Job], Hashable],
    label_of: Callable[[Job], str],
    eval_metric: str = "val/err",
    eval_name: str = "val",
    train_line: str = "--",
    paper_ylim: tuple[float, float] | None = None,
    title: str = "",
) -> Path | None:
    """Training error (`train_line`: "--" dashed or "-" thin) and `eval_metric` (bold) vs
    iterations, in %. Jobs with the same colour key share a colour in every panel (several
    seeds of one network: several lines, one legend entry). `paper_ylim` is the paper's y
    range, used when every curve fits in it."""
    jobs = [job for job in jobs if job.curve("train/err")[0]]
    panels = [(name, shows) for name, shows in panels if any(shows(job) for job in jobs)]
    if not panels:
        return None
    keys = sorted({colour_of(job) for job in jobs}, key=_sortable)
    colours = {key: plt.cm.viridis(i / max(1, len(keys) - 1) * 0.85) for i, key in enumerate(keys)}
    last_step = max(job.curve("train/err")[0][-1] for job in jobs)
    x_scale = 1e4 if last_step >= TEN_THOUSANDS else 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), sharey=True, squeeze=False)
    highest = 0.0
    for ax, (name, shows) in zip(axes[0], panels):
        labelled: set[str] = set()
        panel_jobs = sorted((job for job in jobs if shows(job)), key=lambda j: (_sortable(colour_of(j)), str(j.seed)))
        for job in panel_jobs:
            colour, label = colours[colour_of(job)], label_of(job)
            steps, train_err = job.curve("train/err")
            train_err = smooth(train_err, max(1, len(train_err) // 50))
            ax.plot([s / x_scale for s in steps], [100 * v for v in train_err], train_line, lw=0.8, color=colour)
            eval_steps, eval_err = job.curve(eval_metric)
            # Markers only on short curves, so that a run validated once still shows its point.
            ax.plot(
                [s / x_scale for s in eval_steps], [100 * v for v in eval_err], "-", lw=2.2, color=colour,
                marker="o" if len(eval_steps) <= 20 else None, markersize=4,
                label=None if label in labelled else label,
            )
            labelled.add(label)
            highest = max([highest] + [100 * v for v in train_err + eval_err])
        ax.set_title(name)
        ax.set_xlabel("iter. (1e4)" if x_scale > 1 else "iterations")
        ax.grid(alpha=0.3)
        train_style = "dashed" if train_line == "--" else "thin"
        ax.legend(loc="upper right", fontsize=8, title=f"bold: {eval_name}, {train_style}: train")
    axes[0][0].set_ylabel("error (%)")
    if paper_ylim and highest <= paper_ylim[1]:
        axes[0][0].set_ylim(*paper_ylim)
    else:
        axes[0][0].set_ylim(0, min(100.0, highest * 1.05 + 1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def family_panels(jobs: Sequence[Job]) -> list[Panel]:
    """One panel per network family, plain first."""
    families = sorted({job.family for job in jobs}, key=lambda f: (f != "plain", f))
    return [(FAMILY_NAMES.get(f, f), lambda job, f=f: job.family == f) for f in families]


def depth_label(job: Job) -> str:
    name = FAMILY_NAMES.get(job.family, job.family)
    return f"{name}-{job.depth}" if job.depth is not None else name


def degradation_figure(
    jobs: list[Job], out_png: Path, title: str = "", eval_metric: str = "val/err"
) -> Path | None:
    """Training and `eval_metric` error vs iterations; one panel per network family."""
    return curves_figure(
        jobs, out_png, family_panels(jobs), lambda job: job.depth or 0, depth_label,
        eval_metric=eval_metric, eval_name=eval_metric.split("/")[0], title=title,
    )


def figure6(jobs: list[Job], out_png: Path, title: str = "") -> Path | None:
    """The ResNet paper's Figure 6 (CIFAR-10): plain panel beside ResNet panel, dashed training
    error, bold held-out error (the paper's bold curves are test error; ours are the 5k
    validation images), y from 0 to 20% when the curves fit."""
    panels = [("plain", lambda j: j.family == "plain"), ("ResNet", lambda j: j.family == "resnet")]
    return curves_figure(
        jobs, out_png, panels, lambda job: job.depth or 0, depth_label, eval_name="val",
        train_line="--", paper_ylim=(0.0, 20.0), title=title,
    )


def figure4(jobs: list[Job], out_png: Path, title: str = "") -> Path | None:
    """The ResNet paper's Figure 4 (ImageNet): plain-18/34 beside ResNet-18/34, thin training
    error, bold centre-crop validation error, y from 20 to 60% when the curves fit."""
    panels = [("plain", lambda j: j.family == "plain"), ("ResNet", lambda j: j.family == "resnet")]
    return curves_figure(
        jobs, out_png, panels, lambda job: job.depth or 0, depth_label, eval_name="val (centre crop)",
        train_line="-", paper_ylim=(20.0, 60.0), title=title,
    )


def _sortable(key: Hashable) -> tuple:
    return (isinstance(key, str), key)
