"""Checkpoints and weight files are read without running code stored in them, on every route
(`ckpt_path=FILE`, a job's own last.ckpt on a rerun, `model.weights=FILE` and the torch hub
cache for model=torchvision). A file that holds Python objects is refused as such, not called
corrupt, and nothing suggests `weights_only=False`; a file of random bytes is still corrupt.
`ckpt_path=last` is the job's own last.ckpt."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
import torchvision

from reslab.checkpoints import check_checkpoint
from reslab.errors import ConfigError
from reslab.models.torchvision_adapter import build_torchvision_model, cache_path

RUN = ["logger=csv", "trainer.max_steps=2"]
RESNET = ["model.depth=8", *RUN]


class Settings:
    """A custom class: an instance of it comes back from a pickle only by running code."""

    def __init__(self) -> None:
        self.lr = 0.1


class RunsCode:
    """Unpickling this calls os.makedirs(marker): proof that code from the file ran. (torch
    blocks the module os outright, with a message of its own.)"""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def holding(path: Path, obj: object, **save_kwargs) -> Path:
    """A Lightning-shaped checkpoint that also holds `obj`."""
    torch.save({"state_dict": {}, "global_step": 0, "hyper_parameters": obj}, path, **save_kwargs)
    return path


def random_bytes(path: Path) -> Path:
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def truncated_zip(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "global_step": 3}, path)
    path.write_bytes(path.read_bytes()[:2000])
    return path


def the_error_line(proc, job: Path) -> str:
    """The run stopped before training with one configuration error line and no traceback."""
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if "configuration error" in line]
    assert proc.returncode == 2 and len(errors) == 1, output[-3000:]
    assert "Traceback" not in output and "weights_only" not in output
    assert not (job / "metrics.csv").exists()
    return errors[0]


def says_python_objects(line: str) -> bool:
    return "holds Python objects" in line and "corrupt" not in line


# ----------------------------------------------------------------------------- the reader


@pytest.mark.parametrize(
    "make",
    [
        lambda path, marker: holding(path, Settings()),
        lambda path, marker: holding(path, RunsCode(marker)),
        lambda path, marker: holding(path, Settings(), _use_new_zipfile_serialization=False),
    ],
    ids=["class-instance", "runs-code", "legacy-format"],
)
def test_a_checkpoint_holding_python_objects_is_refused_as_such(tmp_path, make):
    marker = tmp_path / "code-ran"
    path = make(tmp_path / "objects.ckpt", marker)

    with pytest.raises(ConfigError) as error:
        check_checkpoint(path, torch.nn.Module())

    assert says_python_objects(str(error.value)) and "weights_only" not in str(error.value)
    assert "ckpt_path=none" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("make", [random_bytes, truncated_zip], ids=["random-bytes", "truncated"])
def test_an_unreadable_checkpoint_is_called_corrupt(tmp_path, make):
    with pytest.raises(ConfigError, match="corrupt") as error:
        check_checkpoint(make(tmp_path / "broken.ckpt"), torch.nn.Module())
    assert "Python objects" not in str(error.value) and "weights_only" not in str(error.value)


# ----------------------------------------------------------------------------- ckpt_path and last.ckpt


def test_ckpt_path_holding_python_objects_is_refused(train, tmp_path):
    path = holding(tmp_path / "objects.ckpt", Settings())

    proc = train(*RESNET, f"ckpt_path={path}", "hydra.run.dir=job", check=False)

    line = the_error_line(proc, tmp_path / "job")
    assert says_python_objects(line) and str(path) in line and "Settings" in line


def test_ckpt_path_of_random_bytes_is_corrupt(train, tmp_path):
    path = random_bytes(tmp_path / "random.ckpt")

    proc = train(*RESNET, f"ckpt_path={path}", "hydra.run.dir=job", check=False)

    line = the_error_line(proc, tmp_path / "job")
    assert "corrupt" in line and "Python objects" not in line


def test_a_rerun_refuses_its_own_last_ckpt_holding_python_objects(train, tmp_path):
    marker = tmp_path / "code-ran"
    last = tmp_path / "job" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    holding(last, RunsCode(marker))
    planted = last.read_bytes()

    proc = train(*RESNET, "hydra.run.dir=job", check=False)

    assert says_python_objects(the_error_line(proc, tmp_path / "job"))
    assert not marker.exists() and last.read_bytes() == planted


def test_ckpt_path_last_is_the_jobs_own_last_ckpt(train, tmp_path):
    # No checkpoint yet: a fresh start, as Lightning does for ckpt_path="last".
    train(*RESNET, "ckpt_path=last", "hydra.run.dir=job")
    train(*RESNET, "ckpt_path=last", "trainer.max_steps=4", "hydra.run.dir=job")

    record = json.loads((tmp_path / "job" / "results.json").read_text())
    assert record["status"] == "completed" and record["resumed_from_step"] == 2 and record["steps"] == 4


# ----------------------------------------------------------------------------- model.weights


def test_model_weights_holding_python_objects_is_refused(train, tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": state, "settings": Settings()}, path)

    proc = train(
        *RUN, "model=torchvision", "model.name=resnet18", f"model.weights={path}", "hydra.run.dir=job", check=False
    )

    line = the_error_line(proc, tmp_path / "job")
    assert says_python_objects(line) and "model.weights=" in line


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda path, marker: holding(path, RunsCode(marker)), "holds Python objects"),
        (lambda path, marker: random_bytes(path), "corrupt"),
    ],
    ids=["python-objects", "random-bytes"],
)
def test_local_weights_file_is_read_without_running_code(tmp_path, make, expected):
    marker = tmp_path / "code-ran"
    path = make(tmp_path / "weights.pth", marker)

    with pytest.raises(ConfigError, match=expected) as error:
        build_torchvision_model("resnet18", weights=str(path), num_classes=10)

    assert "weights_only" not in str(error.value) and not marker.exists()


def test_hub_cache_file_holding_python_objects_is_refused(tmp_path, monkeypatch):
    # torchvision itself reads the cached file with weights_only=False.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "code-ran"
    cached = cache_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    cached.parent.mkdir(parents=True)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({**state, "planted": RunsCode(marker)}, cached)

    with pytest.raises(ConfigError, match="holds Python objects"):
        build_torchvision_model("resnet18", weights="IMAGENET1K_V1", num_classes=10)

    assert not marker.exists()
