"""The comparisons a report makes and how sure each is (reslab.report.stats); the README's "How
sure each comparison is" lists them. Values are errors in points (%). All the comparisons of one
report form one family for Holm's adjustment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations, product

from reslab.report import stats
from reslab.report.collect import Job
from reslab.report.tables import GridPoint, Stat, shared_overrides

FAMILY_NAMES = {"plain": "plain", "resnet": "ResNet", "preact": "pre-act ResNet"}
# Overrides that choose the network itself; the others (recipe, data, ...) must match for two
# grid points to be compared.
NETWORK_KEYS = {"model", "model.depth", "model.shortcut", "model.preact", "table3_net"}
# Families the papers set against each other at the same depth: (first, second).
FAMILY_PAIRS = (("plain", "resnet"), ("resnet", "preact"))


@dataclass(frozen=True)
class Metric:
    """A per-job value the report compares, and its name in the report."""

    name: str
    value: Callable[[Job], float | None]


def ten_crop_error(job: Job, top: str = "") -> float | None:
    """The 10-crop top-1 test error (the ResNet paper's Tables 2 and 3; top-5 with `top="_top5"`):
    `test/err_10crop` of an evaluation job, or `test/err` of a job whose data tested on ten crops;
    else None."""
    value = job.metric(f"test/err{top}_10crop")
    if value is None and (job.config.get("data") or {}).get("ten_crop_test"):
        value = job.metric(f"test/err{top}")
    return value


METRICS = {
    "train": Metric("final train err", Job.final_train_error),
    "val": Metric("val err", lambda job: job.metric("val/err")),
    "best_val": Metric("best val err", lambda job: job.best("val/err")),
    "test": Metric("test err", lambda job: job.metric("test/err")),
    "test_10crop": Metric("10-crop test err", ten_crop_error),
}


def points_values(point: GridPoint, metric: Metric) -> list[float]:
    """The metric over the completed seeds of a grid point, in points (%)."""
    return [100 * v for v in point.stat(metric.value).values]


# ----------------------------------------------------------------------------- naming and matching


def setting(point: GridPoint, shared: set[str]) -> tuple[str, ...]:
    """The point's overrides that are not the network's and not shared by the whole sweep."""
    return tuple(o for o in point.key if o.lstrip("+~").partition("=")[0] not in NETWORK_KEYS and o not in shared)


def network(job: Job) -> tuple:
    """(family, depth, shortcut): what a network is, whatever the overrides that chose it."""
    return (job.family, job.depth, job.shortcut if job.family != "plain" else None)


def network_name(job: Job, with_shortcut: bool = False) -> str:
    name = FAMILY_NAMES.get(job.family, job.family)
    name = f"{name}-{job.depth}" if job.depth is not None else name
    return f"{name} {job.shortcut}" if with_shortcut and job.family != "plain" and job.shortcut else name


class Names:
    """Names of a sweep's grid points: the network, its shortcut where the sweep has several, and
    the overrides that tell apart points of the same network (`[optimizer.lr=0.05]`)."""

    def __init__(self, points: Sequence[GridPoint]):
        self.shared = shared_overrides(point.key for point in points)
        self.shortcuts = len({p.first.shortcut for p in points if p.first.family != "plain"}) > 1
        self.settings = len({setting(p, self.shared) for p in points}) > 1

    def __call__(self, point: GridPoint) -> str:
        name = network_name(point.first, self.shortcuts)
        extra = setting(point, self.shared)
        return name + (f" [{' '.join(extra)}]" if self.settings and extra else "")


# ----------------------------------------------------------------------------- comparison rows


@dataclass(frozen=True)
class Row:
    """One comparison of a report: `second` against `first` on `metric`."""

    kind: str  # "family", "depth", "shortcut" or "sweeps"
    first: str
    second: str
    metric: Metric
    comparison: stats.Comparison
    network: str = ""  # between two sweeps: the network both ran (first and second are "A" and "B")

    def verdict(self) -> str:
        found = self.comparison.verdict()
        if found in ("lower", "higher"):
            return f"**{self.second} {found}**"
        return found

    def cells(self) -> dict[str, str]:
        c = self.comparison
        return {
            "comparison": self.network or f"{self.first} vs {self.second}",
            "metric": self.metric.name,
            "first": mean_std(c.first),
            "second": mean_std(c.second),
            "Δ [95% CI]": interval(c),
            "p": number(c.p),
            "p (Holm)": number(c.p_holm),
            "P(better)": "—" if c.improvement is None else f"{c.improvement:.2f}",
            "seeds needed": seeds(c.needed),
            "verdict": self.verdict(),
        }


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "—"
    stat = Stat(list(values))
    std = f" ± {stat.std:.2f}" if stat.std is not None else ""
    return f"{stat.mean:.2f}{std} (n={stat.n})"


def interval(c: stats.Comparison) -> str:
    if c.low is None:
        return f"{c.difference:+.2f}"
    return f"{c.difference:+.2f} [{c.low:+.2f}, {c.high:+.2f}]"


def number(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def seeds(needed: int | None) -> str:
    if needed is None:
        return "—"
    return f"> {stats.MOST_SEEDS:,}" if needed > stats.MOST_SEEDS else str(needed)


def sweep_pairs(points: Sequence[GridPoint]) -> list[tuple[str, GridPoint, GridPoint]]:
    """The pairs the papers compare, as (kind, first, second), among points of the same setting."""
    shared = shared_overrides(point.key for point in points)
    groups: dict[tuple, list[GridPoint]] = {}
    for point in points:
        groups.setdefault(setting(point, shared), []).append(point)
    pairs = []
    for group in groups.values():
        for (low, high), a, b in product(FAMILY_PAIRS, group, group):
            same_depth = a.first.depth is not None and a.first.depth == b.first.depth
            same_shortcut = low == "plain" or a.first.shortcut == b.first.shortcut
            if a.first.family == low and b.first.family == high and same_depth and same_shortcut:
                pairs.append(("family", a, b))
        lines: dict[tuple, list[GridPoint]] = {}
        for point in group:
            if point.first.depth is not None:
                family, _, shortcut = network(point.first)
                lines.setdefault((family, shortcut), []).append(point)
        for line in lines.values():
            line = sorted(line, key=lambda p: p.first.depth)
            pairs += [("depth", line[0], deeper) for deeper in line[1:] if deeper.first.depth != line[0].first.depth]
        by_depth: dict[int, list[GridPoint]] = {}
        for point in group:
            if point.first.family == "resnet" and point.first.depth is not None and point.first.shortcut:
                by_depth.setdefault(point.first.depth, []).append(point)
        for same in by_depth.values():
            same = sorted(same, key=lambda p: p.first.shortcut)
            pairs += [("shortcut", a, b) for a, b in combinations(same, 2) if a.first.shortcut != b.first.shortcut]
    return pairs


def sweep_comparisons(points: Sequence[GridPoint], metrics: Sequence[Metric]) -> list[Row]:
    """Every paper comparison of the sweep on every metric, Holm-adjusted as one family."""
    names, rows = Names(points), []
    for metric, (kind, first, second) in product(metrics, sweep_pairs(points)):
        a, b = points_values(first, metric), points_values(second, metric)
        if a and b:
            rows.append(Row(kind, names(first), names(second), metric, stats.compare(a, b)))
    return adjusted(rows)


def adjusted(rows: list[Row]) -> list[Row]:
    """The rows with their Holm-adjusted p-values, as one family."""
    p_holm = stats.holm([row.comparison.p for row in rows])
    return [replace(row, comparison=replace(row.comparison, p_holm=p)) for row, p in zip(rows, p_holm)]


# ----------------------------------------------------------------------------- two sweeps


def sweeps_comparisons(
    a_points: Sequence[GridPoint], b_points: Sequence[GridPoint], metrics: Sequence[Metric]
) -> tuple[list[Row], list[str], list[str]]:
    """Each network both sweeps ran, B against A on every metric (Holm over all rows), and the
    names of the networks only A or only B ran. Networks match on (family, depth, shortcut);
    where a sweep has several points of one network, also on the overrides that tell them apart."""
    a_names, b_names = Names(a_points), Names(b_points)
    a_index = _by_network(a_points, a_names)
    b_index = _by_network(b_points, b_names)
    rows = []
    for (key, a), metric in product(a_index.items(), metrics):
        b = b_index.get(key)
        values_a, values_b = points_values(a, metric), points_values(b, metric) if b else []
        if values_a and values_b:
            comparison = stats.compare(values_a, values_b)
            rows.append(Row("sweeps", "A", "B", metric, comparison, network=_pair_name(a_names(a), b_names(b))))
    only_a = [a_names(p) for k, p in a_index.items() if k not in b_index]
    only_b = [b_names(p) for k, p in b_index.items() if k not in a_index]
    return adjusted(rows), only_a, only_b


def _pair_name(a: str, b: str) -> str:
    return a if a == b else f"{a} / {b}"


def _by_network(points: Sequence[GridPoint], names: Names) -> dict[tuple, GridPoint]:
    count = Counter(network(point.first) for point in points)
    return {
        (network(p.first),) if count[network(p.first)] == 1 else (network(p.first), setting(p, names.shared)): p
        for p in points
    }


# ----------------------------------------------------------------------------- the degradation verdict


def degradation_verdict(rows: Sequence[Row]) -> str | None:
    """One sentence on the final training error of each family's deepest net against its
    shallowest: does the deeper plain net train worse (Holm-adjusted p < ALPHA) while the deeper
    ResNet does not? None unless both families have such a comparison."""
    deepest = {}
    for row in rows:
        if row.kind == "depth" and row.metric is METRICS["train"]:
            family = row.first.split("-")[0]
            deepest[family] = row  # rows run shallowest vs each deeper net, deepest last
    plain, resnet = deepest.get("plain"), deepest.get("ResNet")
    if plain is None or resnet is None:
        return None
    facts = f"final training error, deepest minus shallowest: {_fact(plain)}; {_fact(resnet)}"
    if min(plain.comparison.n + resnet.comparison.n) < 2:
        return f"Too few seeds to judge the degradation problem: tests need 2+ seeds of each network ({facts})."
    rule = f"a difference counts where Holm's adjusted p is below α = {stats.ALPHA}"
    plain_worse = plain.comparison.different and plain.comparison.difference > 0
    resnet_worse = resnet.comparison.different and resnet.comparison.difference > 0
    if plain_worse and not resnet_worse:
        return (
            "The degradation problem shows: the deeper plain net trains worse and the deeper ResNet does not "
            f"({facts}; {rule})."
        )
    if plain_worse and resnet.comparison.difference < plain.comparison.difference:
        return (
            "The degradation problem shows, less clearly: the deeper plain net trains worse, the deeper ResNet "
            f"by less ({facts}; {rule})."
        )
    why = ""
    if not plain_worse and min(plain.comparison.n) >= 2 and plain.comparison.spread:
        needed = plain.comparison.needed
        if needed is not None and needed > max(plain.comparison.n):
            why = (
                f" Too few seeds: at the plain nets' spread, {seeds(needed)} seeds per network would resolve "
                f"a {stats.RESOLVE:g}-point difference."
            )
    return f"The degradation problem does not show in this sweep ({facts}; {rule}).{why}"


def _fact(row: Row) -> str:
    c = row.comparison
    tested = f"p = {number(c.p)} (Holm {number(c.p_holm)})" if c.p is not None else c.verdict()
    return f"{row.second} vs {row.first} {interval(c)} points, {tested}, n={c.n[1]} and {c.n[0]}"


# ----------------------------------------------------------------------------- against a paper


@dataclass(frozen=True)
class PaperNumber:
    """A published number for one of our networks: one run, or mean ± std over `runs` runs."""

    net: str
    point: GridPoint | None
    value: float  # %
    std: float | None = None
    runs: int = 1


def paper_rows(entries: Sequence[PaperNumber], metric: Metric) -> list[dict[str, str]]:
    """Could our runs and the paper's come from the same distribution? Per entry: our mean ± std,
    the 95% prediction interval for one run of ours, whether the paper's number lies in it, and
    where the paper gives a mean ± std, Welch's test from those summary statistics."""
    rows = []
    for entry in entries:
        values = points_values(entry.point, metric) if entry.point else []
        row = {
            "net": entry.net,
            "ours": mean_std(values),
            "paper": f"{entry.value:.2f}" + (f" ± {entry.std:.2f} (n={entry.runs})" if entry.std is not None else ""),
            "95% PI, one run": "—",
            "paper in PI": "—",
            "Welch p (paper mean ± std)": "—",
        }
        if len(values) >= 2:
            low, high = stats.prediction_interval(values)
            row["95% PI, one run"] = f"[{low:.2f}, {high:.2f}]"
            row["paper in PI"] = "yes" if low <= entry.value <= high else "**no**"
            if entry.std is not None:
                p = stats.welch_from_summary(values, entry.value, entry.std, entry.runs)
                row["Welch p (paper mean ± std)"] = number(p)
        elif values:
            row["95% PI, one run"] = "needs 2+ seeds"
        rows.append(row)
    return rows


PAPER_NOTE = (
    "Against the paper: 95% PI is the prediction interval for one more run of ours, mean ± t·s·√(1 + 1/n) "
    "over our n seeds; a paper number of one run that lies outside it is unlikely to come from our runs' "
    "distribution. Where the paper gives mean ± std over several runs, Welch's test from those summary "
    "statistics (two-sided, not part of the Holm family). Compared on: "
)
