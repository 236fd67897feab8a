"""The ops of :mod:`vit16.data.policy_space` applied to a whole uint8 batch at
once with per-sample parameters: no Python loop whose length depends on the
batch content, no host sync, one host-to-device copy of the parameters.

The host plans each stage (:mod:`vit16.data.policy_plan`; the ops are drawn
there): the batch is reordered so that the rows of each op family are
contiguous (one ``index_select`` per stage, one more at the end to restore
the batch order), and every family runs once on its block of rows:

- geometric (ShearX/Y, TranslateX/Y, Rotate): one affine grid + ``grid_sample``
  (nearest, zero fill: torchvision's defaults for these ops) with a matrix per
  row;
- pointwise (Brightness, Contrast, Posterize, Solarize, Invert, AutoContrast,
  Equalize): a 256-entry table per (row, channel), built by each op on its own
  rows, all applied with one ``gather``;
- Color and Sharpness: a blend with the grey image or with the 3x3 smoothed
  image.

The geometric, Color and Sharpness rows are one block, converted to float32
once and cast back to uint8 once per stage (the pointwise rows come first).

Identity rows are not touched. Blocks of host-known size, rather than
``torch.where`` masks over the whole batch, run each op once per sample
instead of every op on every sample (a uint8 ``torch.where`` over a
512 x 3 x 32 x 32 batch alone costs about 4 ms on one CPU thread). The block
sizes are host integers, so no sync; the row orders travel in the same single
copy as the parameters; the number of aten ops per batch is fixed.

The formulas are torchvision's ``transforms.v2.functional`` uint8 kernels
(``adjust_brightness``, ``adjust_contrast``, ``adjust_saturation``,
``adjust_sharpness``, ``posterize``, ``solarize``, ``invert``,
``autocontrast``, ``equalize``, ``affine``, ``rotate``) in the same float32
arithmetic, vectorised; tests/test_augment_ops.py compares them (bit-exact
on the CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vit16.data.policy_plan import FLOAT_FAMILIES, LUT_OPS, BatchPlan, plan
from vit16.data.policy_space import GEOMETRIC, PolicyDraw

def base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """float32 (1, H * W, 3): pixel centres about the image centre, and 1
    (torchvision's affine grid: x from (1 - w) / 2 to (w - 1) / 2)."""
    grid = torch.empty(1, h, w, 3, device=device)
    grid[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=device))
    grid[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=device).unsqueeze(-1))
    grid[..., 2].fill_(1)
    return grid.view(1, h * w, 3)


