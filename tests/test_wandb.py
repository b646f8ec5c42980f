"""W&B through reslab-train: real offline runs, read back with `wandb leet inspect --json`."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import FAST, run_cli

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
# Nothing listens there: a W&B server that cannot be reached, as on a node without network.
NO_SERVER = "http://127.0.0.1:9"


def no_login_env(home: Path) -> dict[str, str | None]:
    """No credentials anywhere (environment, ~/.netrc, W&B settings), no server, mode not set."""
    return {
        "HOME": str(home),
        "NETRC": str(home / ".netrc"),
        "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"),
        "WANDB_BASE_URL": NO_SERVER,
        "WANDB_MODE": None,
    }


def wandb_runs(job_dir: Path) -> list[Path]:
    """The W&B run folders of a job, oldest first."""
    return sorted(p.parent for p in (job_dir / "wandb").glob("*run-*/run-*.wandb"))


@functools.cache
def records(run_dir: Path) -> list[dict]:
    """Every record of a finished run's log, in order."""
    out = _leet("inspect", "--json", str(run_dir))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def state(run_dir: Path) -> dict:
    """State, exit code, name, tags and summary of a run."""
    return json.loads(_leet("inspect", "--summary", "--json", str(run_dir)))


def run_record(run_dir: Path) -> dict:
    (run,) = [r["run"] for r in records(run_dir) if r["type"] == "run"]
    return run


