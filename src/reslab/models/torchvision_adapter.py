"""Any torchvision classification model as a ResLab network (`model=torchvision`).

Weights come from torchvision's enum (read from the torch hub cache only: runs never download)
or from a local state-dict file. The model is then fitted to the data set: the head is
replaced for `num_classes`, and for inputs with C != 3 channels the first convolution is
replaced by one whose filters are derived from the RGB filters, so the pretrained features
survive the change (see `adapt_first_conv`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from reslab.errors import ConfigError
from reslab.models.heads import classifier_head_name, replace_submodule
from reslab.safe_load import HoldsPythonObjects, NotATorchFile, load_tensors_only

# Models whose positional embeddings fix the input size; the builder keyword that sets it.
_SIZE_KEYWORD = {"vit_": "image_size", "maxvit_": "input_size"}


def build_torchvision_model(
    name: str = "resnet18",
    weights: str | None = None,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
) -> nn.Module:
    """torchvision model `name`, optionally pretrained, with head and first conv fitted to the data.

    weights: None (random init), a torchvision enum name ("IMAGENET1K_V1", "IMAGENET1K_V2",
    "DEFAULT", or "ResNet50_Weights.IMAGENET1K_V2") that must already be in the torch hub cache,
    or the path of a local state-dict file.
    """
    _check_name(name)
    weights_enum = torchvision.models.get_model_weights(name)
    if weights is not None and _is_enum_name(weights, weights_enum):
        chosen = weights_enum[weights.split(".")[-1]]
        _check_input_size(name, weights_enum, input_size, pretrained=chosen)
        _require_cached(name, chosen)
        # torchvision's builders read the cached file with torch.hub's weights_only=False: a file
        # that holds more than tensors is refused before they see it.
        _read_weights_file(cache_path(chosen), f"model.weights={weights!r}")
        model = torchvision.models.get_model(name, weights=chosen)
        _drop_aux_heads(model)
    else:
        _check_input_size(name, weights_enum, input_size, pretrained=None)
        model = torchvision.models.get_model(
            name, weights=None, num_classes=num_classes, **_builder_kwargs(name, input_size)
        )
        _drop_aux_heads(model)
        if weights is not None:
            _load_local_state_dict(model, name, weights)
    replace_head(model, num_classes)
    if in_channels != 3:
        adapt_first_conv(model, in_channels)
    return model


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the classifier for a fresh one with `num_classes` outputs (kept if it already fits)."""
    name = classifier_head_name(model)
    head = model.get_submodule(name)
    if isinstance(head, nn.Linear):
        if head.out_features != num_classes:
            replace_submodule(model, name, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))
    elif head.out_channels != num_classes:  # SqueezeNet's 1x1-conv classifier
        new = nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding)
        replace_submodule(model, name, new)


def first_conv_name(model: nn.Module) -> str:
    """The stem convolution: the first registered Conv2d that reads 3 channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name
    raise ConfigError(f"{type(model).__name__} has no Conv2d reading 3 channels to adapt to other inputs")


def rgb_to_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Filters for C input channels derived from RGB filters (out, 3, kh, kw) -> (out, C, kh, kw).

    Every channel gets the mean RGB filter, scaled by 3/C: an input whose C channels are equal
    (a grey image) then gives exactly the response the RGB filters give to that grey image in
    RGB, so the pretrained activations keep their scale. For C=1 this is the sum over RGB.
    """
    mean = weight.mean(dim=1, keepdim=True)
    return (mean * (3.0 / in_channels)).repeat(1, in_channels, 1, 1)


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the stem conv by one reading `in_channels`, initialised with `rgb_to_channels`."""
    name = first_conv_name(model)
    old = model.get_submodule(name)
    if old.groups != 1:
        raise ConfigError(
            f"cannot adapt the grouped stem conv {name} of {type(model).__name__} to {in_channels} channels"
        )
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(rgb_to_channels(old.weight, in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    replace_submodule(model, name, new)
    # Inception/GoogLeNet re-normalise RGB channels inside forward when pretrained; that
    # arithmetic assumes 3 channels
    if getattr(model, "transform_input", False):
        model.transform_input = False


def _check_name(name: object) -> None:
    names = torchvision.models.list_models(module=torchvision.models)
    if isinstance(name, str) and name in names:
        return
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
    examples = ["resnet18", "resnet50", "convnext_tiny", "efficientnet_b0", "mobilenet_v3_small", "vit_b_16"]
    hint = f"close matches: {', '.join(close)}; " if close else ""
    raise ConfigError(
        f"model.name={name!r} is not a torchvision classification model; {hint}"
        f"e.g. {', '.join(examples)} "
        f"({len(names)} in all: torchvision.models.list_models(module=torchvision.models))"
    )


def _is_enum_name(weights: object, weights_enum: type) -> bool:
    if not isinstance(weights, str):
        raise ConfigError(
            f"model.weights={weights!r} is not allowed; use null, an enum name such as IMAGENET1K_V1, or a file path"
        )
    member = weights.split(".")[-1] if weights.startswith(weights_enum.__name__ + ".") else weights
    if member in weights_enum.__members__:
        return True
    looks_like_path = any(sep in weights for sep in ("/", "\\", ".")) or os.path.exists(weights)
    if not looks_like_path:
        raise ConfigError(
            f"model.weights={weights!r} is neither a weights name of {weights_enum.__name__} "
            f"({', '.join(weights_enum.__members__)}) nor a file path; use null, one of those names, "
            f"or model.weights=/path/to/state_dict.pth"
        )
    return False


def cache_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torch hub keeps (and torchvision looks for) the file of `weights`."""
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _require_cached(name: str, weights: torchvision.models.WeightsEnum) -> None:
    # torchvision would download a missing file; runs here must never wait on the network
    path = cache_path(weights)
    if not path.is_file():
        raise ConfigError(
            f"pretrained weights {weights} for {name} are not in the local torch hub cache and runs do not "
            f"download; put the file {path.name} (from {weights.url}) at {path} "
            "(TORCH_HOME moves the cache), or pass a local state-dict file with "
            "model.weights=/path/to/file.pth"
        )


