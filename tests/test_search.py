"""experiment=digits_search: a real Optuna sweep (Hydra's Optuna sweeper) on digits, then its report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_console import NOISE

from conftest import REPO

# Every trial validates twice in its 6 steps, so each has an objective.
VALIDATE = ["trainer.val_check_interval=3", "trainer.check_val_every_n_epoch=1", "logger=csv"]


def compose_search(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=["experiment=digits_search", *overrides], return_hydra_config=True)


def test_digits_search_is_an_optuna_search_of_lr_and_weight_decay():
    cfg = compose_search()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_.endswith("TPESampler")
    assert sweeper.direction == "minimize" and sweeper.n_trials == 16
    assert dict(sweeper.params) == {
        "optimizer.lr": "tag(log, interval(0.005, 0.5))",
        "optimizer.weight_decay": "tag(log, interval(1e-5, 1e-2))",
    }
    assert cfg.model.depth == 20 and cfg.model.shortcut == "A" and cfg.experiment_name == "digits_search"
    assert compose_search("hydra.sweeper.n_trials=5").hydra.sweeper.n_trials == 5


def report_cells(text: str, title: str) -> list[list[str]]:
    """The rows of the report's table under `title`, as lists of cells (header first)."""
    table = text.split(f"## {title}\n\n")[1].split("\n\n")[0].splitlines()
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in table if not line.startswith("|---")]


def test_three_trial_search_then_its_report(train, report, tmp_path):
    proc = train("-m", "experiment=digits_search", "hydra.sweeper.n_trials=3", *VALIDATE, PYTHONWARNINGS=None)
    for noise in NOISE:  # the trials run in the launcher's worker processes: quiet there too
        assert noise not in proc.stdout + proc.stderr, noise
    (sweep,) = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]
    trials = {}
    for hydra_dir in sweep.glob("*/.hydra"):
        num = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]["job"]["num"]
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((hydra_dir / "overrides.yaml").read_text()))
        results = json.loads((hydra_dir.parent / "results.json").read_text())
        assert results["status"] == "completed"
        trials[num] = (float(overrides["optimizer.lr"]), float(overrides["optimizer.weight_decay"]), results["best"]["val/err"])
    assert sorted(trials) == [0, 1, 2]
    for lr, weight_decay, _ in trials.values():
        assert 0.005 <= lr <= 0.5 and 1e-5 <= weight_decay <= 1e-2
    # What Optuna minimised is each job's return value: its best val/err.
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_num = min(trials, key=lambda n: trials[n][2])
    best_lr, best_wd, best_err = trials[best_num]
    assert math.isclose(optuna["best_value"], best_err)
    assert optuna["best_params"] == {"optimizer.lr": best_lr, "optimizer.weight_decay": best_wd}

    out = report(str(sweep)).stdout
    header, *rows = report_cells(out, "Search: trials by objective, best first")
    assert header[:5] == ["rank", "trial", "optimizer.lr", "optimizer.weight_decay", "best val err %"]
    # best first, the objective ascending, each trial once
    assert [row[0] for row in rows] == ["best", "2", "3"]
    assert [float(row[4]) for row in rows] == sorted(round(100 * t[2], 2) for t in trials.values())
    assert sorted(int(row[1]) for row in rows) == [0, 1, 2]
    assert rows[0][1:4] == [str(best_num), f"{best_lr:.4g}", f"{best_wd:.4g}"]
    assert f"**best**: trial {best_num}, best val err {100 * best_err:.2f}: " in out
    assert f"`optimizer.lr={best_lr} optimizer.weight_decay={best_wd}`" in out
    # a sampled sweep has no grid: nothing is listed as not started
    assert "3 jobs: 3 completed" in out and "not started" not in out
    for figure in ("search_trials.png", "search_hyperparameters.png"):
        assert (sweep / figure).stat().st_size > 10_000 and f"]({figure})" in out
    assert Path(sweep / "report.md").read_text().startswith("# Report")
