"""How the masks of the next round are chosen: IMP, Refill and RSST.

* **IMP** (iterative magnitude pruning; Frankle & Carbin, ICLR 2019, with
  rewinding: Frankle et al., ICML 2020): remove ``rate`` of the still
  unmasked prunable weights with the smallest magnitude, over all blocks
  (``scope = "global"``) or in every matrix alike (``"layer"``).
* **Refill** (Chen et al., ICML 2022, "Coarsening the Granularity: Towards
  Structurally Sparse Lottery Tickets", section 3): after the IMP step, in
  every block keep the ``round(density x count)`` heads (and MLP neurons)
  holding the most surviving magnitude (L1 of the trained weights the IMP
  mask keeps), where density is the share of that block's head (or neuron)
  weights the IMP mask keeps, and make the kept structures dense again.
* **RSST** (zjgxwl/RSST): the same structured target as Refill, but the
  weights it drops (every weight alive under the current masks and outside
  the target) are not cut at the start of the next round: that round trains
  under the current masks, adds ``lambda_i * w`` to the gradient of exactly
  those weights (:func:`rsst_lambda`, growing over the round) and applies
  the target masks at its end. The reference code penalises only the
  weights its IMP step kept and cuts the rest at once.

Masks only shrink: a structure (or weight) masked in one round stays masked.
"""

from __future__ import annotations

import math

import torch

from vit16.config_checks import PRUNE_METHODS as METHODS
from vit16.config_checks import PRUNE_SCOPES as SCOPES
from vit16.prune.structures import (
    block_tensors,
    expand_keep,
    head_sides,
    neuron_sides,
    units_alive,
)

__all__ = ["METHODS", "SCOPES", "imp_masks", "next_masks", "refill_masks", "rsst_lambda"]

def _smallest(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` alive entries with the smallest scores (ties: lower index first)."""
    drop = torch.zeros_like(alive)
    if k <= 0:
        return drop
    idx = alive.nonzero().squeeze(1)
    order = torch.sort(scores[idx], stable=True).indices[:k]
    drop[idx[order]] = True
    return drop


def imp_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], rate: float,
              scope: str = "global") -> dict[str, torch.Tensor]:
    """One IMP step: new masks without ``rate`` of the unmasked weights of smallest ``|w|``.

    Args:
        weights: trained weights per prunable layer (:func:`vit16.prune.masked_weights`).
        masks: the current 0/1 masks, same keys and shapes.
        rate: fraction in [0, 1) of the currently unmasked weights to remove
            (``round(rate x unmasked)`` of them, per matrix for ``scope="layer"``).
        scope: ``"global"`` ranks all layers together, ``"layer"`` each matrix apart.

    Returns:
        float 0/1 masks on the CPU.

    Raises:
        ValueError: ``rate`` outside [0, 1) or an unknown ``scope``.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"prune.rate = {rate} must be in [0, 1): the share of remaining weights cut per round")
    if scope not in SCOPES:
        raise ValueError(f"prune.scope = {scope!r} is not one of {', '.join(SCOPES)}")
    names = list(weights)
    groups = [names] if scope == "global" else [[n] for n in names]
    out = {}
    for group in groups:
        scores = torch.cat([weights[n].detach().float().cpu().abs().flatten() for n in group])
        alive = torch.cat([masks[n].cpu().flatten() > 0 for n in group])
        drop = _smallest(scores, alive, round(rate * int(alive.sum())))
        keep = (alive & ~drop).float()
        start = 0
        for n in group:
            size = weights[n].numel()
            out[n] = keep[start:start + size].view(weights[n].shape)
            start += size
    return out


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, density: float) -> torch.Tensor:
    """Keep ``round(density x count)`` (at most the alive ones) structures of highest score."""
    k = min(round(density * alive.numel()), int(alive.sum()))
    return _smallest(-scores, alive, k)  # the k highest


def refill_masks(weights: dict[str, torch.Tensor], imp: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor], depth: int, head_dim: int) -> dict[str, torch.Tensor]:
    """Refill: whole heads and neurons from an unstructured IMP mask (module docstring).

    Args:
        weights: trained weights per prunable layer.
        imp: the unstructured masks of :func:`imp_masks` for the next round.
        masks: the current masks; only structures alive in them can be kept.
        depth: number of blocks; head_dim: size of one attention head.

    Returns:
        float 0/1 structured masks on the CPU: whole heads (q, k, v rows and
        ``proj`` columns) and neurons (``fc1`` row and ``fc2`` column).
    """
    w_blocks = block_tensors({n: w.detach().float().cpu() for n, w in weights.items()}, depth)
    m_blocks = block_tensors({n: m.cpu() for n, m in imp.items()}, depth)
    now_blocks = block_tensors({n: m.cpu() for n, m in masks.items()}, depth)
    out = {}
    for i, (w, m, now) in enumerate(zip(w_blocks, m_blocks, now_blocks)):
        surviving = {k: w[k].abs() * m[k] for k in w}
        heads_alive, neurons_alive = units_alive(now, head_dim)
        keep = []
        for sides, mask_sides, alive in (
            (head_sides(surviving, head_dim), head_sides(m, head_dim), heads_alive),
            (neuron_sides(surviving), neuron_sides(m), neurons_alive),
        ):
            score = sides[0].sum(dim=1) + sides[1].sum(dim=1)
            density = float(sum(s.sum() for s in mask_sides) / sum(s.numel() for s in mask_sides))
            keep.append(_keep_top(score, alive, density))
        for rel, mask in expand_keep(m, head_dim, keep[0], keep[1]).items():
            out[f"blocks.{i}.{rel}"] = mask
    return out


def next_masks(method: str, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
               rate: float, scope: str, depth: int, head_dim: int) -> dict[str, torch.Tensor]:
    """The masks of the next round for ``method`` (``"imp"`` unstructured;
    ``"refill"`` and ``"rsst"`` structured, see :func:`refill_masks`).

    Raises:
        ValueError: unknown method, bad rate or scope.
    """
    if method not in METHODS:
        raise ValueError(f"prune.method = {method!r} is not one of {', '.join(METHODS)}")
    imp = imp_masks(weights, masks, rate, scope)
    if method == "imp":
        return imp
    return refill_masks(weights, imp, masks, depth, head_dim)


def rsst_lambda(step: int, total_steps: int, reg: float, exponent: float) -> float:
    """RSST's penalty coefficient at optimizer step ``step`` (0-based) of a
    round of ``total_steps``: ``reg (exp(((step+1)/total)^p) - 1) / (e - 1)``,
    growing from ~0 to ``reg`` at the last step. Counted over the whole round
    (the reference code restarts it every epoch)."""
    x = min((step + 1) / max(total_steps, 1), 1.0)
    return reg * (math.exp(x**exponent) - 1.0) / (math.e - 1.0)
