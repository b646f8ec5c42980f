"""Networks: the plain/residual builder, the torchvision adapter, complexity measures.

Only nn.Modules and pure functions live here (no Lightning, no Hydra); configs reach them
through `hydra.utils.instantiate(cfg.model)`.
"""

from reslab.models.blocks import LinearSkipUnit, PostActUnit, PreActUnit, Unit
from reslab.models.complexity import count_flops, count_parameters, model_summary, weighted_depth
from reslab.models.heads import Head, classifier_head
from reslab.models.network import Network, build_network
from reslab.models.shortcuts import ZeroPadSubsample
from reslab.models.stems import Stem
from reslab.models.torchvision_adapter import build_torchvision_model

__all__ = [
    "Head",
    "LinearSkipUnit",
    "Network",
    "PostActUnit",
    "PreActUnit",
    "Stem",
    "Unit",
    "ZeroPadSubsample",
    "build_network",
    "build_torchvision_model",
    "classifier_head",
    "count_flops",
    "count_parameters",
    "model_summary",
    "weighted_depth",
]
