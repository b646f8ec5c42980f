"""The main job end to end against a plain PyTorch loop training the same grid, in one run.

    python benchmarks/main_job.py                                  # the README's main job
    python benchmarks/main_job.py seed=0                           # one seed per grid point
    python benchmarks/main_job.py trainer.max_steps=60 --json out.json
    python benchmarks/main_job.py --reslab-only seed=0 hydra/launcher=basic   # ResLab alone, jobs in turn
    python benchmarks/main_job.py --floor                          # also the floor of side-by-side jobs

ResLab's side is the README's first command after installation, as a user runs it:
`reslab-train -m experiment=digits_degradation && reslab-report`, timed from start to the
report's last byte (the sweep into a scratch folder, W&B offline, so no network is involved).
The plain side trains the same grid (every job of the experiment's sweep, read from the
composed config, so a grid with seeds is followed) one job after another in one process:
the same networks (the model config, i.e. reslab.models' builder), the same data and per-batch
pipeline (the datamodule's tensors, loader and `transform_batch`), the same optimiser and
learning-rate schedule from the configs, the same steps and batch size; no Lightning, no
logging, no validation, no checkpoints. Its time is the training loop's alone, data loading
and network building excluded.

`--floor` also trains the grid with the plain loop at one thread per job: that time over the
cores is what running jobs side by side can reach at best (every core busy, nothing but
training), so it says how far the goal is from this machine's own limit. It then trains the grid
with the plain loop packed as ResLab packs it, one 1-thread process per core, each taking the
next job (longest first, by the launcher's `longest_first_by`) when it is free: the wall time of
that, process start included, is what side-by-side plain loops reach on this machine, where jobs
running together slow each other (shared caches and memory, cores that may share a host core).

Printed: both times, the ratio ResLab end to end / plain training (goal <= 0.7, stretch 0.5),
the machine (cores, and how much of them other processes used meanwhile) and the command that
reproduces the run. Extra arguments are overrides for both sides. Only a quiet machine gives a
fair ratio: the plain loop uses all cores with torch's default threads, and a step whose
threads wait for a core another process holds can take many times as long (on 2 shared cores,
up to 40x), while ResLab's 1-thread jobs barely notice.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from loop_overhead import plain_loop  # the same hand-written loop as the loop-overhead benchmark
from omegaconf import OmegaConf

from hydra_plugins.reslab_launchers.node_parallel_launcher import longest_first  # the launcher's start order
from reslab.job import read_results
from reslab.sweep import expand_grid

GOAL, STRETCH = 0.7, 0.5


def machine_cpu_seconds() -> float | None:
    """CPU seconds all processes of this machine have used so far (Linux), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every process it (or they) started and waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def grid_jobs(experiment: str, overrides: list[str]) -> list[list[str]]:
    """Every job of the experiment's sweep (with `overrides`), as the sweep will run them."""
    with initialize_config_module(config_module="reslab.conf", version_base="1.3"):
        config = compose("train", [f"experiment={experiment}", *overrides], return_hydra_config=True)
    return expand_grid(config)


def plain_training_time(experiment: str, overrides: list[str], job: list[str], threads: int | None = None) -> float:
    """Seconds a hand-written loop spends training one job of the grid (loop_overhead's loop),
    with torch's default threads (all cores) or `threads`."""
    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    try:
        return plain_loop([f"experiment={experiment}", *overrides, *job], device="cpu")["seconds"]
    finally:
        torch.set_num_threads(default)


def _plain_job_one_thread(args: tuple[str, list[str], list[str]]) -> float:
    experiment, overrides, job = args
    return plain_training_time(experiment, overrides, job, threads=1)


def launch_order(experiment: str, overrides: list[str], jobs: list[list[str]]) -> list[list[str]]:
    """The jobs in the order the sweep's launcher starts them: longest first by its
    `longest_first_by` key (read from each job's composed config), else the sweep's order."""
    with initialize_config_module(config_module="reslab.conf", version_base="1.3"):
        configs = [
            compose("train", [f"experiment={experiment}", *overrides, *job], return_hydra_config=True) for job in jobs
        ]
    key = OmegaConf.select(configs[0], "hydra.launcher.longest_first_by")
    if not key:
        return jobs
    return [jobs[i] for i in longest_first([OmegaConf.select(config, key) for config in configs])]


