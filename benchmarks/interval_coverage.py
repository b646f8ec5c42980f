"""How often a 95% interval for the difference of two networks' mean errors covers the true
difference, over many seeded draws of normal samples: Welch's t interval (what the report uses)
against scipy's bootstrap (percentile and BCa), at the seed counts people run.

    python benchmarks/interval_coverage.py                       # n = 3, 5, 10, 20; 2,000 draws each
    python benchmarks/interval_coverage.py --n 3 --draws 10000

Each draw: `first` ~ N(0, 1), `second` ~ N(1, sd) with sd = 1 (equal spreads) or 3 (unequal), n
seeds each. Prints the fraction of draws whose interval holds the true difference, 1.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy import stats

from reslab.report.stats import CONFIDENCE, welch


def difference_of_means(first, second, axis=-1):
    return np.mean(second, axis=axis) - np.mean(first, axis=axis)


def coverage(n: int, spread: float, draws: int, resamples: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    first = rng.normal(0.0, 1.0, (draws, n))
    second = rng.normal(1.0, spread, (draws, n))
    _, low, high, _ = welch(first, second)
    found = {"Welch t": float(np.mean((low <= 1.0) & (1.0 <= high)))}
    for method in ("percentile", "BCa"):
        interval = stats.bootstrap(
            (first, second),
            difference_of_means,
            n_resamples=resamples,
            confidence_level=CONFIDENCE,
            method=method,
            axis=-1,
            vectorized=True,
            rng=np.random.default_rng(seed + 1),
        ).confidence_interval
        found[f"bootstrap {method}"] = float(np.mean((interval.low <= 1.0) & (1.0 <= interval.high)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[3, 5, 10, 20])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=999)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("command: python benchmarks/interval_coverage.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"coverage of {100 * CONFIDENCE:.0f}% intervals over {args.draws} draws (true difference 1)")
    print(f"{'n':>4} {'spreads':>8} {'Welch t':>9} {'bootstrap percentile':>21} {'bootstrap BCa':>14}")
    for n in args.n:
        for spread in (1.0, 3.0):
            found = coverage(n, spread, args.draws, args.resamples, args.seed)
            name = "equal" if spread == 1.0 else "1 and 3"
            print(
                f"{n:>4} {name:>8} {found['Welch t']:>9.3f} {found['bootstrap percentile']:>21.3f} "
                f"{found['bootstrap BCa']:>14.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
