"""Pruning masks on a ViT's block matrices, kept with ``torch.nn.utils.prune``.

A mask is a 0/1 float tensor the shape of a weight. :func:`apply_masks`
re-parametrises each masked ``nn.Linear`` as ``weight = weight_orig *
weight_mask`` (``torch.nn.utils.prune``): ``weight_orig`` is the trained
parameter and ``weight_mask`` a buffer, both in ``state_dict()``, so masks
travel with every checkpoint, are restored on resume and broadcast by DDP,
and a masked weight is exactly zero in every forward, whatever the
optimizer does to ``weight_orig``.

The prunable matrices (:data:`PRUNABLE`) are ``attn.qkv``, ``attn.proj``,
``mlp.fc1`` and ``mlp.fc2`` of every block; sparsity is counted over their
weights only (biases, embeddings, norms and the head stay dense).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from vit16.models.state import fold_masks

__all__ = [
    "PRUNABLE",
    "apply_masks",
    "fold_masks",
    "masked_weights",
    "ones_masks",
    "prunable_linears",
    "sparsity",
]

PRUNABLE = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
"""The prunable ``nn.Linear`` of each block, relative to ``blocks.i``."""


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """``{"blocks.0.attn.qkv": module, ...}``: the prunable layers of every block, in order.

    Raises:
        TypeError: ``model`` is not a :class:`vit16.models.VisionTransformer`
            (it has no ``blocks`` of ViT blocks).
    """
    from vit16.models import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise TypeError(f"pruning works on vit16 VisionTransformer models, not "
                        f"{type(model).__name__}; choose a vit_* model (train.py --list)")
    return {f"blocks.{i}.{rel}": block.get_submodule(rel)
            for i, block in enumerate(model.blocks) for rel in PRUNABLE}


def masked_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The effective weights (``weight_orig * weight_mask`` where masked) of
    :func:`prunable_linears`, detached, on their device."""
    out = {}
    for name, m in prunable_linears(model).items():
        if prune.is_pruned(m):
            out[name] = (m.weight_orig * m.weight_mask).detach()
        else:
            out[name] = m.weight.detach()
    return out


def ones_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """All-ones masks (nothing pruned) for :func:`prunable_linears`, float32 on the CPU."""
    return {name: torch.ones(m.weight.shape) for name, m in prunable_linears(model).items()}


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Re-parametrise ``model``'s prunable layers with ``masks`` (``torch.nn.utils.prune``).

    Call it on a model that has no masks yet, after its weights are loaded
    (a later ``load_state_dict`` of a masked checkpoint then restores both
    ``weight_orig`` and ``weight_mask``).

    Raises:
        ValueError: a mask for a layer the model lacks, a missing layer, a
            shape that differs from the weight's, or a layer already masked.
    """
    layers = prunable_linears(model)
    if set(masks) != set(layers):
        raise ValueError(f"masks cover {sorted(set(masks) - set(layers)) or 'no extra'} layers "
                         f"the model lacks and miss {sorted(set(layers) - set(masks)) or 'none'}")
    for name, m in layers.items():
        if prune.is_pruned(m):
            raise ValueError(f"{name} is already masked; build a fresh model to apply new masks")
        mask = masks[name]
        if mask.shape != m.weight.shape:
            raise ValueError(f"mask for {name} is {tuple(mask.shape)}, the weight is "
                             f"{tuple(m.weight.shape)}")
        prune.custom_from_mask(m, "weight", mask.to(m.weight.device, m.weight.dtype))


def sparsity(weights: dict[str, torch.Tensor]) -> float:
    """Percentage of exactly-zero entries over all ``weights`` (e.g. :func:`masked_weights`)."""
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    return 100.0 * zeros / max(total, 1)

