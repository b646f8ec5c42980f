"""ImageNet (or any image-folder data set) with the paper's recipe (section 3.4).

Layout: `root`/train/<class>/*.JPEG and `root`/val/<class>/*.JPEG, the same class folders in
both (the 50k raw val images must first be sorted into class folders). The test split is the
val set: the paper reports ImageNet val error.

Training images: shorter side resized to a random size in `resize_range` ([256, 480]), random
`image_size` (224) crop, horizontal flip, colour augmentation, normalisation. The paper uses
AlexNet's PCA lighting noise; ColorJitter(brightness, contrast, saturation = `color_jitter`)
stands in for it, as in fb.resnet.torch and torchvision's recipes. The paper subtracts the
per-pixel mean; here each channel is normalised by the usual ImageNet mean/std, which for a
network with BN after its first conv amounts to the same.

Evaluation: shorter side resized to `val_resize` (256), centre `image_size` crop. With
`ten_crop_test: true` the test batches are (B, 10, C, H, W): four corners and the centre, each
also mirrored; the LightningModule averages the logits over dim 1 when its input is 5-D.

Where images are decoded and augmented (`decode`: cpu, device or auto) is told in the README's
"Image folders"; the `device` path's batch work is reslab.data.image_batches. Every batch reaches
the network through `FolderBatch.to` and the datamodule's `on_after_batch_transfer` hook.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from reslab.data.image_batches import (
    EVAL,
    TEN_CROP,
    TRAIN,
    BatchDecoder,
    DecodedImageFolder,
    EncodedImageFolder,
    FolderBatch,
    collate_decoded,
    collate_encoded,
    eval_batch,
    ten_crop_batch,
    train_batch,
)
from reslab.data.in_memory import check_data_root, drop_short_last_batch
from reslab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = (
    "data.root/train/<class>/*.JPEG and data.root/val/<class>/*.JPEG "
    "(one folder per class, the same class names in both)"
)
DECODE_CHOICES = ("cpu", "device", "auto")


def stack_crops(crops: Sequence[Tensor]) -> Tensor:
    """TenCrop's tuple of crops as one (10, C, H, W) tensor, so batches collate to (B, 10, C, H, W)."""
    return torch.stack(list(crops))