def affine_nearest(x: torch.Tensor, theta: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Warp float32 (B, C, H, W) integer-valued images by per-sample inverse maps
    ``theta`` float32 (B, 3, 2) (from :func:`~vit16.data.policy_plan.stage_params`),
    nearest neighbour, zero outside; ``grid`` is :func:`base_grid`. Returns
    float32 (B, C, H, W) of the same integer values (nearest sampling copies
    them, so torchvision's rounding before its uint8 cast changes nothing)."""
    b, _, h, w = x.shape
    coords = grid.expand(b, -1, -1).bmm(theta).view(b, h, w, 2)
    return F.grid_sample(x, coords, mode="nearest", padding_mode="zeros", align_corners=False)


def column(p: torch.Tensor, k: int, dims: int) -> torch.Tensor:
    """Parameter column ``k`` of ``p`` (B, len(PARAMS)) as (B, 1, ...) with
    ``dims`` dimensions in all, to broadcast over tables or images (two view ops)."""
    return p[:, k].view((-1,) + (1,) * (dims - 1))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """float32 (B, 1, H, W): floor(0.2989 R + 0.587 G + 0.114 B) of uint8 or float (B, 3, H, W)."""
    r, g, b = x.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """float32 ``clamp(x * factor + other * alpha, 0, 255)`` (torchvision's
    ``_blend`` with ``alpha = 1 - factor``), broadcasting per-sample weights."""
    return torch.addcmul(x * factor, other, alpha).clamp_(0, 255)


def equalize_lut(index: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 256): PIL's histogram-equalisation table of each row of
    ``index`` int64 (N, P) (one image channel's pixel values), as
    ``torchvision.transforms.v2.functional.equalize``: the identity where the
    step (pixels outside the top bin / 255) is 0. Histograms by one ``scatter_add_``.

    Counted and divided in float32, which is exact for images of up to 4
    million pixels (2048 x 2048): every count is an integer below 2 ** 22, and
    a true quotient below an integer k is below it by at least 1 / divisor,
    more than half a float32 step at k, so floor() gives what integer
    division gives; float arithmetic runs vectorised where integer division
    does not."""
    n, pixels = index.shape
    ones = torch.ones(1, device=index.device).expand(n, pixels)
    hist = torch.zeros(n, 256, device=index.device).scatter_add_(1, index, ones)
    cum = hist.cumsum(1)
    top = hist.gather(1, cum.argmax(1, keepdim=True))  # the count of the last non-empty bin
    step = torch.sub(pixels, top).div_(255).floor_()
    # (pixels below each value + step // 2) // step: the exclusive cumulative count is cum - hist
    lut = (cum - hist).add_(step.div(2).floor_()).div_(step.clamp(min=1)).floor_().clamp_(0, 255)
    ident = torch.arange(256, device=index.device, dtype=lut.dtype)
    return torch.where(step != 0, lut, ident).to(torch.uint8)


def autocontrast_lut(images: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, 256): each channel's min..max stretched to 0..255
    (``torchvision...functional.autocontrast``); ``v`` float32 (256,) = 0..255."""
    lo, hi = images.amin((-2, -1)).float(), images.amax((-2, -1)).float()
    same = hi == lo
    inv_scale = torch.where(same, 1.0, (hi - lo) * (1.0 / 255))
    lo = torch.where(same, 0.0, lo)
    return ((v - lo[..., None]) / inv_scale[..., None]).clamp_(0, 255).to(torch.uint8)


def lut_candidate(name: str, images: torch.Tensor, index: torch.Tensor, p: torch.Tensor,
                  v: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1 or C, 256): op ``name``'s table for every row of uint8
    ``images`` (B, C, H, W) (``index``: the same values, int64 (B * C, H * W);
    ``p``: parameters; ``v``: float32 0..255)."""
    if name == "Brightness":
        return (v * column(p, 1, 3)).clamp_(0, 255).to(torch.uint8)
    if name == "Contrast":
        mean = grayscale(images).mean((-3, -2, -1)).view(-1, 1, 1)
        return blend(v, mean, column(p, 1, 3), column(p, 2, 3)).to(torch.uint8)
    if name == "Posterize":
        return v.to(torch.uint8) & column(p, 4, 3).to(torch.uint8)
    if name in ("Solarize", "Invert"):
        return torch.where(v >= column(p, 3, 3), 255 - v, v).to(torch.uint8)
    if name == "AutoContrast":
        return autocontrast_lut(images, v)
    return equalize_lut(index).view(images.shape[0], images.shape[1], 256)


def apply_luts(images: torch.Tensor, p: torch.Tensor, counts: list[int], ops: tuple[str, ...]) -> torch.Tensor:
    """uint8 (B, C, H, W): rows sorted by pointwise op (``counts[k]`` rows of
    ``LUT_OPS[k]``), each through its own table of its op (parameters ``p``,
    :func:`~vit16.data.policy_plan.stage_params`): the tables of each op are
    built on its rows only, then one ``gather`` applies them all."""
    b, c, h, w = images.shape
    v = torch.arange(256, device=images.device, dtype=torch.float32)
    index = images.reshape(b * c, h * w).long()
    tables, start = [], 0
    for name, n in zip(LUT_OPS, counts):
        if name in ops:  # ops the policy cannot draw have no rows
            rows = slice(start, start + n)
            table = lut_candidate(name, images[rows], index[start * c:(start + n) * c], p[rows], v)
            tables.append(table.expand(n, c, 256))
        start += n
    if not tables:
        return images
    return torch.cat(tables).view(b * c, 256).gather(1, index).view(b, c, h, w)


def colour(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """float32 (B, 3, H, W) in [0, 255]: ``adjust_saturation`` by factor
    ``p[:, 1]`` (a blend with the grey image), before the uint8 cast."""
    return blend(x, grayscale(x), column(p, 1, 4), column(p, 2, 4))


def sharpen(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``adjust_sharpness`` by factor ``p[:, 1]`` on float32 (B, C, H, W)
    integer-valued ``x``, in place, before the uint8 cast: the interior blended
    with the rounded 3x3 smoothing (1 around a centre of 5, over 13), the
    border kept. The 3x3 sum S is an exact integer here; round(S / 13) has no
    ties, so it equals torchvision's rounded float convolution."""
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    centre = x[..., 1:-1, 1:-1]
    diff = box.add_(centre, alpha=4.0).div_(13.0).round_().sub_(centre)
    x[..., 1:-1, 1:-1] = torch.addcmul(centre, diff, column(p, 2, 4))
    return x.clamp_(0, 255)


def apply_float_block(x: torch.Tensor, p: torch.Tensor, counts: list[int], grid: torch.Tensor,
                      ops: tuple[str, ...]) -> torch.Tensor:
    """The float families on their rows of float32 ``x`` (sorted: ``counts[k]``
    rows of ``FLOAT_FAMILIES[k]``: geometric, Color, Sharpness), in place;
    ``p`` their parameters. Returns ``x``, integer-valued or truncated to
    uint8 by the caller's cast, as torchvision's ops do."""
    geo, col, sharp = counts
    h, w = x.shape[2:]
    if any(name in ops for name in GEOMETRIC):
        x[:geo] = affine_nearest(x[:geo], p[:geo, 5:].reshape(geo, 3, 2), grid)
    if "Color" in ops:
        x[geo:geo + col] = colour(x[geo:geo + col], p[geo:geo + col])
    if "Sharpness" in ops and h > 2 and w > 2:
        sharpen(x[geo + col:], p[geo + col:])
    return x


def apply_stage(images: torch.Tensor, p: torch.Tensor, counts: list[int], grid: torch.Tensor,
                ops: tuple[str, ...]) -> torch.Tensor:
    """One stage, in place, on uint8 (B, C, H, W) whose rows are sorted by
    family (:func:`~vit16.data.policy_plan.plan`): ``p`` float32 (B, len(PARAMS))
    the rows' parameters on the images' device, ``counts`` the rows per family
    (host ints, identity first); ``ops``: the ops the policy can draw (families
    it cannot draw are skipped, the same for every batch of a policy; every block runs, empty or not,
    so the number of aten ops does not depend on the draws).

    Two blocks of rows after the identity rows: the pointwise ops (one table
    gather), then the float families, converted to float32 once and cast back
    to uint8 once (the cast truncates, as torchvision's uint8 ops do)."""
    n_lut = len(LUT_OPS)
    start, n = counts[0], sum(counts[1:1 + n_lut])
    if any(name in ops for name in LUT_OPS):
        x = images[start:start + n]
        x.copy_(apply_luts(x, p[start:start + n], counts[1:1 + n_lut], ops))
    start += n
    if any(name in ops for names in FLOAT_FAMILIES for name in names):
        x = images[start:]
        x.copy_(apply_float_block(x.float(), p[start:], counts[1 + n_lut:], grid, ops))
    return images


def to_device(params: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU tensor ``params`` on ``device`` in one copy: pinned and non-blocking
    for CUDA (the host does not wait); ``params`` itself when already there."""
    device = torch.device(device)
    if device.type == "cuda" and params.device.type == "cpu":
        return params.pin_memory().to(device, non_blocking=True)
    return params.to(device)


def apply_plan(images: torch.Tensor, host: BatchPlan, packed: torch.Tensor, ops: tuple[str, ...]) -> torch.Tensor:
    """All stages of the host plan ``host`` applied to uint8 images (B, C, H, W)
    on any device; ``packed``: ``host.packed`` already on that device (one copy,
    :func:`to_device`); ``ops``: the op names the policy can draw. Returns a new
    uint8 tensor."""
    _, _, h, w = images.shape
    params, perms = host.split(packed)
    grid = base_grid(h, w, images.device)
    for s, counts in enumerate(host.counts):
        images = apply_stage(images.index_select(0, perms[s]), params[s], counts, grid, ops)
    return images.index_select(0, perms[-1])


def apply_draw(images: torch.Tensor, d: PolicyDraw, ops: tuple[str, ...]) -> torch.Tensor:
    """All stages of draw ``d`` applied to uint8 images (B, C, H, W) on any
    device (``ops``: the op names the policy can draw): plans it
    (:func:`vit16.data.policy_plan.plan`), one copy, :func:`apply_plan`."""
    host = plan(d, images.shape[2], images.shape[3])
    return apply_plan(images, host, to_device(host.packed, images.device), ops)
