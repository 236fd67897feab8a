"""Export a pruned checkpoint as a physically smaller ViT.

    python -m vit16.prune.export runs/refill_vit_tiny_cifar10/round_04/pruned.pt --out vit_tiny_refill.pt

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

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit16.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vit16.prune.masks import fold_masks
from vit16.prune.structures import block_tensors, head_sides, neuron_sides, units_alive

__all__ = ["compare_on", "export_model", "export_state", "inference_speed", "load_exported", "main"]


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


def _build(arch: dict[str, Any]) -> nn.Module:
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
    dense = _build({"name": cfg.model.name, "kwargs": kwargs})
    if not isinstance(dense, VisionTransformer):
        raise CheckpointError(f"{cfg.model.name} is not a ViT; only ViT checkpoints can be exported")
    state, _ = fold_masks(ckpt["model"])
    head_dim = dense.blocks[0].attn.head_dim
    small, heads, neurons = export_state(state, len(dense.blocks), head_dim)
    arch = {"name": cfg.model.name,
            "kwargs": {**kwargs, "block_heads": heads, "block_mlp_dims": neurons}}
    model = _build(arch)
    model.load_state_dict(small)
    return model.eval(), arch


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild a model written by ``python -m vit16.prune.export`` (eval mode, CPU).

    Raises:
        CheckpointError: missing, unreadable or not an exported model.
    """
    ckpt = load_checkpoint(path, "cpu", hint="export it again with python -m vit16.prune.export")
    if "arch" not in ckpt:
        raise CheckpointError(f"{path} is not an exported model (no 'arch'); "
                              "write one with python -m vit16.prune.export CKPT --out FILE")
    model = _build(ckpt["arch"])
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


def main(argv: list[str] | None = None) -> int:
    """``python -m vit16.prune.export CKPT --out FILE``: write the smaller model,
    print parameters, max |logit difference| and images/s of dense vs exported
    (best of 3 alternating measurements of the median of ``--steps`` forwards).
    Bad input prints one ``error:`` line and returns 2."""
    p = argparse.ArgumentParser(prog="python -m vit16.prune.export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a pruning round's pruned.pt (or any vit16 ViT checkpoint)")
    p.add_argument("--out", required=True, help="file to write the exported model to")
    p.add_argument("--batch-size", type=int, default=256, help="images per timed forward (default %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="timed forwards per model (default %(default)s)")
    p.add_argument("--device", default="cpu", help="device for the speed test (default %(default)s)")
    p.add_argument("--data-root", help="also compare both models on the test set of the checkpoint's "
                   "data set found under this folder (top-1 %% and largest logit difference)")
    args = p.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint, "cpu", hint="pass a run's last.pt or a round's pruned.pt")
        model, arch = export_model(ckpt)
        dense = _build({"name": arch["name"], "kwargs": {k: v for k, v in arch["kwargs"].items()
                                                         if k not in ("block_heads", "block_mlp_dims")}})
        dense.load_state_dict(fold_masks(ckpt["model"])[0])
        dense.eval()
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    test = None
    if args.data_root:
        from vit16.config import from_dict
        from vit16.data import build_data

        cfg = from_dict(ckpt["config"])
        cfg.data.val_size = 0  # only the test split is used
        try:
            data = build_data(cfg, device, data_root=args.data_root, micro_batch_size=args.batch_size)
        except (FileNotFoundError, ValueError) as err:  # DataNotFoundError, ConfigError
            print(f"error: {err}", file=sys.stderr)
            return 2
        test = compare_on(data.test, dense.to(device), model.to(device))
    img = dense.patch_embed.img_size
    x = torch.randn(args.batch_size, 3, img, img, generator=torch.Generator().manual_seed(0)).to(device)
    dense.to(device)
    model.to(device)
    with torch.inference_mode():
        diff = (dense(x[:32]) - model(x[:32])).abs().max().item()
    speeds = {"dense": 0.0, "exported": 0.0}
    for _ in range(3):  # alternate, keep each model's best: both see the same machine state
        for name, m in (("dense", dense), ("exported", model)):
            speeds[name] = max(speeds[name], inference_speed(m, x, args.steps))
    n_dense = sum(t.numel() for t in dense.parameters())
    n_small = sum(t.numel() for t in model.parameters())
    save_checkpoint(args.out, {"model": model.state_dict(), "arch": arch, "config": ckpt["config"],
                               "num_classes": ckpt.get("num_classes"), "source": str(args.checkpoint)})
    heads, neurons = arch["kwargs"]["block_heads"], arch["kwargs"]["block_mlp_dims"]
    print(f"heads per block {' '.join(map(str, heads))} | MLP neurons per block "
          f"{' '.join(map(str, neurons))}")
    print(f"params: dense {n_dense:,} -> exported {n_small:,} ({100 * n_small / n_dense:.1f}%)")
    print(f"max |logit difference| exported vs masked: {diff:.2e} (batch of 32)")
    if test is not None:
        print(f"test set ({test['count']:,} images): masked top-1 {test['top1_a']:.2f}%, exported top-1 "
              f"{test['top1_b']:.2f}%, max |logit difference| {test['max_diff']:.2e}")
    print(f"inference on {args.device}, batch {args.batch_size}: dense {speeds['dense']:,.0f} images/s, "
          f"exported {speeds['exported']:,.0f} images/s ({speeds['exported'] / speeds['dense']:.2f}x)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
