"""The `speed:` settings of conf/train.yaml (applied by reslab.module.ClassificationModule):
what each may be, checked before any work. Light on purpose: the pre-check imports it."""

from __future__ import annotations

from typing import Any

from reslab.errors import ConfigError

# torch.set_float32_matmul_precision's values, and `auto`: "high" (TF32) on CUDA, untouched elsewhere.
MATMUL_PRECISIONS = ("auto", "highest", "high", "medium")

# Devices where `channels_last: auto` turns NHWC on: cuDNN's tensor-core convolutions prefer it,
# and so do oneDNN's CPU convolutions. Measured on the 2-core machine, one thread, a plain loop
# training each digits network of experiment=digits_degradation (150 steps, batch 64), NCHW time
# over NHWC time: plain-8 1.27, plain-20 1.11, plain-56 1.16, ResNet-8 0.99, ResNet-20 1.03,
# ResNet-56 1.16 (benchmarks/README.md, "channels_last on the CPU").
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


def check_speed(compile: bool | str = False, channels_last: bool | str = "auto", float32_matmul_precision: str = "auto", **unknown: Any) -> None:
    """Raise ConfigError for a `speed.*` value that cannot be applied."""
    if unknown:
        raise ConfigError(
            f"speed.{sorted(unknown)[0]} is not a speed setting; the settings are compile, channels_last, "
            "float32_matmul_precision"
        )
    if not isinstance(compile, bool):
        import torch

        backends = torch.compiler.list_backends(exclude_tags=())
        if compile not in backends:
            raise ConfigError(
                f"speed.compile={compile!r} is not allowed; use false, true (torch.compile's default "
                f"backend, inductor) or a torch.compile backend: {', '.join(sorted(backends))}"
            )
    if not isinstance(channels_last, bool) and channels_last != "auto":
        raise ConfigError(f"speed.channels_last={channels_last!r} is not allowed; use true, false or auto (on CUDA and the CPU)")
    if float32_matmul_precision not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"speed.float32_matmul_precision={float32_matmul_precision!r} is not allowed; "
            f"use one of {', '.join(MATMUL_PRECISIONS)}"
        )
