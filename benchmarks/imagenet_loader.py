"""Images/s per core of the ImageNet input pipeline on this CPU, `data.decode=cpu` against
`data.decode=device`.

    python benchmarks/imagenet_loader.py                         # 3 interleaved repeats
    python benchmarks/imagenet_loader.py --repeats 5 --json benchmarks/results/imagenet_loader_2cpu.json

The folder is built from real photos: scikit-learn's two sample photos (427 x 640), cut at
random places and scales into 500 x 375 and 375 x 500 JPEGs of quality 90 (about ImageNet's
typical size and file size), `--images` of them in two classes. One process, one thread
(`num_workers=0`, torch.set_num_threads(1)), so images/s is images/s per core. Measured, each
over at least `--seconds` and interleaved (cpu, device, cpu, device, ...):

- cpu DataLoader: the DataLoader of `decode: cpu`, i.e. what each worker process does per image
  (read, decode, resize, crop, flip, jitter, normalise);
- device DataLoader: the DataLoader of `decode: device`, i.e. what each worker does (read the
  bytes, collate them into one tensor). Goal: >= 4,000 images/s per core;
- device pipeline: the device DataLoader plus the training process's decode and augmentation
  (the datamodule's batch hooks), here on the CPU. Goal: not slower than the cpu DataLoader.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_sample_images
from torchvision.io import encode_jpeg
from torchvision.transforms.v2 import functional as TF

from reslab.data import ImageNetDataModule

CPU = torch.device("cpu")


def build_folder(root: Path, images: int, seed: int = 0) -> Path:
    """root/{train,val}/<photo>/*.JPEG: random crops of the two sample photos, 500x375 or
    375x500, JPEG quality 90. Reused when it already holds the files."""
    photos = [torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in load_sample_images().images]
    generator = torch.Generator().manual_seed(seed)
    for split, count in (("train", images), ("val", max(images // 8, 2))):
        for k in range(count):
            source = k % len(photos)
            path = root / split / f"photo{source}" / f"{k:06d}.JPEG"
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            photo = photos[source]
            height, width = (375, 500) if k % 4 else (500, 375)
            # A random window of the photo (60-100% of its shorter side), resized to the target.
            side = int(min(photo.shape[1:]) * (0.6 + 0.4 * float(torch.rand((), generator=generator))))
            crop_h, crop_w = (
                (side, int(side * width / height)) if width > height else (int(side * height / width), side)
            )
            crop_h, crop_w = min(crop_h, photo.shape[1]), min(crop_w, photo.shape[2])
            top = int(torch.randint(0, photo.shape[1] - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, photo.shape[2] - crop_w + 1, (), generator=generator))
            image = TF.resize(photo[:, top : top + crop_h, left : left + crop_w], [height, width], antialias=True)
            path.write_bytes(encode_jpeg(image.contiguous(), quality=90).numpy().tobytes())
    return root


def datamodule(root: Path, decode: str, batch_size: int) -> ImageNetDataModule:
    dm = ImageNetDataModule(
        root,
        num_classes=2,
        batch_size=batch_size,
        num_workers=0,
        pin_memory=False,
        persistent_workers=False,
        decode=decode,
    )
    dm.setup("fit")
    return dm


def images_per_s(dm: ImageNetDataModule, seconds: float, hooks: bool) -> float:
    """Images/s over whole epochs of the training loader, at least `seconds` long."""
    done, start = 0, time.perf_counter()
    while True:
        for batch in dm.train_dataloader():
            if hooks:
                dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, CPU, 0), 0)
            done += batch.labels.shape[0]
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


CASES = {
    "cpu DataLoader": ("cpu", True),  # the hook only unpacks the workers' batch
    "device DataLoader": ("device", False),
    "device pipeline": ("device", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="folder to build / reuse (default: a temporary one)")
    parser.add_argument("--images", type=int, default=256, help="training images in the folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="least time of one measurement")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.root or Path(tempfile.mkdtemp(prefix="reslab-imagenet-loader-"))
    build_folder(root, args.images)
    files = sorted((root / "train").rglob("*.JPEG"))
    mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
    command = " ".join(["python", "benchmarks/imagenet_loader.py", *sys.argv[1:]])
    print(f"$ {command}")
    print(f"{len(files)} training JPEGs in {root}, {mean_kb:.0f} KB on average; one process, one thread")
    modules = {name: datamodule(root, decode, args.batch_size) for name, (decode, _) in CASES.items()}
    rates: dict[str, list[float]] = {name: [] for name in CASES}
    images_per_s(modules["cpu DataLoader"], 0.5, hooks=True)  # warm the file cache and the imports
    for _ in range(args.repeats):
        for name, (_, hooks) in CASES.items():
            rates[name].append(images_per_s(modules[name], args.seconds, hooks))
    print(f"\n{'images/s per core':<20} {'median':>9} {'min':>9} {'max':>9}")
    for name, values in rates.items():
        print(f"{name:<20} {statistics.median(values):>9.0f} {min(values):>9.0f} {max(values):>9.0f}")
    cpu, device = statistics.median(rates["cpu DataLoader"]), statistics.median(rates["device pipeline"])
    loader = statistics.median(rates["device DataLoader"])
    print(f"\ndevice DataLoader: {loader:.0f} images/s per core (goal >= 4,000)")
    print(f"device pipeline / cpu DataLoader: {device / cpu:.2f} (goal >= 1.0)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "cpu": f"{os.cpu_count()} cores, one used",
                    "torch": torch.__version__,
                    "images": len(files),
                    "mean_kb": round(mean_kb, 1),
                    "batch_size": args.batch_size,
                    "images_per_s_per_core": {name: [round(v, 1) for v in values] for name, values in rates.items()},
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
