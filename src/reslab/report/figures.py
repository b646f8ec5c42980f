"""Paper-style figures: training error (thin, dashed) and validation error (bold) against
iterations, plain networks in the left panel and residual networks in the right, one colour
per depth, as the ResNet paper's Figures 4 and 6."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reslab.report.collect import Job  # noqa: E402


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average: per-batch training error is too noisy to read raw."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def degradation_figure(
    jobs: list[Job], out_png: Path, title: str = "", eval_metric: str = "val/err"
) -> Path | None:
    """Training and `eval_metric` error vs iterations; one panel per network family."""
    jobs = [job for job in jobs if job.curve("train/err")[0]]
    if not jobs:
        return None
    families = sorted({job.family for job in jobs}, key=lambda f: (f != "plain", f))
    depths = sorted({job.depth or 0 for job in jobs})
    colours = {d: plt.cm.viridis(i / max(1, len(depths) - 1) * 0.85) for i, d in enumerate(depths)}
    fig, axes = plt.subplots(
        1, len(families), figsize=(5.5 * len(families), 4.2), sharey=True, squeeze=False
    )
    for ax, family in zip(axes[0], families):
        for job in sorted((j for j in jobs if j.family == family), key=lambda j: (j.depth or 0, str(j.seed))):
            colour = colours[job.depth or 0]
            steps, train_err = job.curve("train/err")
            window = max(1, len(train_err) // 50)
            label = f"{family}-{job.depth}"
            ax.plot(steps, [100 * v for v in smooth(train_err, window)], "--", lw=0.9, color=colour)
            eval_steps, eval_err = job.curve(eval_metric)
            if eval_steps:
                ax.plot(eval_steps, [100 * v for v in eval_err], "-", lw=2.2, color=colour, label=label)
            else:
                ax.plot([], [], "-", lw=2.2, color=colour, label=label)
        ax.set_title(family)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, title="bold: " + eval_metric.split("/")[0] + ", dashed: train")
    axes[0][0].set_ylabel("error (%)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