class ImageNetDataModule(L.LightningDataModule):
    """Image folders read by worker processes, decoded and augmented there (`decode: cpu`) or as
    whole batches on the training device (`decode: device`).

    Attributes the training script may read: `num_classes`, `input_shape` (C, H, W), and after
    `setup()`: `num_train`. `batch_size` and `eval_batch_size` are per device under DDP; with
    ten-crop testing a test batch holds 10 x eval_batch_size crops.
    """

    def __init__(
        self,
        root: str,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        resize_range: Sequence[int] = (256, 480),
        val_resize: int = 256,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        augment: bool = True,
        color_jitter: float = 0.4,
        ten_crop_test: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        decode: str = "auto",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        if in_channels != 3:
            raise ConfigError(f"data.in_channels={in_channels!r}: images are decoded as RGB, so it must be 3.")
        self.image_size = image_size
        self.input_shape = (3, self.image_size, self.image_size)
        self.resize_range = self.check_resize_range(resize_range)
        self.val_resize = val_resize
        if self.val_resize < self.image_size:
            raise ConfigError(
                f"data.val_resize={val_resize} is smaller than data.image_size={image_size}; the crop must fit."
            )
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        if not isinstance(augment, bool):
            raise ConfigError(f"data.augment={augment!r} must be true or false for image folders.")
        self.augment = augment
        self.color_jitter = float(color_jitter)
        self.ten_crop_test = bool(ten_crop_test)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"data.mean={mean!r} and data.std={std!r} need 3 values each, std > 0.")
        if decode not in DECODE_CHOICES:
            raise ConfigError(f"data.decode={decode!r} is not one of {', '.join(DECODE_CHOICES)}.")
        self.decode = decode
        self.root = check_data_root(root)
        self.classes = self.check_layout()
        self.decoder = BatchDecoder()
        self.train_set: ImageFolder | None = None
        self.val_set: ImageFolder | None = None
        self.test_set: ImageFolder | None = None

    # --- validation before any work: folder layout and class count, no file scan

    def check_resize_range(self, resize_range: Sequence[int]) -> tuple[int, int]:
        low, high = resize_range
        if not self.image_size <= low <= high:
            raise ConfigError(
                f"data.resize_range={list(resize_range)} must satisfy data.image_size ({self.image_size}) <= min <= max."
            )
        return low, high

    def check_layout(self) -> list[str]:
        split_classes = {}
        for split in ("train", "val"):
            folder = self.root / split
            found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir()) if folder.is_dir() else []
            if not found:
                raise ConfigError(
                    f"image folder data set not found: data.root={self.root} has no class folders under "
                    f"{split}/. Expected {LAYOUT}."
                )
            split_classes[split] = found
        if split_classes["train"] != split_classes["val"]:
            only_train = sorted(set(split_classes["train"]) - set(split_classes["val"]))[:5]
            only_val = sorted(set(split_classes["val"]) - set(split_classes["train"]))[:5]
            raise ConfigError(
                f"data.root={self.root}: train/ and val/ hold different class folders (only in train: {only_train}, "
                f"only in val: {only_val}). Expected {LAYOUT}."
            )
        if len(split_classes["train"]) != self.num_classes:
            raise ConfigError(
                f"data.num_classes={self.num_classes} but data.root={self.root}/train holds "
                f"{len(split_classes['train'])} class folders; set data.num_classes={len(split_classes['train'])}."
            )
        return split_classes["train"]

    # --- transforms

    def normalize(self) -> list:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def train_transform(self) -> v2.Compose:
        if not self.augment:
            return self.eval_transform()
        low, high = self.resize_range
        colour = [v2.ColorJitter(self.color_jitter, self.color_jitter, self.color_jitter)] if self.color_jitter else []
        return v2.Compose(
            [
                v2.RandomShortestSize(list(range(low, high + 1)), antialias=True),
                v2.RandomCrop(self.image_size),
                v2.RandomHorizontalFlip(),
                *colour,
                *self.normalize(),
            ]
        )

    def eval_transform(self) -> v2.Compose:
        return v2.Compose(
            [v2.Resize(self.val_resize, antialias=True), v2.CenterCrop(self.image_size), *self.normalize()]
        )

    def ten_crop_transform(self) -> v2.Compose:
        return v2.Compose(
            [
                v2.Resize(self.val_resize, antialias=True),
                v2.TenCrop(self.image_size),
                stack_crops,  # a plain callable: v2.Lambda would see the ten crops one by one
                *self.normalize(),
            ]
        )

    def test_transform(self) -> v2.Compose:
        return self.ten_crop_transform() if self.ten_crop_test else self.eval_transform()

    # --- where images are decoded

    @property
    def decode_on(self) -> str:
        """`cpu` or `device`: `auto` is `device` on a CUDA trainer, else `cpu`."""
        if self.decode != "auto":
            return self.decode
        trainer = self.trainer
        return "device" if trainer is not None and trainer.strategy.root_device.type == "cuda" else "cpu"

    def job_facts(self) -> dict[str, Any]:
        """For the job's record: the images skipped because they could not be decoded, and the
        batches whose batched decode failed and that were decoded image by image."""
        return {
            "data/skipped_images": self.decoder.skipped,
            "data/per_image_decoded_batches": self.decoder.per_image_batches,
        }

    # --- Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_set is None:
            self.train_set = self.image_folder("train", self.train_transform())
        if stage in ("fit", "validate", None) and self.val_set is None:
            self.val_set = self.image_folder("val", self.eval_transform())
        if stage in ("test", None) and self.test_set is None:
            self.test_set = self.image_folder("val", self.test_transform())

    def image_folder(self, split: str, transform: v2.Compose) -> ImageFolder:
        folder = str(self.root / split)
        try:
            return EncodedImageFolder(folder) if self.decode_on == "device" else DecodedImageFolder(folder, transform)
        except FileNotFoundError as error:  # a class folder without any image file
            raise ConfigError(f"data.root={self.root}: {error}. Expected {LAYOUT}.") from error

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A FolderBatch on its device to (images, labels): decoded and augmented here on the
        `device` path, as the workers made it on the `cpu` path."""
        if not isinstance(batch, FolderBatch):
            return batch
        for path in batch.skipped:
            self.decoder.note_skipped(path, "in a DataLoader worker")
        images, labels = batch.images, batch.labels
        if batch.encoded is not None:
            device = labels.device
            decoded = self.decoder.decode(batch.files(), batch.paths, device)
            kept = [index for index, image in enumerate(decoded) if image is not None]
            if len(kept) < len(decoded):
                labels = labels.index_select(0, torch.tensor(kept, dtype=torch.long).to(device, non_blocking=True))
            images = self.transform_batch([decoded[index] for index in kept], batch.kind) if kept else None
        if images is None:
            files = (batch.skipped or batch.paths)[:3]
            raise RuntimeError(f"no image of a batch could be decoded (files: {files}); check the data set")
        return images, labels

    def transform_batch(self, images: list[Tensor], kind: str) -> Tensor:
        if kind == TRAIN and self.augment:
            return train_batch(images, self.image_size, self.resize_range, self.color_jitter, self.mean, self.std)
        if kind == TEN_CROP:
            return ten_crop_batch(images, self.image_size, self.val_resize, self.mean, self.std)
        return eval_batch(images, self.image_size, self.val_resize, self.mean, self.std)

    @property
    def num_train(self) -> int | None:
        return None if self.train_set is None else len(self.train_set)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.require(self.train_set, "train"), self.batch_size, TRAIN)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.require(self.val_set, "val"), self.eval_batch_size, EVAL)

    def test_dataloader(self) -> DataLoader:
        test_set = self.require(self.test_set, "test")
        # ten_crop_test may change between two test runs (task=eval scores both ways).
        if test_set.transform is not None:
            test_set.transform = self.test_transform()
        return self.loader(test_set, self.eval_batch_size, TEN_CROP if self.ten_crop_test else EVAL)

    def require(self, dataset: ImageFolder | None, name: str) -> ImageFolder:
        if dataset is None:
            raise RuntimeError(f"call setup() before asking ImageNetDataModule for its {name} data")
        return dataset

    def loader(self, dataset: ImageFolder, batch_size: int, kind: str) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        train = kind == TRAIN
        collate = collate_encoded if isinstance(dataset, EncodedImageFolder) else collate_decoded
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and drop_short_last_batch(len(dataset), batch_size, world_size),
            num_workers=self.num_workers,
            collate_fn=functools.partial(collate, kind=kind),
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
        )
