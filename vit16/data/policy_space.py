"""The op sets, magnitude ranges and learned policies of AutoAugment,
RandAugment and TrivialAugment, written out here, and the per-sample draws.

Sources (the numbers are those of torchvision's ``transforms.v2``
``AutoAugment`` / ``RandAugment`` / ``TrivialAugmentWide``, 0.29, read from its
source and copied, so no torchvision attribute is used):

- AutoAugment: Cubuk et al. 2019, "AutoAugment: Learning Augmentation
  Strategies from Data" (arXiv:1805.09501), the learned CIFAR-10 and ImageNet
  sub-policies (:data:`AUTOAUGMENT_POLICIES`), magnitudes in 10 bins.
- RandAugment: Cubuk et al. 2020, "RandAugment: Practical automated data
  augmentation with a reduced search space" (arXiv:1909.13719): N = 2 ops
  drawn uniformly from :data:`RANDAUGMENT_SPACE`, magnitude M = 9 of 31 bins.
- TrivialAugment: Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet
  State-of-the-Art Data Augmentation" (arXiv:2103.10158): one op from the
  "wide" space :data:`TRIVIALAUGMENT_SPACE`, one of 31 bins uniformly.

Every draw is made on the CPU from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
"""Every op; an op's id is its index here."""
OP_ID = {name: i for i, name in enumerate(OPS)}
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")

# op -> (kind, low, high, signed); "linear": linspace(low, high, bins); "posterize":
# round(8 - arange(bins) / ((bins - 1) / (8 - low))) bits; "translate": linspace(0, high * width
# (X) or height (Y)); None: no magnitude.
_COMMON = {
    "ShearX": ("linear", 0.0, 0.3, True), "ShearY": ("linear", 0.0, 0.3, True),
    "TranslateX": ("translate", 0.0, 150.0 / 331.0, True), "TranslateY": ("translate", 0.0, 150.0 / 331.0, True),
    "Rotate": ("linear", 0.0, 30.0, True), "Brightness": ("linear", 0.0, 0.9, True),
    "Color": ("linear", 0.0, 0.9, True), "Contrast": ("linear", 0.0, 0.9, True),
    "Sharpness": ("linear", 0.0, 0.9, True), "Posterize": ("posterize", 4, 8, False),
    "Solarize": ("linear", 1.0, 0.0, False), "AutoContrast": None, "Equalize": None,
}
AUTOAUGMENT_SPACE = {**_COMMON, "Invert": None}
"""AutoAugment's ops and ranges (10 bins): op -> (kind, low, high, signed) or None."""
RANDAUGMENT_SPACE = {"Identity": None, **_COMMON}
"""RandAugment's 14 ops (no Invert) and ranges (31 bins)."""
TRIVIALAUGMENT_SPACE = {
    "Identity": None, "ShearX": ("linear", 0.0, 0.99, True), "ShearY": ("linear", 0.0, 0.99, True),
    "TranslateX": ("linear", 0.0, 32.0, True), "TranslateY": ("linear", 0.0, 32.0, True),
    "Rotate": ("linear", 0.0, 135.0, True), "Brightness": ("linear", 0.0, 0.99, True),
    "Color": ("linear", 0.0, 0.99, True), "Contrast": ("linear", 0.0, 0.99, True),
    "Sharpness": ("linear", 0.0, 0.99, True), "Posterize": ("posterize", 2, 8, False),
    "Solarize": ("linear", 1.0, 0.0, False), "AutoContrast": None, "Equalize": None,
}
"""TrivialAugment's "wide" space (31 bins)."""

AUTOAUGMENT_POLICIES = {
    "imagenet": [
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)), (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)), (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)), (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ],
    "cifar10": [
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ],
}
"""AutoAugment's learned sub-policies: 25 pairs of (op, probability, magnitude bin)."""


def magnitudes(space: dict, op: str, bins: int, h: int, w: int) -> torch.Tensor:
    """float64 (bins,): op ``op``'s magnitude per bin in ``space`` (zeros for ops
    without one), computed as torchvision does (float32 linspace, then widened)."""
    spec = space[op]
    if spec is None:
        return torch.zeros(bins, dtype=torch.float64)
    kind, low, high, _ = spec
    if kind == "posterize":
        return (8 - (torch.arange(bins) / ((bins - 1) / (8 - low)))).round().int().double()
    if kind == "translate":
        high = high * (w if op == "TranslateX" else h)
    return torch.linspace(low, high, bins).double()


