"""The GPU benchmarks of benchmarks/gpu/run.sh, one subcommand each, JSON out.

    python benchmarks/gpu/gpu_bench.py cifar --json results/cifar_resnets.json
    python benchmarks/gpu/gpu_bench.py resnet50 --json results/resnet50.json
    python benchmarks/gpu/gpu_bench.py jobs-per-gpu --json results/jobs_per_gpu.json
    python benchmarks/gpu/gpu_bench.py cifar --tiny --device cpu       # the code path, in seconds, on a CPU

cifar         CIFAR-shape ResNet-20/56/110 (synthetic images held on the device, batch 128):
              images/s of the training step for fp32, bf16, bf16 + channels_last and
              bf16 + channels_last + torch.compile, with the plain loop of
              benchmarks/loop_overhead.py; the achieved FLOP/s and share of the GPU's peak; and the
              projected time of the Table 6 grid (conf/experiment/cifar_table6.yaml) on one GPU.
resnet50      ImageNet-shape ResNet-50, bf16, channels_last, synthetic 224x224 images on the
              device, batch 256: a real `reslab-train` run, images/s from its results.json.
jobs-per-gpu  One sweep of 4 CIFAR-shape ResNet-20 jobs with `hydra/launcher=node_parallel
              hydra.launcher.jobs_per_gpu=K` for K = 1, 2, 4: the sweep's wall time and the
              images per second of all jobs together.

`--budget-s` bounds a subcommand's time: measurements that would start after it are recorded
as skipped, so the whole GPU check keeps to its time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loop_overhead import composed, plain_loop  # noqa: E402  (the plain loop both benchmarks share)

from reslab.callbacks.throughput import TRAINING_FLOPS_PER_MAC, compute_dtype, peak_flops  # noqa: E402
from reslab.job import read_results  # noqa: E402
from reslab.models import count_flops  # noqa: E402
from reslab.sweep import expand_grid  # noqa: E402

# (name, bf16, channels_last, compile backend)
CIFAR_VARIANTS = [
    ("fp32", False, False, None),
    ("bf16", True, False, None),
    ("bf16+channels_last", True, True, None),
    ("bf16+channels_last+compile", True, True, "inductor"),
]
CPU_VARIANTS = [
    ("fp32", False, False, None),
    ("channels_last", False, True, None),
    ("channels_last+compile", False, True, "eager"),
]
# Rough seconds inductor needs for a CIFAR ResNet's training step (forward and backward).
COMPILE_SECONDS = {20: 60, 56: 90, 110: 150}
TABLE6_STEPS_PER_JOB = 64000  # the paper's 64k iterations at batch 128


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def device_facts(device: str) -> dict:
    if device == "cuda":
        return {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return {"device": f"cpu ({os.cpu_count()} cores)", "torch": torch.__version__}


def rate_facts(images_per_s: float, macs: int, device: str, dtype: str) -> dict:
    flops = TRAINING_FLOPS_PER_MAC * macs * images_per_s
    peak = peak_flops(torch.cuda.get_device_name(), dtype) if device == "cuda" else None
    return {
        "images_per_s": round(images_per_s, 1),
        "flops_per_s": round(flops),
        "compute_dtype": dtype,
        "peak_flops_per_s": peak,
        "peak_fraction": round(flops / peak, 4) if peak else None,
    }


# ----------------------------------------------------------------------------- cifar


def cifar(args) -> dict:
    budget = Budget(args.budget_s)
    depths = [8, 14] if args.tiny else [20, 56, 110]
    steps, skip = (6, 2) if args.tiny else (args.steps, 20)
    batch = 16 if args.tiny else 128
    # On a CPU only the code paths: no bf16, and TorchDynamo's eager backend (inductor takes minutes).
    variants = CIFAR_VARIANTS if args.device == "cuda" else CPU_VARIANTS
    rows = []
    # Every eager variant first; then compiled runs, shallow first, while the budget lasts
    # (inductor needs about a minute for ResNet-20 and more for the deeper nets).
    plan = [(d, v) for v in variants if not v[3] for d in depths] + [(d, v) for v in variants if v[3] for d in depths]
    for depth, (name, bf16, channels_last, backend) in plan:
        overrides = [
            "data=synthetic",
            "model=resnet",
            f"model.depth={depth}",
            f"data.batch_size={batch}",
            f"trainer.max_steps={steps}",
            "data.num_train=5000" if not args.tiny else "data.num_train=64",
            "scheduler.milestones=[32000,48000]",
        ]
        macs = count_flops(instantiate_on_meta(composed(overrides)), (3, 32, 32))
        row = {"depth": depth, "variant": name, "batch_size": batch, "macs_per_image": macs}
        need = COMPILE_SECONDS.get(depth, 150) if backend == "inductor" else 15
        if budget.left() < need:
            rows.append({**row, "skipped": f"time budget ({budget.left():.0f} s left, needs ~{need} s)"})
            print(f"ResNet-{depth:<4} {name:<28} skipped: {rows[-1]['skipped']}", flush=True)
            continue
        timing = plain_loop(overrides, args.device, skip=skip, bf16=bf16, channels_last=channels_last, compile=backend)
        rate = timing["steady_steps"] * batch / timing["steady_seconds"]
        dtype = "bf16" if bf16 else compute_dtype("32-true", torch.device(args.device))
        rows.append(
            {
                **row,
                "ms_per_step": round(1000 * timing["steady_seconds"] / timing["steady_steps"], 3),
                "first_steps_s": round(timing["first_steps_seconds"], 2),
                "steps_timed": timing["steady_steps"],
                **rate_facts(rate, macs, args.device, dtype),
            }
        )
        print(
            f"ResNet-{depth:<4} {name:<28} {rows[-1]['images_per_s']:>10.0f} images/s "
            f"(first {skip} steps {rows[-1]['first_steps_s']:.1f} s)",
            flush=True,
        )
    return {
        "benchmark": "cifar",
        **device_facts(args.device),
        "steps": steps,
        "rows": rows,
        "table6_projection": table6_projection(rows),
    }


def instantiate_on_meta(cfg):
    from hydra.utils import instantiate

    with torch.device("meta"):
        return instantiate(cfg.model)


def table6_projection(rows: list[dict]) -> dict:
    """Hours the Table 6 grid needs on one GPU, one job after another, at the measured speeds:
    plain and residual nets of equal depth cost the same; depths between the measured ones are
    interpolated linearly in depth (their cost grows linearly with it)."""
    with_rate = [r for r in rows if "images_per_s" in r]
    if not with_rate:
        return {}
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="reslab.conf", version_base="1.3"):
        cfg = compose("train", ["experiment=cifar_table6"], return_hydra_config=True)
    jobs = expand_grid(cfg)
    projection = {}
    for variant in dict.fromkeys(r["variant"] for r in with_rate):
        points = sorted((r["depth"], r["ms_per_step"]) for r in with_rate if r["variant"] == variant)
        if len(points) < 2:
            continue
        seconds = 0.0
        for job in jobs:
            depth = int(next((o.split("=")[1] for o in job if o.startswith("model.depth=")), cfg.model.depth))
            seconds += TABLE6_STEPS_PER_JOB * interpolate(points, depth) / 1000
        projection[variant] = {"jobs": len(jobs), "hours_one_after_another": round(seconds / 3600, 2)}
    return projection


def interpolate(points: list[tuple[int, float]], x: int) -> float:
    """y at x on the broken line through `points` (sorted by x), extended past its ends."""
    i = 1
    while i < len(points) - 1 and points[i][0] < x:
        i += 1
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


# ----------------------------------------------------------------------------- resnet50 and jobs per GPU


def reslab_train(args_list: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """`reslab-train ARGS`; a run cut off by the time budget comes back with return code None."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "reslab.train", *args_list]
    try:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired as expired:
        return subprocess.CompletedProcess(
            command, None, expired.stdout or "", f"cut off after {timeout:.0f} s (time budget)"
        )


