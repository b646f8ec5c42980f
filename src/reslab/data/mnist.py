"""MNIST and Fashion-MNIST (1x28x28, 10 classes) as uint8 tensors.

Files are read by torchvision's MNIST/FashionMNIST loaders from the IDX files under
`root`/MNIST/raw/ (or `root`/FashionMNIST/raw/); `download: true` fetches them in
`prepare_data`. Train/val: `val_size` (default 5000) of the 60k training images held out,
stratified by `seed` (`val_size: 0` validates on the test set); test: the 10k test images.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import MNIST, FashionMNIST

from reslab.data.in_memory import DataShape, Split, TrainTestFilesDataModule
from reslab.errors import ConfigError

# The uncompressed IDX files torchvision's loader reads from <root>/<ClassName>/raw/.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class MNISTDataModule(TrainTestFilesDataModule):
    """MNIST: 55k train / 5k val / 10k test by default; per-channel normalisation.

    `augment: true` is a random crop after `crop_padding` px of padding (no flip: digits are
    not mirror-symmetric). Every argument is a shared one (TrainTestFilesDataModule,
    InMemoryDataModule); only the crop padding's default differs.
    """

    dataset_name = "MNIST"
    torchvision_class = MNIST
    fixed_shape = DataShape(num_classes=10, in_channels=1, image_size=28)
    default_augmentation = "crop"

    def __init__(self, root: str, crop_padding: int = 2, **shared: Any) -> None:
        super().__init__(root, crop_padding=crop_padding, **shared)

    def files(self) -> list[str]:
        return [str(Path(self.folder(), name)) for names in IDX_FILES.values() for name in names]

    def folder(self) -> str:
        return str(Path(self.torchvision_class.__name__, "raw"))

    def read(self, train: bool) -> Split:
        try:
            dataset = self.torchvision_class(str(self.root), train=train, download=False)
        except (RuntimeError, OSError, ValueError) as error:
            raise ConfigError(
                f"{self.dataset_name} files under data.root={self.root} could not be read ({error}); "
                "set data.download=true to fetch clean files."
            ) from error
        return Split(dataset.data.unsqueeze(1).contiguous(), dataset.targets.long())


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: same shape, splits and arguments as MNIST; `augment: true` also flips
    (clothes are roughly mirror-symmetric)."""

    dataset_name = "Fashion-MNIST"
    torchvision_class = FashionMNIST
    default_augmentation = "crop_flip"


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX header: two zero bytes, type code 0x08 (uint8), number of dims, then each dim big-endian.
    with open(path, "wb") as file:
        file.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        file.write(struct.pack(f">{array.ndim}I", *array.shape))
        file.write(array.astype(np.uint8).tobytes())


def write_mnist_like(
    root: str | os.PathLike,
    n_train: int = 100,
    n_test: int = 50,
    fashion: bool = False,
    seed: int = 0,
) -> Path:
    """Write tiny uncompressed IDX files (28x28, 10 classes) where torchvision looks; returns `root`.

    Files go to root/MNIST/raw/ (or root/FashionMNIST/raw/ with fashion=True): train-images-
    idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte. Labels
    cycle through the classes; each class has its own pattern under the noise, so it is learnable.
    """
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train={n_train}, n_test={n_test}: both must be >= 1.")
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(10, 28, 28))
    raw = Path(root) / ("FashionMNIST" if fashion else "MNIST") / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(count) % 10)
        images = 0.6 * patterns[labels] + 0.4 * rng.integers(0, 256, size=(count, 28, 28))
        image_file, label_file = IDX_FILES[split]
        _write_idx(raw / image_file, images)
        _write_idx(raw / label_file, labels)
    return Path(root)
