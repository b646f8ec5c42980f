"""The ImageNet input pipeline on a GPU: decode + augment images/s, and ResNet-34 training on real
JPEGs against synthetic tensors. JSON out, rewritten after each measurement (a step cut short by
its time limit keeps what it measured).

    python benchmarks/gpu/imagenet_bench.py --json benchmarks/gpu/results/imagenet.json
    python benchmarks/gpu/imagenet_bench.py --json /tmp/imagenet.json --device cpu --tiny   # seconds, on a CPU

The folder: benchmarks/imagenet_loader.py's real photos (500 x 375 JPEGs, quality 90).

decode_augment  batches of `--batch` encoded JPEGs held in memory, through the datamodule's
                device path (`data.decode=device`): the batched nvJPEG decode alone, decode plus
                the training augmentation, decode plus the evaluation transform; images/s on one
                GPU, after warm-up. Goal: decode + augment >= 5,000 images/s per GPU.
training        two `reslab-train` runs of ResNet-34 (bf16-mixed, channels_last, batch `--batch`):
                synthetic 224 x 224 tensors held on the GPU, and the JPEG folder with
                `data.decode=device` and `data.num_workers` workers; images/s from each run's
                `throughput` record, and their ratio. Goal: real / synthetic >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imagenet_loader import build_folder  # noqa: E402  (the same folder of real photos)

from reslab.data import ImageNetDataModule  # noqa: E402
from reslab.data.image_batches import EVAL, TRAIN, collate_encoded  # noqa: E402
from reslab.job import read_results  # noqa: E402


class Report:
    """The JSON file, rewritten whenever a measurement is added."""

    def __init__(self, path: Path, facts: dict) -> None:
        self.path, self.data = path, {**facts, "decode_augment": {}, "training": {}}
        self.write()

    def add(self, section: str, name: str, value) -> None:
        self.data[section][name] = value
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(temporary, self.path)


def sizes(args) -> dict:
    if args.tiny:
        return {"image_size": 32, "resize_range": [36, 48], "val_resize": 36}
    return {"image_size": 224, "resize_range": [256, 480], "val_resize": 256}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_augment(args, root: Path, report: Report) -> None:
    device = torch.device(args.device)
    dm = ImageNetDataModule(root, num_classes=2, batch_size=args.batch, num_workers=0, decode="device", **sizes(args))
    files = sorted((root / "train").rglob("*.JPEG"))
    items = [(f.read_bytes(), 0, str(f)) for f in files]
    batches = [items[i : i + args.batch] for i in range(0, len(items) - args.batch + 1, args.batch)]

    def rate(kind: str, decode_only: bool) -> float:
        def one(batch) -> None:
            encoded = collate_encoded(batch, kind=kind).to(device)
            if decode_only:
                dm.decoder.decode(encoded.files(), encoded.paths, device)
            else:
                dm.on_after_batch_transfer(encoded, 0)

        for batch in batches[:2]:  # warm-up: nvJPEG's handles, cuDNN, the allocator
            one(batch)
        synchronize(device)
        done, start = 0, time.perf_counter()
        while done < args.decode_images:
            for batch in batches:
                one(batch)
                done += len(batch)
        synchronize(device)
        return done / (time.perf_counter() - start)

    for name, kind, decode_only in (
        ("decode", TRAIN, True),
        ("decode+train_augment", TRAIN, False),
        ("decode+eval_transform", EVAL, False),
    ):
        value = round(rate(kind, decode_only), 1)
        print(f"{name}: {value} images/s (batch {args.batch}, {args.device})", flush=True)
        report.add("decode_augment", name, value)
    report.add("decode_augment", "goal_images_per_s", 5000)


def reslab_train(overrides: list[str], cwd: Path, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "reslab.train", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"},
    )
    results = read_results(cwd / "job") or {}
    return {
        "status": results.get("status"),
        "error": results.get("error") or (proc.stderr[-2000:] if proc.returncode != 0 else None),
        "throughput": results.get("throughput") or {},
        "skipped_images": results.get("data/skipped_images"),
        "per_image_decoded_batches": results.get("data/per_image_decoded_batches"),
        "overrides": overrides,
    }


def training(args, root: Path, report: Report) -> None:
    size = sizes(args)
    steps = 4 if args.tiny else args.steps
    common = [
        "model=resnet",
        "model.depth=34",
        "model.style=imagenet",
        f"data.batch_size={args.batch}",
        f"trainer.max_steps={steps}",
        "test=false",
        "++trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "speed.channels_last=true",
        f"callbacks.throughput.skip_steps={1 if args.tiny else 10}",
        *(["trainer=gpu"] if args.device == "cuda" else ["trainer.accelerator=cpu", "optimizer.lr=0.001"]),
    ]
    cases = {
        "synthetic": [
            "data=synthetic",
            "data.num_classes=2",
            f"data.image_size={size['image_size']}",
            f"data.num_train={args.batch * 4}",
            "data.num_val=0",
            f"data.num_test={args.batch}",
        ],
        "real_jpeg": [
            "data=imagenet",
            f"data.root={root}",
            "data.num_classes=2",
            "data.decode=device",
            f"data.num_workers={args.workers}",
            *(f"data.{key}={value}".replace(" ", "") for key, value in size.items()),
        ],
    }
    rates = {}
    for name, data in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            run = reslab_train([*common, *data, f"hydra.run.dir={tmp}/job"], Path(tmp), args.run_timeout_s)
        rates[name] = run["throughput"].get("images_per_s")
        print(f"ResNet-34 on {name}: {rates[name]} images/s ({run['status']})", flush=True)
        report.add("training", name, run)
    if rates.get("synthetic") and rates.get("real_jpeg"):
        report.add("training", "real_over_synthetic", round(rates["real_jpeg"] / rates["synthetic"], 3))
    report.add("training", "goal_real_over_synthetic", 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="results file, rewritten as measurements come in")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="small sizes: the code path on a CPU in seconds")
    parser.add_argument("--root", type=Path, help="the photo folder to build / reuse (default: a temporary one)")
    parser.add_argument("--batch", type=int, help="batch size (default 256; 8 with --tiny)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--decode-images", type=int, help="images per decode measurement (default 5120)")
    parser.add_argument("--run-timeout-s", type=float, default=150.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["decode_augment", "training"])
    args = parser.parse_args()
    args.batch = args.batch or (4 if args.tiny else 256)
    args.decode_images = args.decode_images or (16 if args.tiny else 5120)
    if args.tiny:
        args.workers = 0
    root = args.root or Path(tempfile.mkdtemp(prefix="reslab-imagenet-bench-"))
    started = time.perf_counter()
    build_folder(root, images=args.batch * 2 if args.tiny else 1024)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    command = " ".join(["python", "benchmarks/gpu/imagenet_bench.py", *sys.argv[1:]])
    print(
        f"$ {command}\n{device}, torch {torch.__version__}; folder {root} built in {time.perf_counter() - started:.0f} s"
    )
    report = Report(
        args.json,
        {
            "benchmark": "imagenet",
            "command": command,
            "device": device,
            "torch": torch.__version__,
            "batch": args.batch,
            "tiny": args.tiny,
        },
    )
    if "decode_augment" not in args.skip:
        decode_augment(args, root, report)
    if "training" not in args.skip:
        training(args, root, report)


if __name__ == "__main__":
    main()
