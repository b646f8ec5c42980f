"""Image folders decoded and augmented in the workers (`data.decode=cpu`) or as whole batches in
the training process (`data.decode=device`): the same distributions, the same evaluation pixels,
the same handling of odd files, and a checkpoint trained on one path scores the same on the other."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from sklearn.datasets import load_sample_images
from test_data import one_thread, write_image_tree  # noqa: F401  (one_thread: autouse, one torch thread)
from torchvision.io import encode_jpeg, encode_png
from torchvision.transforms.v2 import functional as TF

from reslab.data import ImageNetDataModule
from reslab.data.image_batches import TRAIN, adjust_colours, collate_encoded, decode_rgb
from reslab.errors import ConfigError

CPU = torch.device("cpu")


def photo(height: int, width: int, which: int = 0) -> torch.Tensor:
    """One of scikit-learn's two sample photos, resized: uint8 (3, H, W)."""
    image = torch.from_numpy(np.array(load_sample_images().images[which])).permute(2, 0, 1)
    return TF.resize(image, [height, width], antialias=True)


def batches(dm: ImageNetDataModule, loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every batch of a loader as the network gets it: through the datamodule's batch hooks."""
    return [dm.on_after_batch_transfer(dm.transfer_batch_to_device(b, CPU, 0), 0) for b in loader]


def folder(root: Path, files: dict[str, bytes]) -> Path:
    """root/{train,val}/<class>/<name> holding the given encoded files, in both splits."""
    for split in ("train", "val"):
        for name, data in files.items():
            path = root / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def jpeg(image: torch.Tensor) -> bytes:
    return encode_jpeg(image, quality=90).numpy().tobytes()


def pil_bytes(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, quality=90) if fmt == "JPEG" else image.save(out, fmt)
    return out.getvalue()


SMALL = {
    "num_classes": 2,
    "image_size": 32,
    "resize_range": [36, 60],
    "val_resize": 36,
    "num_workers": 0,
    "pin_memory": False,
}


def photo_folder(root: Path) -> Path:
    """Landscape, portrait and square photos of different sizes, JPEG, two classes."""
    sizes = [(45, 60), (60, 45), (50, 50), (48, 72)]
    files = {f"c{k % 2}/{k}.JPEG": jpeg(photo(h, w, k % 2)) for k, (h, w) in enumerate(sizes)}
    return folder(root, files)


# ----------------------------------------------------------------------------- configuration


def test_decode_must_be_a_known_choice(tmp_path):
    root = write_image_tree(tmp_path, per_class=1, height=8, width=8)
    with pytest.raises(ConfigError, match="data.decode='gpu' is not one of cpu, device, auto"):
        ImageNetDataModule(root, decode="gpu", **SMALL)


def test_auto_decodes_on_the_cpu_without_a_cuda_trainer(tmp_path):
    root = write_image_tree(tmp_path, per_class=1, height=8, width=8)
    assert ImageNetDataModule(root, **SMALL).decode_on == "cpu"


# ----------------------------------------------------------------------------- evaluation pixels


def test_evaluation_and_ten_crop_pixels_are_the_same_on_both_paths(tmp_path):
    root = photo_folder(tmp_path)
    made = {}
    for decode in ("cpu", "device"):
        dm = ImageNetDataModule(root, batch_size=3, ten_crop_test=True, decode=decode, **SMALL)
        dm.setup("fit")
        dm.setup("test")
        made[decode] = [*batches(dm, dm.val_dataloader()), *batches(dm, dm.test_dataloader())]
    assert len(made["cpu"]) == 4  # two val batches, two ten-crop test batches
    for (cpu_images, cpu_labels), (device_images, device_labels) in zip(made["cpu"], made["device"], strict=True):
        # The same decoder and the same resize on the CPU: equal to the bit (on CUDA, nvJPEG's
        # IDCT and CUDA's resize may differ by a few uint8 levels; see the README).
        assert torch.equal(cpu_images, device_images) and torch.equal(cpu_labels, device_labels)
    assert made["device"][2][0].shape == (3, 10, 3, 32, 32)


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_the_test_loader_follows_ten_crop_test_as_it_is_when_made(tmp_path, decode):
    """task=eval scores the centre crop, then sets ten_crop_test and tests again."""
    dm = ImageNetDataModule(photo_folder(tmp_path), batch_size=4, decode=decode, **SMALL)
    dm.setup("test")
    assert batches(dm, dm.test_dataloader())[0][0].shape == (4, 3, 32, 32)
    dm.ten_crop_test = True
    assert batches(dm, dm.test_dataloader())[0][0].shape == (4, 10, 3, 32, 32)


# ----------------------------------------------------------------------------- training distributions


def ramp_png(height: int, width: int) -> bytes:
    """R = column, G = row, B = 128: every pixel says where it came from (PNG: lossless)."""
    columns = torch.arange(width, dtype=torch.uint8).expand(height, width)
    rows = torch.arange(height, dtype=torch.uint8)[:, None].expand(height, width)
    image = torch.stack([columns, rows, torch.full((height, width), 128, dtype=torch.uint8)])
    return encode_png(image).numpy().tobytes()


def geometry(images: torch.Tensor, dm: ImageNetDataModule, short: int) -> dict[str, np.ndarray]:
    """From crops of a ramp image: the shorter side it was resized to, the crop's centre in
    source pixels, and whether it was mirrored."""
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    pixels = (images * std + mean) * 255
    size = images.shape[-1]
    x = pixels[:, 0].mean(1)  # (B, S): the source column of each output column
    y = pixels[:, 1].mean(2)  # (B, S): the source row of each output row
    inner = slice(2, size - 2)  # away from the edges, where the resize filter is clamped
    slope_x = (x[:, inner][:, -1] - x[:, inner][:, 0]) / (size - 5)
    slope_y = (y[:, inner][:, -1] - y[:, inner][:, 0]) / (size - 5)
    return {
        "shorter_side": (short / slope_y.abs()).numpy(),  # source pixels per output pixel = 1/scale
        "centre_x": x.mean(1).numpy(),
        "centre_y": y.mean(1).numpy(),
        "flipped": (slope_x < 0).numpy(),
    }


def cpu_path_draws(dm: ImageNetDataModule, data: bytes, count: int) -> torch.Tensor:
    """`count` independent draws of the cpu path's training transform on one image."""
    transform = dm.train_transform()
    image = decode_rgb(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    return torch.stack([transform(image) for _ in range(count)])


def device_path_batches(dm: ImageNetDataModule, data: bytes, batch: int, count: int) -> list[torch.Tensor]:
    """`count` device-path training batches, each holding `batch` copies of one image, so every
    difference within a batch comes from parameters drawn per image."""
    items = [(data, 0, "ramp.JPEG")] * batch
    return [dm.on_after_batch_transfer(collate_encoded(items, kind=TRAIN), 0)[0] for _ in range(count)]


def test_training_geometry_has_the_same_distribution_on_both_paths_drawn_per_image(tmp_path):
    # Large against the crop, so that rounding boxes to whole source pixels is a small effect.
    height, width = 150, 200
    data = ramp_png(height, width)
    root = folder(tmp_path, {"a/0.JPEG": data, "b/0.JPEG": data})
    dm = ImageNetDataModule(root, decode="device", color_jitter=0.0, **SMALL)
    torch.manual_seed(0)
    cpu = geometry(cpu_path_draws(dm, data, 320), dm, height)
    device_batches = [geometry(b, dm, height) for b in device_path_batches(dm, data, 64, 5)]
    device = {key: np.concatenate([b[key] for b in device_batches]) for key in cpu}
    low, high = SMALL["resize_range"]
    for name, draws in (("cpu", cpu), ("device", device)):
        sides = draws["shorter_side"]
        assert low - 2 < sides.min() and sides.max() < high + 2, name
        # Uniform over the range: a quarter of the draws in each quarter of it.
        quarters = np.histogram(sides, bins=4, range=(low - 0.5, high + 0.5))[0] / len(sides)
        assert np.all(np.abs(quarters - 0.25) < 0.08), (name, quarters)
        assert abs(draws["flipped"].mean() - 0.5) < 0.1, name
    for key in ("shorter_side", "centre_x", "centre_y"):
        assert stats.ks_2samp(cpu[key], device[key]).pvalue > 0.001, key
    # Drawn per image: within one batch of copies the draws spread as they do across batches.
    for batch in device_batches:
        assert len(np.unique(np.round(batch["shorter_side"]))) > 8
        assert 0.2 < batch["flipped"].mean() < 0.8
        for key in ("shorter_side", "centre_x", "centre_y"):
            assert stats.ks_2samp(batch[key], cpu[key]).pvalue > 1e-4, key


def test_batched_colour_adjustment_is_torchvisions_per_image():
    images = torch.rand(6, 3, 8, 8)
    factors = torch.empty(6, 3).uniform_(0.6, 1.4)
    order = torch.rand(6, 3).argsort(1)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for image, batched, image_factors, image_order in zip(
        images, adjust_colours(images, factors, order), factors, order
    ):
        for op in image_order.tolist():
            image = adjust[op](image, float(image_factors[op]))
        torch.testing.assert_close(batched, image)


def test_colour_jitter_has_the_same_distribution_on_both_paths_drawn_per_image(tmp_path):
    data = jpeg(photo(60, 80))
    root = folder(tmp_path, {"a/0.JPEG": data, "b/0.JPEG": data})
    dm = ImageNetDataModule(root, decode="device", color_jitter=0.4, **SMALL)
    torch.manual_seed(0)

    def colour(images: torch.Tensor) -> dict[str, np.ndarray]:
        channel_means = images.mean((2, 3))
        return {
            "red": channel_means[:, 0].numpy(),
            "green": channel_means[:, 1].numpy(),
            "blue": channel_means[:, 2].numpy(),
            "contrast": images.std((1, 2, 3)).numpy(),
            "saturation": (images - images.mean(1, keepdim=True)).abs().mean((1, 2, 3)).numpy(),
        }

    cpu = colour(cpu_path_draws(dm, data, 320))
    device_batches = [colour(b) for b in device_path_batches(dm, data, 64, 5)]
    for key in cpu:
        device = np.concatenate([b[key] for b in device_batches])
        assert stats.ks_2samp(cpu[key], device).pvalue > 0.001, key
        for batch in device_batches:  # per image: a single batch spreads like all of them
            assert stats.ks_2samp(batch[key], cpu[key]).pvalue > 1e-4, key
    # Without jitter, the colour statistics spread far less: the test above sees the jitter.
    still = ImageNetDataModule(root, decode="device", color_jitter=0.0, **SMALL)
    plain = colour(device_path_batches(still, data, 64, 1)[0])
    assert plain["contrast"].std() < 0.5 * cpu["contrast"].std()


# ----------------------------------------------------------------------------- odd files


def test_grayscale_cmyk_and_a_png_named_jpeg_become_rgb_on_both_paths(tmp_path):
    picture = Image.fromarray(photo(40, 56).permute(1, 2, 0).numpy())
    files = {
        "a/gray.JPEG": pil_bytes(picture.convert("L"), "JPEG"),
        "a/cmyk.JPEG": pil_bytes(picture.convert("CMYK"), "JPEG"),
        "b/png.JPEG": pil_bytes(picture, "PNG"),
        "b/rgb.JPEG": pil_bytes(picture, "JPEG"),
    }
    root = folder(tmp_path, files)
    for name, data in files.items():
        expected = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
        decoded = decode_rgb(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        assert decoded.shape == (3, 40, 56) and (decoded.int() - expected.int()).abs().max() <= 2, name
    made = {}
    for decode in ("cpu", "device"):
        dm = ImageNetDataModule(root, batch_size=4, decode=decode, **SMALL)
        dm.setup("fit")
        made[decode] = batches(dm, dm.val_dataloader())
        train_images, _ = batches(dm, dm.train_dataloader())[0]
        assert train_images.shape == (4, 3, 32, 32) and dm.job_facts()["data/skipped_images"] == 0
    assert torch.equal(made["cpu"][0][0], made["device"][0][0])


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_an_undecodable_image_is_skipped_counted_and_named_in_one_line(tmp_path, caplog, decode):
    picture = photo(40, 56)
    files = {
        "a/0.JPEG": jpeg(picture),
        "a/broken.JPEG": jpeg(picture)[:200] + b"\x00" * 64,  # a truncated download
        "b/png.JPEG": encode_png(picture).numpy().tobytes(),  # makes a batched decode fail too
        "b/1.JPEG": jpeg(picture.flip(-1)),
    }
    root = folder(tmp_path, files)
    dm = ImageNetDataModule(root, batch_size=4, decode=decode, **SMALL)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING):
        ((images, labels),) = batches(dm, dm.val_dataloader())
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 1, 1]
    lines = [r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(lines) == 1 and str(root / "val" / "a" / "broken.JPEG") in lines[0]
    facts = dm.job_facts()
    assert facts["data/skipped_images"] == 1
    # The PNG and the broken file make the batched decode fail: the batch was decoded image by image.
    assert facts["data/per_image_decoded_batches"] == (1 if decode == "device" else 0)


# ----------------------------------------------------------------------------- through the CLI


def results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


@pytest.mark.slow
def test_device_decoding_trains_and_checkpoints_score_the_same_on_either_path(train, tmp_path):
    """A run with data.decode=device trains and evaluates on a JPEG folder on the CPU; its
    checkpoint scored with decode=cpu gives its own test error, and the other way round."""
    root = write_image_tree(tmp_path / "imagenet", per_class=3, height=40, width=50)
    (root / "train" / "n01" / "broken.JPEG").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    data = [
        "data=imagenet",
        f"data.root={root}",
        "data.num_classes=2",
        "data.image_size=32",
        "data.val_resize=36",
        "data.resize_range=[36,44]",
        "data.batch_size=7",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "model.depth=8",
        "logger=csv",
        "trainer.max_steps=3",
    ]
    for trained_with, scored_with in (("device", "cpu"), ("cpu", "device")):
        run = f"trained_{trained_with}"
        train(*data, f"data.decode={trained_with}", f"hydra.run.dir={run}")
        trained = results(tmp_path / run)
        assert trained["status"] == "completed" and trained["steps"] == 3
        assert trained["data/skipped_images"] == 3  # the broken file, in each of the 3 epochs
        train(
            *data,
            f"data.decode={scored_with}",
            "task=eval",
            f"ckpt_path={tmp_path}/{run}/checkpoints/last.ckpt",
            f"hydra.run.dir=scored_{scored_with}",
        )
        scored = results(tmp_path / f"scored_{scored_with}")
        assert scored["metrics"]["test/err"] == trained["metrics"]["test/err"]
        assert scored["metrics"]["test/loss"] == trained["metrics"]["test/loss"]


# ----------------------------------------------------------------------------- on a GPU

GPU_TESTS_DEVICE = torch.device("cuda" if os.environ.get("RESLAB_GPU_TESTS_ON", "gpu") == "gpu" else "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(GPU_TESTS_DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_batches_decode_there_and_evaluate_within_two_levels_of_the_cpu_path(tmp_path):
    """nvJPEG and CUDA's resize against libjpeg-turbo and the CPU's: the stated tolerance is a mean
    absolute difference of at most 2 uint8 levels per pixel. Odd files decode or are skipped."""
    picture = Image.fromarray(photo(90, 120).permute(1, 2, 0).numpy())
    files = {f"c{k % 2}/{k}.JPEG": jpeg(photo(90 + 10 * k, 120, k % 2)) for k in range(6)}
    files["c0/cmyk.JPEG"] = pil_bytes(picture.convert("CMYK"), "JPEG")
    files["c1/png.JPEG"] = pil_bytes(picture, "PNG")
    files["c1/broken.JPEG"] = files["c0/0.JPEG"][:300]
    root = folder(tmp_path, files)
    made = {}
    for decode, device in (("cpu", CPU), ("device", GPU_TESTS_DEVICE)):
        dm = ImageNetDataModule(
            root, batch_size=9, decode=decode, **{**SMALL, "image_size": 64, "resize_range": [72, 96], "val_resize": 72}
        )
        dm.setup("fit")
        ((images, labels),) = [
            dm.on_after_batch_transfer(dm.transfer_batch_to_device(b, device, 0), 0) for b in dm.val_dataloader()
        ]
        assert images.device.type == device.type and images.shape == (8, 3, 64, 64)
        made[decode] = (images.cpu(), labels.cpu())
        train_images, _ = dm.on_after_batch_transfer(
            dm.transfer_batch_to_device(next(iter(dm.train_dataloader())), device, 0), 0
        )
        assert train_images.device.type == device.type and train_images.dtype == torch.float32
        assert dm.job_facts()["data/skipped_images"] == 2  # the broken file, in val and in train
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    difference = ((made["cpu"][0] - made["device"][0]) * std * 255).abs()
    assert torch.equal(made["cpu"][1], made["device"][1]) and difference.mean() <= 2.0
