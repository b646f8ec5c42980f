"""reslab-report on real sweeps of the embedded digits data: seeds aggregated, failed,
diverged, running and never-started jobs listed, the comparisons over seeds and the degradation
verdict that rests on them, two sweeps compared, the W&B flag."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats as scipy_stats

from conftest import FAST, cli_env
from reslab.job import read_metrics_csv
from reslab.report.collect import Job, load_sweep
from reslab.report.comparisons import METRICS, degradation_verdict, sweep_comparisons
from reslab.report.layouts import LAYOUTS, layout_for
from reslab.report.tables import group_by_grid_point
from reslab.sweep import expand_grid

CPU_QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


def only_sweep(root: Path) -> Path:
    (sweep,) = [p for p in (root / "multirun").glob("*/*") if p.is_dir()]
    return sweep


def table_row(out: str, grid_point: str) -> dict[str, str]:
    """The cells, by column, of the generic table's row whose last cell is `grid_point`."""
    header: list[str] = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if line.startswith("| model |"):
            header = cells
        elif line.startswith("| ") and cells and cells[-1] == grid_point:
            return dict(zip(header, cells))
    raise AssertionError(f"no row for {grid_point!r} in\n{out}")


def test_layouts_are_found_by_experiment_name():
    assert layout_for("cifar_table6") is LAYOUTS["cifar_table6"]
    assert layout_for("imagenet_table3_smoke") is LAYOUTS["imagenet_table3"]
    assert layout_for("digits_degradation") is None and layout_for(None) is None


@pytest.mark.slow
def test_partly_failed_sweep_with_two_seeds_per_point(train, report, tmp_path):
    # Launch order: depth 8 x seeds x lrs (lr 1e30 diverges), then depth 9, which is no valid
    # depth: those jobs fail. (The sweep's pre-check would refuse the whole sweep up front; it is
    # switched off here.) Three depth-9 job folders are then removed: grid points never started.
    train(
        "-m",
        "model.depth=8,9",
        "seed=0,1",
        "optimizer.lr=0.05,1e30",
        "experiment_name=partial",
        "~hydra.callbacks.sweep_owner",
    )
    sweep = only_sweep(tmp_path)
    for job_dir in [p.parent for p in sweep.rglob(".hydra")]:
        overrides = set(yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()))
        if "model.depth=9" in overrides and not {"seed=0", "optimizer.lr=0.05"} <= overrides:
            shutil.rmtree(job_dir)

    # The grid comes back from multirun.yaml in Hydra's own launch order (hydra.job.num).
    multirun = OmegaConf.load(sweep / "multirun.yaml")
    grid = expand_grid(multirun)
    assert len(grid) == 8
    for job_dir in (p.parent for p in sweep.rglob(".hydra")):
        num = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"]
        assert sorted(grid[num]) == sorted(yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()))
    assert load_sweep(sweep).statuses == {"completed": 2, "diverged": 2, "failed": 1, "missing": 3}

    out = report(str(sweep)).stdout
    assert "8 jobs: 2 completed, 2 diverged, 1 failed, 3 not started" in out
    # two seeds: mean ± std over both, n = 2/2
    job = "data.batch_size=32,model.depth=8,optimizer.lr=0.05,seed={},trainer.max_steps=6"
    errors = [
        100 * json.loads((sweep / job.format(s) / "results.json").read_text())["metrics"]["test/err"] for s in (0, 1)
    ]
    row = table_row(out, "model.depth=8 optimizer.lr=0.05")
    mean, std = sum(errors) / 2, abs(errors[0] - errors[1]) / 2**0.5
    assert row["test err %"] == f"{mean:.2f} ± {std:.2f}" and row["n"] == "2/2"
    assert table_row(out, "model.depth=8 optimizer.lr=1e+30")["n"] == "0/2"
    # the depth-9 point: one failed job, one never started, both counted
    assert table_row(out, "model.depth=9 optimizer.lr=0.05")["n"] == "0/2"
    problems = out.split("## Jobs that did not complete")[1]
    assert problems.count(": diverged (training loss is nan") == 2
    assert ": failed (configuration error: model.depth=9" in problems
    not_started = out.split("## Grid points not started (no job folder)")[1].split("\n\n")[1].splitlines()
    assert sorted(not_started) == [
        "- `model.depth=9 seed=0 optimizer.lr=1e+30`",
        "- `model.depth=9 seed=1 optimizer.lr=0.05`",
        "- `model.depth=9 seed=1 optimizer.lr=1e+30`",
    ]
    # an experiment without a paper layout keeps the generic figure
    assert (sweep / "training_curves.png").is_file() and (sweep / "report.md").read_text().startswith("# Report")


