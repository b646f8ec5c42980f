"""The data package: every datamodule on data the test writes itself, plus the yaml configs."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torchvision.io import encode_jpeg, write_file

from reslab.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageNetDataModule,
    MNISTDataModule,
    SyntheticDataModule,
    write_cifar_like,
    write_mnist_like,
)
from reslab.data.augment import augment_batch, random_crop, random_flip
from reslab.data.in_memory import DataShape, InMemoryDataModule, Split, keep_batch
from reslab.errors import ConfigError

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def image_rows(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.reshape(images.shape[0], -1)}


def write_image_tree(root: Path, classes=("n01", "n02"), per_class=3, height=40, width=50) -> Path:
    """root/{train,val}/<class>/*.JPEG, random pixels."""
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
                write_file(str(folder / f"{name}_{i}.JPEG"), encode_jpeg(pixels))
    return root


TINY_IMAGENET = dict(
    num_classes=2, image_size=16, resize_range=[20, 30], val_resize=20, num_workers=0, pin_memory=False
)


# ----------------------------------------------------------------------------- batch augmentation


def test_random_crop_keeps_shape_and_takes_a_window_of_the_padded_image():
    images = torch.rand(16, 3, 8, 8)
    cropped = random_crop(images, padding=2)
    assert cropped.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for original, crop in zip(padded, cropped, strict=True):
        windows = [original[:, top : top + 8, left : left + 8] for top in range(5) for left in range(5)]
        assert any(torch.equal(crop, window) for window in windows)
    assert not torch.equal(cropped, images)  # 16 images all at the centre offset: (1/25)^16


def test_random_flip_mirrors_some_images_and_leaves_the_rest():
    images = torch.rand(64, 1, 4, 4)
    flipped = random_flip(images)
    mirrored = [torch.equal(out, img.flip(-1)) for out, img in zip(flipped, images, strict=True)]
    kept = [torch.equal(out, img) for out, img in zip(flipped, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 0 < sum(mirrored) < 64


def test_augment_none_is_identity():
    images = torch.rand(4, 3, 8, 8)
    assert torch.equal(augment_batch(images, "none", 4), images)


# ----------------------------------------------------------------------------- loading


def test_batched_fetch_gives_stacked_batches_and_a_fast_epoch():
    split = Split(torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (50_000,)))
    loader = DataLoader(split, batch_size=128, shuffle=True, drop_last=True, collate_fn=keep_batch)
    images, labels = next(iter(loader))
    assert images.shape == (128, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (128,) and labels.dtype == torch.long
    start = time.perf_counter()
    seen = sum(batch[0].shape[0] for batch in loader)
    assert seen == 390 * 128
    print(f"one epoch of 50k x 3x32x32 uint8: {time.perf_counter() - start:.3f} s")


# ----------------------------------------------------------------------------- digits


def test_digits_splits_have_the_documented_sizes_shapes_and_no_overlap():
    dm = DigitsDataModule(batch_size=32)
    dm.setup("fit")
    sizes = {name: len(split) for name, split in dm.splits.items()}
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    assert dm.num_train == 1257 and dm.input_shape == (1, 8, 8) and dm.num_classes == 10
    rows = {name: image_rows(split.images) for name, split in dm.splits.items()}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    assert len(rows["train"] | rows["val"] | rows["test"]) == 1797
    assert torch.bincount(dm.splits["val"].labels, minlength=10).min() >= 25  # stratified: ~27 per class
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 8, 8) and labels.shape == (32,)


def test_digits_split_is_fixed_by_seed():
    def val_rows(seed):
        dm = DigitsDataModule(seed=seed, val_size=100, test_size=200)
        dm.setup()
        assert len(dm.splits["val"]) == 100 and len(dm.splits["test"]) == 200
        return image_rows(dm.splits["val"].images)

    assert val_rows(1) == val_rows(1)
    assert val_rows(1) != val_rows(2)


def test_digits_rejects_bad_values_at_construction():
    with pytest.raises(ConfigError, match="data.image_size"):
        DigitsDataModule(image_size=32)
    with pytest.raises(ConfigError, match="data.val_size"):
        DigitsDataModule(val_size=1.5)
    with pytest.raises(ConfigError, match="data.augment"):
        DigitsDataModule(augment="rotate")
    with pytest.raises(ConfigError, match="data.normalize"):
        DigitsDataModule(normalize="zca")


# ----------------------------------------------------------------------------- CIFAR


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar_like(tmp_path_factory.mktemp("cifar"), n_train=60, n_test=20)


def test_cifar_tiny_set_loads_and_splits(cifar_root):
    dm = CIFAR10DataModule(cifar_root, val_size=10, batch_size=8, verify_checksums=False)
    dm.setup("fit")
    assert {name: len(split) for name, split in dm.splits.items()} == {"train": 50, "val": 10, "test": 20}
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.long and int(labels.max()) < 10
    assert dm.num_train == 50 and dm.input_shape == (3, 32, 32)


def test_cifar_val_size_zero_validates_on_the_test_set(cifar_root):
    dm = CIFAR10DataModule(cifar_root, val_size=0, verify_checksums=False)
    dm.setup("fit")
    assert dm.num_train == 60 and dm.splits["val"] is dm.splits["test"]


def test_cifar_augments_training_batches_only_and_subtracts_the_pixel_mean(cifar_root):
    dm = CIFAR10DataModule(cifar_root, val_size=10, verify_checksums=False)
    dm.setup("fit")
    train = dm.splits["train"]
    evaluated, _ = dm.transform_batch((train.images, train.labels), train=False)
    assert evaluated.dtype == torch.float32
    # Per-pixel mean of the training split subtracted: every pixel averages to zero.
    assert evaluated.mean(0).abs().max() < 1e-5
    assert torch.equal(evaluated, dm.transform_batch((train.images, train.labels), train=False)[0])
    augmented, _ = dm.transform_batch((train.images, train.labels), train=True)
    assert augmented.shape == evaluated.shape and not torch.equal(augmented, evaluated)


class RecordingModule(L.LightningModule):
    """A linear classifier that keeps the batches Lightning hands to it."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3 * 32 * 32, 10)
        self.seen = {"train": [], "val": []}

    def step(self, batch, name):
        images, labels = batch
        self.seen[name].append(images.detach().clone())
        return torch.nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def bare_trainer(tmp_path, accelerator: str, max_steps: int) -> L.Trainer:
    """A Trainer with nothing but the loops: no logger, checkpoints or sanity check."""
    return L.Trainer(
        max_steps=max_steps,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        default_root_dir=tmp_path,
    )


def test_cifar_hook_in_a_real_trainer_augments_train_but_not_val(cifar_root, tmp_path):
    dm = CIFAR10DataModule(cifar_root, val_size=10, batch_size=50, verify_checksums=False)
    model = RecordingModule()
    trainer = bare_trainer(tmp_path, "cpu", max_steps=1)
    trainer.fit(model, datamodule=dm)
    train_batch, val_batch = model.seen["train"][0], model.seen["val"][0]
    assert train_batch.dtype == val_batch.dtype == torch.float32
    val = dm.splits["val"]
    assert torch.equal(val_batch, dm.transform_batch((val.images, val.labels), train=False)[0])
    # The one training batch is the whole (shuffled) training split; cropping changes image sums.
    train = dm.splits["train"]
    plain_sums = dm.transform_batch((train.images, train.labels), train=False)[0].sum((1, 2, 3)).sort().values
    assert not torch.allclose(train_batch.sum((1, 2, 3)).sort().values, plain_sums)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_in_memory_data_moves_to_the_gpu_once_and_batches_stay_there(tmp_path):
    dm = SyntheticDataModule(num_train=256, num_val=64, num_test=64, batch_size=64, augment=True)
    model = RecordingModule()
    trainer = bare_trainer(tmp_path, "gpu", max_steps=4)
    trainer.fit(model, datamodule=dm)
    assert dm.splits["train"].images.device.type == "cuda"
    assert all(batch.device.type == "cuda" for batch in model.seen["train"] + model.seen["val"])


def test_cifar_missing_files_without_download_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        CIFAR10DataModule(tmp_path / "nowhere", download=False)
    message = str(error.value)
    assert "data.root" in message and "data.download=true" in message and str(tmp_path / "nowhere") in message


def test_cifar_tiny_files_fail_checksums_with_a_hint(cifar_root):
    dm = CIFAR10DataModule(cifar_root)  # the files exist, so construction passes
    with pytest.raises(ConfigError, match="data.verify_checksums=false"):
        dm.setup("fit")


def test_cifar_shape_keys_must_match_the_data(cifar_root):
    with pytest.raises(ConfigError, match="data.num_classes"):
        CIFAR10DataModule(cifar_root, num_classes=100, verify_checksums=False)


def test_cifar100_tiny_set(tmp_path):
    write_cifar_like(tmp_path, n_train=30, n_test=10, num_classes=100)
    dm = CIFAR100DataModule(tmp_path, val_size=0, verify_checksums=False)
    dm.setup("fit")
    assert dm.num_train == 30 and dm.num_classes == 100
    assert int(dm.splits["train"].labels.max()) == 29  # labels cycle through the classes


# ----------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("module, fashion", [(MNISTDataModule, False), (FashionMNISTDataModule, True)])
def test_mnist_tiny_idx_files(tmp_path, module, fashion):
    write_mnist_like(tmp_path, n_train=40, n_test=20, fashion=fashion)
    dm = module(tmp_path, val_size=0.25, batch_size=16)
    dm.setup("fit")
    assert {name: len(split) for name, split in dm.splits.items()} == {"train": 30, "val": 10, "test": 20}
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.uint8
    normalized, _ = dm.transform_batch((images, labels), train=True)
    assert normalized.shape == (16, 1, 28, 28) and normalized.dtype == torch.float32


def test_mnist_missing_files_is_a_config_error(tmp_path):
    write_mnist_like(tmp_path, 10, 10, fashion=True)  # Fashion-MNIST only: MNIST is still missing
    with pytest.raises(ConfigError, match="data.download=true"):
        MNISTDataModule(tmp_path)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_seed_and_learnable_signal():
    dm = SyntheticDataModule(num_classes=3, in_channels=2, image_size=6, num_train=300, num_val=30, num_test=20)
    dm.setup("fit")
    assert dm.input_shape == (2, 6, 6) and dm.num_train == 300
    train = dm.splits["train"]
    assert train.images.shape == (300, 2, 6, 6) and train.images.dtype == torch.uint8
    assert len(dm.splits["val"]) == 30 and len(dm.splits["test"]) == 20
    again = SyntheticDataModule(num_classes=3, in_channels=2, image_size=6, num_train=300, num_val=30, num_test=20)
    again.setup("fit")
    assert torch.equal(again.splits["train"].images, train.images)
    # learnable: the class means differ by far more than the noise in a mean of ~100 images
    means = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(3)])
    assert (means[0] - means[1]).abs().mean() > 20


def test_synthetic_loader_batches():
    dm = SyntheticDataModule(num_train=64, num_val=0, num_test=16, batch_size=32, eval_batch_size=16)
    dm.setup()
    assert [b[0].shape[0] for b in dm.train_dataloader()] == [32, 32]
    assert dm.splits["val"] is dm.splits["test"]
    assert next(iter(dm.val_dataloader()))[0].shape == (16, 3, 32, 32)


# ----------------------------------------------------------------------------- image folders


def first_batch(dm: ImageNetDataModule, loader: DataLoader):
    """A loader's first batch as the network gets it: through the datamodule's batch hooks."""
    batch = dm.transfer_batch_to_device(next(iter(loader)), torch.device("cpu"), 0)
    return dm.on_after_batch_transfer(batch, 0)


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_image_folder_batches_and_ten_crop(tmp_path, decode):
    root = write_image_tree(tmp_path)
    dm = ImageNetDataModule(root, batch_size=4, ten_crop_test=True, decode=decode, **TINY_IMAGENET)
    dm.setup("fit")
    dm.setup("test")
    assert dm.num_train == 6 and dm.input_shape == (3, 16, 16)
    images, labels = first_batch(dm, dm.train_dataloader())
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert set(labels.tolist()) <= {0, 1}
    assert first_batch(dm, dm.val_dataloader())[0].shape == (4, 3, 16, 16)
    crops, _ = first_batch(dm, dm.test_dataloader())
    assert crops.shape == (4, 10, 3, 16, 16)
    # Crops 0..4 are the corners and centre, 5..9 those of the mirrored image: its top-left
    # crop is the original's top-right one, mirrored.
    assert torch.allclose(crops[:, 5], crops[:, 1].flip(-1))
    assert not torch.allclose(crops[:, 0], crops[:, 1])


def test_image_folder_missing_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        ImageNetDataModule(tmp_path / "imagenet", **TINY_IMAGENET)
    message = str(error.value)
    assert "data.root" in message and "train/<class>" in message and "val/<class>" in message


def test_image_folder_class_count_must_match(tmp_path):
    root = write_image_tree(tmp_path, per_class=1, height=8, width=8)
    with pytest.raises(ConfigError, match="data.num_classes=2"):
        ImageNetDataModule(root, **{**TINY_IMAGENET, "num_classes": 1000})


# ----------------------------------------------------------------------------- configs


def compose_data(name: str, data_dir: Path, **overrides):
    """conf/data/NAME.yaml as Hydra composes it (its `defaults:` included), with seed 3."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DATA.parent), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={name}", "seed=3", f"paths.data_dir={data_dir}"])
    cfg.data = OmegaConf.merge(cfg.data, overrides)
    return cfg


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments `cls(...)` takes: its own, then those it passes on to its bases
    (`**shared`), each with the default of the most derived class that states it."""
    parameters: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        own = inspect.signature(klass.__init__).parameters
        for name, parameter in own.items():
            if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                parameters.setdefault(name, parameter)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in own.values()):
            break
    return parameters


IN_MEMORY = ["cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "synthetic"]


@pytest.mark.parametrize("name", IN_MEMORY)
def test_in_memory_data_config_states_the_constructors_defaults(name):
    """Python callers and config users get the same data set: every value in the yaml (but the
    interpolated root and seed) is the constructor's default; a fixed shape is the data set's own."""
    data = compose_data(name, Path("/data")).data
    target = hydra.utils.get_class(data._target_)
    parameters = constructor_parameters(target)
    assert issubclass(target, InMemoryDataModule)
    for key, value in data.items():
        if key in ("_target_", "root", "seed"):
            continue
        default = parameters[key].default
        if default is None and target.fixed_shape is not None and key in DataShape._fields:
            default = getattr(target.fixed_shape, key)
        assert value == default, (name, key)


@pytest.mark.parametrize("name", sorted(path.stem for path in CONF_DATA.glob("*.yaml")))
def test_every_data_config_holds_only_constructor_args_and_instantiates(name, tmp_path):
    write_cifar_like(tmp_path, 20, 10)
    write_cifar_like(tmp_path, 20, 10, num_classes=100)
    write_mnist_like(tmp_path, 20, 10)
    write_mnist_like(tmp_path, 20, 10, fashion=True)
    write_image_tree(tmp_path / "imagenet", per_class=1, height=24, width=24)
    overrides = {
        "cifar10": {"verify_checksums": False},
        "cifar100": {"verify_checksums": False},
        "imagenet": {key: value for key, value in TINY_IMAGENET.items()},
    }.get(name, {})
    cfg = compose_data(name, tmp_path, **overrides)
    keys = set(cfg.data) - {"_target_"}
    assert {"num_classes", "in_channels", "image_size", "batch_size", "eval_batch_size"} <= keys
    target = hydra.utils.get_class(cfg.data._target_)
    parameters = set(constructor_parameters(target))
    assert keys <= parameters, f"{name}.yaml keys that are no constructor argument: {keys - parameters}"
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, L.LightningDataModule) and isinstance(dm, target)
    assert dm.num_classes == cfg.data.num_classes
    assert dm.input_shape == (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    if "seed" in keys:
        assert dm.seed == 3
