"""The Vision Transformer of Dosovitskiy et al., "An Image is Worth 16x16
Words", ICLR 2021 (arXiv:2010.11929), section 3.1, equations 1-4:

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos          (1)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                        (2)
    z_l = MLP(LN(z'_l)) + z'_l                               (3)
    y = LN(z_L^0)                                            (4)

followed by a linear head (with an optional tanh pre-logits layer, used when
pre-training). With ``hybrid_layers`` the patches come from a ResNet feature
map (section 3.1, "Hybrid Architecture"; :mod:`vit16.models.hybrid`).
Parameter names follow timm's ``VisionTransformer`` so that state dicts map one
to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vit16.models.hybrid import HybridEmbed
from vit16.models.layers import Block, PatchEmbed

POS_EMBEDS = ("learned_1d", "none", "learned_2d", "relative")
"""Position-embedding variants of :class:`VisionTransformer` (paper appendix D.4)."""


class VisionTransformer(nn.Module):
    """ViT (paper section 3.1). Input (B, in_chans, img_size, img_size) float;
    output logits (B, num_classes).

    Args:
        img_size: input resolution in pixels (square).
        patch_size: patch side P in pixels; the sequence has N = (img_size/P)^2 patches
            (for a hybrid, the image patch one token covers: a multiple of the
            backbone's stride, 16 for R50+ViT-B/16's 1x1 feature-map patches).
        in_chans: input channels.
        num_classes: classes of the linear head (0 = no head, forward returns pooled features).
        embed_dim: hidden size D.
        depth: number of encoder blocks L.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden size as a multiple of D (ignored when ``mlp_dim`` is given).
        mlp_dim: MLP hidden size.
        pool: "cls" (class token, eq. 4) or "gap" (global average of the patch
            tokens, appendix D.3).
        class_token: prepend a class token. Required for ``pool="cls"``; the
            paper's GAP model has none (``pool="gap", class_token=False``).
        fc_norm: apply the final LayerNorm after pooling instead of to every
            token. Default (None): True for "gap", as timm's ``global_pool="avg"``;
            the paper's own GAP code normalises the tokens (``fc_norm=False``).
        representation_size: width of the tanh pre-logits layer used when
            pre-training (section 3.1, "Fine-tuning"); None = no such layer.
        dropout: dropout after the position embedding and after every dense
            layer except qkv (appendix B.1).
        attn_dropout: dropout on the attention weights.
        drop_path: stochastic depth rate, linearly increasing over blocks up to this value.
        qkv_bias: bias in the qkv projection.
        zero_head: initialise the head to zero (the paper's fine-tuning init).
        pos_embed: the position information (appendix D.4, Table 8):

            - ``"learned_1d"`` (default, the paper's choice): one learned
              embedding per token, parameter ``pos_embed`` (1, T, D);
            - ``"none"``: no position information (a bag of patches);
            - ``"learned_2d"``: learned X and Y embeddings, ``pos_embed_x`` and
              ``pos_embed_y`` (1, G, D/2) each; the patch at row r, column c gets
              ``concat(X[c], Y[r])``. The class token gets none (it is itself
              learned, so an added constant would be redundant). D must be even;
            - ``"relative"``: no absolute embedding; every block uses the paper's
              1-D relative attention (``blocks.i.attn.rel_pos``, see
              :class:`~vit16.models.layers.Attention`).
        block_heads: heads of each block (length ``depth``), for a structurally
            pruned model (:mod:`vit16.prune.export`); each head keeps the size
            ``embed_dim // num_heads``. None = ``num_heads`` in every block.
        block_mlp_dims: MLP hidden size of each block (length ``depth``), as
            ``block_heads``; None = ``mlp_dim`` in every block.
        hybrid_layers: None (default) = patches of the image; a list of units
            per ResNet stage = the hybrid (section 3.1): eq. 1 on the feature map
            of a BiT ResNet (:class:`~vit16.models.hybrid.HybridEmbed`), e.g.
            ``(3, 4, 9)`` for the paper's R50 with stage 4 moved into stage 3
            (stride 16); ``()`` = the ResNet stem alone (stride 4).
        grad_checkpointing: in training (``model.train()`` with gradients on),
            recompute each block's activations in the backward pass instead of
            keeping them (``torch.utils.checkpoint``, non-reentrant, the RNG state
            restored so dropout and stochastic depth repeat): less memory, one
            more forward pass per block. Gradients are the same.

    Raises:
        ValueError: on inconsistent options (unknown pool or pos_embed, cls
            pooling without a class token, sizes not divisible).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, mlp_dim: int | None = None,
                 pool: str = "cls", class_token: bool = True, fc_norm: bool | None = None,
                 representation_size: int | None = None, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0, qkv_bias: bool = True,
                 zero_head: bool = False, pos_embed: str = "learned_1d",
                 block_heads: list[int] | None = None, block_mlp_dims: list[int] | None = None,
                 hybrid_layers: list[int] | tuple[int, ...] | None = None,
                 grad_checkpointing: bool = False):
        super().__init__()
        for key, value in (("block_heads", block_heads), ("block_mlp_dims", block_mlp_dims)):
            if value is not None and len(value) != depth:
                raise ValueError(f"{key} has {len(value)} entries, the model has depth {depth}")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {', '.join(map(repr, POS_EMBEDS))}, "
                             f"got {pos_embed!r}")
        if pos_embed == "learned_2d" and embed_dim % 2:
            raise ValueError(f"pos_embed='learned_2d' needs an even embed_dim, got {embed_dim}")
        if pool not in ("cls", "gap"):
            raise ValueError(f"pool must be 'cls' or 'gap', got {pool!r}")
        if pool == "cls" and not class_token:
            raise ValueError("pool='cls' needs class_token=True; use pool='gap' without one")
        self.pool = pool
        self.pos_embed_type = pos_embed
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.fc_norm = (pool == "gap") if fc_norm is None else fc_norm
        self.grad_checkpointing = grad_checkpointing
        mlp_dim = mlp_dim or int(embed_dim * mlp_ratio)

        if hybrid_layers is None:
            self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        else:
            self.patch_embed = HybridEmbed(img_size, patch_size, in_chans, embed_dim, hybrid_layers)
        num_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        if pos_embed == "learned_1d":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        else:
            self.pos_embed = None
        if pos_embed == "learned_2d":
            grid = self.patch_embed.grid_size
            self.pos_embed_x = nn.Parameter(torch.zeros(1, grid, embed_dim // 2))
            self.pos_embed_y = nn.Parameter(torch.zeros(1, grid, embed_dim // 2))
        self.pos_drop = nn.Dropout(dropout)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        rel_patches = self.patch_embed.num_patches if pos_embed == "relative" else 0
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        heads = block_heads or [num_heads] * depth
        mlp_dims = block_mlp_dims or [mlp_dim] * depth
        self.blocks = nn.ModuleList(
            Block(embed_dim, heads[i], mlp_dims[i], qkv_bias, dropout, attn_dropout, rates[i],
                  rel_patches, self.num_prefix_tokens, head_dim=embed_dim // num_heads)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.pre_logits = nn.Linear(embed_dim, representation_size) if representation_size else None
        head_in = representation_size or embed_dim
        self.head = nn.Linear(head_in, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(zero_head)

    def init_weights(self, zero_head: bool = False) -> None:
        """The reference code's init: truncated normal (std 0.02) for the
        position embedding and class token, LeCun normal for the patch
        embedding, Xavier-uniform for every linear layer with zero biases
        (MLP biases normal, std 1e-6), optionally a zero head."""
        for name, param in self.named_parameters():
            if name in ("pos_embed", "pos_embed_x", "pos_embed_y") or name.endswith(".rel_pos"):
                nn.init.trunc_normal_(param, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w, std=math.sqrt(1.0 / w[0].numel()) / 0.87962566103423978)
        nn.init.zeros_(self.patch_embed.proj.bias)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and m.weight.numel() > 0:  # pruned-away layers are empty
                nn.init.xavier_uniform_(m.weight)
                if "mlp" in name:
                    nn.init.normal_(m.bias, std=1e-6)
                else:
                    nn.init.zeros_(m.bias)
        if zero_head and isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def get_classifier(self) -> nn.Module:
        """The classification head (the module to replace or give its own LR)."""
        return self.head

    def reset_classifier(self, num_classes: int, zero_init: bool = True) -> None:
        """Replace the head by a new ``num_classes`` one and drop the pre-logits
        layer, as the paper does for fine-tuning (section 3.2)."""
        self.pre_logits = None
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        device = self.patch_embed.proj.weight.device
        self.head.to(device)
        if isinstance(self.head, nn.Linear):
            if zero_init:
                nn.init.zeros_(self.head.weight)
            else:
                nn.init.xavier_uniform_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def patch_pos_embed(self) -> torch.Tensor | None:
        """The absolute position embedding of the patches, (N, D) in row-major
        patch order (row r, column c at r * G + c); ``None`` for
        ``pos_embed="none"`` and ``"relative"``. For ``"learned_2d"`` row
        r * G + c is ``concat(pos_embed_x[c], pos_embed_y[r])``."""
        if self.pos_embed_type == "learned_1d":
            return self.pos_embed[0, self.num_prefix_tokens:]
        if self.pos_embed_type == "learned_2d":
            g = self.patch_embed.grid_size
            x = self.pos_embed_x[0][None, :, :].expand(g, g, -1)  # [r, c] -> X[c]
            y = self.pos_embed_y[0][:, None, :].expand(g, g, -1)  # [r, c] -> Y[r]
            return torch.cat([x, y], dim=-1).reshape(g * g, -1)
        return None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1: (B, C, H, W) images -> (B, T, D) tokens with position embedding,
        T = 1 + N with a class token, else N."""
        x = self.patch_embed(x)
        if self.pos_embed_type == "learned_2d":
            x = x + self.patch_pos_embed()
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return self.pos_drop(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> encoder output tokens (B, T, D), T = 1 + N with a
        class token. The final LayerNorm is applied here unless ``fc_norm``."""
        x = self.embed(x)
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return x if self.fc_norm else self.norm(x)

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Like :meth:`forward_features`, through the explicit attention path;
        also returns each block's attention weights, a list of L tensors
        (B, heads, T, T). Same output as ``forward_features`` (up to float error)."""
        x = self.embed(x)
        maps = []
        for block in self.blocks:
            x, attn = block(x, return_attention=True)
            maps.append(attn)
        return (x if self.fc_norm else self.norm(x)), maps

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> logits (B, num_classes); with ``pre_logits``, the
        pooled representation (B, representation_size or D) before the head."""
        x = x[:, 0] if self.pool == "cls" else x[:, self.num_prefix_tokens:].mean(dim=1)
        if self.fc_norm:
            x = self.norm(x)
        if self.pre_logits is not None:
            x = torch.tanh(self.pre_logits(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int | tuple[int, int],
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resize learned position embeddings to a new patch grid by 2-D bicubic
    interpolation (paper section 3.2, "Fine-tuning and higher resolution").

    Args:
        pos_embed: (1, P + G*G, D), the first ``num_prefix_tokens`` (P) rows
            belong to the class token and are kept as they are.
        new_grid: the new grid side (or (h, w)) in patches.

    Returns:
        (1, P + h*w, D); the input itself when the grid is unchanged.

    Raises:
        ValueError: if the patch rows do not form a square grid.
    """
    new_hw = (new_grid, new_grid) if isinstance(new_grid, int) else tuple(new_grid)
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise ValueError(
            f"position embedding has {grid.shape[1]} patch rows (after {num_prefix_tokens} "
            "prefix tokens), not a square grid; check num_prefix_tokens"
        )
    if (old, old) == new_hw:
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_hw, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def resample_patch_embed(weight: torch.Tensor, new_size: int | tuple[int, int],
                         interpolation: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """Resample a patch-embedding kernel to another patch size with FlexiViT's
    pseudo-inverse resize (PI-resize; Beyer et al., "FlexiViT: One Model for
    All Patch Sizes", CVPR 2023, section 3.4).

    Resizing a patch ``x`` (p x p) to ``new_size`` is a linear map ``B x``
    (``F.interpolate``, ``interpolation``/``antialias``). The new kernel ``w'``
    solves ``<x, w> = <B x, w'>`` for all ``x``, i.e. ``B^T w' = w``, in the
    least-squares sense: ``w' = pinv(B^T) w``. Upsampling (new side > old) this
    is exact: the token of the resized patch equals the token of the original.
    Same result as ``timm.layers.resample_patch_embed``.

    Args:
        weight: (D, C, p, p) (or (D, C, p_h, p_w)) kernel of eq. 1's projection E.
        new_size: the new patch side (or (h, w)).

    Returns:
        (D, C, h, w) in ``weight``'s dtype (computed in float32); the input
        itself when the size is unchanged.

    Raises:
        ValueError: ``weight`` is not 4-D.
    """
    if weight.ndim != 4:
        raise ValueError(f"a patch-embedding kernel is (D, C, p, p), got shape {tuple(weight.shape)}")
    new_hw = (new_size, new_size) if isinstance(new_size, int) else tuple(new_size)
    old_hw = tuple(weight.shape[-2:])
    if old_hw == new_hw:
        return weight
    n_old = old_hw[0] * old_hw[1]
    basis = torch.eye(n_old, dtype=torch.float32, device=weight.device).reshape(n_old, 1, *old_hw)
    resized = F.interpolate(basis, size=new_hw, mode=interpolation, antialias=antialias,
                            align_corners=False if interpolation in ("bilinear", "bicubic") else None)
    resize = resized.reshape(n_old, -1).T  # B: (h*w, p*p), resized patch = B @ patch
    d, c = weight.shape[:2]
    # w' = pinv(B^T) w for every (d, c) filter; as rows: w'^T = w^T pinv(B)
    out = weight.float().reshape(d, c, n_old) @ torch.linalg.pinv(resize)
    return out.reshape(d, c, *new_hw).to(weight.dtype)
