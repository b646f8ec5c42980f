"""The GPU check's benchmarks (benchmarks/gpu/run.sh), one subcommand each, JSON out as they go.

    python benchmarks/gpu/gpu_bench.py loop --json loop.json              # ResNet-56: ResLab vs a plain loop
    python benchmarks/gpu/gpu_bench.py resnet50 --json resnet50.json      # ResNet-50 bf16 channels_last images/s
    python benchmarks/gpu/gpu_bench.py jobs-per-gpu --data-root DIR --json jobs.json
    python benchmarks/gpu/gpu_bench.py compile --json compile.json        # speed.compile, checkpoint, resume
    python benchmarks/gpu/gpu_bench.py ddp --json ddp.json                # a 1-device DDP run
    python benchmarks/gpu/gpu_bench.py loop --device cpu                  # the CPU form: small sizes, same code

loop          CIFAR-shape ResNet-56 (batch 128, data on the device, bf16): a real `reslab-train` run
              against benchmarks/loop_overhead.py's plain loop, interleaved, repeated while the
              time lasts (at least 3 for a median): the steady speed ratio.
resnet50      ImageNet-shape ResNet-50, bf16, channels_last, synthetic 224x224 images on the
              device, batch 256: images/s from the `throughput` record of a real `reslab-train` run.
jobs-per-gpu  K = 1, 2, 4 identical Table 6 jobs (experiment=cifar_table6, ResNet-56, the recipe's
              augmentation and validation) side by side on one GPU (hydra/launcher=node_parallel
              hydra.launcher.jobs_per_gpu=K), each training for a fixed time: each job's peak
              memory against its share, the images/s of all jobs together while all of them run,
              and from these the Table 6 grid's projected time on one GPU.
compile       `speed.compile=true` through `reslab-train` (ResNet-20), checkpoint saved, then the
              same job run on to more steps, resuming from that checkpoint.
ddp           `trainer=ddp trainer.devices=1`: the process group's backend (NCCL on a GPU).

Every subcommand writes its JSON after each variant (atomically), each variant with its outcome
(ok, failed with the error's last lines, skipped for time); `--budget-s` is the time it has.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ERROR_LINES = 25
TABLE6_STEPS_PER_JOB = 64000  # the paper's 64k iterations at batch 128


class Failed(Exception):
    """A run that did not work; `output` holds what it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def error_tail(error: BaseException) -> str:
    output = getattr(error, "output", None) or getattr(error, "stderr", None) or ""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    text = f"{type(error).__name__}: {error}\n{output}" if output else traceback.format_exc()
    return "\n".join(text.strip().splitlines()[-ERROR_LINES:])


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


class Record:
    """A step's JSON: its facts and one row per variant, rewritten atomically after each."""

    def __init__(self, path: Path | None, budget: Budget, **facts) -> None:
        self.path, self.budget = path, budget
        self.data = {**facts, "variants": []}
        self.write()

    def set(self, **facts) -> None:
        self.data.update(facts)
        self.write()

    def variant(self, name: str, needs_s: float, run, **facts) -> dict:
        row = {"variant": name, **facts}
        if self.budget.left() < needs_s:
            row.update(outcome="skipped", why=f"time: {self.budget.left():.0f} s left, needs about {needs_s:.0f} s")
        else:
            began = time.perf_counter()
            try:
                row.update(run())
                row["outcome"] = "ok"
            except Exception as error:  # noqa: BLE001  (recorded; the step goes on with its next variant)
                row.update(outcome="failed", error=error_tail(error))
            row["seconds"] = round(time.perf_counter() - began, 1)
        self.data["variants"].append(row)
        self.write()
        shown = {k: v for k, v in row.items() if k != "error"}
        print(f"{name}: {json.dumps(shown)[:400]}" + (f"\n{row['error']}" if "error" in row else ""), flush=True)
        return row

    def write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)


