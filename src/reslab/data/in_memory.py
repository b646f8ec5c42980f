"""Shared base of the small data sets that live as tensors in memory (digits, CIFAR, MNIST, synthetic).

Loading: `setup()` reads the data once into (N, C, H, W) tensors (uint8, or float in [0, 1]),
splits off validation by seed, and, when a Trainer on an accelerator is attached, moves the
tensors to that device once. A batch is fetched with one `index_select` (`__getitems__`), so
DataLoader (and Lightning's DistributedSampler under DDP) works as usual but nothing is
collated per sample.

Per batch, in `on_after_batch_transfer` (so on the device): scale to [0, 1], normalise with
statistics of the training split, and, for training batches only, augment. Normalising comes
first, so the crop's zero padding is padding with the mean (as fb.resnet.torch does).
Lightning only calls this hook when the datamodule is given to `Trainer.fit/test(datamodule=...)`
and the LightningModule does not override the same hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from reslab.data.augment import (
    NORMALIZATIONS,
    augment_batch,
    normalization_stats,
    resolve_augmentation,
    to_unit_range,
)
from reslab.errors import ConfigError


@dataclass
class Split:
    """Images (N, C, H, W; uint8, or float in [0, 1]) with their int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def select(self, indices: Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


class TensorBatchDataset(Dataset):
    """A Split as a Dataset whose batched fetch is one index_select, not N item lookups."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.split.images[index], self.split.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        # DataLoader calls this with a whole batch of sampler indices when it exists.
        index = torch.as_tensor(indices, dtype=torch.long, device=self.split.labels.device)
        return self.split.images.index_select(0, index), self.split.labels.index_select(0, index)


def keep_batch(batch: Any) -> Any:
    """collate_fn for TensorBatchDataset: its batches are stacked already."""
    return batch


# ----------------------------------------------------------------------------- validation


def check_positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"data.{key}={value!r} must be a positive integer.")
    return int(value)


def check_non_negative_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ConfigError(f"data.{key}={value!r} must be an integer >= 0.")
    return int(value)


def check_fixed(key: str, value: Any, expected: Any, dataset: str) -> None:
    """Shape keys of a fixed data set must state its real shape (the model is built from them)."""
    if value != expected:
        raise ConfigError(
            f"data.{key}={value!r} does not match {dataset}, whose {key} is {expected}; "
            f"remove the override or set data.{key}={expected}."
        )


def check_data_root(root: Any) -> Path:
    if root is None or str(root).strip() == "":
        raise ConfigError("data.root is empty; set it to the folder that holds (or will hold) the data set.")
    return Path(root).expanduser().resolve()


def check_split_size(key: str, value: Any) -> int | float:
    """A split size is a count (int >= 0) or a fraction of the whole (0 < float < 1)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"data.{key}={value!r} must be a count (int >= 0) or a fraction in (0, 1).")
    if isinstance(value, Integral):
        return check_non_negative_int(key, value)
    if not 0.0 < value < 1.0:
        raise ConfigError(f"data.{key}={value!r}: a fraction must lie in (0, 1); use an int for a count.")
    return float(value)


def split_count(key: str, size: int | float, total: int, keep_at_least: int = 1) -> int:
    """The number of examples `size` (count or fraction) means out of `total`."""
    count = int(round(size * total)) if isinstance(size, float) else size
    if count > total - keep_at_least:
        raise ConfigError(
            f"data.{key}={size!r} asks for {count} of the {total} examples, leaving fewer than "
            f"{keep_at_least} for the rest; use a smaller data.{key}."
        )
    return count