def test_report_of_a_sweep_that_is_still_running(report, tmp_path):
    # The second job trains for many steps; the report runs while it does.
    fast = [a for a in FAST if not a.startswith("trainer.max_steps")]
    command = [
        sys.executable,
        "-m",
        "reslab.train",
        "-m",
        "trainer.max_steps=4,20000,5",
        "seed=0",
        "experiment_name=live",
        *fast,
    ]
    sweep_process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so that killing it ends its workers too
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("multirun/*/*/*max_steps=20000*/.hydra/overrides.yaml")):
            assert sweep_process.poll() is None and time.monotonic() < deadline, "the sweep never reached job 2"
            time.sleep(0.5)
        out = report(str(only_sweep(tmp_path))).stdout
    finally:
        os.killpg(sweep_process.pid, signal.SIGKILL)
        sweep_process.wait()
    assert "3 jobs: 1 completed, 1 not started, 1 running" in out
    assert ": running (" in out and ": still running" in out
    assert "- `trainer.max_steps=5`" in out.split("## Grid points not started")[1]


def final_train_error(metrics_csv: Path) -> float:
    values = [row["train/err"] for row in read_metrics_csv(metrics_csv) if "train/err" in row]
    window = max(1, len(values) // 10)
    return 100 * sum(values[-window:]) / window


def seeded_jobs(sweep: Path) -> dict[tuple[str, int], list[Path]]:
    """The sweep's job folders by (model, depth), one per seed, in seed order."""
    jobs: dict[tuple[str, int], list[tuple[int, Path]]] = {}
    for hydra_dir in sweep.rglob(".hydra"):
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((hydra_dir / "overrides.yaml").read_text()))
        key = (overrides["model"], int(overrides["model.depth"]))
        jobs.setdefault(key, []).append((int(overrides["seed"]), hydra_dir.parent))
    return {key: [path for _, path in sorted(seeds)] for key, seeds in jobs.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values)


def table_rows(out: str, heading: str, first_column: str) -> dict[str, dict[str, str]]:
    """The rows of the markdown table under `## heading`, by their first cell."""
    lines = out.split(f"## {heading}\n\n")[1].split("\n\n")[0].splitlines()
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert header[0] == first_column, header
    rows = [dict(zip(header, (c.strip() for c in line.split("|")[1:-1]))) for line in lines[2:]]
    return {row[first_column]: row for row in rows}


