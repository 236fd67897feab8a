"""Embedding analyses of the paper's section 4.5, Fig. 7: the cosine
similarity of the learned position embeddings (centre) and the principal
components of the patch-embedding filters (left)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["patch_embedding_pca", "position_embedding_similarity"]


def position_embedding_similarity(pos_embed: torch.Tensor, grid: int | Sequence[int]) -> torch.Tensor:
    """Cosine similarity between the position embedding of every patch and
    those of all the others (paper Fig. 7 centre, Fig. 10).

    Args:
        pos_embed: (N, D) patch position embeddings in row-major patch order
            (class-token row removed), N = gh * gw; e.g.
            ``model.patch_pos_embed()``.
        grid: patches per side (or ``(gh, gw)``).

    Returns:
        float64 (gh, gw, gh, gw): ``sim[r, c]`` is the (gh, gw) tile of patch
        (r, c)'s similarity to every patch, in [-1, 1]; ``sim[r, c, r, c] = 1``.

    Raises:
        ValueError: N is not gh * gw.
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    if pos_embed.ndim != 2 or pos_embed.shape[0] != gh * gw:
        raise ValueError(f"position embedding of shape {tuple(pos_embed.shape)} is not (N, D) "
                         f"with N = {gh * gw} patches of a {gh}x{gw} grid")
    e = pos_embed.detach().double()
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (e @ e.T).reshape(gh, gw, gh, gw)


def patch_embedding_pca(weight: torch.Tensor, k: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the patch-embedding filters (paper Fig. 7 left:
    "RGB embedding filters (first 28 principal components)").

    Each of the D filters of the linear patch embedding ``E`` (the conv kernel,
    one (C, P, P) filter per output channel) is a sample in C*P*P dimensions;
    the samples are centred (the mean filter removed) and decomposed by SVD.
    Each component is a unit vector; its sign is fixed so that its entry of
    largest magnitude is positive.

    Args:
        weight: (D, C, P, P) ``patch_embed.proj.weight``.
        k: number of components (capped at min(D, C*P*P)).

    Returns:
        ``(components, explained)``: float64 (k, C, P, P) unit-norm components,
        most variance first, and float64 (k,) the fraction of the filters'
        total variance each explains.
    """
    d = weight.shape[0]
    x = weight.detach().double().reshape(d, -1)
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(k, vh.shape[0])
    comps = vh[:k]
    idx = comps.abs().argmax(1, keepdim=True)
    comps = comps * torch.sign(comps.gather(1, idx))
    var = s**2
    explained = var[:k] / var.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return comps.reshape(k, *weight.shape[1:]), explained
