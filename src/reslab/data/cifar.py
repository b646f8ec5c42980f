"""CIFAR-10 and CIFAR-100 as uint8 tensors, with the paper's recipe (section 4.2).

Files are read by torchvision's CIFAR10/CIFAR100 loaders from `root` (the folder holding
cifar-10-batches-py/ or cifar-100-python/); `download: true` fetches them in `prepare_data`.
Train/val: `val_size` images (default 5000, the paper's 45k/5k split) are held out of the 50k
training images, stratified by `seed`; `val_size: 0` trains on all 50k and validates on the 10k
test images (then val/* metrics are test metrics, as in the paper's Figure 6 curves).
Test: the 10k test images. Training batches: pad 4 + random 32x32 crop + horizontal flip;
per-pixel mean subtracted (the paper), all on the device.

Small stand-in data sets in the same file format (see `write_cifar_like`) fail torchvision's
MD5 checks; `verify_checksums: false` keeps torchvision's loader but checks only that the files
exist.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from reslab.data.in_memory import DataShape, Split, TrainTestFilesDataModule
from reslab.errors import ConfigError


def _without_checksums(dataset_cls: type[CIFAR10]) -> type[CIFAR10]:
    """The torchvision class with its MD5 sums dropped: check_integrity(path, None) = file exists."""
    return type(
        f"{dataset_cls.__name__}FilesOnly",
        (dataset_cls,),
        {
            "train_list": [[name, None] for name, _ in dataset_cls.train_list],
            "test_list": [[name, None] for name, _ in dataset_cls.test_list],
            "meta": {**dataset_cls.meta, "md5": None},
        },
    )


def dataset_files(dataset_cls: type[CIFAR10]) -> list[str]:
    """The files (relative to root) torchvision's loader reads."""
    names = [name for name, _ in dataset_cls.train_list + dataset_cls.test_list] + [dataset_cls.meta["filename"]]
    return [os.path.join(dataset_cls.base_folder, name) for name in names]


class CIFAR10DataModule(TrainTestFilesDataModule):
    """CIFAR-10 (3x32x32, 10 classes): 45k train / 5k val / 10k test by default.

    Its own arguments: `verify_checksums`, and the defaults of the paper's recipe (per-pixel
    mean, crop + flip); `root`, `download`, `val_size` and the rest are the shared ones
    (TrainTestFilesDataModule, InMemoryDataModule).
    """

    dataset_name = "CIFAR-10"
    torchvision_class = CIFAR10
    fixed_shape = DataShape(num_classes=10, in_channels=3, image_size=32)
    default_augmentation = "crop_flip"

    def __init__(
        self,
        root: str,
        verify_checksums: bool = True,
        normalize: str = "per_pixel_mean",
        augment: bool | str = True,
        **shared: Any,
    ) -> None:
        super().__init__(root, normalize=normalize, augment=augment, **shared)
        self.verify_checksums = bool(verify_checksums)

    def files(self) -> list[str]:
        return dataset_files(self.torchvision_class)

    def folder(self) -> str:
        return self.torchvision_class.base_folder

    def loader_class(self) -> type[CIFAR10]:
        cls = self.torchvision_class
        return cls if self.verify_checksums else _without_checksums(cls)

    def read(self, train: bool) -> Split:
        try:
            dataset = self.loader_class()(str(self.root), train=train, download=False)
        except RuntimeError as error:
            raise ConfigError(
                f"{self.dataset_name} files under data.root={self.root} failed torchvision's check ({error}). "
                "Set data.download=true to fetch clean files, or, for a small stand-in set in the same "
                "format, data.verify_checksums=false."
            ) from error
        images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
        return Split(images, torch.tensor(dataset.targets, dtype=torch.long))


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (3x32x32, 100 fine classes): same recipe, splits and arguments as CIFAR-10."""

    dataset_name = "CIFAR-100"
    torchvision_class = CIFAR100
    fixed_shape = DataShape(num_classes=100, in_channels=3, image_size=32)


def write_cifar_like(
    root: str | os.PathLike,
    n_train: int = 100,
    n_test: int = 50,
    num_classes: int = 10,
    seed: int = 0,
) -> Path:
    """Write a tiny data set in CIFAR's python-pickle format under `root`; returns `root`.

    num_classes=100 writes the CIFAR-100 layout (cifar-100-python/train, test, meta); up to 10
    the CIFAR-10 layout (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta), the
    training images spread over the five batches. Labels cycle through all classes; each class
    has its own fixed pattern under the noise, so a small network can learn it. Load it with
    `CIFAR10DataModule(root, verify_checksums=False)` (or CIFAR100DataModule).
    """
    if num_classes != 100 and not 1 <= num_classes <= 10:
        raise ConfigError(f"num_classes={num_classes}: use 100 (CIFAR-100 layout) or 1..10 (CIFAR-10 layout).")
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train={n_train}, n_test={n_test}: both must be >= 1.")
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(num_classes, 3072))

    def images_and_labels(count: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.permutation(np.arange(count) % num_classes)
        noise = rng.integers(0, 256, size=(count, 3072))
        return (0.6 * patterns[labels] + 0.4 * noise).astype(np.uint8), labels.tolist()

    root = Path(root)
    cifar100 = num_classes == 100
    folder = root / (CIFAR100.base_folder if cifar100 else CIFAR10.base_folder)
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, entry: dict) -> None:
        with open(folder / name, "wb") as file:
            pickle.dump(entry, file)

    if cifar100:
        for name, count in (("train", n_train), ("test", n_test)):
            data, labels = images_and_labels(count)
            dump(name, {"data": data, "fine_labels": labels, "coarse_labels": [y // 5 for y in labels]})
        dump(
            "meta",
            {
                "fine_label_names": [f"class_{i}" for i in range(100)],
                "coarse_label_names": [f"superclass_{i}" for i in range(20)],
            },
        )
        return root
    data, labels = images_and_labels(n_train)
    for number, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        dump(f"data_batch_{number}", {"data": data[part], "labels": [labels[i] for i in part]})
    data, labels = images_and_labels(n_test)
    dump("test_batch", {"data": data, "labels": labels})
    dump("batches.meta", {"label_names": [f"class_{i}" for i in range(num_classes)]})
    return root
