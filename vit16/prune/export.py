"""Export a pruned checkpoint as a physically smaller ViT.

    python -m vit16 export-pruned runs/refill_vit_tiny_cifar10/round_04/pruned.pt --out vit_tiny_refill.pt

Dead heads and MLP neurons (:func:`vit16.prune.structures.units_alive`) are
removed: ``qkv`` loses their 3 x head_dim rows, ``proj`` their columns,
``fc1`` rows and ``fc2`` columns go with the neurons, and the model is
rebuilt with per-block head counts and MLP sizes (``block_heads``,
``block_mlp_dims`` of :class:`vit16.models.VisionTransformer`). A structure
whose input side is zero but whose output side is not adds a constant, which
is folded into the next bias (a head's value bias through ``proj``: its
attention weights sum to one; a neuron's ``GELU(fc1 bias)`` through ``fc2``),
so the exported model gives the masked model's logits up to float error.
Unstructured (IMP) masks rarely free a whole structure: their export keeps
almost every head and neuron.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit16.checkpoint import CheckpointError, load_checkpoint
from vit16.prune.masks import fold_masks
from vit16.prune.structures import block_tensors, head_sides, neuron_sides, units_alive

__all__ = ["build_arch", "compare_on", "export_model", "export_state", "inference_speed", "load_exported"]


def _block_weights(state: dict[str, torch.Tensor], depth: int) -> list[dict[str, torch.Tensor]]:
    names = {f"blocks.{i}.{rel}": state[f"blocks.{i}.{rel}.weight"]
             for i in range(depth) for rel in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    return block_tensors(names, depth)


def export_state(state: dict[str, torch.Tensor], depth: int, head_dim: int
                 ) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """Remove the dead structures from a plain ViT state dict.

    Args:
        state: a plain (folded, :func:`vit16.prune.fold_masks`) ViT state dict.
        depth: blocks; head_dim: size of one head.

    Returns:
        ``(state, heads, neurons)``: the smaller state dict and the heads and
        MLP neurons kept in each block (lists of ``depth`` ints).
    """
    out = dict(state)
    heads, neurons = [], []
    for i, block in enumerate(_block_weights(state, depth)):
        p = f"blocks.{i}."
        head_alive, neuron_alive = units_alive(block, head_dim)
        h_in, h_out = head_sides(block, head_dim)
        n_in, n_out = neuron_sides(block)
        qkv_b = state.get(p + "attn.qkv.bias")
        proj_w, proj_b = state[p + "attn.proj.weight"], state[p + "attn.proj.bias"].clone()
        num_heads = head_alive.numel()
        # a head with zero q, k, v rows outputs its value bias at every token
        folded_heads = (h_in.eq(0).all(dim=1) & h_out.ne(0).any(dim=1)).nonzero().flatten()
        for h in folded_heads.tolist():
            if qkv_b is not None:
                v_bias = qkv_b.view(3, num_heads, head_dim)[2, h]
                proj_b += proj_w[:, h * head_dim:(h + 1) * head_dim] @ v_bias
        fc1_b, fc2_w = state[p + "mlp.fc1.bias"], state[p + "mlp.fc2.weight"]
        fc2_b = state[p + "mlp.fc2.bias"].clone()
        folded = (n_in.eq(0).all(dim=1) & n_out.ne(0).any(dim=1)).nonzero().flatten()
        if folded.numel():
            fc2_b += fc2_w[:, folded] @ F.gelu(fc1_b[folded])
        rows = torch.arange(3 * num_heads * head_dim).view(3, num_heads, head_dim)[:, head_alive].flatten()
        cols = torch.arange(num_heads * head_dim).view(num_heads, head_dim)[head_alive].flatten()
        keep = neuron_alive.nonzero().flatten()
        out[p + "attn.qkv.weight"] = state[p + "attn.qkv.weight"][rows].clone()
        if qkv_b is not None:
            out[p + "attn.qkv.bias"] = qkv_b[rows].clone()
        out[p + "attn.proj.weight"] = proj_w[:, cols].clone()
        out[p + "attn.proj.bias"] = proj_b
        out[p + "mlp.fc1.weight"] = state[p + "mlp.fc1.weight"][keep].clone()
        out[p + "mlp.fc1.bias"] = fc1_b[keep].clone()
        out[p + "mlp.fc2.weight"] = fc2_w[:, keep].clone()
        out[p + "mlp.fc2.bias"] = fc2_b
        heads.append(int(head_alive.sum()))
        neurons.append(int(neuron_alive.sum()))
    return out, heads, neurons


def build_arch(arch: dict[str, Any]) -> nn.Module:
    """The model ``arch`` describes, freshly initialised.

    Args:
        arch: ``{"name": registered model, "kwargs": its builder options}``, as
            :func:`export_model` returns it (``block_heads``, ``block_mlp_dims``
            for an exported model; without them, the dense one).

    Returns:
        the model (CPU, train mode).

    Raises:
        vit16.UnknownNameError: an unknown model name.
    """
    from vit16 import MODELS

    with warnings.catch_warnings():  # empty layers of fully pruned blocks
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        return MODELS.build(arch["name"], **arch["kwargs"])


def export_model(ckpt: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The smaller model of a vit16 checkpoint (masked or not) and its ``arch``.

    Args:
        ckpt: a loaded vit16 checkpoint with ``model``, ``config`` and ``num_classes``.

    Returns:
        ``(model, arch)``: the exported :class:`vit16.models.VisionTransformer`
        (eval mode, CPU) and ``{"name": model name, "kwargs": builder options
        incl. block_heads and block_mlp_dims}``.

    Raises:
        CheckpointError: the checkpoint has no model config, or its model is not a ViT.
    """
    from vit16.config import from_dict
    from vit16.models import VisionTransformer

    if "config" not in ckpt or "model" not in ckpt:
        raise CheckpointError("the checkpoint has no model config: export a run's last.pt, "
                              "best.pt or a pruning round's pruned.pt")
    cfg = from_dict(ckpt["config"])
    kwargs = cfg.model.overrides()
    kwargs["num_classes"] = ckpt.get("num_classes", kwargs.get("num_classes"))
    dense = build_arch({"name": cfg.model.name, "kwargs": kwargs})
    if not isinstance(dense, VisionTransformer):
        raise CheckpointError(f"{cfg.model.name} is not a ViT; only ViT checkpoints can be exported")
    state, _ = fold_masks(ckpt["model"])
    head_dim = dense.blocks[0].attn.head_dim
    small, heads, neurons = export_state(state, len(dense.blocks), head_dim)
    arch = {"name": cfg.model.name,
            "kwargs": {**kwargs, "block_heads": heads, "block_mlp_dims": neurons}}
    model = build_arch(arch)
    model.load_state_dict(small)
    return model.eval(), arch


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild a model written by ``python -m vit16 export-pruned`` (eval mode, CPU).

    Raises:
        CheckpointError: missing, unreadable or not an exported model.
    """
    ckpt = load_checkpoint(path, "cpu", hint="export it again with python -m vit16 export-pruned")
    if "arch" not in ckpt:
        raise CheckpointError(f"{path} is not an exported model (no 'arch'); "
                              "write one with python -m vit16 export-pruned CKPT --out FILE")
    model = build_arch(ckpt["arch"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


@torch.inference_mode()
def inference_speed(model: nn.Module, batch: torch.Tensor, steps: int = 10, warmup: int = 2) -> float:
    """Inference throughput of ``model`` on ``batch`` (B, C, H, W), images/s
    (median of ``steps`` timed forwards after ``warmup`` untimed ones)."""
    model.eval()
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(steps):
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        t0 = time.perf_counter()
        model(batch)
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        times.append(time.perf_counter() - t0)
    return batch.shape[0] / sorted(times)[len(times) // 2]


@torch.inference_mode()
def compare_on(loader, a: nn.Module, b: nn.Module) -> dict[str, float]:
    """Top-1 (%) of models ``a`` and ``b`` over ``loader`` (``(images, labels)``
    batches) and the largest |logit difference| between them."""
    hits_a = hits_b = n = 0
    diff = 0.0
    for images, labels in loader:
        la, lb = a(images), b(images)
        hits_a += int((la.argmax(1) == labels).sum())
        hits_b += int((lb.argmax(1) == labels).sum())
        diff = max(diff, float((la - lb).abs().max()))
        n += labels.shape[0]
    return {"top1_a": 100.0 * hits_a / n, "top1_b": 100.0 * hits_b / n, "max_diff": diff, "count": n}
