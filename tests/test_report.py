"""reslab-report on real sweeps of the embedded digits data: seeds aggregated, failed,
diverged, running and never-started jobs listed, the degradation verdict, the W&B flag."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import FAST, cli_env
from reslab.report.collect import Job, expand_grid, load_sweep
from reslab.report.layouts import DEGRADATION_NOISE, LAYOUTS, degradation_verdict, layout_for
from reslab.report.tables import group_by_grid_point
from reslab.results import read_metrics_csv
from omegaconf import OmegaConf


def only_sweep(root: Path) -> Path:
    (sweep,) = [p for p in (root / "multirun").glob("*/*") if p.is_dir()]
    return sweep


def table_row(out: str, grid_point: str) -> list[str]:
    """The cells of the generic table's row whose last cell is `grid_point`."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if line.startswith("| ") and cells and cells[-1] == grid_point:
            return cells
    raise AssertionError(f"no row for {grid_point!r} in\n{out}")


def test_layouts_are_found_by_experiment_name():
    assert layout_for("cifar_table6") is LAYOUTS["cifar_table6"]
    assert layout_for("imagenet_table3_smoke") is LAYOUTS["imagenet_table3"]
    assert layout_for("digits_degradation") is None and layout_for(None) is None


def test_partly_failed_sweep_with_two_seeds_per_point(train, report, tmp_path):
    # Launch order: depth 8 x seeds x lrs (lr 1e30 diverges), then depth 9, which is no valid
    # depth: that job fails and stops the sweep, so the other three depth-9 jobs never start.
    # (The sweep preflight would refuse the whole sweep up front; it is switched off here to
    # get a sweep that stopped half-way.)
    proc = train(
        "-m", "model.depth=8,9", "seed=0,1", "optimizer.lr=0.05,1e30", "experiment_name=partial",
        "~hydra.callbacks.preflight", check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    sweep = only_sweep(tmp_path)

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
    errors = [100 * json.loads((sweep / job.format(s) / "results.json").read_text())["metrics"]["test/err"] for s in (0, 1)]
    row = table_row(out, "model.depth=8 optimizer.lr=0.05")
    mean, std = sum(errors) / 2, abs(errors[0] - errors[1]) / 2**0.5
    assert row[8] == f"{mean:.2f} ± {std:.2f}" and row[9] == "2/2"
    assert table_row(out, "model.depth=8 optimizer.lr=1e+30")[9] == "0/2"
    # the depth-9 point: one failed job, one never started, both counted
    assert table_row(out, "model.depth=9 optimizer.lr=0.05")[9] == "0/2"
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
    command = [sys.executable, "-m", "reslab.train", "-m", "trainer.max_steps=4,20000,5", "seed=0", "experiment_name=live", *fast]
    sweep_process = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
    assert ": running (no results.json yet" in out
    assert "- `trainer.max_steps=5`" in out.split("## Grid points not started")[1]


def final_train_error(metrics_csv: Path) -> float:
    values = [row["train/err"] for row in read_metrics_csv(metrics_csv) if "train/err" in row]
    window = max(1, len(values) // 10)
    return 100 * sum(values[-window:]) / window


def test_digits_degradation_report_gives_the_verdict(train, report, tmp_path):
    train("-m", "experiment=digits_degradation", "model.depth=8,14")
    sweep = only_sweep(tmp_path)
    out = report(str(sweep)).stdout
    job = "data.batch_size=32,model.depth={},model={},trainer.max_steps=6"
    gaps = {
        family: final_train_error(sweep / job.format(14, family) / "metrics.csv")
        - final_train_error(sweep / job.format(8, family) / "metrics.csv")
        for family in ("plain", "resnet")
    }
    verdict = out.split("## Degradation")[1].split("\n\n")[1]
    assert f"plain-14 vs plain-8 {gaps['plain']:+.2f} points" in verdict
    assert f"ResNet-14 vs ResNet-8 {gaps['resnet']:+.2f} points" in verdict
    shows = gaps["plain"] > DEGRADATION_NOISE and gaps["resnet"] < gaps["plain"]
    assert verdict.startswith("The degradation problem shows" if shows else "The degradation problem does not show")
    assert (sweep / "training_curves.png").is_file()


@pytest.mark.slow
def test_wandb_flag_logs_the_report_offline(train, report, tmp_path):
    train("-m", "model.depth=8", "seed=0,1", "experiment_name=wb")
    sweep = only_sweep(tmp_path)
    out = report(str(sweep), "--wandb", "--wandb-mode", "offline").stdout
    (line,) = [line for line in out.splitlines() if line.startswith("W&B report run: ")]
    run_dir = Path(line.removeprefix("W&B report run: "))
    assert run_dir.is_dir() and sweep in run_dir.parents


def finished_job(family: str, depth: int, final_train_err: float) -> Job:
    """A completed job whose metrics.csv history ends at `final_train_err`."""
    shortcut = "none" if family == "plain" else "A"
    history = [{"step": float(s), "train/err": final_train_err} for s in range(10)]
    return Job(
        path=Path(f"model={family},model.depth={depth}"),
        overrides=[f"model={family}", f"model.depth={depth}"],
        choices={"model": family},
        config={"model": {"_target_": "reslab.models.build_network", "depth": depth, "shortcut": shortcut}},
        results={"status": "completed", "metrics": {}},
        history=history,
    )


@pytest.mark.parametrize(
    "plain, resnet, expected",
    [
        ((0.05, 0.30), (0.05, 0.055), "The degradation problem shows: "),
        ((0.05, 0.30), (0.05, 0.10), "The degradation problem shows, less clearly"),
        ((0.05, 0.055), (0.05, 0.04), "The degradation problem does not show"),
    ],
)
def test_degradation_verdict_rule(plain, resnet, expected):
    jobs = [finished_job(f, d, e) for f, errors in (("plain", plain), ("resnet", resnet)) for d, e in zip((8, 56), errors)]
    verdict = degradation_verdict(group_by_grid_point(jobs))
    assert verdict.startswith(expected)
    assert f"plain-56 vs plain-8 {100 * (plain[1] - plain[0]):+.2f} points" in verdict
    # one family with a single depth: no verdict
    assert degradation_verdict(group_by_grid_point(jobs[:3])) is None
