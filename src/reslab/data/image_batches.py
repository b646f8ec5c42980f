"""Image-folder batches: decoded and augmented as whole batches on the training device.

With `decode: device` the DataLoader's workers only read each file's bytes (`EncodedImageFolder`)
and a batch travels as one flat uint8 tensor (`collate_encoded`). In the training process,
on the batch's device:

- `BatchDecoder` decodes the batch with TorchCodec as the README's "Image folders" tells; a batched
  decode fails as a whole when one file is bad, hence the image-by-image retry.
- `train_batch` is the paper's training augmentation with every random parameter drawn per image:
  shorter side uniform in `resize_range`, a uniform `image_size` crop position, a horizontal flip
  with probability 1/2, brightness/contrast/saturation factors uniform in [1 - j, 1 + j] applied
  in a random order (torchvision's ColorJitter), then normalisation.
- `eval_batch` / `ten_crop_batch`: resize the shorter side to `val_resize`, then the centre crop
  or the ten crops, with torchvision's own functions, so the pixels equal those of the `cpu` path.

Why the crop boxes are drawn on the host: each image is cut out by slicing, which needs the box as
Python integers; the image sizes are known on the host after decoding, so drawing the boxes there
never reads a device tensor. Flips and colour factors are drawn on the device, one per image.
A box is the resize-then-crop of the `cpu` path mapped back to source pixels, so the crop is
resized once to `image_size` (a cheaper resize than that of the whole image, with the same
antialiased filter); the scale and position differ from the `cpu` path's only by rounding to
whole source pixels.

Nothing here knows of Lightning or Hydra: the datamodule applies these in its batch hooks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as TF

from reslab.data.augment import random_flip

log = logging.getLogger(__name__)

# Batch kinds: which transform the training process applies to a batch.
TRAIN, EVAL, TEN_CROP = "train", "eval", "ten_crop"
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)
# Images per part of a batch that the CPU jitters and normalises at once.
CPU_PART = 4


def decode_rgb(data: Tensor) -> Tensor:
    """One image's encoded bytes (1-D uint8) to a uint8 (3, H, W) RGB tensor on the CPU; the format
    is detected from the bytes, not the file name. Animated formats give their first frame."""
    from torchcodec.decoders import decode_image  # imported where used: only image folders need TorchCodec

    image = decode_image(data, mode="RGB")
    return image[0] if image.dim() == 4 else image


# ----------------------------------------------------------------------------- batches


@dataclass
class FolderBatch:
    """One batch of an image folder as the DataLoader yields it.

    `cpu` path: `images` holds the workers' transformed images; `skipped` the files they could
    not decode. `device` path: `encoded` holds all files' bytes end to end, `sizes` each file's
    byte count and `paths` the files. `kind` says which transform it gets (TRAIN, EVAL, TEN_CROP).
    """

    labels: Tensor
    kind: str
    images: Tensor | None = None
    encoded: Tensor | None = None
    sizes: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def pin_memory(self) -> FolderBatch:
        # Called by the DataLoader's pinning thread; the bytes stay pageable: they are read on
        # the host by the decoder.
        self.labels = self.labels.pin_memory()
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self

    def to(self, device: torch.device, non_blocking: bool = True) -> FolderBatch:
        """Labels and transformed images to `device`; encoded bytes stay on the host."""
        self.labels = self.labels.to(device, non_blocking=non_blocking)
        if self.images is not None:
            self.images = self.images.to(device, non_blocking=non_blocking)
        return self

    def files(self) -> list[Tensor]:
        """The encoded files, one 1-D uint8 view each."""
        return list(torch.split(self.encoded, self.sizes)) if self.encoded is not None else []


class EncodedImageFolder(ImageFolder):
    """An ImageFolder whose items are (file bytes, label, path): the workers decode nothing."""

    def __getitem__(self, index: int) -> tuple[bytes, int, str]:
        path, label = self.samples[index]
        return read_bytes(path), label, path


class DecodedImageFolder(ImageFolder):
    """An ImageFolder decoded and transformed in the workers (the `cpu` path); an undecodable
    file gives (None, label, path) instead of ending the epoch."""

    def __getitem__(self, index: int) -> tuple[Tensor | None, int, str]:
        path, label = self.samples[index]
        try:
            image = decode_rgb(torch.frombuffer(bytearray(read_bytes(path)), dtype=torch.uint8))
        except (RuntimeError, ValueError):  # TorchCodec's errors for data it cannot decode
            return None, label, path
        return self.transform(image), label, path


def read_bytes(path: str) -> bytes:
    # One read of the file's size, no buffered reader: the workers' only work per image.
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def collate_encoded(items: Sequence[tuple[bytes, int, str]], kind: str) -> FolderBatch:
    """Files' bytes as one flat tensor (one shared-memory block per batch, not one per file)."""
    data = [item[0] for item in items]
    return FolderBatch(
        labels=torch.tensor([item[1] for item in items], dtype=torch.int64),
        kind=kind,
        encoded=torch.frombuffer(bytearray().join(data), dtype=torch.uint8),  # one copy, writable
        sizes=[len(d) for d in data],
        paths=[item[2] for item in items],
    )


