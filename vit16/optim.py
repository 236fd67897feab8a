"""Optimizer construction: parameter groups (weight decay, head LR, layer decay).

Every parameter group carries ``lr_scale``; the trainer sets
``group["lr"] = sched(step) * group["lr_scale"]`` before each optimizer step
(:func:`set_lr`). Weight decay is never applied to biases, norm weights (any
1-D parameter), ``pos_embed`` or ``cls_token``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vit16.config import OptimConfig
from vit16.config_checks import OPTIMIZERS

__all__ = ["NO_DECAY_NAMES", "OPTIMIZERS", "build_optimizer", "find_head", "param_groups", "set_lr"]

NO_DECAY_NAMES = ("pos_embed", "pos_embed_x", "pos_embed_y", "rel_pos", "cls_token", "dist_token")
"""Parameter names (last dotted component) never weight-decayed, besides 1-D params."""

def find_head(model: nn.Module) -> nn.Module | None:
    """The classification head of ``model``: ``model.get_classifier()`` when the
    model has that method (timm style), else ``model.head``, else ``model.fc``
    (torchvision ResNet); ``None`` when there is none."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        if isinstance(head, nn.Module):
            return head
    for name in ("head", "fc"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES


def _layer_id(name: str, depth: int, head_ids: set[int], p: torch.Tensor) -> int:
    """0 = embeddings, i + 1 = block i, depth + 1 = head, final norm and the rest."""
    if id(p) in head_ids:
        return depth + 1
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    first = name.split(".")[0]
    if first in ("patch_embed", "pos_embed", "pos_embed_x", "pos_embed_y", "cls_token", "dist_token", "pos_drop"):
        return 0
    return depth + 1


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into optimizer groups.

    Groups are keyed by (layer, decay or not, head or not); each is a dict with
    ``params``, ``weight_decay`` (``cfg.weight_decay`` or 0.0), ``lr_scale``
    (float multiplier of the scheduled LR), ``lr`` (``cfg.lr * lr_scale``) and
    ``name`` (e.g. ``"layer3_decay"``, ``"head_no_decay"``). Empty groups are
    dropped; frozen parameters (``requires_grad=False``) are left out.

    * no weight decay: biases and norm weights (any parameter with ``ndim <= 1``),
      and parameters named ``pos_embed``/``cls_token``/``dist_token``;
    * head (:func:`find_head`): ``lr_scale = cfg.head_lr_mult``;
    * layer-wise LR decay (``cfg.layer_decay < 1``, models with ``blocks``):
      block ``i`` of ``L`` gets ``layer_decay ** (L - i)``, the embeddings
      (``patch_embed``, ``pos_embed``, ``cls_token``) ``layer_decay ** (L + 1)``,
      the head and the final norm 1.0.

    ``cfg``'s values are in their ranges (:func:`vit16.config.check_ranges`,
    which :func:`vit16.config.resolve` and :func:`vit16.runtime.setup_runtime` call).

    Raises:
        ValueError: ``layer_decay < 1`` on a model without a ``blocks`` ModuleList.
    """
    head = find_head(model)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    depth = 0
    if cfg.layer_decay < 1:
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
            raise ValueError(
                f"optim.layer_decay = {cfg.layer_decay} needs a model with a `blocks` "
                f"ModuleList (a ViT); {type(model).__name__} has none: set optim.layer_decay = 1.0"
            )
        depth = len(blocks)

    groups: dict[tuple[int, bool, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = id(p) in head_ids
        decay = not _no_decay(name, p)
        layer = _layer_id(name, depth, head_ids, p) if cfg.layer_decay < 1 else 0
        key = (layer, decay, is_head)
        if key not in groups:
            scale = cfg.layer_decay ** (depth + 1 - layer) if cfg.layer_decay < 1 else 1.0
            if is_head:
                scale *= cfg.head_lr_mult
            prefix = "head" if is_head else (f"layer{layer}" if cfg.layer_decay < 1 else "body")
            groups[key] = {
                "name": f"{prefix}_{'decay' if decay else 'no_decay'}",
                "params": [],
                "param_names": [],
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "lr_scale": scale,
                "lr": cfg.lr * scale,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, device: torch.device | str = "cpu"
) -> torch.optim.Optimizer:
    """AdamW (``fused=True`` on CUDA) or SGD (momentum, nesterov) over
    :func:`param_groups`. Group LRs start at ``cfg.lr * lr_scale``; the trainer
    overwrites them every step with :func:`set_lr`.

    ``cfg``'s values are in their ranges, as for :func:`param_groups`
    (``betas`` two numbers in [0, 1), ``nesterov`` with momentum).

    Raises:
        ValueError: ``layer_decay`` on a model without blocks (:func:`param_groups`),
            an unknown ``cfg.name`` (lists the known optimizers).
    """
    groups = param_groups(model, cfg)
    device = torch.device(device)
    name = cfg.name.lower()
    if name == "adamw":
        extra = {"fused": True} if device.type == "cuda" else {}
        return torch.optim.AdamW(
            groups,
            lr=cfg.lr,
            betas=(float(cfg.betas[0]), float(cfg.betas[1])),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            **extra,
        )
    if name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    raise ValueError(f"unknown optimizer optim.name = {cfg.name!r}; known: {', '.join(OPTIMIZERS)}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's LR to ``lr * group["lr_scale"]`` (``lr_scale`` defaults to 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