def reslab_train(args: list[str], cwd: Path, timeout: float) -> str:
    """Run `reslab-train ARGS`; its output, or Failed. Past `timeout` it gets SIGTERM (a sweep's
    launcher passes it on to its jobs, which save and leave), then SIGKILL."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "reslab.train", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        raise Failed(f"cut off after {timeout:.0f} s", output) from None
    if proc.returncode != 0:
        raise Failed(f"reslab-train exited {proc.returncode}", output)
    return output


def read_results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def on_device(device: str) -> list[str]:
    return ["trainer=gpu"] if device == "cuda" else ["trainer.accelerator=cpu"]


QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]
TRAIN_ONLY = ["test=false", "++trainer.limit_val_batches=0"]


# ----------------------------------------------------------------------------- loop


def loop(args) -> None:
    # Imported here: the other benchmarks' own processes need neither torch nor Hydra.
    from loop_overhead import CASES, plain_loop, reslab_run  # the plain loop both benchmarks share

    cuda = args.device == "cuda"
    overrides = (
        list(CASES["cifar56"][0])
        if cuda
        else ["data=synthetic", "model=resnet", "model.depth=8", "data.batch_size=32", "trainer.max_steps=30"]
    )
    goal = CASES["cifar56"][2]
    record = Record(
        args.json,
        args.budget,
        benchmark="loop",
        case="ResNet-56 CIFAR-shape" if cuda else "ResNet-8 (CPU form)",
        overrides=overrides,
        goal=goal,
    )
    ratios: list[float] = []
    needs = 40.0 if cuda else 30.0  # one repeat of both sides, until the first one is timed
    with tempfile.TemporaryDirectory(prefix="reslab-loop-") as workdir:
        for repeat in range(args.max_repeats):

            def both_sides() -> dict:
                plain = plain_loop(overrides, args.device)
                reslab = reslab_run(overrides, "csv", args.device, Path(workdir))
                plain_step, reslab_step = (r["steady_seconds"] / r["steady_steps"] for r in (plain, reslab))
                return {
                    "plain_ms_per_step": round(1000 * plain_step, 3),
                    "reslab_ms_per_step": round(1000 * reslab_step, 3),
                    "speed_ratio": round(plain_step / reslab_step, 4),
                    "reslab_train_s": round(reslab["seconds"], 2),
                }

            row = record.variant(f"repeat {repeat + 1}", needs, both_sides)
            if row["outcome"] == "ok":
                ratios.append(row["speed_ratio"])
                needs = 1.3 * row["seconds"]
                record.set(
                    repeats_done=len(ratios),
                    speed_ratio_median=round(statistics.median(ratios), 4),
                    speed_ratio_min=min(ratios),
                    speed_ratio_max=max(ratios),
                )
            elif row["outcome"] == "skipped":
                break


# ----------------------------------------------------------------------------- resnet50


def resnet50(args) -> None:
    cuda = args.device == "cuda"
    size, batch, steps = (224, 256, 60) if cuda else (64, 4, 6)
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
        *TRAIN_ONLY,
        *QUIET,
        "speed.channels_last=true",
        f"callbacks.throughput.skip_steps={20 if cuda else 2}",
        *([] if cuda else ["optimizer.lr=0.001"]),  # batch 4 would blow up at lr 0.1
        *on_device(args.device),
    ]
    record = Record(args.json, args.budget, benchmark="resnet50", overrides=overrides, goal_images_per_s=3000)

    def run() -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            reslab_train([*overrides, f"hydra.run.dir={tmp}/job"], Path(tmp), args.budget.left() - 5)
            results = read_results(Path(tmp) / "job")
        speed = results.get("throughput") or {}
        return {
            "image_size": size,
            "batch_size": batch,
            "status": results.get("status"),
            "wall_time_s": results.get("wall_time_s"),
            **{
                k: speed.get(k)
                for k in ("images_per_s", "compute_dtype", "flops_per_s", "peak_fraction", "steps_timed")
            },
        }

    record.variant("bf16 channels_last", 15, run)


# ----------------------------------------------------------------------------- jobs per GPU


def overlapping_rate(clocks: list[dict], skip_steps: int) -> tuple[float | None, float]:
    """Images/s of all jobs together over the stretch where every job is past its first
    `skip_steps` steps and none has ended (host clock marks, interpolated); and that stretch's seconds."""
    starts, ends = [], []
    for clock in clocks:
        marks = [m for m in clock["marks"] if m[1] >= skip_steps]
        if len(marks) < 2:
            return None, 0.0
        starts.append(marks[0][0])
        ends.append(marks[-1][0])
    begin, end = max(starts), min(ends)
    if end <= begin:
        return None, 0.0

    def step_at(marks: list, t: float) -> float:
        for (t0, s0), (t1, s1) in itertools.pairwise(marks):
            if t0 <= t <= t1:
                return s0 + (s1 - s0) * (t - t0) / (t1 - t0) if t1 > t0 else s1
        return marks[-1][1]

    images = sum((step_at(c["marks"], end) - step_at(c["marks"], begin)) * c["batch_size"] for c in clocks)
    return images / (end - begin), end - begin


