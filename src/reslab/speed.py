"""The `speed:` settings of conf/train.yaml (applied by reslab.module.ClassificationModule): what
each value means on a device. reslab.checks says which values are allowed."""

from __future__ import annotations

# torch.set_float32_matmul_precision's values, and `auto`: "high" (TF32) on CUDA, untouched elsewhere.
MATMUL_PRECISIONS = ("auto", "highest", "high", "medium")

# Devices where `channels_last: auto` turns NHWC on: cuDNN's tensor-core convolutions prefer it,
# and so do oneDNN's CPU convolutions (benchmarks/README.md, "channels_last on the CPU").
CHANNELS_LAST_AUTO_DEVICES = ("cuda", "cpu")


def channels_last_on(setting: bool | str, device_type: str) -> bool:
    """Whether a network trained on `device_type` uses NHWC, for a `speed.channels_last` value."""
    return device_type in CHANNELS_LAST_AUTO_DEVICES if setting == "auto" else bool(setting)


def matmul_precision_for(setting: str, device_type: str) -> str | None:
    """The torch.set_float32_matmul_precision value a run on `device_type` sets for a
    `speed.float32_matmul_precision` value; None: leave the process's setting alone."""
    if setting != "auto":
        return setting
    return "high" if device_type == "cuda" else None
