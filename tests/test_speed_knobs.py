"""The speed knobs (`speed:` in conf/train.yaml, `trainer=gpu`) and the measured throughput every
job records. On CPU: compile through TorchDynamo with its `eager` backend (the same wrapping as
inductor, without minutes of C++ compilation), channels_last, the matmul precision."""

from __future__ import annotations

import json
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from torch._dynamo import register_backend  # the documented way to add a torch.compile backend
from torch.utils.data import DataLoader, TensorDataset

from reslab.callbacks.throughput import TRAINING_FLOPS_PER_MAC, compute_dtype, peak_flops
from reslab.models import build_network
from reslab.module import ClassificationModule

GRAPHS: list[int] = []


@register_backend(name="reslab_test_counting")
def counting_backend(graph_module, example_inputs):
    """Runs the captured graph as it is, noting that one was captured."""
    GRAPHS.append(len(list(graph_module.graph.nodes)))
    return graph_module.forward


def last_checkpoint_keys(job) -> set[str]:
    checkpoint = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return set(checkpoint["state_dict"])


@pytest.mark.parametrize("first, then", [("eager", "false"), ("false", "eager")])
def test_compiled_and_eager_runs_resume_each_other(train, tmp_path, first, then):
    common = ("logger=csv", "hydra.run.dir=job", "test=false", "model.depth=8")
    train(*common, "trainer.max_steps=4", f"speed.compile={first}")
    keys = last_checkpoint_keys(tmp_path / "job")
    assert keys and not any("_orig_mod" in key for key in keys)
    train(*common, "trainer.max_steps=8", f"speed.compile={then}")
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "completed" and results["resumed_from_step"] == 4 and results["steps"] == 8
    assert last_checkpoint_keys(tmp_path / "job") == keys


def fit(module: ClassificationModule, steps: int = 2) -> pl.Trainer:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,)))
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=8))
    return trainer


def small_module(**speed) -> ClassificationModule:
    # Three channels: with one, the NCHW and NHWC layouts of a batch are the same.
    net = build_network(depth=8, num_classes=10, in_channels=3, input_size=8)
    return ClassificationModule(
        net, optimizer=partial(torch.optim.SGD, lr=0.05), scheduler=None, num_classes=10, **speed
    )


def test_compile_wraps_the_network_in_place():
    GRAPHS.clear()
    module = small_module(compile="reslab_test_counting")
    eager_keys = set(small_module().state_dict())
    fit(module)
    assert GRAPHS, "the network's forward went through torch.compile"
    assert set(module.state_dict()) == eager_keys


def test_channels_last_weights_and_batches():
    module = small_module(channels_last=True)
    seen = []
    module.net.conv1.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    fit(module, steps=1)
    assert module.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    # auto: on the CPU too (oneDNN's convolutions are faster in NHWC); false: the default layout
    auto = small_module()
    fit(auto, steps=1)
    assert auto.channels_last and auto.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    off = small_module(channels_last=False)
    fit(off, steps=1)
    assert off.net.conv1.weight.is_contiguous() and not off.channels_last
    # the weights load into a network in the default layout
    small_module().load_state_dict(module.state_dict())


def test_float32_matmul_precision_is_set_for_the_run():
    before = torch.get_float32_matmul_precision()
    try:
        fit(small_module(float32_matmul_precision="medium"), steps=1)
        assert torch.get_float32_matmul_precision() == "medium"
        torch.set_float32_matmul_precision("highest")
        fit(small_module(), steps=1)  # auto leaves a CPU run's setting alone
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize(
    "override, words",
    [
        ("speed.compile=fastest", "speed.compile='fastest' must be one of false, true, "),
        ("speed.channels_last=sometimes", "speed.channels_last='sometimes' must be one of true, false, auto"),
        ("speed.float32_matmul_precision=low", "speed.float32_matmul_precision='low' must be one of "),
    ],
)
def test_bad_speed_settings_are_one_clear_line(train, override, words):
    proc = train(override, "logger=csv", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and words in output
    assert "Traceback" not in output and "TESTING_ONLY" not in output


def test_gpu_trainer_turns_on_cudnn_benchmark_and_bf16(train):
    cfg = train("trainer=gpu", "--cfg=job", fast=False).stdout
    assert "benchmark: true" in cfg and "precision: bf16-mixed" in cfg
    assert "channels_last: auto" in cfg and "float32_matmul_precision: auto" in cfg


def test_every_job_records_its_throughput(train, tmp_path):
    train(
        "trainer.max_steps=16", "logger=csv", "hydra.run.dir=job", "model.depth=8", "callbacks.throughput.skip_steps=4"
    )
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    speed = results["throughput"]
    assert speed["steps_skipped"] == 4 and speed["steps_timed"] == 12
    assert speed["images_per_s"] > 0 and speed["seconds_timed"] > 0
    assert speed["macs_per_image"] == results["flops"]
    assert speed["flops_per_s"] == pytest.approx(
        TRAINING_FLOPS_PER_MAC * results["flops"] * speed["images_per_s"], rel=1e-3
    )
    assert speed["device"] == "cpu" and speed["peak_flops_per_s"] is None and speed["peak_fraction"] is None


SLOW_SAVE_S = 3.0


def test_a_slow_final_checkpoint_does_not_lower_the_recorded_throughput(train, tmp_path):
    # A callback whose checkpoint saves take SLOW_SAVE_S: the timed stretch ends with the last
    # training batch, so the save that ends training must not enter it.
    (tmp_path / "slow_save.py").write_text(
        "import time\nfrom pathlib import Path\nimport lightning.pytorch as pl\n\n\n"
        "class SlowSave(pl.Callback):\n"
        "    def on_save_checkpoint(self, trainer, pl_module, checkpoint):\n"
        f"        time.sleep({SLOW_SAVE_S})\n"
        "        Path('saves').open('a').write(f'{trainer.global_step}\\n')\n"
    )
    train(
        "trainer.max_steps=12",
        "logger=csv",
        "hydra.run.dir=job",
        "model.depth=8",
        "callbacks.throughput.skip_steps=2",
        "+callbacks.slow_save._target_=slow_save.SlowSave",
    )
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert set((tmp_path / "saves").read_text().split()) == {"12"}  # the final checkpoint, at the last step
    speed = results["throughput"]
    assert speed["steps_timed"] == 10
    assert 0 < speed["seconds_timed"] < SLOW_SAVE_S


def test_known_gpu_peaks_and_compute_dtypes():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "tf32") == 378e12
    assert peak_flops("NVIDIA H200", "bf16") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12
    assert peak_flops("NVIDIA GeForce RTX 4090", "bf16") is None
    cpu = torch.device("cpu")
    assert compute_dtype("bf16-mixed", cpu) == "bf16" and compute_dtype("16-mixed", cpu) == "fp16"
    assert compute_dtype("32-true", cpu) == "fp32"
    assert compute_dtype("32-true", torch.device("cuda", 0)) == "tf32"  # cuDNN's default for convolutions