def collate_decoded(items: Sequence[tuple[Tensor | None, int, str]], kind: str) -> FolderBatch:
    kept = [item for item in items if item[0] is not None]
    return FolderBatch(
        labels=torch.tensor([item[1] for item in kept], dtype=torch.int64),
        kind=kind,
        images=torch.stack([item[0] for item in kept]) if kept else None,
        skipped=[item[2] for item in items if item[0] is None],
    )


# ----------------------------------------------------------------------------- decoding


class BatchDecoder:
    """Decodes encoded batches on a device; counts and names the images it has to skip."""

    def __init__(self) -> None:
        self.skipped = 0
        # Batches whose batched decode failed and were decoded image by image: a few per epoch on
        # ImageNet (its PNG, its CMYK JPEGs where nvJPEG refuses them); many means a slow path.
        self.per_image_batches = 0

    def note_skipped(self, path: str, reason: str) -> None:
        self.skipped += 1
        log.warning("skipped an image that cannot be decoded: %s (%s); %d skipped so far", path, reason, self.skipped)

    def decode(self, files: list[Tensor], paths: list[str], device: torch.device) -> list[Tensor | None]:
        """uint8 (3, H, W) RGB images on `device`, None where a file cannot be decoded."""
        from torchcodec.decoders import decode_jpeg  # imported where used: only image folders need TorchCodec

        try:
            return list(decode_jpeg(files, mode="RGB", device=device))
        except RuntimeError as error:
            self.per_image_batches += 1
            log.debug("batched decode failed (%s); decoding the batch image by image", error)
            return [self.decode_one(data, path, device) for data, path in zip(files, paths, strict=True)]

    def decode_one(self, data: Tensor, path: str, device: torch.device) -> Tensor | None:
        from torchcodec.decoders import decode_jpeg

        try:
            if device.type == "cuda" and bytes(data[:3].tolist()) == b"\xff\xd8\xff":
                return decode_jpeg(data, mode="RGB", device=device)
        except RuntimeError:
            pass  # e.g. a JPEG flavour nvJPEG refuses: libjpeg-turbo below
        try:
            return decode_rgb(data).to(device, non_blocking=True)
        except (RuntimeError, ValueError) as error:
            self.note_skipped(path, str(error).splitlines()[-1][:120] if str(error) else type(error).__name__)
            return None


