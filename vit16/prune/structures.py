"""The structures of a ViT block that structured pruning removes whole.

* An attention head ``h`` of a block with ``H`` heads of size ``hd``: its q, k
  and v rows of ``qkv`` (rows ``t * H * hd + h * hd + j`` for t = q, k, v and
  j < hd; 3 x hd rows of D) and its ``hd`` columns of ``proj``.
* An MLP neuron ``j``: row ``j`` of ``fc1`` and column ``j`` of ``fc2``.

Each structure has an input side (qkv rows, fc1 row) and an output side (proj
columns, fc2 column). All functions take the weights or masks of one block as
``{"attn.qkv": (3 H hd, D), "attn.proj": (D, H hd), "mlp.fc1": (M, D),
"mlp.fc2": (D, M)}`` tensors.
"""

from __future__ import annotations

import torch

__all__ = ["block_tensors", "expand_keep", "head_sides", "neuron_sides", "units_alive"]


def block_tensors(tensors: dict[str, torch.Tensor], depth: int) -> list[dict[str, torch.Tensor]]:
    """Split ``{"blocks.i.attn.qkv": t, ...}`` into one ``{"attn.qkv": t, ...}`` dict per block."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(depth)]
    for name, t in tensors.items():
        _, i, rel = name.split(".", 2)
        out[int(i)][rel] = t
    return out


def head_sides(block: dict[str, torch.Tensor], head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head views of a block's attention weights (or masks).

    Returns:
        ``(inputs, outputs)``: (H, 3 hd D) the q, k, v rows of each head, and
        (H, D hd) its ``proj`` columns.
    """
    qkv, proj = block["attn.qkv"], block["attn.proj"]
    heads = proj.shape[1] // head_dim
    inputs = qkv.reshape(3, heads, head_dim, -1).transpose(0, 1).reshape(heads, -1)
    outputs = proj.reshape(proj.shape[0], heads, head_dim).transpose(0, 1).reshape(heads, -1)
    return inputs, outputs


def neuron_sides(block: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-neuron views of a block's MLP: ``(fc1 rows (M, D), fc2 columns (M, D))``."""
    return block["mlp.fc1"], block["mlp.fc2"].t()


def units_alive(block: dict[str, torch.Tensor], head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which heads and neurons of a block still act: bool (H,) and (M,).

    A structure is dead when its input side or its output side is all zero
    (in ``block``'s weights, or masks): with a dead output side it adds
    nothing; with a dead input side it adds a constant (from the biases),
    which :mod:`vit16.prune.export` folds into the next bias.
    """
    alive = []
    for inputs, outputs in (head_sides(block, head_dim), neuron_sides(block)):
        alive.append(inputs.ne(0).any(dim=1) & outputs.ne(0).any(dim=1))
    return alive[0], alive[1]


def expand_keep(block: dict[str, torch.Tensor], head_dim: int, heads: torch.Tensor,
                neurons: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masks (float 0/1, shapes of ``block``) that keep exactly the structures
    flagged in ``heads`` (bool (H,)) and ``neurons`` (bool (M,)), dense."""
    qkv, proj, fc1 = block["attn.qkv"], block["attn.proj"], block["mlp.fc1"]
    dim, num_heads = qkv.shape[1], heads.numel()
    h = heads.float()
    n = neurons.float()
    return {
        "attn.qkv": h[None, :, None, None].expand(3, num_heads, head_dim, dim).reshape(qkv.shape),
        "attn.proj": h[None, :, None].expand(dim, num_heads, head_dim).reshape(proj.shape),
        "mlp.fc1": n[:, None].expand(fc1.shape).clone(),
        "mlp.fc2": n[None, :].expand(dim, n.numel()).clone(),
    }
