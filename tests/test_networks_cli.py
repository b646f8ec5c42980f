"""The paper's other networks through the CLI: ImageNet-style ResNet-34 on an image-folder data
set, and a torchvision ResNet-50 adapted to MNIST, each on tiny data the test writes."""

from __future__ import annotations

import json

from test_data import write_image_tree

from reslab.data import write_mnist_like


def test_imagenet_style_resnet34_on_an_image_folder(train, tmp_path):
    root = write_image_tree(tmp_path / "imagenet", per_class=2, height=40, width=50)
    train(
        "model=resnet",
        "model.depth=34",
        "data=imagenet",
        f"data.root={root}",
        "data.num_classes=2",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.pin_memory=false",
        "trainer.max_steps=1",
        "logger=csv",
        "hydra.run.dir=r34",
    )
    results = json.loads((tmp_path / "r34" / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == 1
    # ImageNet style follows the 224 px input: 7x7 stem, [3, 4, 6, 3] basic units, option A
    assert results["params"] == 21_623_848 - 513 * 1000 + 513 * 2  # ResNet-34 (A), a 2-class head
    assert abs(results["flops"] / 3.664e9 - 1) < 0.03


def test_torchvision_resnet50_adapted_to_mnist(train, tmp_path):
    write_mnist_like(tmp_path / "mnist", n_train=64, n_test=32)
    train(
        "model=torchvision",
        "model.name=resnet50",
        "data=mnist",
        f"data.root={tmp_path / 'mnist'}",
        "data.val_size=16",
        "data.batch_size=8",
        "trainer.max_steps=2",
        "logger=csv",
        "hydra.run.dir=r50",
    )
    results = json.loads((tmp_path / "r50" / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == 2
    # torchvision's ResNet-50 with a one-channel first conv and a 10-class head
    assert results["params"] == 25_557_032 - 2 * 64 * 7 * 7 - 1000 * 2049 + 10 * 2049
