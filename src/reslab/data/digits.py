"""scikit-learn's handwritten digits: 1,797 real 8x8 grayscale images, 10 classes, no download.

Small enough that a sweep of plain and residual nets of many depths trains on a CPU, which is
why the degradation experiment runs on it by default.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import load_digits

from reslab.data.in_memory import DataShape, InMemoryDataModule, Split, split_count, split_off
from reslab.errors import ConfigError


class DigitsDataModule(InMemoryDataModule):
    """Train/val/test split of the digits, stratified and fixed by `seed`.

    `val_size` and `test_size` are counts or fractions of all 1,797 images (defaults 0.15 each:
    1,257 / 270 / 270). `val_size: 0` validates on the test split. Pixel values 0..16 are scaled
    to [0, 1]. `augment: true` is a random crop after `crop_padding` px of padding (no flip:
    digits are not mirror-symmetric).
    """

    dataset_name = "digits"
    fixed_shape = DataShape(num_classes=10, in_channels=1, image_size=8)
    default_augmentation = "crop"
    num_images = 1797

    def __init__(
        self, val_size: int | float = 0.15, test_size: int | float = 0.15, crop_padding: int = 1, **shared: Any
    ) -> None:
        """`**shared`: the InMemoryDataModule arguments."""
        super().__init__(crop_padding=crop_padding, **shared)
        self.test_count = split_count("test_size", test_size, self.num_images)
        if self.test_count == 0:
            raise ConfigError("data.test_size=0 leaves no test split; use a count >= 1 or a fraction in (0, 1).")
        self.val_count = split_count("val_size", val_size, self.num_images, keep_at_least=self.test_count + 1)

    def load_splits(self) -> dict[str, Split]:
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
        labels = torch.tensor(digits.target, dtype=torch.long)
        everything = Split(images, labels)
        rest, test = split_off(labels, self.test_count, self.seed)
        train, val = split_off(labels[rest], self.val_count, self.seed)
        splits = {"train": everything.select(rest[train]), "test": everything.select(test)}
        if self.val_count:
            splits["val"] = everything.select(rest[val])
        return splits
