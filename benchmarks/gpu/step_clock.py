"""A benchmark callback for jobs sharing a GPU (gpu_bench.py jobs-per-gpu): when each step ended
on the host's clock, and the job's peak GPU memory against its share.

    reslab-train ... +callbacks.step_clock._target_=step_clock.StepClock      # benchmarks/gpu on PYTHONPATH

Writes `path` (default: step_clock.json in the job's folder, the trainer's default_root_dir; no
override holds a path, since a sweep names its job folders after the overrides) atomically every `write_every` steps and when training ends: `marks`, a list of
[unix time, global step] every `every` steps (host time, nothing waits for the device: in
steady state the host runs as fast as the device), `batch_size`, and on CUDA `peak_memory_gib`
(torch.cuda.max_memory_allocated) and `memory_share_gib` (the device's memory x
RESLAB_GPU_MEMORY_FRACTION, which hydra/launcher=node_parallel sets for jobs sharing a GPU).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

GIB = 2**30


class StepClock(pl.Callback):
    def __init__(self, path: str | None = None, every: int = 5, write_every: int = 200) -> None:
        self.path = Path(path) if path else None
        self.every, self.write_every = every, write_every
        self.marks: list[tuple[float, int]] = []
        self.batch_size = 0
        self.device = torch.device("cpu")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.device = trainer.strategy.root_device
        self.path = self.path or Path(trainer.default_root_dir) / "step_clock.json"
        self.marks = [(time.time(), trainer.global_step)]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            self.marks.append((time.time(), step))
            first = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.batch_size = int(first.shape[0])
        if step % self.write_every == 0:
            self.write()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks.append((time.time(), trainer.global_step))
        self.write()

    def write(self) -> None:
        facts = {"marks": self.marks, "batch_size": self.batch_size, "peak_memory_gib": None, "memory_share_gib": None}
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            share = float(os.environ.get("RESLAB_GPU_MEMORY_FRACTION", "1"))
            facts["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
            facts["memory_share_gib"] = round(total * share / GIB, 2)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(facts) + "\n")
        tmp.replace(self.path)
