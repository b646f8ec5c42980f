"""A job's measured training speed: images/s, achieved FLOP/s and the share of the device's peak.

Recorded in results.json under `throughput` (through `job_facts`) and shown in the report:

    images_per_s      training images per second, all devices together
    steps_timed       the training batches the figure covers (the first `skip_steps` are left
                      out: compilation, cuDNN's algorithm search and caches warming up)
    seconds_timed     their wall time, from the end of the last skipped batch to the end of the
                      last training batch: validation and the final checkpoint are left out
    macs_per_image    multiply-adds of one forward pass (as results.json `flops`)
    flops_per_s       6 x macs_per_image x images_per_s: a multiply-add is 2 FLOPs and a
                      training step costs about 3 forward passes (forward 1, backward 2)
    compute_dtype     bf16, fp16, tf32 or fp32: what the device's matrix units compute in
    peak_flops_per_s  the device's dense peak for that dtype, where known (PEAK_FLOPS), per device
    peak_fraction     flops_per_s / (peak_flops_per_s x devices)

Nothing waits for the device: on a GPU the timed stretches are measured with CUDA events
recorded in the stream (so queued work counts where it runs), read once training is over; on
a CPU with the host's clock.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn

from reslab.models import count_flops

# Dense (no sparsity) peak FLOP/s of one GPU, from NVIDIA's data sheets; matched against
# torch.cuda.get_device_name in this order, so the more specific names come first.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200 NVL": {"bf16": 835e12, "fp16": 835e12, "tf32": 417e12, "fp32": 60e12},
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H100 NVL": {"bf16": 835e12, "fp16": 835e12, "tf32": 417e12, "fp32": 60e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},  # SXM
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}
# FLOPs of one training image per multiply-add of its forward pass.
TRAINING_FLOPS_PER_MAC = 6


def peak_flops(device_name: str, dtype: str) -> float | None:
    """The dense peak FLOP/s of a GPU by its name, for `dtype`; None when not in PEAK_FLOPS."""
    for name, peaks in PEAK_FLOPS.items():
        if name.lower() in device_name.lower():
            return peaks.get(dtype)
    return None


def compute_dtype(precision: str, device: torch.device) -> str:
    """What the matrix units compute in under Lightning's `trainer.precision`."""
    precision = str(precision)
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if precision.startswith("64"):
        return "fp64"
    # fp32 convolutions run on TF32 tensor cores when cuDNN may use them (PyTorch's default),
    # matrix products when the float32 matmul precision is not "highest".
    if device.type == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.get_float32_matmul_precision() != "highest"):
        return "tf32"
    return "fp32"


class TrainingThroughput(pl.Callback):
    """Measures training throughput for results.json (see the module docstring)."""

    def __init__(self, skip_steps: int = 10) -> None:
        self.skip_steps = skip_steps
        self.macs_per_image: int | None = None
        self._device = torch.device("cpu")
        self._dtype = "fp32"
        self._world_size = 1
        self._batches = 0
        self._images = 0
        self._skipped = 0
        self._clock = Stopwatch(self._device)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # Counted here, before the network is compiled or moved: a forward pass on one image.
        shape = getattr(trainer.datamodule, "input_shape", None)
        net = getattr(pl_module, "net", None)
        if shape is not None and isinstance(net, torch.nn.Module):
            self.macs_per_image = count_flops(net, tuple(shape))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._device = trainer.strategy.root_device
        self._dtype = compute_dtype(trainer.precision, self._device)
        self._world_size = trainer.world_size
        self._batches = self._images = self._skipped = 0
        self._clock = Stopwatch(self._device)
        self._clock.start()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batches += 1
        self._images += int(batch[0].shape[0])  # (images, labels), as the datamodules give it
        # Where the timed stretch ends if this batch is the last: before the checkpoint that
        # ModelCheckpoint (a later callback) or the end of training saves.
        self._clock.lap()
        if not self._skipped and self._batches == self.skip_steps:
            # The timed stretch starts after the warm-up steps; a shorter run is timed whole.
            self._skipped, self._batches, self._images = self._batches, 0, 0
            self._clock = Stopwatch(self._device)
            self._clock.start()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._clock.stop()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._clock.start()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock.stop_at_lap()

    def job_facts(self) -> dict[str, Any]:
        seconds = self._clock.seconds
        if not self._batches or seconds <= 0:
            return {}
        images_per_s = self._images * self._world_size / seconds
        facts: dict[str, Any] = {
            "images_per_s": round(images_per_s, 1),
            "steps_timed": self._batches,
            "steps_skipped": self._skipped,
            "seconds_timed": round(seconds, 3),
            "devices": self._world_size,
            "device": torch.cuda.get_device_name(self._device) if self._device.type == "cuda" else self._device.type,
            "compute_dtype": self._dtype,
            "macs_per_image": self.macs_per_image,
            "flops_per_s": None,
            "peak_flops_per_s": None,
            "peak_fraction": None,
        }
        if self.macs_per_image:
            facts["flops_per_s"] = round(TRAINING_FLOPS_PER_MAC * self.macs_per_image * images_per_s)
            peak = peak_flops(facts["device"], self._dtype) if self._device.type == "cuda" else None
            if peak:
                facts["peak_flops_per_s"] = peak
                facts["peak_fraction"] = round(facts["flops_per_s"] / (peak * self._world_size), 4)
        return {"throughput": facts}


class Stopwatch:
    """Seconds of stretches of training, stopped and started around validations. On a GPU
    the marks are CUDA events recorded in the stream, so the host never waits for the device
    and queued work counts where it runs; `seconds` reads them once the work is done.
    `lap` marks where the running stretch ends if nothing more is timed: `stop_at_lap` closes
    it there (at the end of the last training batch), not at the moment it is called."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._stretches: list[tuple[Any, Any]] = []
        self._start: Any = None
        self._lap: Any = None

    def start(self) -> None:
        if self._start is None:
            self._start = self._mark()
            self._lap = None

    def stop(self) -> None:
        if self._start is not None:
            self._stretches.append((self._start, self._mark()))
            self._start = None

    def lap(self) -> None:
        if self._start is None:
            return
        if self.cuda:
            # One event re-recorded each batch: no allocation per step, nothing waits.
            self._lap = self._lap or torch.cuda.Event(enable_timing=True)
            self._lap.record()
        else:
            self._lap = time.perf_counter()

    def stop_at_lap(self) -> None:
        """Close the running stretch at its last lap; one with no lap since it started timed nothing."""
        if self._start is not None and self._lap is not None:
            self._stretches.append((self._start, self._lap))
        self._start = self._lap = None

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @property
    def seconds(self) -> float:
        if not self.cuda:
            return sum(end - start for start, end in self._stretches)
        if self._stretches:
            self._stretches[-1][1].synchronize()
        return sum(start.elapsed_time(end) for start, end in self._stretches) / 1000
