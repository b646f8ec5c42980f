"""ResLab's training loop against a plain PyTorch loop: same network, data, recipe and steps.

    python benchmarks/loop_overhead.py                          # CPU: digits ResNet-8 600 steps, CIFAR-shape ResNet-20
    python benchmarks/loop_overhead.py --case digits8 --repeats 5
    python benchmarks/loop_overhead.py --case cifar56 --device cuda --json out.json   # on a GPU
    python benchmarks/loop_overhead.py --profile digits8        # where the time per step goes (cProfile)

Both sides are built from the same composed config (the case's overrides): the network
(`cfg.model`), the datamodule's tensors, loader and per-batch `transform_batch`, the optimiser and
the learning-rate schedule. The plain side is a hand-written loop in this process: forward,
cross-entropy, backward, step, schedule; no Lightning, no logging, no validation, no
checkpoints. ResLab's side is a real `reslab-train` run in a subprocess with validation and
testing off and everything else as configured (loggers: CSV alone and the default CSV + W&B
offline, checkpoints, callbacks). Both sides use the memory layout ResLab picks
(`speed.channels_last`, auto: NHWC on the CPU and CUDA); on CUDA both run as `trainer=gpu`
does: data on the device, bf16 autocast, cuDNN benchmark, TF32 matmuls.

Two ratios per case (median and best of interleaved repeats):
- whole run: ResLab's training time (Lightning's Timer, `train_time_s`) over the plain loop's
  time for the same steps; the digits target is <= 1.10.
- steady: speed over the steps after the first `skip` (ResLab's own `throughput` record) over
  the plain loop's speed over the same steps; the CIFAR-shape targets are >= 0.98 (CPU,
  ResNet-20) and >= 0.95 (GPU, ResNet-56).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from reslab.speed import channels_last_on, matmul_precision_for

# name: (overrides of both sides, what is compared, goal)
CASES = {
    "digits8": (
        ["experiment=digits_degradation", "model=resnet", "model.depth=8", "trainer.max_steps=600"],
        "time",
        1.10,
    ),
    "cifar20": (
        [
            "data=synthetic",
            "model=resnet",
            "model.depth=20",
            "data.batch_size=128",
            "trainer.max_steps=40",
            "scheduler.milestones=[32000,48000]",
        ],
        "speed",
        0.98,
    ),
    "cifar56": (
        [
            "data=synthetic",
            "model=resnet",
            "model.depth=56",
            "data.batch_size=128",
            "trainer.max_steps=400",
            "scheduler.milestones=[32000,48000]",
        ],
        "speed",
        0.95,
    ),
}
# ResLab's side only: nothing but the training loop is timed.
RESLAB_ONLY = ["++trainer.limit_val_batches=0", "test=false", "trainer.enable_progress_bar=false"]
SKIP_STEPS = 10


def composed(overrides: list[str]):
    with initialize_config_module(config_module="reslab.conf", version_base="1.3"):
        return compose("train", overrides)


def plain_loop(
    overrides: list[str],
    device: str,
    skip: int = SKIP_STEPS,
    bf16: bool | None = None,
    channels_last: bool | None = None,
    compile: str | None = None,
) -> dict[str, float]:
    """Seconds a hand-written loop needs for the configured steps, and for those after `skip`.
    bf16 autocast defaults to what `trainer=gpu` does (on for CUDA, off for the CPU), channels_last
    to what ResLab's module does with the config's `speed.channels_last` on this device."""
    cfg = composed(overrides)
    cuda = device == "cuda"
    bf16 = cuda if bf16 is None else bf16
    if channels_last is None:
        channels_last = channels_last_on(cfg.speed.channels_last, device)
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model).train().to(device)
    data = instantiate(cfg.data)
    data.setup("fit")
    if cuda:
        data.move_to(torch.device(device))  # as the datamodule does under a GPU Trainer
        torch.backends.cudnn.benchmark = True
    precision = matmul_precision_for(cfg.speed.float32_matmul_precision, device)  # as the module sets it
    if precision is not None:
        torch.set_float32_matmul_precision(precision)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net.compile(backend=compile)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    schedule = instantiate(cfg.scheduler)(optimizer) if cfg.get("scheduler") else None
    per_step = schedule is not None and schedule["interval"] == "step"
    autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()
    loader, max_steps, step = data.train_dataloader(), cfg.trainer.max_steps, 0
    wait = torch.cuda.synchronize if cuda else (lambda: None)
    start = time.perf_counter()
    after_skip = start
    while step < max_steps:
        for batch in loader:
            images, labels = data.transform_batch(batch, train=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = F.cross_entropy(net(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step:
                schedule["scheduler"].step()
            step += 1
            if step == skip:
                wait()
                after_skip = time.perf_counter()
            if step == max_steps:
                break
        if schedule is not None and not per_step:
            schedule["scheduler"].step()
    wait()
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "first_steps_seconds": after_skip - start,
        "steady_seconds": end - after_skip,
        "steady_steps": max_steps - skip,
        "batch_size": cfg.data.batch_size,
    }


def bare_lightning(overrides: list[str], device: str, skip: int = SKIP_STEPS) -> dict[str, float]:
    """The same module and data under a Lightning Trainer with no callbacks, loggers or
    checkpoints, in this process: the floor that Lightning's own loop sets."""
    import lightning.pytorch as pl

    from reslab.module import ClassificationModule

    cfg = composed([*overrides, "paths.output_dir=."])
    torch.manual_seed(cfg.seed)
    module = ClassificationModule(
        instantiate(cfg.model),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=cfg.data.num_classes,
    )
    wait = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    marks: dict[str, float] = {}

    class Clock(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            marks["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step in (skip, trainer.max_steps):
                wait()
                marks[trainer.global_step] = time.perf_counter()

    trainer = pl.Trainer(
        max_steps=cfg.trainer.max_steps,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if device == "cuda" else "32-true",
        benchmark=device == "cuda",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Clock()],
        log_every_n_steps=50,
    )
    trainer.fit(module, datamodule=instantiate(cfg.data))
    end = marks[cfg.trainer.max_steps]
    return {
        "seconds": end - marks["start"],
        "steady_seconds": end - marks[skip],
        "steady_steps": cfg.trainer.max_steps - skip,
    }


def reslab_run(overrides: list[str], loggers: str, device: str, workdir: Path) -> dict[str, float]:
    """Training seconds of a `reslab-train` run (validation and testing off), and its steady part."""
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    gpu = ["trainer=gpu"] if device == "cuda" else ["trainer.accelerator=cpu"]
    command = [
        sys.executable,
        "-m",
        "reslab.train",
        *overrides,
        *gpu,
        *RESLAB_ONLY,
        f"logger={loggers}",
        f"callbacks.throughput.skip_steps={SKIP_STEPS}",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run(command, check=True, capture_output=True, cwd=workdir, env=env)
    results = json.loads((run_dir / "results.json").read_text())
    throughput = results["throughput"]
    return {
        "seconds": results["train_time_s"],
        "steady_seconds": throughput["seconds_timed"],
        "steady_steps": throughput["steps_timed"],
    }


def compare(case: str, device: str, loggers: list[str], repeats: int, workdir: Path, bare: bool = False) -> dict:
    overrides, kind, goal = CASES[case]
    plain, reslab = [], {name: [] for name in loggers}
    if bare:
        reslab["(bare Lightning)"] = []
    for _ in range(repeats):
        # Interleaved, so that a change in the machine's load hits both sides alike.
        plain.append(plain_loop(overrides, device))
        for name in loggers:
            reslab[name].append(reslab_run(overrides, name, device, workdir))
        if bare:
            reslab["(bare Lightning)"].append(bare_lightning(overrides, device))
    rows = {}
    for name, runs in reslab.items():
        rows[name] = {}
        # The median, and the best of the repeats (what the machine can do when nothing else runs).
        for statistic, pick in (("median", statistics.median), ("best", min)):
            plain_s = pick(r["seconds"] for r in plain)
            plain_step_s = pick(r["steady_seconds"] / r["steady_steps"] for r in plain)
            seconds = pick(r["seconds"] for r in runs)
            step_s = pick(r["steady_seconds"] / r["steady_steps"] for r in runs)
            rows[name][statistic] = {
                "reslab_s": seconds,
                "plain_s": plain_s,
                "time_ratio": seconds / plain_s,
                "reslab_steps_per_s": 1 / step_s,
                "plain_steps_per_s": 1 / plain_step_s,
                "speed_ratio": plain_step_s / step_s,
            }
    return {
        "case": case,
        "overrides": overrides,
        "device": device,
        "compared": kind,
        "goal": goal,
        "repeats": repeats,
        "plain_runs": plain,
        "reslab_runs": reslab,
        "results": rows,
    }


def print_comparison(result: dict) -> None:
    kind, goal = result["compared"], result["goal"]
    print(f"\n{result['case']} on {result['device']}: {' '.join(result['overrides'])}  ({result['repeats']} repeats)")
    print(
        f"  {'loggers':<16} {'of repeats':<10} {'ResLab s':>9} {'plain s':>8} {'time ratio':>11} {'steady speed ratio':>19}"
    )
    for name, by_statistic in result["results"].items():
        for statistic, row in by_statistic.items():
            print(
                f"  {name:<16} {statistic:<10} {row['reslab_s']:9.2f} {row['plain_s']:8.2f} "
                f"{row['time_ratio']:10.3f}x {row['speed_ratio']:18.3f}x"
            )
    which = "time ratio" if kind == "time" else "steady speed ratio"
    sign = "<=" if kind == "time" else ">="
    print(f"  goal: {which} {sign} {goal}")


# ----------------------------------------------------------------------------- profile

# (label, pstats (file, function) patterns): cumulative time of the functions each pattern matches, summed.
PROFILE_PARTS = [
    ("training step, all of it", [("training_epoch_loop.py", "advance")]),
    ("  forward + loss (training_step)", [("reslab/module.py", "training_step")]),
    ("  backward", [("torch/_tensor.py", "backward")]),
    ("  optimiser update (SGD)", [("torch/optim/sgd.py", "sgd")]),
    ("  schedule", [("lr_scheduler.py", "step")]),
    (
        "  data: next batch + transform",
        [("loops/fetchers.py", "__next__"), ("reslab/data/in_memory.py", "on_after_batch_transfer")],
    ),
    ("  callback hooks (all callbacks)", [("trainer/call.py", "_call_callback_hooks")]),
    ("    of which step values to loggers", [("callbacks/step_log.py", "flush")]),
    ("  LightningModule.log", [("core/module.py", "log")]),
    ("  Lightning's step-metric logging", [("logger_connector.py", "update_train_step_metrics")]),
    ("  loggers: W&B", [("loggers/wandb.py", "log_metrics")]),
    ("  loggers: CSV", [("fabric/loggers/csv_logs.py", "log_metrics"), ("fabric/loggers/csv_logs.py", "save")]),
]


def cumulative(stats: pstats.Stats, path_part: str, name: str) -> float:
    return sum(
        entry[3]
        for (filename, _line, function), entry in stats.stats.items()  # type: ignore[attr-defined]
        if function == name and path_part in filename.replace("\\", "/")
    )


def profile(case: str, loggers: str, device: str) -> None:
    """cProfile one ResLab run and the plain loop in this process; print ms per step by part."""
    overrides, _, _ = CASES[case]
    steps = composed(overrides).trainer.max_steps
    plain_profile = cProfile.Profile()
    plain_profile.runcall(plain_loop, overrides, device)
    plain_stats = pstats.Stats(plain_profile)
    plain_ms = 1000 * cumulative(plain_stats, "loop_overhead.py", "plain_loop") / steps

    from reslab.train import main as reslab_main

    with tempfile.TemporaryDirectory() as tmp:
        gpu = ["trainer=gpu"] if device == "cuda" else ["trainer.accelerator=cpu"]
        sys.argv = ["reslab-train", *overrides, *gpu, *RESLAB_ONLY, f"logger={loggers}", f"hydra.run.dir={tmp}/job"]
        os.environ.setdefault("WANDB_MODE", "offline")
        reslab_profile = cProfile.Profile()
        try:
            reslab_profile.runcall(reslab_main)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
    stats = pstats.Stats(reslab_profile)
    print(f"\ncProfile, {case} on {device}, {steps} steps, logger={loggers}: ms per training step")
    print(f"  {'plain PyTorch loop, all of it':<40} {plain_ms:8.2f}")
    for label, patterns in PROFILE_PARTS:
        seconds = sum(cumulative(stats, path, name) for path, name in patterns)
        print(f"  {label:<40} {1000 * seconds / steps:8.2f}")
    print("  (cProfile inflates Python-heavy parts; compare before/after with the same command)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: digits8 and cifar20")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--loggers", default="csv,default", help="logger configs to run ResLab with, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(CASES), help="profile this case instead of timing it")
    parser.add_argument(
        "--bare-lightning",
        action="store_true",
        help="also time the module under a Lightning Trainer with no callbacks or loggers (the floor)",
    )
    parser.add_argument("--steps", type=int, help="training steps instead of the case's (e.g. a quick check)")
    parser.add_argument("--threads", type=int, help="CPU threads of both sides (OMP_NUM_THREADS); default: torch's")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.threads:
        # Both sides alike: this process's loop, and the reslab-train processes it starts.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    loggers = args.loggers.split(",")
    if args.profile:
        profile(args.profile, loggers[-1], args.device)
        return
    cases = args.case or ["digits8", "cifar20"]
    if args.steps:
        for case in cases:
            CASES[case][0].append(f"trainer.max_steps={args.steps}")
    with tempfile.TemporaryDirectory(prefix="reslab-loop-") as workdir:
        results = [
            compare(case, args.device, loggers, args.repeats, Path(workdir), args.bare_lightning) for case in cases
        ]
    for result in results:
        print_comparison(result)
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores ({platform.machine()})"
    )
    command = " ".join(["python", "benchmarks/loop_overhead.py", *sys.argv[1:]])
    print(f"\nmachine: {device}, torch {torch.__version__}, torch threads {torch.get_num_threads()}")
    print(f"reproduce: {command}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"command": command, "machine": device, "torch": torch.__version__, "cases": results}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
