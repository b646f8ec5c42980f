"""`hydra/sweeper=reslab_optuna` as a Hydra plugin: Hydra's own sweeper checks (discovery and a
sweep through hydra.test_utils' runner, as Hydra's Optuna sweeper is tested), and its search
through failing trials in a plain Hydra app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.test_utils import TSweepRunner

from hydra_plugins.reslab_sweepers.reslab_optuna_sweeper import ReslabOptunaSweeper

# Odd-numbered trials raise (all of them with +fail_all=1): the basic launcher reports them
# failed, as it would a lost job.
APP = """
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    number = HydraConfig.get().job.num
    if number % 2 or cfg.get("fail_all"):
        raise RuntimeError(f"trial {number} breaks")
    return float(cfg.x) ** 2

if __name__ == "__main__":
    main()
"""


def test_discovery() -> None:
    assert ReslabOptunaSweeper.__name__ in [x.__name__ for x in Plugins.instance().discover(Sweeper)]


def test_launch_jobs(hydra_sweep_runner: TSweepRunner) -> None:
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        config_path="configs",
        config_name="compose.yaml",
        task_function=None,
        overrides=[
            "hydra/sweeper=reslab_optuna",
            "hydra/launcher=basic",
            "hydra.sweeper.n_trials=8",
            "hydra.sweeper.n_jobs=3",
        ],
    )
    with sweep:
        assert sweep.returns is None


def run_app(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(APP)
    return subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra/sweeper=reslab_optuna",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=0",
            "hydra.sweeper.n_jobs=2",
            "+x=interval(-1, 1)",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def trials_run(tmp_path: Path) -> int:
    return len([p for p in (tmp_path / "sweep").iterdir() if p.is_dir()])


@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_failed_trials_within_the_failure_rate_let_the_search_go_on(tmp_path, max_failure_rate):
    proc = run_app(tmp_path, "hydra.sweeper.n_trials=6", f"hydra.sweeper.max_failure_rate={max_failure_rate}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert trials_run(tmp_path) == 6
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_value"] >= 0 and set(best["best_params"]) == {"+x"}


def test_more_failed_trials_than_the_rate_allows_stop_the_search_with_one_line(tmp_path):
    # 6 trials at 0.25 allow 1.5 failures: the second batch's failure is one too many.
    proc = run_app(tmp_path, "hydra.sweeper.n_trials=6", "hydra.sweeper.max_failure_rate=0.25")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert trials_run(tmp_path) == 4
    (line,) = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "search stopped" in line]
    assert "2 trials failed" in line and "trial 1: lost (RuntimeError: trial 1 breaks)" in line


def test_a_search_without_a_completed_trial_ends_with_one_line(tmp_path):
    proc = run_app(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=1", "+fail_all=1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert trials_run(tmp_path) == 3 and not (tmp_path / "sweep" / "optimization_results.yaml").exists()
    (line,) = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "search without result" in line]
    assert "none of its 3 trials completed" in line
