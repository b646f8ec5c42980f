"""The seed's analysis through the CLI: the toy chain task and the gradient-norm preset."""

from __future__ import annotations

import csv
import json


def test_toy_chain_task_checks_closed_form_against_autograd(train, tmp_path):
    train("experiment=toy_chain", "toy_chain.depths=[1,10,30]", "hydra.run.dir=chain", fast=False)
    job = tmp_path / "chain"
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "completed" and results["task"] == "toy_chain"
    summary = results["summary"]
    assert summary["passed"] and summary["max_rel_error"] < 1e-6
    # the skip keeps dR/dw_1 at order one while the plain sigmoid chain's gradient vanishes
    assert summary["deepest"]["sigmoid"]["skip"] > 0.5 > 1e-10 > summary["deepest"]["sigmoid"]["plain"]
    assert (job / "toy_chain.png").stat().st_size > 0
    with (job / "toy_chain.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3 * 3 * 2  # depths x activations x skip


def test_gradient_preset_runs_and_the_report_answers(train, report, tmp_path):
    train(
        "-m",
        "experiment=digits_gradients",
        "model.depth=8",
        "trainer.max_steps=6",
        "callbacks.grad_norms.every_n_steps=2",
        "hydra.sweep.dir=grads",
        "logger=csv",
    )
    sweep = tmp_path / "grads"
    jobs = {p.name: p for p in sweep.iterdir() if (p / "results.json").exists()}
    assert len(jobs) == 4
    (plain_bn,) = [p for name, p in jobs.items() if "model.norm=bn," in name and "model=plain" in name]
    with (plain_bn / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("grad_norm/000_stem")]
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    text = report(str(sweep)).stdout
    assert "## Gradient norms per unit" in text
    assert "plain-8 (norm=none): the first unit's (stem) gradient norm is" in text
    assert (sweep / "gradient_norms.png").is_file() and (sweep / "response_stds.png").is_file()
