"""Paper-style figures: training error (thin or dashed) and validation error (bold) against
iterations, one panel per group of networks (plain beside residual), one colour per depth, as
the ResNet paper's Figure 4 (ImageNet) and Figure 6 (CIFAR-10).

`curves_figure` draws any such figure (the seeds of one network as their mean with a band);
`degradation_figure` (any sweep), `figure4` and `figure6` are its paper-shaped uses. A sampled
sweep (Optuna) gets `objective_by_trial` and `objective_by_hyperparameter` instead.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reslab.report.collect import Job  # noqa: E402
from reslab.report.comparisons import FAMILY_NAMES, network_name  # noqa: E402
from reslab.report.tables import as_number, by_objective, objective, override_values, searched_keys  # noqa: E402

# Panels as (title, which jobs it shows).
Panel = tuple[str, Callable[[Job], bool]]

# Above this many iterations the x axis counts in units of 1e4, as the paper's figures do.
TEN_THOUSANDS = 2e4


def curves_figure(
    jobs: Sequence[Job],
    out_png: Path,
    panels: Sequence[Panel],
    colour_of: Callable[[Job], Hashable],
    label_of: Callable[[Job], str],
    eval_name: str = "val",
    train_line: str = "--",
    paper_ylim: tuple[float, float] | None = None,
    title: str = "",
) -> Path | None:
    """Training error (`train_line`: "--" dashed or "-" thin) and validation error (bold) vs
    iterations, in %. Jobs with the same colour key share a colour in every panel; jobs that
    share colour and label (the seeds of one network) are drawn as their mean curve with a
    band of ± one standard deviation. `paper_ylim` is the paper's y range, used when every
    curve fits in it."""
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
        networks: dict[tuple, list[Job]] = {}
        for job in sorted((job for job in jobs if shows(job)), key=lambda j: (_sortable(colour_of(j)), str(j.seed))):
            networks.setdefault((colour_of(job), label_of(job)), []).append(job)
        seeded = any(len(seeds) > 1 for seeds in networks.values())
        for (key, label), seeds in networks.items():
            colour = colours[key]
            train = mean_curve([_smoothed_train_error(job) for job in seeds])
            evaluation = mean_curve([job.curve("val/err") for job in seeds])
            if len(seeds) > 1:
                label = f"{label} (n={len(seeds)})"
            _draw(ax, train, x_scale, train_line, lw=0.8, color=colour)
            # Markers only on short curves, so that a run validated once still shows its point.
            marker = "o" if len(evaluation[0]) <= 20 else None
            _draw(ax, evaluation, x_scale, "-", lw=2.2, color=colour, marker=marker, markersize=4, label=label)
            highest = max(
                [highest] + [100 * (m + s) for _, m, s in zip(*train)] + [100 * (m + s) for _, m, s in zip(*evaluation)]
            )
        ax.set_title(name)
        ax.set_xlabel("iter. (1e4)" if x_scale > 1 else "iterations")
        ax.grid(alpha=0.3)
        train_style = "dashed" if train_line == "--" else "thin"
        bands = ", bands: ± std over seeds" if seeded else ""
        ax.legend(loc="upper right", fontsize=8, title=f"bold: {eval_name}, {train_style}: train{bands}")
    axes[0][0].set_ylabel("error (%)")
    if paper_ylim and highest <= paper_ylim[1]:
        axes[0][0].set_ylim(*paper_ylim)
    else:
        axes[0][0].set_ylim(0, min(100.0, highest * 1.05 + 1))
    if title:
        fig.suptitle(title)
    return _save(fig, out_png, title=title)


Curve = tuple[list[float], list[float], list[float]]  # steps, mean, std (0 for one run)


def mean_curve(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Curve:
    """The mean and standard deviation over runs, at the steps every run logged."""
    curves = [dict(zip(steps, values)) for steps, values in curves]
    common = sorted(set.intersection(*(set(curve) for curve in curves))) if curves else []
    mean = [statistics.fmean(curve[step] for curve in curves) for step in common]
    std = [statistics.stdev(curve[step] for curve in curves) if len(curves) > 1 else 0.0 for step in common]
    return common, mean, std


def _smoothed_train_error(job: Job) -> tuple[list[float], list[float]]:
    """A trailing moving average over 1/50 of the run: per-batch training error is too noisy to read raw."""
    steps, values = job.curve("train/err")
    window = max(1, len(values) // 50)
    sums = np.convolve(values, np.ones(window))[: len(values)]
    return steps, list(sums / np.minimum(np.arange(1, len(values) + 1), window))


def _draw(ax, curve: Curve, x_scale: float, style: str, **line) -> None:
    steps, mean, std = curve
    x = [step / x_scale for step in steps]
    ax.plot(x, [100 * m for m in mean], style, **line)
    if any(std):
        low = [100 * (m - s) for m, s in zip(mean, std)]
        high = [100 * (m + s) for m, s in zip(mean, std)]
        ax.fill_between(x, low, high, color=line["color"], alpha=0.18, linewidth=0)


def depth_of(job: Job) -> int:
    return job.depth or 0


def degradation_figure(jobs: list[Job], out_png: Path, title: str = "") -> Path | None:
    """Training and validation error vs iterations; one panel per network family, plain first."""
    families = sorted({job.family for job in jobs}, key=lambda f: (f != "plain", f))
    panels = [(FAMILY_NAMES.get(f, f), lambda job, f=f: job.family == f) for f in families]
    return curves_figure(jobs, out_png, panels, depth_of, network_name, title=title)


# The paper's figures: (jobs, out_png, title=...) -> the figure's file, or None without curves.
PLAIN_BESIDE_RESNET = [("plain", lambda j: j.family == "plain"), ("ResNet", lambda j: j.family == "resnet")]
plain_beside_resnet = partial(curves_figure, panels=PLAIN_BESIDE_RESNET, colour_of=depth_of, label_of=network_name)
# The ResNet paper's Figure 6 (CIFAR-10): dashed training error, bold held-out error (the paper's
# bold curves are test error; ours are the 5k validation images), y from 0 to 20% when the curves fit.
figure6 = partial(plain_beside_resnet, paper_ylim=(0, 20))
# The ResNet paper's Figure 4 (ImageNet): thin training error, bold centre-crop validation error,
# y from 20 to 60% when the curves fit.
figure4 = partial(plain_beside_resnet, eval_name="val (centre crop)", train_line="-", paper_ylim=(20, 60))


# ----------------------------------------------------------------------------- sampled sweeps


def objective_by_trial(jobs: list[Job], out_png: Path, title: str = "") -> Path | None:
    """Each trial's objective (best val err, %) against its trial number, the best so far as a
    step line, the best trial starred; trials without an objective as crosses along the top."""
    scored = sorted((job for job in jobs if objective(job) is not None and job.num is not None), key=lambda j: j.num)
    if not scored:
        return None
    numbers = [job.num for job in scored]
    values = [100 * objective(job) for job in scored]
    best_so_far = [min(values[: i + 1]) for i in range(len(values))]
    best = by_objective(scored)[0]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(numbers, values, "o", color=plt.cm.viridis(0.35), label="trial")
    ax.step(numbers, best_so_far, where="post", color=plt.cm.viridis(0.8), lw=2, label="best so far")
    ax.plot([best.num], [100 * objective(best)], "*", markersize=16, color="crimson", label=f"best: trial {best.num}")
    unscored = [job.num for job in jobs if objective(job) is None and job.num is not None]
    if unscored:
        top = max(values) * 1.05 + 1
        ax.plot(unscored, [top] * len(unscored), "x", color="grey", label="no objective (failed, diverged, running)")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("best val err (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "objective against trial number")
    return _save(fig, out_png, title=title)


def objective_by_hyperparameter(jobs: list[Job], out_png: Path, title: str = "") -> Path | None:
    """One panel per searched hyperparameter: each trial's objective against its value, coloured
    by trial number (where the sampler went over time), the best trial starred. An axis is
    logarithmic where the values are positive and span a factor of 10 or more."""
    scored = [job for job in jobs if objective(job) is not None]
    keys = searched_keys(jobs)
    if not scored or not keys:
        return None
    best = by_objective(scored)[0]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 4.0), sharey=True, squeeze=False)
    colours = [job.num if job.num is not None else 0 for job in scored]
    for ax, key in zip(axes[0], keys):
        texts = [override_values(job).get(key, "—") for job in scored]
        numbers = [as_number(text) for text in texts]
        x = numbers if all(n is not None for n in numbers) else texts
        points = ax.scatter(x, [100 * objective(job) for job in scored], c=colours, cmap="viridis", s=28)
        best_x = x[scored.index(best)]
        ax.plot([best_x], [100 * objective(best)], "*", markersize=16, color="crimson", label="best")
        if x is numbers and min(numbers) > 0 and max(numbers) >= 10 * min(numbers):
            ax.set_xscale("log")
        elif x is numbers:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("best val err (%)")
    fig.colorbar(points, ax=axes[0].tolist(), label="trial", ticks=MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return _save(fig, out_png, tight=False, title=title)


def _save(fig, out_png: Path, tight: bool = True, title: str = "") -> Path:
    if tight:
        fig.tight_layout()
    out_png = Path(out_png)
    # The title also as the PNG's Title field, which image viewers and galleries show.
    fig.savefig(out_png, dpi=120, bbox_inches="tight", metadata={"Title": title} if title else {})
    plt.close(fig)
    return out_png


def _sortable(key: Hashable) -> tuple:
    return (isinstance(key, str), key)
