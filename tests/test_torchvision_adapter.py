"""model=torchvision: names, weights (cache only, or a local file), surgery, backbone freezing."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from reslab.callbacks.backbone_freeze import FreezeBackbone
from reslab.errors import ConfigError
from reslab.models import build_network, build_torchvision_model, classifier_head
from reslab.models.torchvision_adapter import cache_path

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def resnet18_file(tmp_path):
    """A random resnet18 state dict saved as a local weights file."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        build_torchvision_model("resnet19")
    message = str(info.value)
    assert "resnet18" in message and "list_models" in message


def test_local_weights_transfer_to_grey_28px_ten_classes(resnet18_file):
    path, state = resnet18_file
    net = build_torchvision_model("resnet18", weights=str(path), num_classes=10, in_channels=1, input_size=28)
    # the grey filters are the RGB filters summed, i.e. the response to a grey image in RGB
    assert net.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(net.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert classifier_head(net) is net.fc and net.fc.out_features == 10
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_grey_adaptation_preserves_the_pretrained_response(resnet18_file):
    path, _ = resnet18_file
    rgb = build_torchvision_model("resnet18", weights=str(path), num_classes=1000).eval()
    grey = build_torchvision_model("resnet18", weights=str(path), num_classes=1000, in_channels=2, input_size=32).eval()
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(grey(image.expand(1, 2, 32, 32)), rgb(image.expand(1, 3, 32, 32)), atol=1e-4)


def test_enum_weights_missing_offline_name_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        build_torchvision_model("resnet18", weights="IMAGENET1K_V1", num_classes=10)
    message = str(info.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in message and "model.weights=" in message
    assert not expected.exists()  # nothing was downloaded


def test_enum_weights_load_from_the_hub_cache(tmp_path, monkeypatch, resnet18_file):
    _, state = resnet18_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = cache_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    net = build_torchvision_model("resnet18", weights="DEFAULT", num_classes=5)
    assert torch.equal(net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert net.fc.out_features == 5


@pytest.mark.parametrize(
    "weights, words",
    [
        ("IMAGENET_V9", ["IMAGENET1K_V1", "DEFAULT", "path"]),
        ("/nonexistent/weights.pth", ["no such file"]),
    ],
)
def test_bad_weights_raise_config_error(weights, words):
    with pytest.raises(ConfigError) as info:
        build_torchvision_model("resnet18", weights=weights)
    for word in words:
        assert word in str(info.value)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit"):
        build_torchvision_model("resnet18", weights=str(path))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "squeezenet1_1", "googlenet"])
def test_other_families_get_new_head_and_input_channels(name):
    net = build_torchvision_model(name, num_classes=7, in_channels=1, input_size=64)
    net.train()
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 7)  # plain logits, no auxiliary outputs


def test_too_small_input_is_refused():
    with pytest.raises(ConfigError, match="at least 75x75"):
        build_torchvision_model("inception_v3", num_classes=10, input_size=28)


def test_torchvision_yaml_matches_builder():
    model_cfg = OmegaConf.load(CONF / "model" / "torchvision.yaml")
    assert set(model_cfg) - {"_target_"} == set(inspect.signature(build_torchvision_model).parameters)
    cfg = OmegaConf.create({"data": {"num_classes": 10, "in_channels": 1, "image_size": 28}, "model": model_cfg})
    net = instantiate(cfg.model)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# --- freezing the backbone -------------------------------------------------------------------


class TinyClassifier(L.LightningModule):
    def __init__(self, optimize_all: bool) -> None:
        super().__init__()
        self.net = build_network(depth=8, width=4, input_size=8)
        self.optimize_all = optimize_all

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        params = self.parameters() if self.optimize_all else (p for p in self.parameters() if p.requires_grad)
        return torch.optim.SGD(params, lr=0.5)


class Snapshots(L.Callback):
    """Backbone weights, BN statistics and requires_grad flags at the end of every epoch."""

    def __init__(self) -> None:
        self.states, self.trainable = [], []

    def on_train_start(self, trainer, pl_module):
        self.states.append(self._backbone(pl_module))

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append(self._backbone(pl_module))
        self.trainable.append([p.requires_grad for n, p in pl_module.net.named_parameters() if not n.startswith("fc")])

    @staticmethod
    def _backbone(pl_module):
        return {k: v.clone() for k, v in pl_module.net.state_dict().items() if not k.startswith("fc")}


@pytest.mark.parametrize("optimize_all", [True, False])
def test_freeze_backbone_trains_only_the_head_first(optimize_all):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 8, 8), torch.randint(0, 10, (12,)))
    module, snapshots = TinyClassifier(optimize_all), Snapshots()
    fc_before = module.net.fc.weight.detach().clone()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FreezeBackbone(epochs=1), snapshots],
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))

    start, after_epoch0, after_epoch1 = snapshots.states
    assert snapshots.trainable[0] and not any(snapshots.trainable[0])
    assert all(torch.equal(start[k], after_epoch0[k]) for k in start)  # weights and BN statistics
    assert all(snapshots.trainable[1])
    changed = [k for k in start if k.endswith("weight") and not torch.equal(after_epoch0[k], after_epoch1[k])]
    assert "conv1.weight" in changed and "layer1.0.conv1.weight" in changed
    assert not torch.equal(module.net.fc.weight, fc_before)


def test_freeze_backbone_rejects_negative_epochs():
    with pytest.raises(ConfigError, match=">= 0"):
        FreezeBackbone(epochs=-1)


def test_freeze_backbone_yaml_builds_the_callback():
    cfg = OmegaConf.load(CONF / "callbacks" / "freeze_backbone.yaml")
    callback = instantiate(cfg.freeze_backbone)
    assert isinstance(callback, FreezeBackbone) and callback.epochs == 1