def _read_weights_file(path: Path, what: str) -> object:
    """The tensors in the torch file `path`, read without running code stored in it."""
    try:
        return load_tensors_only(path)
    except HoldsPythonObjects as found:
        raise ConfigError(
            f"{what}: {path} holds Python objects ({found}), not only tensors, and ResLab reads weights "
            "without running pickled code, so it is refused; save the weights as a "
            "plain state dict: torch.save(model.state_dict(), path)"
        ) from None
    except NotATorchFile as error:
        raise ConfigError(
            f"{what}: {path} cannot be read, it is corrupt or no torch file ({error}); "
            "save the weights with torch.save(model.state_dict(), path)"
        ) from None


def _load_local_state_dict(model: nn.Module, name: str, weights: str) -> None:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.weights={weights!r}: no such file; give the path of a saved state dict "
            "(torch.save(model.state_dict(), path))"
        )
    state = _read_weights_file(path, f"model.weights={weights!r}")
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ConfigError(f"model.weights={weights!r} holds a {type(state).__name__}, not a state dict")

    # a head of another size (e.g. ImageNet's 1000 classes) is dropped: the new head is trained
    head = classifier_head_name(model) + "."
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(head) and k in own and own[k].shape != v.shape)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise ConfigError(
            f"model.weights={weights!r} does not fit torchvision's {name}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; "
            f"save it from the same architecture with torch.save(model.state_dict(), path)"
        )


def _drop_aux_heads(model: nn.Module) -> None:
    """GoogLeNet/Inception return (logits, aux) tuples in training with aux heads; keep plain logits."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, attr):
                setattr(model, attr, None)


def _builder_kwargs(name: str, input_size: int) -> dict:
    """Keywords for building `name` without pretrained weights."""
    if name in ("googlenet", "inception_v3"):
        return {"init_weights": True}  # the models' own init, chosen explicitly (torchvision warns otherwise)
    for prefix, keyword in _SIZE_KEYWORD.items():
        if name.startswith(prefix):
            return {keyword: input_size if keyword == "image_size" else (input_size, input_size)}
    return {}


def _check_input_size(
    name: str, weights_enum: type, input_size: int, pretrained: torchvision.models.WeightsEnum | None
) -> None:
    if any(name.startswith(prefix) for prefix in _SIZE_KEYWORD):
        # fixed position embeddings: any size without weights, exactly the pretrained size with them
        size = pretrained.meta["min_size"][0] if pretrained is not None else input_size
        if input_size != size:
            raise ConfigError(
                f"{name} with {pretrained} takes exactly {size}x{size} inputs (fixed position embeddings), "
                f"but the data gives {input_size}; resize the data to {size} or use model.weights=null"
            )
        return
    members = list(weights_enum)
    min_size = members[0].meta.get("min_size", (1, 1))[0] if members else 1
    if input_size < min_size:
        raise ConfigError(
            f"{name} needs inputs of at least {min_size}x{min_size} pixels, but the data gives {input_size}; "
            f"resize the data (data.image_size) or choose a model for small images"
        )
