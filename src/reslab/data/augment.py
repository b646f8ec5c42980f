"""Augmentation and normalisation of whole image batches, on whatever device the batch is on.

The small data sets live as tensors; augmenting a batch of 128 images with a few tensor ops on
the GPU costs microseconds, where per-sample PIL transforms in worker processes would be the
bottleneck of a CIFAR run.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reslab.errors import ConfigError

# Named augmentation choices for the in-memory data sets: which of (random crop, flip) apply.
AUGMENTATIONS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),
    "crop": (True, False),
    "flip": (False, True),
    "crop_flip": (True, True),
}

NORMALIZATIONS = ("per_pixel_mean", "per_channel", "none")


def resolve_augmentation(augment: bool | str, default: str) -> str:
    """The augmentation name for `augment`: true means the data set's `default`, false 'none'."""
    if isinstance(augment, bool):
        return default if augment else "none"
    if isinstance(augment, str) and augment in AUGMENTATIONS:
        return augment
    raise ConfigError(
        f"data.augment={augment!r} is not a known augmentation; use true, false or one of {', '.join(AUGMENTATIONS)}."
    )


def random_crop(images: Tensor, padding: int) -> Tensor:
    """Zero-pad every side by `padding`, then crop each image back to its size at a random offset.

    One gather for the whole batch: each image gets its own offset (0 .. 2*padding on each
    axis), as torchvision's RandomCrop(size, padding) would give per image.
    """
    if padding <= 0:
        return images
    batch, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    left = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    rows = top[:, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = left[:, None] + torch.arange(width, device=images.device)  # (B, W)
    return padded[
        torch.arange(batch, device=images.device)[:, None, None, None],
        torch.arange(channels, device=images.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_flip(images: Tensor, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability `p`."""
    flip = torch.rand(images.shape[0], device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment_batch(images: Tensor, augmentation: str, padding: int) -> Tensor:
    """Apply the named augmentation (see AUGMENTATIONS) to a batch (B, C, H, W)."""
    crop, flip = AUGMENTATIONS[augmentation]
    if crop:
        images = random_crop(images, padding)
    if flip:
        images = random_flip(images)
    return images


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 images to float in [0, 1]; float images are taken to be in [0, 1] already."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


@torch.no_grad()
def pixel_statistics(images: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-pixel mean and mean square (each C x H x W, in [0, 1] units) in one chunked pass.

    Chunked so that 50k uint8 images never become one 600 MB float tensor.
    """
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, images.shape[0], chunk):
        part = to_unit_range(images[start : start + chunk])  # float32 within a chunk, float64 across
        total += part.sum(0)
        total_sq += part.square().sum(0)
    return total / images.shape[0], total_sq / images.shape[0]


def normalization_stats(images: Tensor, normalize: str) -> tuple[Tensor, Tensor]:
    """(mean, std) to apply as (x - mean) / std, from the training images.

    per_pixel_mean: the paper's CIFAR recipe, subtract the mean image (std 1);
    per_channel: subtract the channel mean and divide by the channel std; none: identity.
    """
    channels = images.shape[1]
    if normalize == "none":
        return torch.zeros(channels, 1, 1), torch.ones(channels, 1, 1)
    mean, mean_sq = pixel_statistics(images)
    if normalize == "per_pixel_mean":
        return mean.float(), torch.ones(channels, 1, 1, device=mean.device)
    channel_mean = mean.mean((1, 2), keepdim=True)
    channel_var = mean_sq.mean((1, 2), keepdim=True) - channel_mean.square()
    return channel_mean.float(), channel_var.clamp_min(1e-12).sqrt().float()
