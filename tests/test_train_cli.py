"""reslab-train and reslab-report through their command lines, on the embedded digits data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import FAST
from reslab.job import read_metrics_csv
from reslab.models import build_network, count_flops, count_parameters


def job_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob(".hydra"))


def test_single_run_writes_the_contract_files(train, tmp_path):
    train("model.depth=8", "trainer.max_steps=8", "trainer.val_check_interval=4", "hydra.run.dir=run")
    job = tmp_path / "run"
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "completed" and results["error"] is None
    # ResNet-8 on 1x8x8 digits, 10 classes: the network the overrides describe, and nothing else
    net = build_network(depth=8, in_channels=1, num_classes=10, input_size=8)
    assert (results["params"], results["flops"]) == (count_parameters(net), count_flops(net, (1, 8, 8)))
    assert results["steps"] == 8 and results["world_size"] == 1
    assert set(results["metrics"]) >= {"train/err", "val/err", "test/err"}
    assert 0.0 <= results["best"]["val/err"] <= results["metrics"]["val/err"]
    # the job's own overrides, in command-line order; where it ran (hydra.*) is not one of them
    assert results["overrides"] == [*FAST, "model.depth=8", "trainer.max_steps=8", "trainer.val_check_interval=4"]
    rows = read_metrics_csv(job / "metrics.csv")
    train_steps = [r["step"] for r in rows if "train/err" in r]
    assert train_steps == list(range(8)), "train/err is logged at every step"
    assert len([r for r in rows if "val/err" in r]) == 2
    assert (job / "checkpoints" / "last.ckpt").is_file()
    assert (job / ".hydra" / "config.yaml").is_file()


def test_multirun_then_report(train, report, tmp_path):
    train("-m", "model=plain,resnet", "model.depth=8,14", "experiment_name=grid")
    (sweep,) = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]
    assert sweep.name.endswith("_grid")
    names = sorted(p.name for p in job_dirs(sweep))
    # one folder per job, named after its overrides (minus where/how it ran)
    assert len(names) == 4
    for depth in (8, 14):
        for model in ("plain", "resnet"):
            (name,) = [n for n in names if f"model.depth={depth}," in n and f"model={model}" in n]
            assert "experiment_name" not in name and "enable_progress_bar" not in name
    out = report(str(sweep)).stdout
    for name in ("report.md", "results.csv", "training_curves.png"):
        assert (sweep / name).is_file(), name
    table_rows = [line for line in out.splitlines() if line.startswith("| plain") or line.startswith("| resnet")]
    assert [row.split("|")[1:3] for row in table_rows] == [
        [" plain ", " 8 "],
        [" plain ", " 14 "],
        [" resnet ", " 8 "],
        [" resnet ", " 14 "],
    ]
    with (sweep / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["status"] for r in rows} == {"completed"} and len(rows) == 4
    # plain-N and ResNet-N (option A) have exactly the same parameters
    params = {(r["model"], r["depth"]): r["params"] for r in rows}
    assert params[("plain", "8")] == params[("resnet", "8")]
    # without an argument the newest sweep under ./multirun is reported
    assert "| plain" in report().stdout


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.depth=21", "nearest valid depths: 20, 26"),
        ("model.shortcut=D", "A, B, C"),
        ("data=cifar10", "data.download"),
        ("optimizer.lr=-1", "optimizer.lr=-1 must be a number > 0"),
    ],
)
def test_bad_input_fails_before_training(train, tmp_path, override, expected):
    proc = train(
        override, "hydra.run.dir=bad", "data.download=false" if override.startswith("data=") else "seed=0", check=False
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert expected in output
    assert "Traceback" not in output
    assert not (tmp_path / "bad" / "metrics.csv").exists()
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_a_sweep_with_one_bad_job_stops_before_any_job_runs(train, tmp_path):
    proc = train("-m", "model.depth=8,21", "scheduler.milestones=[5,2],[2,5]", "hydra.sweep.dir=sweep", check=False)
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert "configuration error in 3 of 4 jobs; nothing was run" in output
    assert "model.depth=21 is not 6n+2" in output and "increasing" in output
    assert not list(tmp_path.rglob(".hydra")), "no job was started"
