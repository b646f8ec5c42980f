"""Depth tables and the arithmetic that turns a depth into per-stage unit counts.

Kept as data and pure functions so that the rules the paper states ("6n+2 layers", "[3, 4, 6, 3]
for 34 and 50") sit in one place and the builder only asks questions of them.
"""

from __future__ import annotations

from reslab.errors import ConfigError

# Weighted layers of one unit in the paper's two block types.
LAYERS_PER_UNIT = {"basic": 2, "bottleneck": 3}

# Output channels of a unit relative to its stage width.
EXPANSION = {"basic": 1, "bottleneck": 4}

# ImageNet-style networks of the ResNet paper (Table 1): depth -> (unit type, units per stage).
IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# style=auto picks the ImageNet layout (7x7/2 stem + max pool, 4 stages) from this input size on
IMAGENET_MIN_INPUT_SIZE = 128

# CIFAR-style networks (paper section 4.2): three stages of n units each, plus stem and head.
CIFAR_NUM_STAGES = 3


def cifar_stages(depth: int, block: str) -> list[int]:
    """Units per stage of a CIFAR-style network of `depth` weighted layers (stem + stages + fc)."""
    layers_per_n = CIFAR_NUM_STAGES * LAYERS_PER_UNIT[block]
    n, remainder = divmod(depth - 2, layers_per_n)
    if n < 1 or remainder != 0:
        nearest = nearest_cifar_depths(depth, block)
        raise ConfigError(
            f"model.depth={depth} is not {layers_per_n}n+2 for CIFAR-style {block} units; "
            f"nearest valid depths: {', '.join(map(str, nearest))} "
            f"(or give explicit per-stage unit counts with model.stages=[n1,n2,n3])"
        )
    return [n] * CIFAR_NUM_STAGES


def nearest_cifar_depths(depth: int, block: str) -> list[int]:
    """The valid CIFAR depths just below and just above `depth` (only above when below is < 1 unit)."""
    step = CIFAR_NUM_STAGES * LAYERS_PER_UNIT[block]
    below = 2 + step * ((depth - 2) // step)
    above = below + step
    return [d for d in (below, above) if d >= 2 + step]


def imagenet_stages(depth: int, block: str) -> tuple[str, list[int]]:
    """(unit type, units per stage) of the ImageNet-style network of `depth` layers.

    `block` is "auto" or the unit type the user asked for; asking for the other type than the
    paper's for that depth is an error rather than a silently different network.
    """
    if depth not in IMAGENET_DEPTHS:
        allowed = ", ".join(map(str, IMAGENET_DEPTHS))
        raise ConfigError(
            f"model.depth={depth} is not an ImageNet-style ResNet depth (the style model.style=auto "
            f"picks for inputs of {IMAGENET_MIN_INPUT_SIZE} px and more); allowed: {allowed}; "
            f"or give explicit per-stage unit counts with model.stages=[...] (e.g. [3,4,6,3])"
        )
    paper_block, units = IMAGENET_DEPTHS[depth]
    if block not in ("auto", paper_block):
        raise ConfigError(
            f"ImageNet-style depth {depth} uses {paper_block} units, but model.block={block}; "
            f"set model.block=auto (or {paper_block}), or give model.stages=[...] for other shapes"
        )
    return paper_block, list(units)


def split_into_units(num_layers: int, span: int) -> list[int]:
    """Group a stage's `num_layers` weighted layers into units of `span` layers each.

    When `span` does not divide the stage, the stage's last unit takes the remainder, so the
    network keeps exactly the depth that was asked for (a sweep over depth 20/32/44/56 with a
    3-layer span stays a sweep over depth) and only that unit's skip jumps fewer layers.
    """
    full, rest = divmod(num_layers, span)
    return [span] * full + ([rest] if rest else [])