# ----------------------------------------------------------------------------- transforms


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (..., 3, H, W) to float, scaled to [0, 1], then (x - mean) / std per channel."""
    return TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(mean), list(std))


def crop_boxes(
    sizes: Sequence[tuple[int, int]], image_size: int, resize_range: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """Per image (top, left, height, width) in source pixels: the `cpu` path's random shorter side
    in `resize_range` and its random `image_size` crop of the resized image, mapped back.

    Drawn with torch's default CPU generator (seeded by the run's seed), one draw per image.
    """
    low, high = resize_range
    count = len(sizes)
    shorter = torch.randint(low, high + 1, (count,)).tolist()
    offsets = torch.rand(count, 2, dtype=torch.float64).tolist()
    boxes = []
    for (height, width), side, (u, v) in zip(sizes, shorter, offsets):
        scale = side / min(height, width)
        resized_h, resized_w = max(int(height * scale), image_size), max(int(width * scale), image_size)
        # A uniform integer crop offset in the resized image, as RandomCrop draws it.
        top, left = int(u * (resized_h - image_size + 1)), int(v * (resized_w - image_size + 1))
        extent = min(max(round(image_size / scale), 1), height, width)
        y0 = min(round(top / scale), height - extent)
        x0 = min(round(left / scale), width - extent)
        boxes.append((y0, x0, extent, extent))
    return boxes


def color_jitter(images: Tensor, strength: float) -> Tensor:
    """torchvision's ColorJitter(strength, strength, strength) on float images in [0, 1], with
    each image's own three factors (uniform in [max(0, 1 - s), 1 + s]) and its own order."""
    if strength <= 0:
        return images
    batch, device = images.shape[0], images.device
    factors = torch.empty(batch, 3, device=device).uniform_(max(0.0, 1.0 - strength), 1.0 + strength)
    order = torch.rand(batch, 3, device=device).argsort(dim=1)  # a random permutation per image
    return adjust_colours(images, factors, order)


def adjust_colours(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Per image, brightness (0), contrast (1) and saturation (2) adjusted by `factors[i]` in the
    order `order[i]`, as torchvision's adjust_brightness/contrast/saturation would one by one."""
    batch = images.shape[0]
    for step in range(3):
        op = order[:, step : step + 1]
        factor = factors.gather(1, op).view(batch, 1, 1, 1)
        op = op.view(batch, 1, 1, 1)
        red, green, blue = images.unbind(1)
        gray = (red * LUMA[0]).add_(green, alpha=LUMA[1]).add_(blue, alpha=LUMA[2]).unsqueeze(1)
        # Each image blends with its reference: black (brightness), its mean gray (contrast) or its
        # gray image (saturation). In place from the first product on: few passes over the batch.
        mean_gray = gray.mean((2, 3), keepdim=True)
        reference = gray.mul_((op == 2) * (1 - factor)).add_(mean_gray * ((op == 1) * (1 - factor)))
        images = torch.addcmul(reference, images, factor).clamp_(0.0, 1.0)
    return images


def train_batch(
    images: list[Tensor],
    image_size: int,
    resize_range: tuple[int, int],
    jitter: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Decoded uint8 images (3, H_i, W_i) on one device to a float (B, 3, S, S) training batch."""
    boxes = crop_boxes([tuple(image.shape[-2:]) for image in images], image_size, resize_range)
    crops = torch.stack(
        [
            TF.resize(image[:, y0 : y0 + h, x0 : x0 + w], [image_size, image_size], antialias=True)
            for image, (y0, x0, h, w) in zip(images, boxes)
        ]
    )
    crops = random_flip(crops)  # on uint8: a quarter of the bytes to move
    # The colour work goes over the batch a few times; on the CPU in parts that stay in the cache.
    part = crops.shape[0] if crops.is_cuda else CPU_PART
    return torch.cat(
        [
            TF.normalize(color_jitter(TF.to_dtype(chunk, torch.float32, scale=True), jitter), mean, std, inplace=True)
            for chunk in crops.split(part)
        ]
    )


def eval_batch(images: list[Tensor], image_size: int, val_resize: int, mean, std) -> Tensor:
    """Shorter side to `val_resize`, centre `image_size` crop: (B, 3, S, S)."""
    crops = [TF.center_crop(TF.resize(image, val_resize, antialias=True), [image_size]) for image in images]
    return normalize(torch.stack(crops), mean, std)


def ten_crop_batch(images: list[Tensor], image_size: int, val_resize: int, mean, std) -> Tensor:
    """Shorter side to `val_resize`, four corners and centre and their mirrors: (B, 10, 3, S, S)."""
    crops = [torch.stack(TF.ten_crop(TF.resize(image, val_resize, antialias=True), [image_size])) for image in images]
    return normalize(torch.stack(crops), mean, std)
