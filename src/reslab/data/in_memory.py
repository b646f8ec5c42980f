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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
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

log = logging.getLogger(__name__)


@dataclass
class Split(Dataset):
    """Images (N, C, H, W; uint8, or float in [0, 1]) with their int64 labels (N,), as a Dataset
    whose batched fetch is one index_select, not N item lookups."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def select(self, indices: Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        # DataLoader calls this with a whole batch of sampler indices when it exists.
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.labels.is_cuda:
            # From pinned memory without blocking: a plain host-to-GPU copy waits for all the
            # work queued on the GPU, once per batch.
            index = index.pin_memory().to(self.labels.device, non_blocking=True)
        return self.images.index_select(0, index), self.labels.index_select(0, index)


def keep_batch(batch: Any) -> Any:
    """collate_fn for a Split: its batches are stacked already."""
    return batch


def drop_short_last_batch(num_train: int, batch_size: int, world_size: int) -> bool:
    """Whether the training loader drops its short last batch: only where every device gets a
    full one. A batch larger than the training split is allowed, and said: each step then
    trains on the whole split (full-batch gradient descent), one step per epoch."""
    if num_train >= batch_size * world_size:
        return True
    if rank_zero_only.rank == 0:
        devices = f" x {world_size} devices" if world_size > 1 else ""
        log.warning(
            "data.batch_size=%d%s is more than the %d training examples: every step trains on all of "
            "them, one step per epoch; lower data.batch_size for smaller batches",
            batch_size,
            devices,
            num_train,
        )
    return False


# ----------------------------------------------------------------------------- validation


def check_data_root(root: Any) -> Path:
    if root is None or str(root).strip() == "":
        raise ConfigError("data.root is empty; set it to the folder that holds (or will hold) the data set.")
    return Path(root).expanduser().resolve()


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


class DataShape(NamedTuple):
    """What the model is built from: classes, and the images' channels and height (= width)."""

    num_classes: int
    in_channels: int
    image_size: int


class InMemoryDataModule(L.LightningDataModule):
    """Base of the in-memory datamodules; subclasses implement `load_splits()`.

    Its arguments are the ones every in-memory data set shares, stated here once: a subclass
    takes its own arguments and passes the rest on (`**shared`), restating only a default that
    differs for its data set. For a data set of `fixed_shape`, the shape keys default to it and
    must state it (the model is built from them).

    Attributes the training script may read: `num_classes`, `input_shape` (C, H, W), and after
    `setup()`: `num_train` (training examples, all devices together).
    """

    dataset_name = "data set"
    default_augmentation = "crop_flip"  # what `augment: true` means for this data set
    fixed_shape: DataShape | None = None  # None: the shape keys choose the shape

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        in_channels: int | None = None,
        image_size: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        seed: int = 0,
        normalize: str = "per_channel",
        augment: bool | str = False,
        crop_padding: int = 4,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.image_size = self.checked_shape(
            DataShape(num_classes, in_channels, image_size)
        )
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.seed = seed
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"data.normalize={normalize!r} is not known; use one of {', '.join(NORMALIZATIONS)}.")
        self.normalize = normalize
        self.augmentation = resolve_augmentation(augment, self.default_augmentation)
        self.crop_padding = crop_padding
        self.num_workers = num_workers
        self.on_device = bool(on_device)
        self.input_shape = (self.in_channels, self.image_size, self.image_size)
        self.splits: dict[str, Split] | None = None
        self.norm_mean: Tensor | None = None
        self.norm_std: Tensor | None = None

    def checked_shape(self, given: DataShape) -> DataShape:
        """A data set of fixed shape fills in its own shape keys and refuses another: the model is
        built from them, so they must state the data's real shape."""
        if self.fixed_shape is None:
            return given
        for key, value in given._asdict().items():
            expected = getattr(self.fixed_shape, key)
            if value is not None and value != expected:
                raise ConfigError(
                    f"data.{key}={value!r} does not match {self.dataset_name}, whose {key} is {expected}; "
                    f"remove the override or set data.{key}={expected}."
                )
        return self.fixed_shape

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
        # The tensors live on the Trainer's device when `on_device`, else on the CPU.
        self.move_to(self.trainer_device() if self.on_device else torch.device("cpu"))

    @property
    def num_train(self) -> int | None:
        return None if self.splits is None else len(self.splits["train"])

    def train_dataloader(self) -> DataLoader:
        train = self.require_split("train")
        # A full last batch only where there is one: tiny data sets must still give a batch.
        world_size = self.trainer.world_size if self.trainer is not None else 1
        drop_last = drop_short_last_batch(len(train), self.batch_size, world_size)
        return self.loader(train, self.batch_size, shuffle=True, drop_last=drop_last)

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
            split,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            collate_fn=keep_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=on_cpu and self.trainer_device().type == "cuda",
        )


class TrainTestFilesDataModule(InMemoryDataModule):
    """A data set shipped as files of a training and a test set under `root` (CIFAR, MNIST).

    `download: true` fetches missing files in `prepare_data`; without it they must be there
    (checked at construction). Validation: `val_size` images (count or fraction) held out of
    the training set, stratified by `seed`; `val_size: 0` validates on the test set.
    Subclasses name their torchvision loader, the files (`files()`, relative to root) and
    read one set (`read(train)`).
    """

    torchvision_class: type  # the torchvision data set that reads (and downloads) the files

    def __init__(self, root: str, download: bool = False, val_size: int | float = 5000, **shared: Any) -> None:
        """`**shared`: the InMemoryDataModule arguments."""
        super().__init__(**shared)
        self.val_size = val_size
        self.root = check_data_root(root)
        self.download = bool(download)
        missing = [name for name in self.files() if not (self.root / name).is_file()]
        if missing and not self.download:
            raise ConfigError(
                f"{self.dataset_name} not found: data.root={self.root} lacks {', '.join(missing)}. "
                f"Set data.download=true to download it there, or point data.root at the folder that "
                f"holds {self.folder()}/."
            )

    # --- what a subclass provides

    def files(self) -> list[str]:
        """The files the loader reads, relative to root."""
        raise NotImplementedError

    def folder(self) -> str:
        """The folder under root that holds the files, as messages name it."""
        raise NotImplementedError

    def read(self, train: bool) -> Split:
        """The training (train=True) or test set."""
        raise NotImplementedError

    def loader_class(self) -> type:
        return self.torchvision_class

    # --- Lightning hooks

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            self.loader_class()(str(self.root), train=True, download=True)
        except Exception as error:  # network or disk: say where and what to do, once
            raise ConfigError(
                f"could not download {self.dataset_name} to data.root={self.root} ({error}); place the "
                f"extracted {self.folder()}/ there by hand and set data.download=false."
            ) from error

    def load_splits(self) -> dict[str, Split]:
        full_train, test = self.read(train=True), self.read(train=False)
        val_count = split_count("val_size", self.val_size, len(full_train))
        train_idx, val_idx = split_off(full_train.labels, val_count, self.seed)
        splits = {"train": full_train.select(train_idx), "test": test}
        if val_count:
            splits["val"] = full_train.select(val_idx)
        return splits
