"""The `toy_chain` task: the seed's scalar chain, closed form against autograd (reslab.analysis)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from reslab import checks
from reslab.tasks.wrapper import JobRun


def toy_chain(cfg: DictConfig) -> float | None:
    from reslab.analysis import run_toy_chain

    run = JobRun.begin(cfg)
    if run.skipped:
        return run.outcome()
    with run:
        checks.check_at_start(cfg)
        settings = OmegaConf.to_container(cfg.toy_chain, resolve=True)
        run.note(summary=run_toy_chain(out_dir=run.dir, **settings))
    return run.outcome()