def history(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """(global step, value) of every history row that has `metric`."""
    rows = [r["history"]["item"] for r in records(run_dir) if r["type"] == "history"]
    return [(row["trainer/global_step"], row[metric]) for row in rows if metric in row]


def _leet(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "wandb", "leet", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """plain-8 without credentials, then a rerun of the same job folder (resumed from its
    checkpoint) with an API key in the environment but no server to reach."""
    root = tmp_path_factory.mktemp("single")
    env = no_login_env(root / "home")
    args = [*FAST, "model=plain", "model.depth=8", "trainer.val_check_interval=4"]
    first = run_cli("reslab.train", [*args, "trainer.max_steps=8"], root, **env)
    (job,) = [p for p in (root / "outputs").glob("*/*") if p.is_dir()]
    first_results = json.loads((job / "results.json").read_text())
    rerun = run_cli(
        "reslab.train", [*args, "trainer.max_steps=12", f"hydra.run.dir={job}"], root, **env, WANDB_API_KEY=FAKE_KEY
    )
    return SimpleNamespace(
        job=job,
        first=first,
        results=first_results,
        rerun=rerun,
        rerun_results=json.loads((job / "results.json").read_text()),
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 3-job multirun whose depth-20 job raises mid-training: its checkpoint folder is a file."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "ckpt_20").write_text("a file where the depth-20 job wants its checkpoint folder\n")
    proc = run_cli(
        "reslab.train",
        [
            "-m",
            *FAST,
            "model.depth=8,14,20",
            "experiment_name=grid",
            "callbacks.checkpoint.dirpath=ckpt_${model.depth}",
            "callbacks.checkpoint.every_n_train_steps=3",
        ],
        root,
        check=False,
    )
    # One job failed, so the sweep's exit code says not all completed; the others ran.
    assert proc.returncode == 1, proc.stderr[-3000:]
    (sweep_dir,) = [p for p in (root / "multirun").glob("*/*") if p.is_dir()]
    jobs = {}
    for results_file in sweep_dir.glob("*/results.json"):
        results = json.loads(results_file.read_text())
        depth = next(int(o.split("=")[1]) for o in results["overrides"] if o.startswith("model.depth="))
        jobs[depth] = SimpleNamespace(path=results_file.parent, results=results)
    return SimpleNamespace(dir=sweep_dir, jobs=jobs)


def test_one_run_holds_curves_nested_config_identity_and_best(single):
    (run_dir,) = [d for d in wandb_runs(single.job) if single.results["wandb"]["dir"] == str(d)]
    assert [step for step, _ in history(run_dir, "train/err")] == list(range(8)), "train/err at every step"
    assert len(history(run_dir, "val/err")) == 2 and len(history(run_dir, "test/err")) == 1

    run = run_record(run_dir)
    config = run["config"]["update"]
    assert config["model"]["depth"] == 8 and config["model"]["shortcut"] == "none"
    assert config["trainer"]["max_steps"] == 8 and config["hydra"]["choices"]["model"] == "plain"
    date, time_name = single.job.parent.name, single.job.name
    assert run["run_group"] == f"{date}_{time_name}" and time_name.endswith("_default")
    assert run["display_name"].startswith("plain-8") and "max_steps" not in run["display_name"]
    assert run["job_type"] == "train" and run["project"] == "reslab"
    assert run["tags"] == ["model=plain", "depth=8", "shortcut=none", "data=digits"]

    info = state(run_dir)
    assert info["state"] == "finished" and info["exit_code"] == 0
    summary = info["summary"]
    assert summary["val/err"]["min"] == pytest.approx(single.results["best"]["val/err"])
    assert summary["val/err"]["last"] == pytest.approx(single.results["metrics"]["val/err"])
    assert summary["test/err"] == pytest.approx(single.results["metrics"]["test/err"])
    assert summary["status"] == "completed"
    assert summary["params"] == single.results["params"] and summary["flops"] == single.results["flops"]

    wandb = single.results["wandb"]
    assert wandb["id"] == run["run_id"] and wandb["name"] == run["display_name"]
    assert wandb["group"] == run["run_group"] and wandb["project"] == "reslab"


def test_without_credentials_the_run_is_offline_at_once_with_one_sync_line(single):
    assert single.results["wandb"]["mode"] == "offline"
    output = single.first.stdout + single.first.stderr
    sync_lines = [line for line in output.splitlines() if "wandb sync" in line]
    assert len(sync_lines) == 1, sync_lines
    assert "no W&B credentials" in sync_lines[0] and sync_lines[0].endswith(single.results["wandb"]["dir"])
    # An online attempt would have waited for the server (init_timeout is 60 s).
    assert single.results["wall_time_s"] < 30


def test_rerun_continues_the_same_run_and_the_key_is_written_nowhere(single):
    first, again = single.results["wandb"], single.rerun_results["wandb"]
    assert again["id"] == first["id"] and again["dir"] != first["dir"]
    assert again["mode"] == "offline"
    output = single.rerun.stdout + single.rerun.stderr
    assert f"{NO_SERVER} is not reachable" in output
    resumed = state(Path(again["dir"]))
    assert resumed["run_id"] == first["id"] and resumed["state"] == "finished"
    steps = [step for step, _ in history(Path(again["dir"]), "train/err")]
    assert len(steps) == 4 and min(steps) >= 8, "only the resumed steps, after the first run's"

    assert FAKE_KEY not in output
    for path in single.job.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_multirun_gives_one_run_per_job_in_one_group_and_a_failing_job_fails_alone(sweep):
    assert sorted(sweep.jobs) == [8, 14, 20]
    group = f"{sweep.dir.parent.name}_{sweep.dir.name}"
    ids = set()
    for depth, job in sweep.jobs.items():
        (run_dir,) = wandb_runs(job.path)
        run, info = run_record(run_dir), state(run_dir)
        assert run["run_group"] == group and run["display_name"].startswith(f"resnet-{depth}")
        assert job.results["wandb"]["id"] == run["run_id"]
        ids.add(run["run_id"])
        if depth == 20:
            assert job.results["status"] == "failed" and "ckpt_20" in job.results["error"]
            assert info["state"] == "failed" and info["exit_code"] != 0
            assert info["summary"]["status"] == "failed" and "ckpt_20" in info["summary"]["error"]
            assert history(run_dir, "train/err"), "the failed run logged before it failed"
        else:
            assert job.results["status"] == "completed"
            assert info["state"] == "finished" and info["exit_code"] == 0
            assert [step for step, _ in history(run_dir, "train/err")] == list(range(6))
    assert len(ids) == 3


def test_report_run_holds_the_table_and_figure_in_the_sweep_group(sweep, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reslab.report.wandb_summary import log_report_to_wandb

    rows = [
        {"depth": depth, "status": job.results["status"], "val err": job.results.get("metrics", {}).get("val/err")}
        for depth, job in sorted(sweep.jobs.items())
    ]
    figure = tmp_path / "training_curves.png"
    plt.plot([0, 1], [1, 0])
    plt.savefig(figure)
    plt.close("all")

    run_dir = Path(log_report_to_wandb(sweep.dir, rows, [figure], mode="offline"))
    assert run_dir.parent == sweep.dir / "wandb"
    run = run_record(run_dir)
    assert run["run_group"] == sweep.jobs[8].results["wandb"]["group"]
    assert run["job_type"] == "report" and run["project"] == "reslab"
    # The history row holds a media entry's fields as `KEY.field`.
    (logged,) = [r["history"]["item"] for r in records(run_dir) if r["type"] == "history"]
    assert logged["results._type"] == "table-file" and logged["results.nrows"] == 3
    assert logged["figures/training_curves._type"] == "image-file"
    table = json.loads((run_dir / "files" / logged["results.path"]).read_text())
    assert table["columns"] == ["depth", "status", "val err"]
    assert [row[:2] for row in table["data"]] == [[8, "completed"], [14, "completed"], [20, "failed"]]
    assert (run_dir / "files" / logged["figures/training_curves.path"]).is_file()
    assert state(run_dir)["state"] == "finished"


@pytest.mark.parametrize(
    "model, overrides, name",
    [
        ({"depth": 56, "shortcut": "none"}, ["model=plain", "model.depth=56"], "plain-56"),
        (
            {"depth": 20, "shortcut": "B"},
            ["model.shortcut=B", "seed=1", "trainer.max_steps=9"],
            "resnet-20-shortcut=B-seed=1",
        ),
        (
            {"depth": 110, "shortcut": "A", "preact": True},
            ["model=preact", "data=cifar10", "optimizer.lr=0.05"],
            "preact-110-cifar10-lr=0.05",
        ),
        ({"name": "resnet18"}, ["model=torchvision", "hydra.run.dir=x", "~callbacks.timer"], "resnet18"),
    ],
)
def test_run_name_says_what_the_job_computes(model, overrides, name):
    from omegaconf import OmegaConf

    from reslab.job import job_name

    choices = {"model": "resnet", "data": "digits", "optimizer": "sgd"}
    choices.update(o.split("=") for o in overrides if o.split("=")[0] in choices)
    assert job_name(OmegaConf.create(model), overrides, choices) == name


def test_a_wrong_mode_is_a_config_error(tmp_path):
    from omegaconf import OmegaConf

    from reslab.checks import check_values
    from reslab.errors import ConfigError

    cfg = OmegaConf.create({"logger": {"wandb": {"mode": "sometimes"}}})
    with pytest.raises(ConfigError, match="logger.wandb.mode.*online.*offline.*disabled"):
        check_values(cfg)


@pytest.mark.slow
def test_cpu_ddp_job_gives_exactly_one_run(train, tmp_path):
    train("trainer.devices=2", "++trainer.strategy=ddp", "model.depth=8", "hydra.run.dir=ddp")
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["world_size"] == 2 and results["status"] == "completed"
    (run_dir,) = wandb_runs(tmp_path / "ddp")
    assert results["wandb"]["id"] in run_dir.name
    assert state(run_dir)["state"] == "finished"