def jobs_per_gpu(args) -> None:
    cuda = args.device == "cuda"
    # On the CPU (2 cores here) 1 and 2 jobs: the code path, with fewer process starts.
    depth, train_s, counts = (56, 10, (1, 4, 2)) if cuda else (8, 6, (1, 2))
    skip = 50 if cuda else 2
    job = [
        "experiment=cifar_table6",
        "data=cifar10",
        f"data.root={args.data_root}",
        "data.verify_checksums=false",
        "model=resnet",
        f"model.depth={depth}",
        "test=false",
        *QUIET,
        *on_device(args.device),
        f"++callbacks.timer.duration='00:00:00:{train_s:02d}'",  # each job trains this long (DD:HH:MM:SS), then ends
        "+callbacks.step_clock._target_=step_clock.StepClock",
        *([] if cuda else ["data.val_size=100", "data.batch_size=32"]),
    ]
    record = Record(
        args.json,
        args.budget,
        benchmark="jobs_per_gpu",
        job=f"Table 6 recipe, ResNet-{depth}, {train_s} s each",
        overrides=job,
    )
    one_job: dict = {}
    for k in counts:

        def run(k=k) -> dict:
            with tempfile.TemporaryDirectory() as tmp:
                sweep = Path(tmp) / "sweep"
                launcher = ["hydra/launcher=node_parallel", f"hydra.launcher.jobs_per_gpu={k}"]
                if not cuda:
                    launcher += ["hydra.launcher.gpus=[]", f"hydra.launcher.max_parallel={k}"]
                began = time.perf_counter()
                reslab_train(
                    ["-m", *launcher, f"seed={','.join(map(str, range(k)))}", *job, f"hydra.sweep.dir={sweep}"],
                    Path(tmp),
                    args.budget.left() - 5,
                )
                wall = time.perf_counter() - began
                job_dirs = sorted(p.parent for p in sweep.glob("*/results.json"))
                records = [read_results(d) for d in job_dirs]
                clocks = [
                    json.loads((d / "step_clock.json").read_text())
                    for d in job_dirs
                    if (d / "step_clock.json").exists()
                ]
            if len(clocks) < k:
                raise Failed(f"{len(clocks)} of {k} jobs trained: " + "; ".join(str(r.get("error")) for r in records))
            rate, overlap = overlapping_rate(clocks, skip)
            per_job = [
                {
                    "status": r.get("status"),
                    "steps": r.get("steps"),
                    "images_per_s": (r.get("throughput") or {}).get("images_per_s"),
                    "peak_memory_gib": c.get("peak_memory_gib"),
                    "memory_share_gib": c.get("memory_share_gib"),
                }
                for r, c in zip(records, clocks)
            ]
            peaks = [j["peak_memory_gib"] for j in per_job if j["peak_memory_gib"] is not None]
            row = {
                "jobs_per_gpu": k,
                "sweep_wall_s": round(wall, 1),
                "overlap_s": round(overlap, 1),
                "images_per_s_overlapping": round(rate, 1) if rate else None,
                "jobs": per_job,
                "peak_memory_max_gib": max(peaks) if peaks else None,
                "memory_share_gib": per_job[0]["memory_share_gib"],
            }
            if k == 1:
                marks = [m for m in clocks[0]["marks"] if m[1] >= skip]
                if len(marks) < 2 or marks[-1][1] == marks[0][1]:
                    raise Failed(f"too few steps timed: {clocks[0]['marks']}")
                seconds_per_step = (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1])
                one_job.update(rate=rate, seconds_per_step=seconds_per_step, steps=clocks[0]["marks"][-1][1], wall=wall)
            if one_job.get("rate") and rate:
                row["speedup_vs_one_job"] = round(rate / one_job["rate"], 3)
            return row

        record.variant(f"{k} per GPU", 25 + 5 * k if cuda else 20 + 5 * k, run, jobs_per_gpu=k)
    rows = [v for v in record.data["variants"] if v["outcome"] == "ok" and v.get("speedup_vs_one_job")]
    if one_job.get("seconds_per_step") and rows:
        record.set(
            table6_projection=table6_projection(one_job, max(rows, key=lambda v: v["speedup_vs_one_job"]), depth)
        )


def table6_projection(one_job: dict, best: dict, measured_depth: int) -> dict:
    """Hours the Table 6 grid takes on one GPU at ResLab's measured speed: one job's steady
    seconds per step with the recipe's validation and augmentation, its fixed cost (the sweep's
    wall time less its steady steps: start-up, the first steps, the end), the grid's depths
    scaled in proportion to depth (a CIFAR ResNet's layers and its kernel launches grow with
    depth), and the packing speed-up of the best jobs-per-GPU setting measured."""
    from hydra import compose, initialize_config_module

    from reslab.sweep import expand_grid

    with initialize_config_module(config_module="reslab.conf", version_base="1.3"):
        cfg = compose("train", ["experiment=cifar_table6"], return_hydra_config=True)
    jobs = expand_grid(cfg)
    fixed = max(one_job["wall"] - one_job["steps"] * one_job["seconds_per_step"], 0.0)
    seconds = 0.0
    for overrides in jobs:
        depth = int(next((o.split("=")[1] for o in overrides if o.startswith("model.depth=")), cfg.model.depth))
        seconds += fixed + TABLE6_STEPS_PER_JOB * one_job["seconds_per_step"] * depth / measured_depth
    return {
        "jobs": len(jobs),
        "steps_per_job": TABLE6_STEPS_PER_JOB,
        "measured_depth": measured_depth,
        "seconds_per_step_with_validation": round(one_job["seconds_per_step"], 5),
        "fixed_s_per_job": round(fixed, 1),
        "hours_one_after_another": round(seconds / 3600, 2),
        "jobs_per_gpu": best["jobs_per_gpu"],
        "speedup": best["speedup_vs_one_job"],
        "hours": round(seconds / best["speedup_vs_one_job"] / 3600, 2),
    }


