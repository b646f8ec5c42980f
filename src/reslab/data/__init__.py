"""LightningDataModules, one data set per file, each built by `hydra.utils.instantiate(cfg.data)`.

Small data sets (digits, CIFAR, MNIST, synthetic) are tensors in memory, normalised and
augmented per batch on the device; ImageNet-style image folders are read by worker processes.
"""

from reslab.data.cifar import CIFAR10DataModule, CIFAR100DataModule, write_cifar_like
from reslab.data.digits import DigitsDataModule
from reslab.data.imagenet import ImageNetDataModule
from reslab.data.in_memory import InMemoryDataModule
from reslab.data.mnist import FashionMNISTDataModule, MNISTDataModule, write_mnist_like
from reslab.data.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "SyntheticDataModule",
    "write_cifar_like",
    "write_mnist_like",
]