def plain_side_by_side(experiment: str, overrides: list[str], jobs: list[list[str]], workers: int) -> dict:
    """The plain loop's grid in `workers` processes of one thread each, every process taking the
    next job in launch order when it is free (as node_parallel's slots do). Wall seconds from
    starting the processes to the last job's end, and the jobs' training seconds together."""
    order = launch_order(experiment, overrides, jobs)
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        seconds = pool.map(_plain_job_one_thread, [(experiment, overrides, job) for job in order], chunksize=1)
    return {"wall_s": time.perf_counter() - start, "training_s": sum(seconds)}


def reslab_main_job(experiment: str, overrides: list[str], workdir: Path) -> dict:
    """Wall seconds of `reslab-train -m experiment=... && reslab-report`, and what the jobs say."""
    sweep_dir = workdir / f"sweep-{time.monotonic_ns()}"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    train = [
        sys.executable,
        "-m",
        "reslab.train",
        "-m",
        f"experiment={experiment}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]
    report = [sys.executable, "-m", "reslab.report.cli", str(sweep_dir)]
    start = time.perf_counter()
    subprocess.run(train, check=True, capture_output=True, cwd=workdir, env=env)
    sweep_done = time.perf_counter()
    subprocess.run(report, check=True, capture_output=True, cwd=workdir, env=env)
    end = time.perf_counter()
    records = [read_results(path.parent) for path in sweep_dir.glob("*/results.json")]
    jobs_wall_s = sum(r.get("wall_time_s") or 0 for r in records if r)
    return {
        "end_to_end_s": end - start,
        "sweep_s": sweep_done - start,
        "report_s": end - sweep_done,
        "jobs": len(records),
        "completed": sum(1 for r in records if r and r.get("status") == "completed"),
        "jobs_train_time_s": sum(r.get("train_time_s") or 0 for r in records if r),
        "jobs_wall_time_s": jobs_wall_s,
        # The sweep's time outside its jobs, with node_parallel's default of one job per core:
        # Python and Hydra start-up, the pre-check of every job, the job processes' imports, and
        # the end, where one core waits for the other's last job.
        "outside_jobs_s": (sweep_done - start) - jobs_wall_s / min(os.cpu_count() or 1, len(records) or 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="digits_degradation")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; medians are printed")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument(
        "--reslab-only", action="store_true", help="time ResLab's side alone, e.g. to compare launcher settings"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time the plain loop with one thread per job: the grid's time with every core busy "
        "and nothing else, the least that running jobs side by side can reach",
    )
    parser.add_argument("overrides", nargs="*", help="overrides for both sides, e.g. seed=0")
    args = parser.parse_args()

    jobs = grid_jobs(args.experiment, args.overrides)
    cores = os.cpu_count() or 1
    machine_before, own_before, wall_before = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    plain_runs, reslab_runs, one_thread_runs, packed_runs = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="reslab-main-job-") as workdir:
        for _ in range(args.repeats):
            if not args.reslab_only:
                plain_runs.append([plain_training_time(args.experiment, args.overrides, job) for job in jobs])
            if args.floor:
                one_thread_runs.append(
                    [plain_training_time(args.experiment, args.overrides, job, threads=1) for job in jobs]
                )
                packed_runs.append(plain_side_by_side(args.experiment, args.overrides, jobs, min(cores, len(jobs))))
            reslab_runs.append(reslab_main_job(args.experiment, args.overrides, Path(workdir)))
    wall = time.perf_counter() - wall_before
    machine_after = machine_cpu_seconds()
    # What other processes took from the cores meanwhile: the comparison needs a quiet machine.
    others = None if machine_before is None else (machine_after - machine_before) - (own_cpu_seconds() - own_before)
    command = " ".join(["python", "benchmarks/main_job.py", *sys.argv[1:]])
    reslab = {key: statistics.median(run[key] for run in reslab_runs) for key in reslab_runs[0]}
    varying = [[o for o in job if any(o not in other for other in jobs)] for job in jobs]
    print(f"experiment={args.experiment} {' '.join(args.overrides)}: {len(jobs)} jobs")
    ratio = None
    if plain_runs:
        plain_s = statistics.median(sum(run) for run in plain_runs)
        ratio = reslab["end_to_end_s"] / plain_s
        print(f"plain PyTorch loop, one job after another, training only: {plain_s:8.1f} s")
        one_thread = one_thread_runs[-1] if one_thread_runs else [None] * len(jobs)
        for job, seconds, seconds_1 in zip(varying, plain_runs[-1], one_thread):
            alone = "" if seconds_1 is None else f"   (1 thread: {seconds_1:5.1f} s)"
            print(f"    {' '.join(job):<40} {seconds:7.1f} s{alone}")
    floor = None
    if plain_runs and one_thread_runs:
        # Every core training a 1-thread job, with no start-up, validation, logging or tail.
        floor = statistics.median(sum(run) for run in one_thread_runs) / cores / plain_s
        print(
            f"the floor of side-by-side jobs: the 1-thread loops together / {cores} cores = {floor:.2f}x the plain "
            f"loop's time (how much faster {cores} threads train one job than 1 thread sets it)"
        )
    packed = None
    if plain_runs and packed_runs:
        packed = {key: statistics.median(run[key] for run in packed_runs) for key in packed_runs[0]}
        print(
            f"the plain loops packed side by side ({min(cores, len(jobs))} processes x 1 thread, longest first), "
            f"end to end: {packed['wall_s']:.1f} s = {packed['wall_s'] / plain_s:.2f}x the plain loop's time "
            f"(their training {packed['training_s']:.1f} s together: jobs side by side slow each other)"
        )
    print(
        f"ResLab main job end to end (sweep + report):             {reslab['end_to_end_s']:8.1f} s"
        f"  (sweep {reslab['sweep_s']:.1f} s, report {reslab['report_s']:.1f} s; "
        f"{reslab['completed']:.0f}/{reslab['jobs']:.0f} jobs completed, their training loops "
        f"{reslab['jobs_train_time_s']:.1f} s together)"
    )
    print(
        f"    jobs' own wall time together {reslab['jobs_wall_time_s']:.1f} s; the sweep's time outside its jobs "
        f"(start-up, pre-check, job processes' imports, last job's tail), one job per core: {reslab['outside_jobs_s']:.1f} s"
    )
    if ratio is not None:
        verdict = "stretch goal met" if ratio <= STRETCH else "goal met" if ratio <= GOAL else "goal NOT met"
        print(
            f"ratio ResLab end to end / plain training: {ratio:.2f}x  (goal <= {GOAL}, stretch <= {STRETCH}): {verdict}"
        )
    busy = (
        ""
        if others is None
        else (
            f"; other processes used {max(others, 0.0) / wall:.2f} of the {cores} cores meanwhile"
            + ("  <- not a quiet machine: rerun when it is" if others > 0.05 * cores * wall else "")
        )
    )
    print(f"machine: {cores} CPU cores ({platform.machine()}), torch {torch.__version__}{busy}")
    print(f"reproduce: {command}")
    if args.json:
        numbers = {
            "command": command,
            "experiment": args.experiment,
            "overrides": args.overrides,
            "jobs": [" ".join(job) for job in varying],
            "plain_training_s": plain_runs,
            "plain_one_thread_training_s": one_thread_runs,
            "side_by_side_floor": floor,
            "plain_packed": packed_runs,
            "plain_packed_ratio": None if packed is None else packed["wall_s"] / plain_s,
            "reslab": reslab_runs,
            "ratio": ratio,
            "cpu_cores": cores,
            "other_processes_cores": None if others is None else others / wall,
            "torch": torch.__version__,
        }
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
