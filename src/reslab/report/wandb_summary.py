"""A sweep's report in W&B: its table and figures in one summary run beside the sweep's runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import wandb

from reslab.job import RESULTS_FILE, UnreadableJobFile, read_results, sweep_group
from reslab.wandb_runs import previous_run_id, start_wandb_run

DEFAULT_PROJECT = "reslab"


def log_report_to_wandb(
    sweep_dir: Path,
    table_rows: list[dict],
    figures: list[Path],
    project: str | None = None,
    mode: str | None = None,
) -> str:
    """Log `table_rows` as a wandb.Table ("results") and each figure as a wandb.Image
    ("figures/<file stem>") to the run `report` (job type `report`) in the sweep's W&B group and
    project (those its jobs used, from their results.json; else from the folder name and
    `reslab`), written to `sweep_dir/wandb/`. Calling it again continues the same run. Returns
    the run's local folder; an offline run logs how to upload it (`wandb sync`)."""
    sweep_dir = Path(sweep_dir).absolute()
    jobs = _jobs_wandb(sweep_dir)
    columns = list(dict.fromkeys(key for row in table_rows for key in row))
    run = start_wandb_run(
        {
            "project": project or next((j["project"] for j in jobs if j.get("project")), DEFAULT_PROJECT),
            "group": next((j["group"] for j in jobs if j.get("group")), None) or sweep_group(sweep_dir),
            "name": "report",
            "job_type": "report",
            "tags": ["report"],
            "dir": str(sweep_dir),
            "id": previous_run_id(sweep_dir / "wandb"),
            "resume": "allow",
            "mode": mode,
            # Never take over (or finish) a run the caller has open.
            "reinit": "create_new",
            "settings": {"silent": True},
        }
    )
    table = wandb.Table(
        columns=columns,
        data=[[row.get(column) for column in columns] for row in table_rows],
        allow_mixed_types=True,
    )
    images = {f"figures/{Path(f).stem}": wandb.Image(str(f)) for f in figures if Path(f).is_file()}
    run.log({"results": table, **images})
    run_dir = str(Path(run.dir).parent)
    run.finish()
    return run_dir


def _jobs_wandb(sweep_dir: Path) -> list[dict[str, Any]]:
    """The `wandb` entries of the sweep's results.json files (jobs that logged to W&B)."""
    entries = []
    for results_file in sorted(sweep_dir.rglob(RESULTS_FILE)):
        try:
            results = read_results(results_file.parent) or {}
        except UnreadableJobFile:
            continue  # the report lists it; the W&B summary only needs the readable ones
        if isinstance(results.get("wandb"), dict):
            entries.append(results["wandb"])
    return entries
