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
        return compose(
            config_name="train", overrides=["experiment=digits_search", *overrides], return_hydra_config=True
        )


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
        trials[num] = (
            float(overrides["optimizer.lr"]),
            float(overrides["optimizer.weight_decay"]),
            results["best"]["val/err"],
        )
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


# ----------------------------------------------------------------------------- trials without an objective


def output(proc) -> str:
    return proc.stdout + proc.stderr


def trial_records(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (tmp_path / "multirun").rglob("results.json")]


def test_a_search_whose_trials_cannot_validate_is_refused_before_any_trial(train, tmp_path):
    # digits_search validates every 2nd epoch (38 steps at batch size 64): not within 30 steps.
    proc = train(
        "-m", "experiment=digits_search", "hydra.sweeper.n_trials=3", "trainer.max_steps=30", fast=False, check=False
    )
    assert proc.returncode == 2, output(proc)[-3000:]
    errors = [line for line in output(proc).splitlines() if "configuration error" in line]
    assert len(errors) == 1 and "first validation comes at step 38" in errors[0], output(proc)[-3000:]
    assert "trainer.max_steps=30" in errors[0] and "Traceback" not in output(proc)
    assert trial_records(tmp_path) == []


def test_a_search_in_which_no_trial_completes_ends_with_its_summary_and_one_line(train, tmp_path):
    # Every trial fails mid-training: its checkpoint folder is a file.
    (tmp_path / "not_a_folder").write_text("a file where the trials want their checkpoint folder\n")
    proc = train(
        "-m",
        "experiment=digits_search",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=1",
        *VALIDATE,
        f"callbacks.checkpoint.dirpath={tmp_path / 'not_a_folder'}",
        "callbacks.checkpoint.every_n_train_steps=3",
        check=False,
    )
    assert proc.returncode == 1, output(proc)[-3000:]
    assert [r["status"] for r in trial_records(tmp_path)] == ["failed", "failed"], output(proc)[-3000:]
    ends = [line for line in output(proc).splitlines() if "search without result" in line]
    assert len(ends) == 1 and "none of its 2 trials completed" in ends[0], output(proc)[-3000:]
    assert "trial 0: failed" in ends[0] and "trial 1: failed" in ends[0]
    assert "2 failed" in output(proc)  # the sweep's summary
    assert "No trials are completed yet" not in output(proc)


LOSE_TRIAL_0 = '''
import os, signal
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig

class LoseTrial0(pl.Callback):
    """Trial 0's process is killed (kill -9) at step 2: the launcher reports the trial lost."""

    def on_train_batch_start(self, trainer, *args):
        if HydraConfig.get().job.num == 0 and trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_lost_trial_is_told_failed_and_the_search_goes_on(train, tmp_path):
    (tmp_path / "lose_trial.py").write_text(LOSE_TRIAL_0)  # importable: the job processes run in tmp_path
    proc = train(
        "-m",
        "experiment=digits_search",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=0.4",
        *VALIDATE,
        "+callbacks.lose._target_=lose_trial.LoseTrial0",
        check=False,
    )
    (sweep,) = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]
    statuses = sorted(r["status"] for r in trial_records(tmp_path))
    assert statuses == ["completed", "completed", "failed"], output(proc)[-3000:]
    # The study went on after the lost trial and names its best of the two completed.
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(r["best"]["val/err"] for r in trial_records(tmp_path) if r["status"] == "completed")
    assert math.isclose(optuna["best_value"], best)
    assert proc.returncode == 1 and "Traceback" not in output(proc), output(proc)[-3000:]
