"""Training throughput: `reslab-train` against a plain PyTorch loop, same network, same data.

    python benchmarks/throughput.py                   # CIFAR-style ResNet-20, batch 128, CPU
    python benchmarks/throughput.py --depth 56 --repeats 5

Both sides train the CIFAR-style ResNet-20 from `reslab.models.build_network` on the same
in-memory synthetic CIFAR-shaped tensors (`SyntheticDataModule`, no augmentation) with SGD
(momentum 0.9, weight decay 1e-4) and per-step cross-entropy. ResLab's number comes from two
real `reslab-train` runs of different lengths: the difference of their training times (the
Lightning `Timer` callback, reported as `train_time_s` in results.json) over the difference of
their steps, so start-up and the first slow steps cancel out. The plain loop is timed the same
way within one process. Validation and testing are off on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reslab.data import SyntheticDataModule
from reslab.models import build_network


def reslab_train_time(args, steps: int, workdir: Path) -> float:
    """Seconds `reslab-train` spends in its training loop for `steps` steps."""
    run_dir = workdir / f"run-{steps}-{time.monotonic_ns()}"
    command = [
        sys.executable, "-m", "reslab.train",
        "model=resnet", f"model.depth={args.depth}", "data=synthetic", f"data.num_train={args.num_train}",
        "data.augment=false", f"data.batch_size={args.batch_size}", "trainer.accelerator=cpu",
        f"trainer.max_steps={steps}", "+trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
        "test=false", "logger=csv", f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=workdir)
    return json.loads((run_dir / "results.json").read_text())["train_time_s"]


def plain_loop_times(args, step_counts: tuple[int, int]) -> tuple[float, float]:
    """Seconds a hand-written loop needs for the first `n` steps, for each n in step_counts."""
    torch.manual_seed(0)
    data = SyntheticDataModule(num_train=args.num_train, num_val=0, num_test=args.batch_size, batch_size=args.batch_size, augment=False, on_device=False)
    data.setup("fit")
    images, labels = data.splits["train"].images, data.splits["train"].labels
    net = build_network(depth=args.depth, shortcut="A", num_classes=10, in_channels=3, input_size=32).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    marks, step, start = [], 0, time.perf_counter()
    while step < max(step_counts):
        order = torch.randperm(len(labels))
        for first in range(0, len(labels) - args.batch_size + 1, args.batch_size):
            batch = order[first : first + args.batch_size]
            # The same per-batch normalisation ResLab applies, so both sides do the same work.
            x, y = data.transform_batch((images.index_select(0, batch), labels.index_select(0, batch)), train=True)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step in step_counts:
                marks.append(time.perf_counter() - start)
            if step == max(step_counts):
                break
    return marks[0], marks[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-train", type=int, default=5000)
    parser.add_argument("--short", type=int, default=10, help="steps of the short run")
    parser.add_argument("--long", type=int, default=40, help="steps of the long run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = (args.long - args.short) * args.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            # Interleaved, so a change in machine load hits both sides alike.
            plain_short, plain_long = plain_loop_times(args, (args.short, args.long))
            lab = reslab_train_time(args, args.long, Path(tmp)) - reslab_train_time(args, args.short, Path(tmp))
            rows.append((images / (plain_long - plain_short), images / lab))
    plain = statistics.median(r[0] for r in rows)
    lab = statistics.median(r[1] for r in rows)
    print(f"CIFAR-style ResNet-{args.depth}, batch {args.batch_size}, CPU threads {torch.get_num_threads()}, "
          f"{args.repeats} repeats of steps {args.short}..{args.long} (median)")
    print(f"plain PyTorch loop : {plain:8.1f} images/s")
    print(f"reslab-train       : {lab:8.1f} images/s")
    print(f"ratio reslab/plain : {lab / plain:8.3f}")


if __name__ == "__main__":
    main()