def split_off(labels: Tensor, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (rest, held_out) with `count` held out, chosen by `seed`.

    Stratified (class proportions kept) whenever every class has two examples and the held-out
    part has room for each class; otherwise (tiny test data sets) a plain seeded random split.
    """
    indices = np.arange(labels.shape[0])
    if count == 0:
        return torch.from_numpy(indices), torch.from_numpy(indices[:0])
    y = labels.cpu().numpy()
    class_counts = np.bincount(y)
    present = class_counts[class_counts > 0]
    stratify = y if present.min() >= 2 and len(present) <= min(count, len(y) - count) else None
    rest, held = train_test_split(indices, test_size=count, random_state=seed, stratify=stratify)
    return torch.from_numpy(np.sort(rest)), torch.from_numpy(np.sort(held))


# ----------------------------------------------------------------------------- datamodule


class InMemoryDataModule(L.LightningDataModule):
    """Base of the in-memory datamodules; subclasses implement `load_splits()`.

    Attributes the training script may read: `num_classes`, `input_shape` (C, H, W), and after
    `setup()`: `num_train` (training examples, all devices together).
    """

    dataset_name = "data set"
    default_augmentation = "crop_flip"  # what `augment: true` means for this data set

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        batch_size: int,
        eval_batch_size: int | None,
        seed: int,
        normalize: str,
        augment: bool | str,
        crop_padding: int,
        num_workers: int,
        on_device: bool,
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else check_positive_int("eval_batch_size", eval_batch_size)
        )
        self.seed = check_non_negative_int("seed", seed)
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"data.normalize={normalize!r} is not known; use one of {', '.join(NORMALIZATIONS)}.")
        self.normalize = normalize
        self.augmentation = resolve_augmentation(augment, self.default_augmentation)
        self.crop_padding = check_non_negative_int("crop_padding", crop_padding)
        self.num_workers = check_non_negative_int("num_workers", num_workers)
        self.on_device = bool(on_device)
        self.input_shape = (self.in_channels, self.image_size, self.image_size)
        self.splits: dict[str, Split] | None = None
        self.norm_mean: Tensor | None = None
        self.norm_std: Tensor | None = None

    # --- what a subclass provides

    def load_splits(self) -> dict[str, Split]:
        """Read the data: {'train': ..., 'val': ..., 'test': ...}; 'val' may be missing (then test)."""
        raise NotImplementedError

    # --- Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            splits = self.load_splits()
            for name, split in splits.items():
                self.check_matches_config(name, split)
            splits.setdefault("val", splits["test"])
            self.norm_mean, self.norm_std = normalization_stats(splits["train"].images, self.normalize)
            self.splits = splits
        self.move_to(self.target_device())

    @property
    def num_train(self) -> int | None:
        return None if self.splits is None else len(self.splits["train"])

    def train_dataloader(self) -> DataLoader:
        train = self.require_split("train")
        # A full last batch only where there is one: tiny data sets must still give a batch.
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return self.loader(train, self.batch_size, shuffle=True, drop_last=len(train) >= self.batch_size * world_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.require_split("val"), self.eval_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.require_split("test"), self.eval_batch_size, shuffle=False, drop_last=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        training = self.trainer is not None and self.trainer.training
        return self.transform_batch(batch, train=training)

    # --- the per-batch pipeline

    def transform_batch(self, batch: tuple[Tensor, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        """Scale to [0, 1], normalise, and (train only) augment a batch (images, labels)."""
        if self.norm_mean is None:
            raise RuntimeError("call setup() before transforming batches: the normalisation needs the training split")
        images, labels = batch
        images = to_unit_range(images)
        images = (images - self.norm_mean.to(images.device)) / self.norm_std.to(images.device)
        if train:
            images = augment_batch(images, self.augmentation, self.crop_padding)
        return images, labels

    # --- helpers

    def check_matches_config(self, split_name: str, split: Split) -> None:
        shape = tuple(split.images.shape[1:])
        if split.images.ndim != 4 or shape != self.input_shape:
            raise ConfigError(
                f"{self.dataset_name} {split_name} images are {shape} (C, H, W) but data.in_channels="
                f"{self.in_channels} and data.image_size={self.image_size} say {self.input_shape}; "
                "set those keys to the data's shape."
            )
        if len(split) and (int(split.labels.min()) < 0 or int(split.labels.max()) >= self.num_classes):
            raise ConfigError(
                f"{self.dataset_name} {split_name} labels span {int(split.labels.min())}..{int(split.labels.max())} "
                f"but data.num_classes={self.num_classes}; set data.num_classes to the number of classes."
            )

    def trainer_device(self) -> torch.device:
        return torch.device("cpu") if self.trainer is None else self.trainer.strategy.root_device

    def target_device(self) -> torch.device:
        """Where the tensors live: the Trainer's device when `on_device`, else the CPU."""
        return self.trainer_device() if self.on_device else torch.device("cpu")

    def move_to(self, device: torch.device) -> None:
        assert self.splits is not None
        if self.splits["train"].images.device == device:
            return
        moved = {id(split): split.to(device) for split in self.splits.values()}  # val may be test
        self.splits = {name: moved[id(split)] for name, split in self.splits.items()}
        self.norm_mean, self.norm_std = self.norm_mean.to(device), self.norm_std.to(device)

    def require_split(self, name: str) -> Split:
        if self.splits is None:
            raise RuntimeError(f"call setup() before asking {type(self).__name__} for its {name} data")
        return self.splits[name]

    def loader(self, split: Split, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        on_cpu = split.images.device.type == "cpu"
        # Worker processes cannot slice tensors that live on a GPU; there is no work to spread then.
        workers = self.num_workers if on_cpu else 0
        return DataLoader(
            TensorBatchDataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            collate_fn=keep_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=on_cpu and self.trainer_device().type == "cuda",
        )
