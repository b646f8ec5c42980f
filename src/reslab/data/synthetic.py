"""Random images in CIFAR-10's shape (3x32x32, 10 classes by default), seeded, no files.

For smoke tests, benchmarks and runs on machines without the data: the same uint8 tensors and
the same per-batch pipeline as CIFAR, so it exercises everything but the file reading.
"""

from __future__ import annotations

from typing import Any

import torch

from reslab.data.in_memory import InMemoryDataModule, Split


class SyntheticDataModule(InMemoryDataModule):
    """`num_train` / `num_val` / `num_test` random uint8 images with labels drawn uniformly.

    learnable=true: each class has its own fixed random image, and an example is that image
    blended half-and-half with uniform noise, so the class shifts the mean and a small network
    can fit it. learnable=false: pure noise, the labels carry no signal (a memorisation test).
    `num_val: 0` validates on the test split.
    """

    dataset_name = "synthetic"
    default_augmentation = "crop_flip"
    chunk = 4096  # images generated at a time, to bound the float scratch memory

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        num_train: int = 5000,
        num_val: int = 1000,
        num_test: int = 1000,
        learnable: bool = True,
        **shared: Any,
    ) -> None:
        """The shape defaults to CIFAR-10's; `**shared`: the other InMemoryDataModule arguments."""
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **shared)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.learnable = bool(learnable)

    def load_splits(self) -> dict[str, Split]:
        generator = torch.Generator().manual_seed(self.seed)
        class_images = torch.randint(
            0, 256, (self.num_classes, *self.input_shape), generator=generator, dtype=torch.uint8
        )
        splits = {}
        for name, count in self.sizes.items():
            if count:
                splits[name] = self.make_split(count, class_images, generator)
        return splits

    def make_split(self, count: int, class_images: torch.Tensor, generator: torch.Generator) -> Split:
        labels = torch.randint(0, self.num_classes, (count,), generator=generator)
        images = torch.empty((count, *self.input_shape), dtype=torch.uint8)
        for start in range(0, count, self.chunk):
            part = slice(start, start + self.chunk)
            noise = torch.randint(0, 256, images[part].shape, generator=generator, dtype=torch.uint8)
            if self.learnable:  # half pattern, half noise, in uint8 arithmetic (no float copy)
                noise = (noise >> 1) + (class_images[labels[part]] >> 1)
            images[part] = noise
        return Split(images, labels)
