"""The numbers ResLab's reproductions are held against, as data.

Errors are in percent, as the papers print them. Each table names its source; rows are keyed the
way the report matches runs to them: (family, depth) for the CIFAR and ImageNet plain/ResNet
tables, (depth, shortcut) for ImageNet Table 3, (unit, depth) for the identity-mappings table.

Sources:
  RESNET   He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", arXiv:1512.03385
  PREACT   He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", arXiv:1603.05027
  and public reproductions, named per table.
"""

from __future__ import annotations

from dataclasses import dataclass

RESNET = "He et al. 2015 (arXiv:1512.03385)"
PREACT = "He et al. 2016 (arXiv:1603.05027)"


@dataclass(frozen=True)
class Reproduction:
    """A public reproduction: who, what protocol, and its numbers by row key."""

    name: str
    protocol: str
    errors: dict


# ----------------------------------------------------------------------------- CIFAR-10

# ResNet paper, Table 6: CIFAR-10 test error (%), option A, one run each.
CIFAR_TABLE6 = {
    20: 8.75,
    32: 7.51,
    44: 7.17,
    56: 6.97,
    110: 6.43,
    1202: 7.93,
}
CIFAR_TABLE6_SOURCE = f"{RESNET}, Table 6"
# Table 6's exact parameter counts of the option-A networks (plain nets have the same).
CIFAR_PARAMS = {
    20: 269_722,
    32: 464_154,
    44: 658_586,
    56: 853_018,
    110: 1_727_962,
    1202: 19_421_274,
}
# Table 6's ResNet-110 entry is the best of 5 runs; their mean and std:
CIFAR_RESNET110_RUNS = {"mean": 6.61, "std": 0.16, "n": 5}

# Plain nets appear only in Figure 6; no paper numbers. Public reproductions, by (family, depth):
NABLA0001 = Reproduction(
    name="nabla0001/resnet",
    protocol="the paper's schedule, mean of 5 runs",
    errors={
        ("plain", 20): 9.78,
        ("plain", 56): 12.95,
        ("resnet", 20): 8.51,
        ("resnet", 56): 7.40,
        ("resnet", 110): 7.14,
    },
)
AKAMASTER = Reproduction(
    name="akamaster/pytorch_resnet_cifar10",
    protocol="option A, 200 epochs on all 50k training images",
    errors={
        ("resnet", 20): 8.27,
        ("resnet", 32): 7.37,
        ("resnet", 44): 6.90,
        ("resnet", 56): 6.61,
        ("resnet", 110): 6.32,
    },
)

# ----------------------------------------------------------------------------- ImageNet

# ResNet paper, Table 2: ImageNet val top-1 error (%), 10-crop, option A. Key: (family, depth).
IMAGENET_TABLE2 = {
    ("plain", 18): 27.94,
    ("resnet", 18): 27.88,
    ("plain", 34): 28.54,
    ("resnet", 34): 25.03,
}
IMAGENET_TABLE2_SOURCE = f"{RESNET}, Table 2"


@dataclass(frozen=True)
class Table3Row:
    """A row of the ResNet paper's Table 3: how the report finds its runs, and the paper's errors."""

    name: str
    family: str | None  # plain | resnet; None: a network ResLab does not build (VGG-16)
    depth: int | None
    shortcut: str | None
    top1: float
    top5: float


# ResNet paper, Table 3: ImageNet val error (%), 10-crop; ResNet-50/101/152 use option B.
IMAGENET_TABLE3 = (
    Table3Row("VGG-16", None, None, None, 28.07, 9.33),
    Table3Row("plain-34", "plain", 34, "none", 28.54, 10.02),
    Table3Row("ResNet-34 A", "resnet", 34, "A", 25.03, 7.76),
    Table3Row("ResNet-34 B", "resnet", 34, "B", 24.52, 7.46),
    Table3Row("ResNet-34 C", "resnet", 34, "C", 24.19, 7.40),
    Table3Row("ResNet-50", "resnet", 50, "B", 22.85, 6.71),
    Table3Row("ResNet-101", "resnet", 101, "B", 21.75, 6.05),
    Table3Row("ResNet-152", "resnet", 152, "B", 21.43, 5.71),
)
IMAGENET_TABLE3_SOURCE = f"{RESNET}, Table 3"

# fb.resnet.torch trains ResNet-34 with option B; 10-crop top-1 error, the same protocol as Table 3.
FB_RESNET_TORCH = Reproduction(
    name="fb.resnet.torch",
    protocol="10-crop top-1",
    errors={(34, "B"): 24.76},
)
# torchvision's reference recipe (option B; ResNet-50 is "v1.5"), top-1 error of the V1
# weights, 1-crop: a different test protocol, so shown as a note, not as a column.
TORCHVISION_1CROP = Reproduction(
    name="torchvision references/classification",
    protocol="1-crop top-1, option B, V1 weights",
    errors={(18, "B"): 30.242, (34, "B"): 26.686, (50, "B"): 23.870},
)

# ----------------------------------------------------------------------------- identity mappings


@dataclass(frozen=True)
class UnitRow:
    """A residual unit of the identity-mappings paper's Table 2, and how ResLab builds it."""

    name: str
    family: str | None  # the report's family of runs with this unit; None: no model knob builds it
    errors: dict  # depth -> median test error (%) of 5 runs


PREACT_TABLE2 = (
    UnitRow("original", "resnet", {110: 6.61, 164: 5.93}),
    UnitRow("BN after addition", None, {110: 8.17, 164: 6.50}),
    UnitRow("ReLU before addition", None, {110: 7.84, 164: 6.14}),
    UnitRow("ReLU-only pre-activation", None, {110: 6.71, 164: 5.91}),
    UnitRow("full pre-activation", "preact", {110: 6.37, 164: 5.46}),
)
PREACT_TABLE2_SOURCE = f"{PREACT}, Table 2 (median of 5 runs)"
PREACT_DEPTHS = (110, 164)