def on_device(args) -> list[str]:
    return ["trainer=gpu"] if args.device == "cuda" else ["trainer.accelerator=cpu"]


def resnet50(args) -> dict:
    budget = Budget(args.budget_s)
    size, batch, steps = (64, 4, 4) if args.tiny else (224, 256, args.steps)
    overrides = [
        "data=synthetic",
        f"data.image_size={size}",
        f"data.num_train={batch * 10}",
        f"data.num_test={batch}",
        "data.num_val=0",
        "model=resnet",
        "model.depth=50",
        "model.style=imagenet",
        f"data.batch_size={batch}",
        f"trainer.max_steps={steps}",
        "scheduler.milestones=[32000,48000]",
        "test=false",
        "++trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "speed.channels_last=true",
        f"callbacks.throughput.skip_steps={1 if args.tiny else 10}",
        # batch 4 (tiny) would blow up at the ImageNet recipe's lr 0.1
        *(["optimizer.lr=0.001"] if args.tiny else []),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        proc = reslab_train([*overrides, *on_device(args), f"hydra.run.dir={tmp}/job"], Path(tmp), budget.left())
        results = read_results(Path(tmp) / "job") or {}
    throughput = results.get("throughput") or {}
    print(
        f"ResNet-50 {size}x{size} batch {batch}: {throughput.get('images_per_s')} images/s, "
        f"{throughput.get('peak_fraction')} of peak ({results.get('status')})",
        flush=True,
    )
    return {
        "benchmark": "resnet50",
        **device_facts(args.device),
        "overrides": overrides,
        "status": results.get("status"),
        "error": results.get("error") or (proc.stderr[-2000:] if proc.returncode != 0 else None),
        "throughput": throughput,
        "goal_images_per_s": 3000,
    }


def jobs_per_gpu(args) -> dict:
    budget = Budget(args.budget_s)
    steps, batch, jobs = (4, 16, 2) if args.tiny else (args.steps, 128, 4)
    grid = ",".join(str(seed) for seed in range(jobs))
    rows = []
    for k in (1, 2) if args.tiny else (1, 2, 4):
        if budget.left() < 30:
            rows.append({"jobs_per_gpu": k, "skipped": f"time budget ({budget.left():.0f} s left)"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            sweep = Path(tmp) / "sweep"
            launcher = ["hydra/launcher=node_parallel", f"hydra.launcher.jobs_per_gpu={k}"]
            if args.device != "cuda":
                launcher += ["hydra.launcher.gpus=[]", f"hydra.launcher.max_parallel={k}"]
            command = [
                "-m",
                *launcher,
                f"seed={grid}",
                "data=synthetic",
                "model=resnet",
                "model.depth=20",
                f"data.batch_size={batch}",
                f"trainer.max_steps={steps}",
                "scheduler.milestones=[32000,48000]",
                "test=false",
                "++trainer.limit_val_batches=0",
                "trainer.enable_progress_bar=false",
                "logger=csv",
                f"hydra.sweep.dir={sweep}",
                *on_device(args),
            ]
            start = time.perf_counter()
            proc = reslab_train(command, Path(tmp), budget.left())
            wall = time.perf_counter() - start
            records = [read_results(p.parent) or {} for p in sweep.glob("*/results.json")]
        completed = [r for r in records if r.get("status") == "completed"]
        images = sum(r.get("steps", 0) for r in completed) * batch
        rows.append(
            {
                "jobs_per_gpu": k,
                "jobs": jobs,
                "completed": len(completed),
                "sweep_wall_s": round(wall, 2),
                "images_per_s_whole_sweep": round(images / wall, 1),
                "images_per_s_sum_of_jobs": round(
                    sum((r.get("throughput") or {}).get("images_per_s", 0) for r in completed), 1
                ),
                "error": None if proc.returncode == 0 else proc.stderr[-1500:],
            }
        )
        print(
            f"jobs_per_gpu={k}: {len(completed)}/{jobs} jobs in {wall:.1f} s, "
            f"{rows[-1]['images_per_s_whole_sweep']:.0f} images/s over the sweep",
            flush=True,
        )
    return {"benchmark": "jobs_per_gpu", **device_facts(args.device), "steps_per_job": steps, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=("cifar", "resnet50", "jobs-per-gpu"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the code path in seconds (a CPU check)")
    parser.add_argument("--steps", type=int, help="training steps per measurement (default per benchmark)")
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.steps = args.steps or {"cifar": 220, "resnet50": 60, "jobs-per-gpu": 1000}[args.benchmark]
    run = {"cifar": cifar, "resnet50": resnet50, "jobs-per-gpu": jobs_per_gpu}[args.benchmark]
    result = run(args)
    result["command"] = " ".join(["python", "benchmarks/gpu/gpu_bench.py", *sys.argv[1:]])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
