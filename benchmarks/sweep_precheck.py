"""What a grid sweep's own process spends before its first job: composing each job and checking it.

    python benchmarks/sweep_precheck.py                       # experiment=digits_degradation
    python benchmarks/sweep_precheck.py --experiment digits_search

Times, in one fresh process, the parts of reslab.sweep.SweepOwner's pre-check: Hydra's start,
the composition of every job of the experiment's grid (Hydra's basic sweeper composes each job
once more before it launches, `validate_batch_is_legal`, at the same cost), the first job's check
(which imports torch and Lightning, to judge the trainer and callback settings) and the other
jobs' checks.
"""

from __future__ import annotations

import argparse
import statistics
import time

start = time.perf_counter()
from hydra import compose, initialize_config_module  # noqa: E402 - timed as Hydra's start
from omegaconf import OmegaConf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="digits_degradation")
    args = parser.parse_args()

    from reslab.sweep import CONFIG_NAME, as_launched, expand_grid

    with initialize_config_module(config_module="reslab.conf", version_base="1.3"):
        sweep = compose(CONFIG_NAME, [f"experiment={args.experiment}"], return_hydra_config=True)
        hydra_start = time.perf_counter() - start
        composing, configs = [], []
        for overrides in expand_grid(sweep):
            tic = time.perf_counter()
            configs.append(compose(CONFIG_NAME, overrides, return_hydra_config=True))
            composing.append(time.perf_counter() - tic)

        from hydra.core.hydra_config import HydraConfig

        from reslab.checks import check_job

        HydraConfig.instance().set_config(sweep)
        checking = []
        for number, config in enumerate(configs):
            OmegaConf.set_readonly(config.hydra, False)  # as_launched fills in the job's number and folder
            tic = time.perf_counter()
            with as_launched(config, number):
                check_job(config)
            checking.append(time.perf_counter() - tic)

    jobs = len(configs)
    print(f"experiment={args.experiment}: {jobs} jobs")
    print(f"Python + Hydra start and the sweep's config: {hydra_start:6.2f} s")
    print(
        f"composing a job (median):                   {statistics.median(composing):6.3f} s  ({sum(composing):.2f} s for all)"
    )
    print(f"the first job's check (imports included):   {checking[0]:6.2f} s")
    later = checking[1:] or [0.0]
    print(
        f"checking a later job (median):              {statistics.median(later):6.3f} s  ({sum(later):.2f} s for all)"
    )
    print(
        f"the pre-check in all:                       {hydra_start + sum(composing) + sum(checking):6.2f} s;"
        f" Hydra's sweeper then composes every job again: about {sum(composing):.2f} s more"
    )
    print(f"reproduce: python benchmarks/sweep_precheck.py --experiment {args.experiment}")


if __name__ == "__main__":
    main()
