"""How sure a comparison over seeds is, all from scipy.stats; the README's "How sure each
comparison is" says what each number means. Seeds are independent draws, so comparisons are
unpaired. The interval is Welch's t interval at every seed count: at the 3-5 seeds people run it
holds its coverage for normal samples with equal or unequal spreads, where a bootstrap falls
short (still at 20 seeds; benchmarks/interval_coverage.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
# The difference (in the values' unit: points of error) that "seeds needed" is sized for, and the
# chance to detect it.
RESOLVE = 1.0
POWER = 0.8
# Beyond this many seeds per network "seeds needed" says only "more than".
MOST_SEEDS = 10_000
# Values are rounded to this many decimals before testing: seeds that end at the same error
# (computed along different paths) differ in the last bits only, which is no spread.
DECIMALS = 9


def welch(first: np.ndarray, second: np.ndarray):
    """(difference, low, high, p) of `second - first` along the last axis: the difference of the
    means, Welch's confidence interval and two-sided p-value. Works on stacks of samples at once."""
    with warnings.catch_warnings():
        # A network whose seeds all end at one value (0% training error) has no spread; scipy
        # warns of precision loss for it, though its variance is exactly 0.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        result = stats.ttest_ind(second, first, equal_var=False, axis=-1)
        interval = result.confidence_interval(confidence_level=CONFIDENCE)
    difference = np.mean(second, axis=-1) - np.mean(first, axis=-1)
    return difference, interval.low, interval.high, result.pvalue


def prediction_interval(values: np.ndarray):
    """(low, high) that one more run falls in with probability CONFIDENCE, from n runs (along the
    last axis): mean ± t(n-1)·s·√(1 + 1/n)."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    mean, std = values.mean(axis=-1), values.std(axis=-1, ddof=1)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def welch_from_summary(values: Sequence[float], mean: float, std: float, n: int) -> float:
    """Two-sided p-value of Welch's test between our runs and a published mean ± std over n runs."""
    ours = np.asarray(values, dtype=float)
    result = stats.ttest_ind_from_stats(ours.mean(), ours.std(ddof=1), len(ours), mean, std, n, equal_var=False)
    return float(result.pvalue)


def probability_of_improvement(first: Sequence[float], second: Sequence[float]) -> float:
    """P(a random seed of `second` is lower than a random seed of `first`), ties counted half."""
    u = stats.mannwhitneyu(first, second, alternative="two-sided").statistic
    return float(u) / (len(first) * len(second))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (None stays None: no test); reject where adjusted < ALPHA."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def seeds_needed(first: Sequence[float], second: Sequence[float], difference: float = RESOLVE) -> int | None:
    """Seeds per network for Welch's test (at ALPHA, two-sided) to detect `difference` with
    POWER, at the two samples' observed spread; None without any spread (nothing to size by).
    More than MOST_SEEDS is given as MOST_SEEDS + 1."""
    variance = (np.var(first, ddof=1) + np.var(second, ddof=1)) / 2
    if not variance > 0:
        return None
    n = np.arange(2, MOST_SEEDS + 1)
    df = 2 * (n - 1)  # Welch's degrees of freedom at equal n and equal spreads
    shift = difference / np.sqrt(2 * variance / n)
    critical = stats.t.ppf(1 - ALPHA / 2, df)
    power = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
    enough = np.flatnonzero(power >= POWER)
    return int(n[enough[0]]) if enough.size else MOST_SEEDS + 1


@dataclass(frozen=True)
class Comparison:
    """Two sets of seeds' values (lower is better, e.g. error in points): `second - first`."""

    first: tuple[float, ...]
    second: tuple[float, ...]
    difference: float
    low: float | None = None
    high: float | None = None
    p: float | None = None
    improvement: float | None = None  # P(a seed of second beats a seed of first)
    needed: int | None = None  # seeds per network to resolve RESOLVE points at this spread
    p_holm: float | None = None  # Holm-adjusted over all the comparisons of one report

    @property
    def n(self) -> tuple[int, int]:
        return len(self.first), len(self.second)

    @property
    def spread(self) -> bool:
        """Whether the seeds vary at all (else Welch's test is undefined)."""
        return bool(np.ptp(self.first) > 0 or np.ptp(self.second) > 0)

    @property
    def different(self) -> bool:
        """The verdict: Holm-adjusted p below ALPHA (the unadjusted p before the adjustment)."""
        p = self.p_holm if self.p_holm is not None else self.p
        return p is not None and p < ALPHA

    def verdict(self) -> str:
        if min(self.n) < 2:
            return f"too few seeds to test (n={self.n[0]} and {self.n[1]}; 2+ each)"
        if not self.spread:
            if self.difference == 0:
                return "not different (every seed gives the same value)"
            return "not tested (no spread over seeds: Welch's test is undefined)"
        if self.different:
            return "lower" if self.difference < 0 else "higher"
        if self.needed is not None and self.needed > max(self.n):
            more = f"more than {MOST_SEEDS:,}" if self.needed > MOST_SEEDS else f"{self.needed}"
            return f"not resolved: too few seeds ({more} per network resolve {RESOLVE:g} point at this spread)"
        return f"not different (these seeds resolve {RESOLVE:g} point at this spread)"


def compare(first: Sequence[float], second: Sequence[float]) -> Comparison:
    """`second` against `first` (independent seeds each), every statistic the report shows."""
    a, b = tuple(round(float(v), DECIMALS) for v in first), tuple(round(float(v), DECIMALS) for v in second)
    difference = (float(np.mean(b)) - float(np.mean(a))) if a and b else math.nan
    if min(len(a), len(b)) < 2:
        return Comparison(a, b, difference)
    untested = Comparison(a, b, difference, improvement=probability_of_improvement(a, b))
    if not untested.spread:
        return untested
    _, low, high, p = welch(np.asarray(a), np.asarray(b))
    return replace(untested, low=float(low), high=float(high), p=float(p), needed=seeds_needed(a, b))


def describe_method(count: int) -> str:
    """The sentence a report prints under its comparisons."""
    return (
        f"Δ: difference of the means over seeds (second minus first), in points, with its "
        f"{100 * CONFIDENCE:.0f}% CI (Welch's t interval); p: Welch's t-test, two-sided (unpaired: seeds are independent); "
        f"p (Holm): adjusted by Holm's method over the {count} comparison{'s' if count != 1 else ''} of this "
        f"report, a difference counts where it is below α = {ALPHA}; P(better): the chance that a random seed "
        f"of the second has the lower value (ties half); seeds needed: per network, for Welch's test at "
        f"α = {ALPHA} to detect a {RESOLVE:g}-point difference with {100 * POWER:.0f}% power at the observed spread."
    )
