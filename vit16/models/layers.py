"""The layers of :class:`~vit16.models.VisionTransformer` (paper section 3.1,
appendix A and D.4): patch embedding, multi-head self-attention (optionally
with 1-D relative position embeddings), the MLP, the pre-LayerNorm encoder
block, and stochastic depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed", "check_image_size", "drop_path",
           "relative_position_index"]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al., 2016): zero the residual branch of whole
    samples with probability ``p`` and scale survivors by 1/(1-p).

    Args:
        x: (B, ...) residual branch output.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def check_image_size(x: torch.Tensor, img_size: int) -> None:
    """Check that images (B, C, H, W) are ``img_size`` x ``img_size``.

    Raises:
        ValueError: naming the size found and the one expected.
    """
    if x.shape[-2:] != (img_size, img_size):
        raise ValueError(
            f"input images are {tuple(x.shape[-2:])}, the model expects "
            f"({img_size}, {img_size}); resize the data (data.img_size) "
            "or build the model with img_size matching it"
        )


class PatchEmbed(nn.Module):
    """Split the image into non-overlapping P x P patches and project each to D
    dimensions (the matrix E of eq. 1), as one strided convolution.

    Input (B, C, H, W) float; output (B, N, D) with N = (H/P) * (W/P).

    Raises:
        ValueError: if H or W differs from the configured ``img_size``.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(
                f"img_size {img_size} is not a multiple of patch_size {patch_size}; "
                "choose sizes such that img_size % patch_size == 0"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, self.img_size)
        return self.proj(x).flatten(2).transpose(1, 2)


def relative_position_index(num_patches: int, num_prefix_tokens: int) -> torch.Tensor:
    """Index of the relative-position embedding of every (query, key) pair,
    for the paper's 1-D relative attention (appendix D.4).

    Patch ``i`` and patch ``j`` (positions in the flattened row-major patch
    sequence) use embedding ``(i - j) + N - 1`` in ``[0, 2N - 2]``; every pair
    that involves a prefix (class) token uses the one extra embedding ``2N - 1``.

    Returns:
        int64 (T, T), T = num_prefix_tokens + num_patches; 2N embeddings in all.
    """
    n, p = num_patches, num_prefix_tokens
    pos = torch.arange(n)
    index = torch.full((p + n, p + n), 2 * n - 1, dtype=torch.long)
    index[p:, p:] = pos[:, None] - pos[None, :] + n - 1
    return index


class Attention(nn.Module):
    """Multi-head self-attention (MSA, paper appendix A, eq. 5-8).

    Input and output (B, T, D). The fused path uses
    ``F.scaled_dot_product_attention``; ``forward(x, return_attention=True)``
    computes the same thing explicitly and also returns the attention weights
    (B, heads, T, T), each row summing to 1 (before attention dropout).

    With ``num_patches > 0`` the block uses the paper's relative attention
    (appendix D.4, "relative positional embeddings"): a learned embedding
    ``rel_pos`` (2N, head_dim) per 1-D offset between query and key patch
    (:func:`relative_position_index`; one shared embedding for pairs with the
    class token), shared by the heads. The original query of each head attends
    to these embeddings as keys, and the resulting logits
    ``q . rel_pos[offset] / sqrt(head_dim)`` are added to the content logits
    before the softmax.

    ``head_dim`` defaults to ``dim // num_heads``; a structurally pruned block
    (:mod:`vit16.prune`) keeps the head size and has fewer heads, so ``qkv``
    is (3 x heads x head_dim, D) and ``proj`` (D, heads x head_dim). With
    ``num_heads = 0`` the branch outputs ``proj``'s bias at every token.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 attn_dropout: float = 0.0, proj_dropout: float = 0.0,
                 num_patches: int = 0, num_prefix_tokens: int = 1, head_dim: int | None = None):
        super().__init__()
        if head_dim is None and (num_heads < 1 or dim % num_heads):
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_dropout = attn_dropout
        inner = num_heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_dropout)
        if num_patches > 0:
            self.rel_pos = nn.Parameter(torch.zeros(2 * num_patches, self.head_dim))
            self.register_buffer("rel_index", relative_position_index(num_patches, num_prefix_tokens),
                                 persistent=False)
        else:
            self.rel_pos = None

    def relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        """Relative-attention logits (appendix D.4): queries (B, heads, T, hd) ->
        bias (B, heads, T, T) added to the scaled content logits."""
        B, H, T, _ = q.shape
        logits = (q * self.scale) @ self.rel_pos.t()  # (B, heads, T, 2N)
        return logits.gather(-1, self.rel_index.expand(B, H, T, T))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        B, T, _ = x.shape
        if self.num_heads == 0:  # every head pruned
            out = self.proj_drop(self.proj(x[..., :0]))
            return (out, x.new_zeros(B, 0, T, T)) if return_attention else out
        # (3, B, heads, T, head_dim): the rows of qkv are [q heads..., k heads..., v heads...]
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        bias = None if self.rel_pos is None else self.relative_logits(q)
        if return_attention:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            attn = attn.softmax(dim=-1)
            out = F.dropout(attn, p) @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, T, -1)))
        return (out, attn) if return_attention else out


class Mlp(nn.Module):
    """The two-layer GELU MLP of eq. 3: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """One pre-LayerNorm encoder block, eq. 2-3: (B, T, D) -> (B, T, D).
    ``num_patches > 0``: relative attention (see :class:`Attention`)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool = True,
                 dropout: float = 0.0, attn_dropout: float = 0.0, drop_path: float = 0.0,
                 num_patches: int = 0, num_prefix_tokens: int = 1, head_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_dropout, dropout,
                              num_patches, num_prefix_tokens, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim, dropout)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + drop_path(y, self.drop_path, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        return (x, attn) if return_attention else x
