"""Attention analyses of the paper's section 4.5: mean attention distance
(Fig. 7 right, Fig. 11) and attention rollout (Fig. 6, Fig. 14; Abnar &
Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Everything works on the attention weights that
:meth:`vit16.models.VisionTransformer.forward_attention` returns: one tensor
(B, heads, T, T) per block, rows summing to 1, the first ``num_prefix_tokens``
tokens being the class token (if any) and the rest the patches in row-major
order (patch ``r * gw + c`` at row ``r``, column ``c``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "attention_distance_over_images",
    "attention_rollout",
    "mean_attention_distance",
    "patch_distances",
    "rollout_maps",
]


def _grid(grid: int | Sequence[int]) -> tuple[int, int]:
    return (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))


def patch_distances(grid: int | Sequence[int], patch_size: float) -> torch.Tensor:
    """Image-space distance between the centres of every pair of patches.

    Patch ``n = r * gw + c`` has its centre at pixel ``((c + 0.5) P, (r + 0.5) P)``;
    the distance of patches (r, c) and (r', c') is ``P * sqrt((r - r')^2 + (c - c')^2)``.

    Args:
        grid: patches per side ``G`` (or ``(gh, gw)``).
        patch_size: patch side ``P`` in pixels.

    Returns:
        float64 (N, N), N = gh * gw, in pixels.
    """
    gh, gw = _grid(grid)
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64),
                                torch.arange(gw, dtype=torch.float64), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1) * patch_size  # (N, 2)
    return torch.cdist(centres, centres)


def mean_attention_distance(attn: torch.Tensor, grid: int | Sequence[int], patch_size: float,
                            num_prefix_tokens: int = 1) -> torch.Tensor:
    """Mean attention distance of each image and head (paper section 4.5, Fig. 7
    right: "the average distance in image space across which information is
    integrated, based on the attention weights"), in pixels.

    For every query patch: the distance between its centre and each key
    patch's centre (:func:`patch_distances`), weighted by the attention the
    query gives that key; then averaged over the query patches. The class token
    takes part neither as query nor as key: its column is dropped and each
    query's weights over the patch keys are renormalised to sum to 1 (so a head
    that mostly reads the class token still gets a distance from where its
    remaining attention goes).

    Args:
        attn: (B, heads, T, T) attention weights of one block, T =
            ``num_prefix_tokens`` + gh * gw.
        grid: patches per side (or ``(gh, gw)``).
        patch_size: patch side in pixels.
        num_prefix_tokens: leading non-patch tokens (1 with a class token).

    Returns:
        float64 (B, heads), pixels.

    Raises:
        ValueError: T does not match the grid and prefix tokens.
    """
    gh, gw = _grid(grid)
    p = num_prefix_tokens
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2] or attn.shape[-1] != p + gh * gw:
        raise ValueError(f"attention of shape {tuple(attn.shape)} does not fit {p} prefix token(s) "
                         f"and a {gh}x{gw} patch grid (expected (B, heads, T, T), T = {p + gh * gw})")
    a = attn[..., p:, p:].double()
    a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    dist = patch_distances((gh, gw), patch_size).to(a.device)
    return (a * dist).sum(-1).mean(-1)


@torch.no_grad()
def attention_distance_over_images(model, batches: Iterable[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean attention distance of every head of every block of ``model``,
    averaged over all images of ``batches`` (paper Fig. 7 right, Fig. 11).

    Args:
        model: a :class:`~vit16.models.VisionTransformer` (its explicit
            attention path, ``forward_attention``, gives the weights).
        batches: normalised images (B, C, S, S) on the model's device.

    Returns:
        ``(distances, images)``: float64 (L, heads) in pixels, and the number of images.

    Raises:
        ValueError: no images.
    """
    grid, size = model.patch_embed.grid_size, model.patch_embed.patch_size
    total, count = None, 0
    for x in batches:
        _, maps = model.forward_attention(x)
        per_image = torch.stack([mean_attention_distance(a, grid, size, model.num_prefix_tokens)
                                 for a in maps])  # (L, B, heads)
        s = per_image.sum(1).cpu()
        total = s if total is None else total + s
        count += x.shape[0]
    if not count:
        raise ValueError("no images to compute attention distances on")
    return total / count, count


def attention_rollout(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020, as the paper's Fig. 6 and
    appendix D.8): per block, average the weights over the heads, add the
    identity (the residual connection), renormalise each row to sum to 1,
    and multiply the blocks' matrices from the first to the last,
    ``R = Â_L ... Â_2 Â_1``.

    Args:
        maps: L tensors (B, heads, T, T), first block first.

    Returns:
        float64 (B, T, T): row ``i`` is how much each input token flows into
        output token ``i``; rows sum to 1.

    Raises:
        ValueError: no maps.
    """
    if not maps:
        raise ValueError("attention rollout needs at least one block's attention")
    rollout = None
    for a in maps:
        a = a.double().mean(1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def rollout_maps(rollout: torch.Tensor, grid: int | Sequence[int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """The image map of a rollout: with a class token, the class token's row
    over the patch tokens (what the representation that is classified reads
    from each patch); without one (GAP), the mean over the patch rows.

    Args:
        rollout: (B, T, T) from :func:`attention_rollout`.
        grid: patches per side (or ``(gh, gw)``).

    Returns:
        (B, gh, gw), not renormalised (entries sum to at most 1).
    """
    gh, gw = _grid(grid)
    p = num_prefix_tokens
    flow = rollout[:, 0, p:] if p else rollout[:, p:, p:].mean(1)
    return flow.reshape(-1, gh, gw)
