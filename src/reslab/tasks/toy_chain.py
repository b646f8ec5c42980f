"""The `toy_chain` task: the seed's scalar chain, closed form against autograd (reslab.analysis)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from reslab.tasks.wrapper import JobRun


def toy_chain(cfg: DictConfig, run: JobRun) -> None:
    from reslab.analysis import run_toy_chain

    settings = OmegaConf.to_container(cfg.toy_chain, resolve=True)
    run.note(summary=run_toy_chain(out_dir=run.dir, **settings))
