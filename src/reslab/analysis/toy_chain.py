"""The seed's scalar chain: why the first weight's gradient vanishes without a skip.

The chain has L + 1 scalar layers, y_1 = f(w_1 x) and y_l = f(w_l y_{l-1}) for l = 2..L+1.
Its output is theta = y_{L+1} (plain) or theta = y_{L+1} + w_1 x (the seed's skip). With
g = dR/dtheta, backpropagation gives

    plain:  dR/dw_1 = g x f'(w_1 x) prod_{l=2}^{L+1} w_l f'(w_l y_{l-1})
    skip:   dR/dw_1 = g x (f'(w_1 x) prod_{l=2}^{L+1} w_l f'(w_l y_{l-1}) + 1)

The product shrinks geometrically when every factor |w_l f'| is below one; the skip's "+ 1"
keeps g x flowing to w_1 at any depth. This module checks the closed form against autograd
and plots |dR/dw_1| against L.

Loss: with `target=None` the loss is R = theta, so g = 1 and the plot shows the chain's own
factor; with a number t it is R = 0.5 (theta - t)^2, so g = theta - t.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reslab.errors import ConfigError

# Forward functions (autograd differentiates these) ...
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


def _sigmoid_derivative(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def _tanh_derivative(z: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(z) ** 2


def _relu_derivative(z: torch.Tensor) -> torch.Tensor:
    # Strictly positive: autograd's convention gives relu'(0) = 0.
    return (z > 0).to(z.dtype)


# ... and their derivatives written out by hand, so the closed form shares nothing with autograd.
DERIVATIVES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": _sigmoid_derivative,
    "tanh": _tanh_derivative,
    "relu": _relu_derivative,
}

# Positive weights below one: every factor |w_l f'(.)| is then below one for all three
# activations (sigmoid' <= 1/4, tanh' <= 1, relu' = 1 on the positive inputs that positive
# weights and a positive x produce), so the plain chain's gradient shrinks geometrically.
DEFAULT_WEIGHT_RANGE = (0.5, 0.9)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; allowed: {sorted(ACTIVATIONS)}")


def _as_weights(weights: Sequence[float] | torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() < 2:
        raise ConfigError(f"the chain needs L + 1 >= 2 weights (w_1 .. w_(L+1) for depth L >= 1), got {w.numel()}")
    return w


def chain_gradient_autograd(
    weights: Sequence[float] | torch.Tensor,
    x: float,
    activation: str,
    skip: bool,
    target: float | None = None,
) -> float:
    """dR/dw_1 of the chain with weights w_1..w_(L+1), by torch autograd in float64."""
    _check_activation(activation)
    f = ACTIVATIONS[activation]
    w = _as_weights(weights).clone().requires_grad_(True)
    x_t = torch.tensor(float(x), dtype=torch.float64)

    y = f(w[0] * x_t)
    for w_l in w[1:]:
        y = f(w_l * y)
    theta = y + w[0] * x_t if skip else y
    loss = theta if target is None else 0.5 * (theta - target) ** 2

    (grad,) = torch.autograd.grad(loss, w)
    return float(grad[0])


@torch.no_grad()
def chain_gradient_closed_form(
    weights: Sequence[float] | torch.Tensor,
    x: float,
    activation: str,
    skip: bool,
    target: float | None = None,
) -> float:
    """dR/dw_1 from the seed's formula: g x (f'(w_1 x) prod_l w_l f'(w_l y_(l-1)) [+ 1])."""
    _check_activation(activation)
    f, f_prime = ACTIVATIONS[activation], DERIVATIVES[activation]
    w = _as_weights(weights)
    x_t = torch.tensor(float(x), dtype=torch.float64)

    y = f(w[0] * x_t)
    backprop = f_prime(w[0] * x_t)  # accumulated along the chain: f'(w_1 x) prod w_l f'(.)
    for w_l in w[1:]:
        backprop = backprop * w_l * f_prime(w_l * y)
        y = f(w_l * y)
    theta = y + w[0] * x_t if skip else y

    g = torch.ones_like(theta) if target is None else theta - target  # dR/dtheta
    return float(g * x_t * (backprop + 1 if skip else backprop))


