"""CUDA code paths through the CLI: a bf16 run with data held on the GPU (channels_last, TF32,
cuDNN benchmark: `trainer=gpu`), a 1-GPU DDP run, and no synchronising CUDA operation between
the flushes of the per-step values (PyTorch's own count, torch.cuda.set_sync_debug_mode).

Marked `gpu` and skipped without a CUDA device; benchmarks/gpu/run.sh runs them with the other
gpu-marked tests. `benchmarks/gpu/run.sh --rehearse` runs them on the CPU instead
(RESLAB_GPU_TESTS_ON=cpu), which checks everything but the device itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, cli_env
from reslab.job import read_metrics_csv

ACCELERATOR = os.environ.get("RESLAB_GPU_TESTS_ON", "gpu")
ON_GPU = ACCELERATOR == "gpu"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# On the CPU (the rehearsal) smaller: the code paths are the same, and bf16 is slow on a CPU.
STEPS, DEPTH, BATCH = (40, 20, 128) if ON_GPU else (12, 8, 16)
GPU_RUN = [
    f"trainer.accelerator={ACCELERATOR}",
    "trainer.precision=bf16-mixed",
    "trainer.enable_progress_bar=false",
    "data=synthetic",
    f"data.num_train={16 * BATCH}",
    f"data.batch_size={BATCH}",
    "logger=csv",
]


def test_a_bf16_run_keeps_its_data_on_the_gpu_and_records_its_speed(train, tmp_path):
    train(
        "trainer=gpu", *GPU_RUN, f"trainer.max_steps={STEPS}", f"model.depth={DEPTH}", "hydra.run.dir=job", fast=False
    )
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == STEPS
    speed = results["throughput"]
    assert speed["compute_dtype"] == "bf16" and speed["images_per_s"] > 0
    if ON_GPU:
        assert speed["device"] == torch.cuda.get_device_name(0)
        if speed["peak_flops_per_s"]:
            assert 0 < speed["peak_fraction"] < 1
    rows = read_metrics_csv(tmp_path / "job" / "metrics.csv")
    assert [int(r["step"]) for r in rows if "train/loss" in r] == list(range(STEPS))


def test_a_one_gpu_ddp_run(train, tmp_path):
    train(
        *GPU_RUN,
        "trainer=ddp",
        "trainer.devices=1",
        "trainer.max_steps=12",
        "model.depth=8",
        "hydra.run.dir=job",
        fast=False,
    )
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "completed" and results["world_size"] == 1 and results["steps"] == 12


def test_no_synchronising_cuda_operation_between_flushes(tmp_path):
    out = tmp_path / "syncs.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "host_syncs.py"),
            "--json",
            str(out),
            "trainer=gpu",
            *GPU_RUN,
            f"model.depth={DEPTH}",
            "trainer.max_steps=60",
            "trainer.log_every_n_steps=20",
        ],
        cwd=tmp_path,
        env=cli_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    counts = json.loads(out.read_text())
    assert counts["status"] == "completed"
    between = [row for row in counts["per_step"] if not row["flush"]]
    assert between and all(row["reads"] == 0 for row in between), between
    if ON_GPU:
        assert counts["cuda"] and all(row["cuda_syncs"] == 0 for row in between), between