# ----------------------------------------------------------------------------- compile, checkpoint, resume


def compile_and_resume(args) -> None:
    cuda = args.device == "cuda"
    depth, batch, steps = (20, 128, 60) if cuda else (8, 32, 12)
    backend = "true" if cuda else "eager"  # inductor on the CPU needs minutes: the code path only
    job = [
        "data=synthetic",
        f"model.depth={depth}",
        f"data.batch_size={batch}",
        f"speed.compile={backend}",
        f"callbacks.checkpoint.every_n_train_steps={steps // 2}",
        "callbacks.throughput.skip_steps=5",
        *TRAIN_ONLY,
        *QUIET,
        *on_device(args.device),
    ]
    record = Record(args.json, args.budget, benchmark="compile", overrides=job)
    with tempfile.TemporaryDirectory() as tmp:
        job_dir = Path(tmp) / "job"

        def first() -> dict:
            reslab_train(
                [*job, f"trainer.max_steps={steps}", f"hydra.run.dir={job_dir}"], Path(tmp), args.budget.left() - 5
            )
            results = read_results(job_dir)
            if not (job_dir / "checkpoints" / "last.ckpt").exists():
                raise Failed("no checkpoints/last.ckpt after the run")
            return {
                "status": results["status"],
                "steps": results["steps"],
                "wall_time_s": results.get("wall_time_s"),
                "images_per_s": (results.get("throughput") or {}).get("images_per_s"),
            }

        def resumed() -> dict:
            reslab_train(
                [*job, f"trainer.max_steps={steps * 3 // 2}", f"hydra.run.dir={job_dir}"],
                Path(tmp),
                args.budget.left() - 5,
            )
            results = read_results(job_dir)
            if results.get("resumed_from_step") != steps or results.get("steps") != steps * 3 // 2:
                raise Failed(
                    f"expected a resume from step {steps} to {steps * 3 // 2}: "
                    f"resumed_from_step={results.get('resumed_from_step')}, steps={results.get('steps')}"
                )
            return {
                "status": results["status"],
                "steps": results["steps"],
                "resumed_from_step": results["resumed_from_step"],
                "wall_time_s": results.get("wall_time_s"),
            }

        if record.variant("compiled run", 40 if cuda else 15, first)["outcome"] == "ok":
            record.variant("resumed from its checkpoint", 25 if cuda else 10, resumed)


# ----------------------------------------------------------------------------- ddp


def ddp(args) -> None:
    job = [
        "trainer=ddp",
        "trainer.devices=1",
        "data=synthetic",
        "model.depth=8",
        "data.batch_size=64",
        "trainer.max_steps=20",
        *TRAIN_ONLY,
        *QUIET,
        "trainer.accelerator=gpu" if args.device == "cuda" else "trainer.accelerator=cpu",
    ]
    record = Record(args.json, args.budget, benchmark="ddp", overrides=job)

    def run() -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            output = reslab_train([*job, f"hydra.run.dir={tmp}/job"], Path(tmp), args.budget.left() - 5)
            results = read_results(Path(tmp) / "job")
        backend = re.search(r"distributed_backend=(\w+)", output)
        if results.get("status") != "completed":
            raise Failed(f"status {results.get('status')}: {results.get('error')}", output)
        return {
            "status": results["status"],
            "world_size": results.get("world_size"),
            "steps": results.get("steps"),
            "backend": backend.group(1) if backend else None,
        }

    record.variant("1 device", 15, run)


def main() -> None:
    benchmarks = {
        "loop": loop,
        "resnet50": resnet50,
        "jobs-per-gpu": jobs_per_gpu,
        "compile": compile_and_resume,
        "ddp": ddp,
    }
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=sorted(benchmarks))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--budget-s", type=float, default=120.0, help="seconds this benchmark has")
    parser.add_argument("--max-repeats", type=int, default=7, help="loop: at most this many interleaved repeats")
    parser.add_argument(
        "--data-root", type=Path, help="jobs-per-gpu: a CIFAR-10-format folder (reslab.data.write_cifar_like)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.budget = Budget(args.budget_s)
    if args.device == "cpu":
        args.max_repeats = min(args.max_repeats, 2)
    benchmarks[args.benchmark](args)


if __name__ == "__main__":
    main()