def relative_error(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude; 0 when both are exactly zero."""
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def draw_weights(count: int, seed: int, weight_range: Sequence[float] = DEFAULT_WEIGHT_RANGE) -> torch.Tensor:
    """`count` float64 weights, uniform in weight_range, reproducible from `seed`."""
    low, high = (float(v) for v in weight_range)
    if not low < high:
        raise ConfigError(f"weight_range must be [low, high] with low < high, got {list(weight_range)}")
    generator = torch.Generator().manual_seed(int(seed))
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def _check_sweep(depths: Sequence[int], activations: Sequence[str]) -> list[int]:
    depths = [int(d) for d in depths]
    if not depths or min(depths) < 1:
        raise ConfigError(f"depths must be a non-empty list of integers >= 1, got {depths}")
    if not activations:
        raise ConfigError(f"activations must name at least one of {sorted(ACTIVATIONS)}")
    for activation in activations:
        _check_activation(activation)
    return depths


def sweep_depths(
    depths: Sequence[int],
    activations: Sequence[str] = tuple(ACTIVATIONS),
    seed: int = 0,
    weight_range: Sequence[float] = DEFAULT_WEIGHT_RANGE,
    x: float = 1.0,
    target: float | None = None,
) -> list[dict]:
    """One row per (activation, depth, skip): autograd and closed-form dR/dw_1 side by side.

    One weight vector is drawn for the deepest chain and depth L uses its first L + 1
    entries, so the curves against L follow one chain growing deeper, and plain and skip
    chains (and all activations) see the same weights.
    """
    depths = _check_sweep(depths, activations)
    weights = draw_weights(max(depths) + 1, seed, weight_range)
    rows = []
    for activation in activations:
        for depth in depths:
            w = weights[: depth + 1]
            for skip in (False, True):
                autograd = chain_gradient_autograd(w, x, activation, skip, target)
                closed_form = chain_gradient_closed_form(w, x, activation, skip, target)
                rows.append(
                    {
                        "depth": depth,
                        "activation": activation,
                        "skip": skip,
                        "autograd": autograd,
                        "closed_form": closed_form,
                        "rel_error": relative_error(autograd, closed_form),
                    }
                )
    return rows


def plot_toy_chain(rows: list[dict], out_png: str | Path) -> Path:
    """|dR/dw_1| against depth L (log y), one panel per activation, plain vs skip."""
    activations = list(dict.fromkeys(row["activation"] for row in rows))
    fig = Figure(figsize=(4.2 * len(activations), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(activations), sharey=True, squeeze=False)[0]
    for ax, activation in zip(axes, activations):
        for skip, label, color in ((False, "chain", "tab:red"), (True, "chain with skip", "tab:blue")):
            series = [r for r in rows if r["activation"] == activation and r["skip"] == skip]
            depths = [r["depth"] for r in series]
            ax.plot(depths, [abs(r["autograd"]) for r in series], color=color, label=f"{label} (autograd)")
            ax.plot(
                depths,
                [abs(r["closed_form"]) for r in series],
                linestyle="none",
                marker="o",
                markersize=4,
                markerfacecolor="none",
                color=color,
                label=f"{label} (closed form)",
            )
        ax.set_yscale("log")
        ax.set_title(activation)
        ax.set_xlabel("depth L")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(r"$|dR/dw_1|$")
    axes[-1].legend(fontsize="small")
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=120)
    return out_png


def run_toy_chain(
    depths: Sequence[int],
    activations: Sequence[str],
    out_dir: str | Path,
    seed: int = 0,
    weight_range: Sequence[float] = DEFAULT_WEIGHT_RANGE,
    x: float = 1.0,
    target: float | None = None,
    tolerance: float = 1e-6,
) -> dict:
    """Sweep the chain, write toy_chain.csv / .json / .png into out_dir, return the summary.

    The summary (also toy_chain.json) says whether the closed form matched autograd to
    `tolerance` relative error at every point, and |dR/dw_1| at the deepest chain.
    """
    rows = sweep_depths(depths, activations, seed, weight_range, x, target)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    csv_path = out_dir / "toy_chain.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    png_path = plot_toy_chain(rows, out_dir / "toy_chain.png")

    deepest = max(int(d) for d in depths)
    max_rel_error = max(row["rel_error"] for row in rows)
    summary = {
        "loss": "R = theta (g = 1)" if target is None else "R = 0.5 (theta - target)^2",
        "x": float(x),
        "target": target,
        "seed": int(seed),
        "weight_range": [float(v) for v in weight_range],
        "depths": [int(d) for d in depths],
        "activations": list(activations),
        "tolerance": tolerance,
        "max_rel_error": max_rel_error,
        "passed": bool(max_rel_error <= tolerance),
        "deepest": {
            activation: {
                "depth": deepest,
                **{
                    ("skip" if r["skip"] else "plain"): r["autograd"]
                    for r in rows
                    if r["activation"] == activation and r["depth"] == deepest
                },
            }
            for activation in activations
        },
        "files": {"csv": csv_path.name, "json": "toy_chain.json", "png": png_path.name},
    }
    (out_dir / "toy_chain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