def p_text(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


@pytest.mark.slow
def test_digits_degradation_runs_three_seeds_and_its_verdict_rests_on_welch_tests(train, report, tmp_path):
    train("-m", "experiment=digits_degradation", "model.depth=8,14")
    sweep = only_sweep(tmp_path)
    jobs = seeded_jobs(sweep)
    assert sorted(jobs) == [("plain", 8), ("plain", 14), ("resnet", 8), ("resnet", 14)]
    assert all(len(seeds) == 3 for seeds in jobs.values())
    out = report(str(sweep)).stdout

    # Each grid point's row: mean ± std over its 3 seeds, n = 3/3.
    for (family, depth), seeds in jobs.items():
        row = table_row(out, f"model.depth={depth} model={family}")
        test_errors = [100 * json.loads((job / "results.json").read_text())["metrics"]["test/err"] for job in seeds]
        mean, std = mean_std(test_errors)
        assert row["test err %"] == f"{mean:.2f} ± {std:.2f}" and row["n"] == "3/3", row

    # The comparisons: final training error, plain vs ResNet at each depth and 8 vs 14 layers in
    # each family, each with Welch's interval and p-value, Holm-adjusted over the four.
    train_errors = {key: [final_train_error(job / "metrics.csv") for job in seeds] for key, seeds in jobs.items()}
    rows = table_rows(out, "Comparisons over seeds", "comparison")
    pairs = {
        "plain-8 vs ResNet-8": (("plain", 8), ("resnet", 8)),
        "plain-14 vs ResNet-14": (("plain", 14), ("resnet", 14)),
        "plain-8 vs plain-14": (("plain", 8), ("plain", 14)),
        "ResNet-8 vs ResNet-14": (("resnet", 8), ("resnet", 14)),
    }
    assert sorted(rows) == sorted(pairs)
    for name, (first, second) in pairs.items():
        a, b = train_errors[first], train_errors[second]
        row = rows[name]
        assert row["metric"] == "final train err"
        assert row["Δ [95% CI]"].startswith(f"{statistics.fmean(b) - statistics.fmean(a):+.2f}")
        if statistics.stdev(a) > 0 or statistics.stdev(b) > 0:
            assert row["p"] == p_text(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue), row
        else:
            assert row["p"] == "—"
    assert "Holm's method over the" in out and "α = 0.05" in out and "Welch's t interval" in out

    verdict = out.split("## Degradation")[1].split("\n\n")[1]
    worse = {}
    for family, name in (("plain", "plain"), ("resnet", "ResNet")):
        row = rows[f"{name}-8 vs {name}-14"]
        delta, p, holm = row["Δ [95% CI]"], row["p"], row["p (Holm)"]
        tested = f"p = {p} (Holm {holm})" if p != "—" else row["verdict"]
        assert f"{name}-14 vs {name}-8 {delta} points, {tested}, n=3 and 3" in verdict
        worse[family] = holm != "—" and float(holm) < 0.05 and delta.startswith("+")
    if worse["plain"] and not worse["resnet"]:
        assert verdict.startswith("The degradation problem shows: ")
    elif worse["plain"]:
        assert verdict.startswith("The degradation problem shows")
    else:
        assert verdict.startswith("The degradation problem does not show")
    assert (sweep / "training_curves.png").is_file()


@pytest.mark.slow
def test_compare_calls_a_badly_tuned_recipe_different_and_the_same_recipe_with_other_seeds_not(train, report, tmp_path):
    # Three sweeps of ResNet-8 on digits, 3 seeds each, 80 steps: the digits recipe (lr 0.05), the
    # same with lr 1e-4 (badly tuned), and the digits recipe again with other seeds (a null control).
    recipe = ["experiment=digits_degradation", "model=resnet", "model.depth=8", "trainer.max_steps=80", "logger=csv"]
    recipe += CPU_QUIET
    for folder, lr, seeds in (("tuned", 0.05, "0,1,2"), ("badly_tuned", 1e-4, "0,1,2"), ("other_seeds", 0.05, "3,4,5")):
        train("-m", *recipe, f"optimizer.lr={lr}", f"seed={seeds}", f"hydra.sweep.dir={folder}", fast=False)

    out = report("--compare", "tuned", "badly_tuned").stdout
    written = tmp_path / "compare_tuned_vs_badly_tuned.md"
    assert written.read_text() in out
    (row,) = table_rows("## x\n\n" + out.split("\n\n", 2)[2], "x", "network").values()
    test_errors = {
        folder: [
            100 * json.loads(p.read_text())["metrics"]["test/err"] for p in (tmp_path / folder).rglob("results.json")
        ]
        for folder in ("tuned", "badly_tuned", "other_seeds")
    }
    tuned, bad = test_errors["tuned"], test_errors["badly_tuned"]
    assert row["network"] == "ResNet-8" and row["metric"] == "test err"
    assert row["A"] == f"{statistics.fmean(tuned):.2f} ± {statistics.stdev(tuned):.2f} (n=3)"
    assert row["p"] == p_text(scipy_stats.ttest_ind(bad, tuned, equal_var=False).pvalue)
    assert row["verdict"] == "**B higher**" and row["P(B better)"] == "0.00", row

    out = report("--compare", "tuned", "other_seeds").stdout
    (row,) = table_rows("## x\n\n" + out.split("\n\n", 2)[2], "x", "network").values()
    assert row["verdict"].startswith(("not different", "not resolved")), row
    low, high = (float(v) for v in row["Δ (B − A) [95% CI]"].split("[")[1].rstrip("]").split(", "))
    assert low < 0 < high
    assert (tmp_path / "compare_tuned_vs_other_seeds.md").is_file()

    # a folder that is not a sweep is refused before any work
    refused = report("--compare", "tuned", "nowhere", check=False)
    assert refused.returncode == 2 and "--compare: no sweep folder nowhere" in refused.stderr

    # the sweep's own report and figure are named after its experiment, not its folder
    assert report("tuned").stdout.startswith("# Report: digits_degradation\n")
    assert Image.open(tmp_path / "tuned" / "training_curves.png").text["Title"] == "digits_degradation"


@pytest.mark.slow
def test_wandb_flag_logs_the_report_offline(train, report, tmp_path):
    train("-m", "model.depth=8", "seed=0,1", "experiment_name=wb")
    sweep = only_sweep(tmp_path)
    out = report(str(sweep), "--wandb", "--wandb-mode", "offline").stdout
    (line,) = [line for line in out.splitlines() if line.startswith("W&B report run: ")]
    run_dir = Path(line.removeprefix("W&B report run: "))
    assert run_dir.is_dir() and sweep in run_dir.parents


def finished_job(family: str, depth: int, final_train_err: float, seed: int = 0) -> Job:
    """A completed job whose metrics.csv history ends at `final_train_err`."""
    shortcut = "none" if family == "plain" else "A"
    history = [{"step": float(s), "train/err": final_train_err} for s in range(10)]
    return Job(
        path=Path(f"model={family},model.depth={depth},seed={seed}"),
        overrides=[f"model={family}", f"model.depth={depth}", f"seed={seed}"],
        choices={"model": family},
        config={
            "model": {"_target_": "reslab.models.build_network", "depth": depth, "shortcut": shortcut},
            "seed": seed,
        },
        results={"status": "completed", "metrics": {}},
        history=history,
    )


def verdict_of(errors: dict[tuple[str, int], tuple[float, ...]]) -> str | None:
    jobs = [finished_job(f, d, e, seed) for (f, d), values in errors.items() for seed, e in enumerate(values)]
    return degradation_verdict(sweep_comparisons(group_by_grid_point(jobs), [METRICS["train"]]))


NOISE = (-0.01, 0.0, 0.01)  # seeds 1 point apart


@pytest.mark.parametrize(
    "plain, resnet, expected",
    [
        ((0.05, 0.30), (0.05, 0.05), "The degradation problem shows: "),
        ((0.05, 0.30), (0.05, 0.10), "The degradation problem shows, less clearly"),
        ((0.05, 0.055), (0.05, 0.04), "The degradation problem does not show"),
    ],
)
def test_degradation_verdict_rule(plain, resnet, expected):
    errors = {
        (family, depth): tuple(e + n for n in NOISE)
        for family, values in (("plain", plain), ("resnet", resnet))
        for depth, e in zip((8, 56), values)
    }
    verdict = verdict_of(errors)
    assert verdict.startswith(expected), verdict
    assert f"plain-56 vs plain-8 {100 * (plain[1] - plain[0]):+.2f} [" in verdict
    # one family with a single depth: no verdict
    assert verdict_of({k: v for k, v in errors.items() if k != ("resnet", 56)}) is None


@pytest.mark.parametrize(
    "plain_deep, expected",
    [
        # plain-56 ends 3 points worse than plain-8 on average, but its seeds disagree by 4 points
        # each way: Welch's test cannot tell at 3 seeds, and the verdict says how many would.
        ((0.04, 0.08, 0.12), "The degradation problem does not show"),
        ((0.079, 0.08, 0.081), "The degradation problem shows: "),
    ],
)
def test_degradation_verdict_weighs_the_gap_against_the_seeds_spread(plain_deep, expected):
    errors = {
        ("plain", 8): (0.049, 0.05, 0.051),
        ("plain", 56): plain_deep,
        ("resnet", 8): (0.05,) * 3,
        ("resnet", 56): (0.05,) * 3,
    }
    verdict = verdict_of(errors)
    assert verdict.startswith(expected), verdict
    a, b = [100 * e for e in errors["plain", 8]], [100 * e for e in plain_deep]
    p = scipy_stats.ttest_ind(b, a, equal_var=False).pvalue
    assert "plain-56 vs plain-8 +3.00 [" in verdict and f"p = {p_text(p)}" in verdict
    if expected.endswith("not show"):
        assert "Too few seeds: at the plain nets' spread, " in verdict


def test_seeds_of_a_network_are_drawn_as_mean_and_band(tmp_path):
    from reslab.report.figures import degradation_figure, mean_curve

    steps, mean, std = mean_curve([([0, 1, 2], [0.2, 0.4, 0.6]), ([0, 1, 2, 3], [0.4, 0.6, 0.8, 0.9])])
    assert steps == [0, 1, 2] and mean == pytest.approx([0.3, 0.5, 0.7]) and std == pytest.approx([2**0.5 / 10] * 3)
    jobs = [finished_job("plain", 8, e, seed) for seed, e in enumerate((0.1, 0.2, 0.3))]
    figure = degradation_figure(jobs, tmp_path / "curves.png")
    assert figure is not None and figure.stat().st_size > 10_000


def test_a_sampled_sweep_gets_the_search_layout_whatever_its_experiment():
    assert layout_for("cifar_table6", sampled=True) is layout_for(None, sampled=True)
    assert layout_for("cifar_table6", sampled=True).name == "search"


def scored_job(family: str, depth: int, seed: int, metrics: dict, ten_crop: bool = False, shortcut: str = "A") -> Job:
    """A completed job with final `metrics` (fractions), as a paper layout reads it."""
    data = {"ten_crop_test": True} if ten_crop else {}
    return Job(
        path=Path(f"model={family},model.depth={depth},seed={seed}"),
        overrides=[f"model={family}", f"model.depth={depth}", f"seed={seed}"]
        + ([f"model.shortcut={shortcut}"] if family != "plain" else []),
        choices={"model": family},
        config={
            "model": {"depth": depth, "shortcut": "none" if family == "plain" else shortcut},
            "seed": seed,
            "data": data,
        },
        results={"status": "completed", "metrics": metrics},
    )


def test_paper_layouts_hold_our_seeds_against_the_papers_number():
    # Table 6: ResNet-20's seeds around the paper's 8.75; ResNet-110's far above the paper's
    # 6.61 ± 0.16 over 5 runs; ResNet-56 with one seed only.
    errors = {20: (0.080, 0.085, 0.090), 110: (0.079, 0.081, 0.080), 56: (0.07,)}
    jobs = [
        scored_job("resnet", d, seed, {"test/err": e}) for d, values in errors.items() for seed, e in enumerate(values)
    ]
    sections = LAYOUTS["cifar_table6"].tables(group_by_grid_point(jobs))
    (against,) = [s for s in sections if s.title.startswith("Against the paper")]
    rows = {row["net"]: row for row in against.rows}
    low, high = scipy_stats.t.interval(0.95, 2, loc=8.5, scale=0.5 * (1 + 1 / 3) ** 0.5)
    assert (
        rows["ResNet-20"]["95% PI, one run"] == f"[{low:.2f}, {high:.2f}]" and rows["ResNet-20"]["paper in PI"] == "yes"
    )
    assert rows["ResNet-110"]["paper"] == "6.61 ± 0.16 (n=5)" and rows["ResNet-110"]["paper in PI"] == "**no**"
    p = scipy_stats.ttest_ind_from_stats(8.0, 0.1, 3, 6.61, 0.16, 5, equal_var=False).pvalue
    assert rows["ResNet-110"]["Welch p (paper mean ± std)"] == p_text(p)
    assert rows["ResNet-56"]["95% PI, one run"] == "needs 2+ seeds"
    assert "Compared on: test err." in against.notes[0]

    # Table 2 is 10-crop: a job that tested on the centre crop only is not held against it.
    jobs = [scored_job("resnet", 34, seed, {"test/err": e}, ten_crop=True) for seed, e in enumerate((0.25, 0.26))]
    jobs += [scored_job("plain", 34, seed, {"test/err": e}) for seed, e in enumerate((0.28, 0.29))]
    jobs += [
        scored_job("plain", 18, seed, {"test/err": 0.3, "test/err_10crop": e}) for seed, e in enumerate((0.27, 0.28))
    ]
    sections = LAYOUTS["imagenet_table2"].tables(group_by_grid_point(jobs))
    rows = {row["net"]: row for row in sections[-1].rows}
    assert rows["ResNet-34"]["ours"] == "25.50 ± 0.71 (n=2)" and rows["plain-18"]["ours"] == "27.50 ± 0.71 (n=2)"
    assert rows["plain-34"]["ours"] == "—"
    assert "Compared on: 10-crop test err." in sections[-1].notes[0]


def test_shortcut_options_are_compared_where_they_were_swept():
    jobs = [
        scored_job("resnet", 34, seed, {"test/err": e + 0.001 * seed}, ten_crop=True, shortcut=option)
        for option, e in (("A", 0.25), ("B", 0.245), ("C", 0.24))
        for seed in range(3)
    ]
    jobs += [scored_job("plain", 34, seed, {"test/err": 0.285 + 0.001 * seed}, ten_crop=True) for seed in range(3)]
    rows = sweep_comparisons(group_by_grid_point(jobs), [METRICS["test_10crop"]])
    names = [f"{row.first} vs {row.second}" for row in rows]
    assert sorted(names) == sorted(
        [
            "plain-34 vs ResNet-34 A",
            "plain-34 vs ResNet-34 B",
            "plain-34 vs ResNet-34 C",
            "ResNet-34 A vs ResNet-34 B",
            "ResNet-34 A vs ResNet-34 C",
            "ResNet-34 B vs ResNet-34 C",
        ]
    )
    a_vs_c = rows[names.index("ResNet-34 A vs ResNet-34 C")].comparison
    assert a_vs_c.difference == pytest.approx(-1.0) and a_vs_c.different and a_vs_c.improvement == 1.0
    assert all(row.comparison.p_holm >= row.comparison.p for row in rows)
