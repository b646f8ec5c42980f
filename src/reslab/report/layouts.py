"""Paper-shaped reports of the experiments ResLab reproduces (the README's "Reproductions"):
`layout_for(name)` finds an experiment's (`X_smoke` shares X's); a sampled sweep (Optuna) gets
the search layout; sweeps of other experiments get none (the generic table and figure).

Values are errors in %; "Δ" is ours minus the paper's, in points. A cell without a completed
run says why: the states of its jobs (running, failed, ...), or "—" when no job of the sweep
is at that row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from reslab.report import paper
from reslab.report.collect import Job
from reslab.report.comparisons import METRICS, PAPER_NOTE, PaperNumber, paper_rows, ten_crop_error
from reslab.report.figures import (
    curves_figure,
    degradation_figure,
    figure4,
    figure6,
    objective_by_hyperparameter,
    objective_by_trial,
)
from reslab.report.tables import (
    GridPoint,
    by_objective,
    objective,
    override_values,
    searched_keys,
    shared_overrides,
    trial_rows,
)


@dataclass
class Section:
    """A titled table of the report, with notes printed under it."""

    title: str
    rows: list[dict[str, str]]
    notes: list[str] = field(default_factory=list)


# A figure of a report: (file name, caption, draw(jobs, out_png, title=...)).
Figure = tuple[str, str, Callable[[list[Job], Path, str], Path | None]]


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    tables: Callable[[list[GridPoint]], list[Section]]
    figures: tuple[Figure, ...]
    # What the paper compares its networks on (reslab.report.comparisons.METRICS), first the
    # metric of its tables; the final training error is the degradation problem's.
    metrics: tuple[str, ...] = ("test", "train")


def layout_for(experiment: str | None, sampled: bool = False) -> Layout | None:
    """The search layout for a sampled sweep (its jobs are trials, whatever the experiment);
    else the paper layout of `experiment` (its smoke variant's too), or None."""
    if sampled:
        return SEARCH_LAYOUT
    if not experiment:
        return None
    return LAYOUTS.get(experiment.removesuffix("_smoke"))


# ----------------------------------------------------------------------------- cells


def ours(
    point: GridPoint | None, value: Callable[[Job], float | None], median: bool = False
) -> tuple[str, float | None]:
    """(cell text, value in %) of one grid point: mean ± std over seeds (or the median), with
    the completed/total count when it is not 1/1; the jobs' states when none completed."""
    if point is None:
        return "—", None
    stat = point.stat(value)
    if stat.n == 0:
        return point.states() or "no value", None
    if median:
        centre = 100 * stat.median
        text = f"{centre:.2f} (median)"
    else:
        centre = 100 * stat.mean
        text = stat.percent()
    if point.count != "1/1":
        text += f" (n={point.count})"
    return text, centre


def delta(value: float | None, reference: float | None) -> str:
    if value is None or reference is None:
        return ""
    return f"{value - reference:+.2f}"


def reference(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def one_per_row(points: Sequence[GridPoint], row: Callable[[Job], bool]) -> list[tuple[str, GridPoint | None]]:
    """The grid points of one paper row (those whose jobs `row` accepts): (suffix, point) each,
    the suffix naming the overrides that tell several points apart (e.g. ` [optimizer.lr=0.05]`);
    [("", None)] when none."""
    points = [point for point in points if row(point.first)]
    if not points:
        return [("", None)]
    if len(points) == 1:
        return [("", points[0])]
    shared = shared_overrides(point.key for point in points)
    return [(" [" + " ".join(o for o in point.key if o not in shared) + "]", point) for point in points]


def against_paper(entries: Sequence[PaperNumber], metric: str, source: str) -> list[Section]:
    """The section that holds our seeds against the paper's numbers (reslab.report.comparisons)."""
    entries = [entry for entry in entries if entry.point is not None]
    if not entries:
        return []
    metric = METRICS[metric]
    return [Section(f"Against the paper: {source}", paper_rows(entries, metric), [PAPER_NOTE + metric.name + "."])]


def params_of(point: GridPoint | None) -> str:
    params = (point.sized.results or {}).get("params") if point else None
    return f"{params:,}" if params else "—"


# ----------------------------------------------------------------------------- CIFAR-10, Table 6


def cifar_table6(points: list[GridPoint]) -> list[Section]:
    resnet_rows, numbers = [], []
    runs = paper.CIFAR_RESNET110_RUNS
    for depth, paper_error in paper.CIFAR_TABLE6.items():
        for suffix, point in one_per_row(points, lambda j, d=depth: j.family == "resnet" and j.depth == d):
            if depth == 110:  # the table's number is the best of 5 runs: hold ours against their mean ± std
                numbers.append(PaperNumber(f"ResNet-{depth}{suffix}", point, runs["mean"], runs["std"], runs["n"]))
            else:
                numbers.append(PaperNumber(f"ResNet-{depth}{suffix}", point, paper_error))
            text, value = ours(point, METRICS["test"].value)
            resnet_rows.append(
                {
                    "net": f"ResNet-{depth}{suffix}",
                    "layers": str(depth),
                    "params": params_of(point),
                    "params (paper)": f"{paper.CIFAR_PARAMS[depth]:,}",
                    "test err % (ours)": text,
                    "paper": reference(paper_error),
                    "Δ": delta(value, paper_error),
                    paper.NABLA0001.name: reference(paper.NABLA0001.errors.get(("resnet", depth))),
                    paper.AKAMASTER.name: reference(paper.AKAMASTER.errors.get(("resnet", depth))),
                }
            )
    plain_rows = []
    run_depths = {p.first.depth for p in points if p.first.family == "plain" and p.first.depth}
    plain_depths = sorted(run_depths | {20, 32, 44, 56})
    for depth in plain_depths:
        for suffix, point in one_per_row(points, lambda j, d=depth: j.family == "plain" and j.depth == d):
            text, value = ours(point, METRICS["test"].value)
            peer = paper.NABLA0001.errors.get(("plain", depth))
            plain_rows.append(
                {
                    "net": f"plain-{depth}{suffix}",
                    "layers": str(depth),
                    "params": params_of(point),
                    "test err % (ours)": text,
                    paper.NABLA0001.name: reference(peer),
                    "Δ vs " + paper.NABLA0001.name: delta(value, peer),
                }
            )
    return [
        Section(
            f"Table 6: CIFAR-10 test error (%), option A — {paper.CIFAR_TABLE6_SOURCE}",
            resnet_rows,
            [
                f"paper: one run per net; ResNet-110's 6.43 is the best of {runs['n']} runs "
                f"(mean {runs['mean']} ± {runs['std']}).",
                f"{paper.NABLA0001.name}: {paper.NABLA0001.protocol}; "
                f"{paper.AKAMASTER.name}: {paper.AKAMASTER.protocol}.",
                "ours: test error on the 10k test images at the end of training, mean ± std over seeds.",
            ],
        ),
        Section(
            "Plain nets (the paper shows them only in Figure 6)",
            plain_rows,
            ["The paper gives no table for plain nets: deeper plain nets have higher training and test error."],
        ),
    ] + against_paper(numbers, "test", paper.CIFAR_TABLE6_SOURCE)


# ----------------------------------------------------------------------------- ImageNet, Tables 2 and 3


def imagenet_table2(points: list[GridPoint]) -> list[Section]:
    rows, numbers = [], []
    for depth in (18, 34):
        row = {"layers": str(depth)}
        for family, name in (("plain", "plain"), ("resnet", "ResNet")):
            _, point = one_per_row(points, lambda j, f=family, d=depth: j.family == f and j.depth == d)[0]
            text, value = ours(point, ten_crop_error)
            paper_error = paper.IMAGENET_TABLE2[(family, depth)]
            numbers.append(PaperNumber(f"{name}-{depth}", point, paper_error))
            row[f"{name} (ours)"] = text
            row[f"{name} (paper)"] = reference(paper_error)
            row[f"{name} Δ"] = delta(value, paper_error)
        rows.append(row)
    torchvision = paper.TORCHVISION_1CROP
    return [
        Section(
            f"Table 2: ImageNet val top-1 error (%), 10-crop, option A — {paper.IMAGENET_TABLE2_SOURCE}",
            rows,
            [
                "ours: top-1 error of the 10-crop test on the 50k val images at the end of training.",
                f"No public reproduction trains plain-34 against ResNet-34; for scale, {torchvision.name} "
                f"({torchvision.protocol}): ResNet-18 {torchvision.errors[(18, 'B')]:.2f}, "
                f"ResNet-34 {torchvision.errors[(34, 'B')]:.2f}.",
            ],
        )
    ] + against_paper(numbers, "test_10crop", paper.IMAGENET_TABLE2_SOURCE)


def imagenet_table3(points: list[GridPoint]) -> list[Section]:
    rows, numbers = [], []
    for entry in paper.IMAGENET_TABLE3:

        def runs_row(j: Job, e: paper.Table3Row = entry) -> bool:
            same_shortcut = e.family == "plain" or j.shortcut == e.shortcut
            return e.family is not None and j.family == e.family and j.depth == e.depth and same_shortcut

        for suffix, point in one_per_row(points, runs_row):
            top1, top1_value = ours(point, ten_crop_error)
            top5, top5_value = ours(point, lambda j: ten_crop_error(j, "_top5"))
            if entry.family:
                numbers.append(PaperNumber(entry.name + suffix, point, entry.top1))
            peer = paper.FB_RESNET_TORCH.errors.get((entry.depth, entry.shortcut))
            rows.append(
                {
                    "model": entry.name + suffix,
                    "top-1 (ours)": top1 if entry.family else "not built by ResLab",
                    "top-1 (paper)": reference(entry.top1),
                    "top-1 Δ": delta(top1_value, entry.top1),
                    "top-5 (ours)": top5 if entry.family else "",
                    "top-5 (paper)": reference(entry.top5),
                    "top-5 Δ": delta(top5_value, entry.top5),
                    f"{paper.FB_RESNET_TORCH.name} top-1": reference(peer),
                }
            )
    torchvision = paper.TORCHVISION_1CROP
    return [
        Section(
            f"Table 3: ImageNet val error (%), 10-crop — {paper.IMAGENET_TABLE3_SOURCE}",
            rows,
            [
                "ours: 10-crop top-1 / top-5 error on the 50k val images at the end of training.",
                f"{paper.FB_RESNET_TORCH.name}: {paper.FB_RESNET_TORCH.protocol} (option B). "
                f"{torchvision.name} ({torchvision.protocol}): "
                + ", ".join(f"ResNet-{d} {e:.2f}" for (d, _), e in torchvision.errors.items())
                + ".",
            ],
        )
    ] + against_paper(numbers, "test_10crop", paper.IMAGENET_TABLE3_SOURCE + ", top-1")


# ----------------------------------------------------------------------------- identity mappings, Table 2


def preact_table2(points: list[GridPoint]) -> list[Section]:
    rows, numbers = [], []
    for unit in paper.PREACT_TABLE2:
        row = {"unit": unit.name}
        for depth in paper.PREACT_DEPTHS:
            paper_error = unit.errors[depth]
            if unit.family is None:
                text, value = "not built (no model knob for this unit)", None
            else:
                point = one_per_row(points, lambda j, f=unit.family, d=depth: j.family == f and j.depth == d)[0][1]
                text, value = ours(point, METRICS["test"].value, median=True)
                numbers.append(PaperNumber(f"{unit.name} ResNet-{depth}", point, paper_error))
            row[f"ResNet-{depth} (ours)"] = text
            row[f"ResNet-{depth} (paper)"] = reference(paper_error)
            row[f"ResNet-{depth} Δ"] = delta(value, paper_error)
        rows.append(row)
    return [
        Section(
            f"Table 2: CIFAR-10 test error (%) of residual unit variants — {paper.PREACT_TABLE2_SOURCE}",
            rows,
            [
                "ours: median over seeds of the test error at the end of training, as the paper reports.",
                "Three of the paper's units need unit classes the builder does not have; they are not "
                "approximated by other knobs.",
            ],
        )
    ] + against_paper(numbers, "test", paper.PREACT_TABLE2_SOURCE + "; a median of 5 varies less than one run")


def unit_name(job: Job) -> str:
    return "full pre-activation" if job.family == "preact" else "original"


# Original vs full pre-activation units: one panel per depth, one colour per unit.
preact_figure = partial(
    curves_figure,
    panels=[(f"ResNet-{d}", lambda j, d=d: j.depth == d) for d in paper.PREACT_DEPTHS],
    colour_of=lambda j: j.family,
    label_of=unit_name,
)
# Every row's curves in one panel, one colour per network (Table 3 has no figure).
table3_figure = partial(
    curves_figure,
    panels=[("ResNet", lambda j: True)],
    colour_of=lambda j: (j.depth or 0, j.shortcut or ""),
    label_of=lambda j: f"ResNet-{j.depth} {j.shortcut}",
)


# ----------------------------------------------------------------------------- the seed's transfer example


def start_of(job: Job) -> str:
    init = job.config.get("init")
    if init:
        return str(init)
    return "random" if job.model.get("weights") is None else "pretrained"


def first_eval(job: Job) -> float | None:
    _, values = job.curve("val/err")
    return values[0] if values else None


def mnist_transfer(points: list[GridPoint]) -> list[Section]:
    rows = []
    for start in ("pretrained", "random"):
        for suffix, point in one_per_row(points, lambda j, s=start: start_of(j) == s):
            steps = point.first.curve("val/err")[0] if point else []
            first_step = f" (step {int(steps[0])})" if steps else ""
            rows.append(
                {
                    "start": start + suffix,
                    "weights": str(point.first.model.get("weights")) if point else "—",
                    "test err %": ours(point, METRICS["test"].value)[0],
                    "best val err %": ours(point, lambda j: j.best("val/err"))[0],
                    f"first val err %{first_step}": ours(point, first_eval)[0],
                    "train err % (last 10%)": ours(point, Job.final_train_error)[0],
                }
            )
    return [
        Section(
            "Pretrained vs random initialisation, same budget (the seed's transfer example; no paper numbers)",
            rows,
            [
                "The seed expects the pretrained start to learn faster: compare the first validation "
                "error and the curves."
            ],
        )
    ]


mnist_figure = partial(
    curves_figure, panels=[("ResNet-18 on MNIST", lambda j: True)], colour_of=start_of, label_of=start_of
)


# ----------------------------------------------------------------------------- sampled sweeps


def search_tables(points: list[GridPoint]) -> list[Section]:
    """The trials of a sampled sweep, best first, and the best trial's overrides."""
    trials = [job for point in points for job in point.jobs]
    keys = searched_keys(trials)
    scored = [job for job in trials if objective(job) is not None]
    notes = [
        f"{len(trials)} trials, {len(scored)} with an objective. Objective: a trial's lowest `val/err` "
        "over its run (the job's return value, which the sampler minimises); errors in %."
    ]
    if scored:
        best = by_objective(scored)[0]
        values = override_values(best)
        drawn = " ".join(f"{key}={values[key]}" for key in keys if key in values)
        notes += [
            f"**best**: trial {best.num}, best val err {100 * objective(best):.2f}: `{drawn or ' '.join(best.overrides)}`",
            f"Run it alone: `reslab-train {' '.join(best.overrides)}`",
        ]
    return [Section("Search: trials by objective, best first", trial_rows(trials), notes)]


SEARCH_LAYOUT = Layout(
    "search",
    "a sampled search (each job one trial of the sweeper)",
    search_tables,
    (
        ("search_trials.png", "objective (best val err) against trial number", objective_by_trial),
        ("search_hyperparameters.png", "objective against each hyperparameter", objective_by_hyperparameter),
    ),
    (),
)


# ----------------------------------------------------------------------------- registry

LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout(
            "cifar_table6",
            "He et al. 2015, Table 6 and Figure 6: CIFAR-10, plain vs ResNet (option A)",
            cifar_table6,
            (("figure6_cifar10.png", "Figure 6 layout: dashed training, bold validation error", figure6),),
        ),
        Layout(
            "imagenet_table2",
            "He et al. 2015, Table 2 and Figure 4: ImageNet, plain vs ResNet (option A), 18 and 34 layers",
            imagenet_table2,
            (("figure4_imagenet.png", "Figure 4 layout: thin training, bold centre-crop validation error", figure4),),
            ("test_10crop", "train"),
        ),
        Layout(
            "imagenet_table3",
            "He et al. 2015, Table 3: ImageNet, shortcut options A/B/C and deeper bottleneck ResNets",
            imagenet_table3,
            (("training_curves.png", "dashed training, bold validation error per network", table3_figure),),
            ("test_10crop",),
        ),
        Layout(
            "preact_cifar",
            "He et al. 2016, Table 2: residual unit variants on CIFAR-10 (ResNet-110 / ResNet-164)",
            preact_table2,
            (
                (
                    "training_curves.png",
                    "original vs full pre-activation: dashed training, bold validation",
                    preact_figure,
                ),
            ),
            ("test",),
        ),
        Layout(
            "mnist_transfer",
            "The seed's transfer example: pretrained ResNet-18 adapted to MNIST vs random init",
            mnist_transfer,
            (("training_curves.png", "pretrained vs random start: dashed training, bold validation", mnist_figure),),
            ("test",),
        ),
    )
}

# A sweep without a paper layout is compared on the degradation problem's metric.
GENERIC_METRICS = ("train",)
GENERIC_FIGURE = ("training_curves.png", "dashed training, bold validation error", degradation_figure)
