"""Host-side plan of one batch's policy ops (numpy, float64): the per-sample
parameters in torchvision's arithmetic and the row orders, packed into one
float32 tensor so they reach the device in one copy
(:func:`vit16.data.policy_ops.apply_plan` applies it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vit16.data.policy_space import GEOMETRIC, OP_ID, PolicyDraw

LUT_OPS = ("Brightness", "Contrast", "Posterize", "Solarize", "Invert", "AutoContrast", "Equalize")
"""The pointwise ops, applied as lookup tables."""
FLOAT_FAMILIES = (GEOMETRIC, ("Color",), ("Sharpness",))
"""The families computed in float32: the geometric ops (one warp), Color, Sharpness."""
FAMILIES = tuple((op,) for op in LUT_OPS) + FLOAT_FAMILIES
"""The op families of a stage, in the order of their rows (after the identity
rows): the pointwise ops first (one table gather), then the float families, so
that these rows are one block converted to float32 once and back once."""
PARAMS = ("op", "factor", "alpha", "threshold", "bits_mask", "t0", "t1", "t2", "t3", "t4", "t5")
"""The per-sample parameter columns of :func:`stage_params` (float32)."""


def inverse_affine(ops: np.ndarray, mags: np.ndarray, h: int, w: int) -> np.ndarray:
    """float64 (B, 6): the inverse affine map (output pixel -> input pixel, in
    pixel units about the image centre) of each sample's geometric op; the
    identity for other ops.

    torchvision's ``affine`` / ``rotate`` for these ops (its inverse-matrix
    formula, ``transforms.v2.functional.affine``): ShearX/Y by ``atan(m)``
    degrees about the top-left corner, TranslateX/Y by ``int(m)`` pixels,
    Rotate by ``m`` degrees counter-clockwise about the centre."""
    zero = np.zeros_like(mags)
    is_op = {op: ops == OP_ID[op] for op in GEOMETRIC}
    shear = np.radians(np.degrees(np.arctan(mags)))
    sx = np.where(is_op["ShearX"], shear, zero)
    sy = np.where(is_op["ShearY"], shear, zero)
    corner = is_op["ShearX"] | is_op["ShearY"]
    cx, cy = np.where(corner, -0.5 * w, zero), np.where(corner, -0.5 * h, zero)
    tx = np.where(is_op["TranslateX"], np.trunc(mags), zero)
    ty = np.where(is_op["TranslateY"], np.trunc(mags), zero)
    rot = np.where(is_op["Rotate"], np.radians(-np.mod(mags, 360.0)), zero)
    a = np.cos(rot - sy) / np.cos(sy)
    b = -(a * np.tan(sx) + np.sin(rot))
    c = np.sin(rot - sy) / np.cos(sy)
    d = np.cos(rot) - c * np.tan(sx)
    m = np.stack([d, -b, zero, -c, a, zero], 1)
    m[:, 2] += cx - m[:, 0] * (cx + tx) - m[:, 1] * (cy + ty)
    m[:, 5] += cy - m[:, 3] * (cx + tx) - m[:, 4] * (cy + ty)
    return m


def stage_params(ops: np.ndarray, mags: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 (B, len(PARAMS)) for one stage's ops int64 (B,) and magnitudes
    float64 (B,), computed in float64 as torchvision computes them, then rounded.

    ``factor`` = 1 + m (brightness / colour / contrast / sharpness), ``alpha`` =
    1 - factor (the blend weight of the degenerate image), ``threshold`` =
    255 m (solarize; 0 for Invert, 256 = never for other ops), ``bits_mask``
    the posterize bit mask (255 = keep all), t0..t5 the inverse affine matrix
    transposed to (3, 2) and divided by (w / 2, h / 2) as torchvision's affine
    grid does (in float32)."""
    factor = 1.0 + mags
    thr = np.where(ops == OP_ID["Solarize"], 255.0 * mags, 256.0)
    thr = np.where(ops == OP_ID["Invert"], 0.0, thr)
    bits = np.where(ops == OP_ID["Posterize"], np.trunc(mags), 8.0).astype(np.int64)
    mask = (255 << (8 - bits)) & 255
    theta = inverse_affine(ops, mags, h, w).astype(np.float32).reshape(-1, 2, 3)
    scaled = theta.transpose(0, 2, 1) / np.array([0.5 * w, 0.5 * h], dtype=np.float32)
    cols = np.stack([ops, factor, 1.0 - factor, thr, mask], 1).astype(np.float32)
    return np.concatenate([cols, scaled.reshape(-1, 6)], 1)


def family_of(ops: np.ndarray) -> np.ndarray:
    """int64 like ``ops``: 0 for Identity, else 1 + the index of the op's family in :data:`FAMILIES`."""
    table = np.zeros(len(OP_ID), dtype=np.int64)
    for f, names in enumerate(FAMILIES, 1):
        for name in names:
            table[OP_ID[name]] = f
    return table[ops]


@dataclass
class BatchPlan:
    """One batch's plan: ``packed`` float32 (S * B * len(PARAMS) + (S + 1) * B,)
    on the CPU (the parameters of the rows of each stage, then the row orders
    ``perms``); ``counts[s]`` the rows per family in stage ``s`` (identity first)."""

    packed: torch.Tensor
    counts: list[list[int]]
    stages: int
    batch: int

    def split(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``packed`` (a copy of :attr:`packed` on any device) -> (params float32
        (S, B, len(PARAMS)), perms int64 (S + 1, B)) views and one conversion."""
        s, b = self.stages, self.batch
        n = s * b * len(PARAMS)
        return packed[:n].view(s, b, len(PARAMS)), packed[n:].long().view(s + 1, b)


def plan(d: PolicyDraw, h: int, w: int) -> BatchPlan:
    """The plan of draw ``d`` for images of ``h`` x ``w``.

    The batch is kept sorted by the family of the current stage's op: stage
    ``s`` reorders the rows of stage ``s - 1``'s output by ``perms[s]``
    (stable; identity rows first, then :data:`FAMILIES` in order); after the
    last stage ``perms[S]`` restores the batch order."""
    ops, mags = d.ops.numpy(), d.mags.numpy()
    s_count, b = ops.shape
    current = np.arange(b)  # the sample at each row
    perms, params, counts = [], [], []
    for s in range(s_count):  # the policy's fixed number of stages
        fam = family_of(ops[s])[current]
        step = np.argsort(fam, kind="stable")
        current = current[step]
        perms.append(step)
        params.append(stage_params(ops[s, current], mags[s, current], h, w))
        counts.append(np.bincount(fam, minlength=len(FAMILIES) + 1).tolist())
    perms.append(np.argsort(current))
    packed = np.concatenate([np.stack(params).ravel(), np.stack(perms).ravel().astype(np.float32)])
    return BatchPlan(torch.from_numpy(packed), counts, s_count, b)