@dataclass
class PolicyDraw:
    """The ops drawn for a batch: ``ops`` int64 (S, B), an id of :data:`OPS` per
    stage and sample (Identity where a sub-policy's op did not fire), and
    ``mags`` float64 (S, B), the signed magnitude of each."""

    ops: torch.Tensor
    mags: torch.Tensor


_TABLES: dict[tuple, tuple] = {}  # built once per (space, bins, size, policy)


def _table(space: dict, bins: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 (len(OPS), bins) magnitudes, bool (len(OPS),) signed) of ``space`` (cached; read only)."""
    key = (tuple(space.items()), bins, h, w)
    if key not in _TABLES:
        _TABLES[key] = _build_table(space, bins, h, w)
    return _TABLES[key]


def _build_table(space: dict, bins: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    mags = torch.zeros(len(OPS), bins, dtype=torch.float64)
    signed = torch.zeros(len(OPS), dtype=torch.bool)
    for op, spec in space.items():
        mags[OP_ID[op]] = magnitudes(space, op, bins, h, w)
        signed[OP_ID[op]] = spec is not None and spec[3]
    return mags, signed


def _signs(ops: torch.Tensor, signed: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    neg = torch.rand(ops.shape, generator=gen) <= 0.5
    return torch.where(signed[ops] & neg, -1.0, 1.0).double()


def draw_autoaugment(policy: str, n: int, h: int, w: int, gen: torch.Generator) -> PolicyDraw:
    """Per sample, one of the 25 sub-policies of ``policy`` ("cifar10" or
    "imagenet"), each of its 2 ops firing with its probability (10 bins)."""
    table = AUTOAUGMENT_POLICIES[policy]
    if policy not in _TABLES:
        _TABLES[policy] = (torch.tensor([[OP_ID[s[0]] for s in sub] for sub in table]),
                           torch.tensor([[s[1] for s in sub] for sub in table], dtype=torch.float64),
                           torch.tensor([[s[2] or 0 for s in sub] for sub in table]))
    op_ids, probs, bins = _TABLES[policy]
    mags, signed = _table(AUTOAUGMENT_SPACE, 10, h, w)
    choice = torch.randint(len(table), (n,), generator=gen)
    fire = torch.rand(2, n, generator=gen, dtype=torch.float64) <= probs[choice].T
    ops = op_ids[choice].T
    mag = mags[ops, bins[choice].T] * _signs(ops, signed, gen)
    return PolicyDraw(torch.where(fire, ops, OP_ID["Identity"]), torch.where(fire, mag, 0.0))


def draw_uniform(space: dict, num_ops: int, magnitude: int | None, bins: int, n: int, h: int, w: int,
                 gen: torch.Generator) -> PolicyDraw:
    """``num_ops`` stages, each an op drawn uniformly from ``space``, at bin
    ``magnitude`` (RandAugment) or a uniform bin when ``None`` (TrivialAugment)."""
    ids = torch.tensor([OP_ID[op] for op in space])
    mags, signed = _table(space, bins, h, w)
    ops = ids[torch.randint(len(ids), (num_ops, n), generator=gen)]
    if magnitude is None:
        k = torch.randint(bins, (num_ops, n), generator=gen)
    else:
        k = torch.full((num_ops, n), magnitude)
    return PolicyDraw(ops, mags[ops, k] * _signs(ops, signed, gen))


def draw(name: str, autoaugment_policy: str, n: int, h: int, w: int, gen: torch.Generator) -> PolicyDraw:
    """The draws of policy ``name`` ("autoaugment", "randaugment" N=2 M=9 of 31,
    "trivialaugment") for ``n`` images of ``h`` x ``w``."""
    if name == "autoaugment":
        return draw_autoaugment(autoaugment_policy, n, h, w, gen)
    if name == "randaugment":
        return draw_uniform(RANDAUGMENT_SPACE, 2, 9, 31, n, h, w, gen)
    return draw_uniform(TRIVIALAUGMENT_SPACE, 1, None, 31, n, h, w, gen)

