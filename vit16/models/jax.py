"""The original google-research/vision_transformer checkpoints (``ViT-B_16.npz``
and the hybrid's ``R50+ViT-B_16.npz`` layout, Flax/JAX) as vit16 state dicts and
back: :func:`from_jax_npz` renames and transposes the arrays, :func:`to_jax_npz`
is its inverse."""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["from_jax_npz", "to_jax_npz"]

StateDict = dict[str, torch.Tensor]

_JAX_TOP = {
    "embedding/bias": "patch_embed.proj.bias",
    "cls": "cls_token",
    "Transformer/posembed_input/pos_embedding": "pos_embed",
    "Transformer/encoder_norm/scale": "norm.weight",
    "Transformer/encoder_norm/bias": "norm.bias",
    "pre_logits/bias": "pre_logits.bias",
    "head/bias": "head.bias",
}
_JAX_DENSE = {"pre_logits/kernel": "pre_logits.weight", "head/kernel": "head.weight"}  # (in, out)
_JAX_BLOCK = {
    "LayerNorm_0/scale": "norm1.weight",
    "LayerNorm_0/bias": "norm1.bias",
    "LayerNorm_2/scale": "norm2.weight",
    "LayerNorm_2/bias": "norm2.bias",
    "MlpBlock_3/Dense_0/bias": "mlp.fc1.bias",
    "MlpBlock_3/Dense_1/bias": "mlp.fc2.bias",
    "MultiHeadDotProductAttention_1/out/bias": "attn.proj.bias",
}
_JAX_BLOCK_DENSE = {"MlpBlock_3/Dense_0/kernel": "mlp.fc1.weight", "MlpBlock_3/Dense_1/kernel": "mlp.fc2.weight"}
_JAX_MHA = "MultiHeadDotProductAttention_1/"
_BACKBONE = "patch_embed.backbone."
_JAX_ROOT = {"conv_root/kernel": "stem.conv.weight", "gn_root/scale": "stem.norm.weight",
             "gn_root/bias": "stem.norm.bias"}
_JAX_UNIT = {**{f"conv{r}/kernel": f"conv{r}.weight" for r in (1, 2, 3)},
             **{f"gn{r}/scale": f"norm{r}.weight" for r in (1, 2, 3)},
             **{f"gn{r}/bias": f"norm{r}.bias" for r in (1, 2, 3)},
             "conv_proj/kernel": "downsample.conv.weight", "gn_proj/scale": "downsample.norm.weight",
             "gn_proj/bias": "downsample.norm.bias"}
_JAX_PREFIXES = ("", "opt/target/", "params/")  # plain, old Flax optimizer, Flax params


def _tensor(a: Any) -> torch.Tensor:
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise KeyError(f"array of dtype {a.dtype} where float weights were expected "
                       "(bfloat16 big_vision checkpoints are not supported)")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _fuse_qkv(qkv: dict[tuple[int, str, str], torch.Tensor]) -> StateDict:
    """``{(block, "kernel"|"bias", "query"|"key"|"value"): tensor}`` -> the fused
    ``blocks.i.attn.qkv.weight`` (3*H*hd, D) and ``.bias`` (3*H*hd,), rows
    [q heads, k heads, v heads].

    Raises:
        KeyError: a block's query, key or value is missing.
    """
    out: StateDict = {}
    for i, kind in sorted({(i, kind) for i, kind, _ in qkv}):
        parts = [qkv.get((i, kind, n)) for n in ("query", "key", "value")]
        if any(p is None for p in parts):
            missing = [n for n, p in zip(("query", "key", "value"), parts) if p is None]
            raise KeyError(f"encoderblock_{i}: attention {kind} of {', '.join(missing)} missing "
                           "(query, key and value are needed together)")
        if kind == "kernel":  # (D, H, hd) each -> rows [q heads, k heads, v heads] x D
            out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([p.reshape(p.shape[0], -1).T for p in parts])
        else:  # (H, hd) each
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([p.reshape(-1) for p in parts])
    return out


def _from_jax_backbone(key: str, value: Any) -> tuple[str, torch.Tensor] | None:
    """A hybrid ResNet array (``conv_root``, ``gn_root``, ``blockS/unitU/...``,
    stages and units counted from 1, HWIO kernels) as (vit16 name, tensor);
    None for any other key."""
    m = re.fullmatch(r"block(\d+)/unit(\d+)/(.+)", key)
    if key in _JAX_ROOT:
        name = _JAX_ROOT[key]
    elif m and m.group(3) in _JAX_UNIT and int(m.group(1)) > 0 and int(m.group(2)) > 0:
        name = f"stages.{int(m.group(1)) - 1}.blocks.{int(m.group(2)) - 1}.{_JAX_UNIT[m.group(3)]}"
    else:
        return None
    t = _tensor(value)
    return _BACKBONE + name, (t.permute(3, 2, 0, 1).contiguous() if t.ndim == 4 else t.reshape(-1))


def _to_jax_backbone(key: str, t: torch.Tensor) -> tuple[str, np.ndarray] | None:
    """Inverse of :func:`_from_jax_backbone` (None for a key outside the backbone)."""
    sub = key[len(_BACKBONE):] if key.startswith(_BACKBONE) else None
    root = {v: k for k, v in _JAX_ROOT.items()}
    unit = {v: k for k, v in _JAX_UNIT.items()}
    m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", sub or "")
    if sub in root:
        name = root[sub]
    elif m and m.group(3) in unit:
        name = f"block{int(m.group(1)) + 1}/unit{int(m.group(2)) + 1}/{unit[m.group(3)]}"
    else:
        return None
    return name, (t.permute(2, 3, 1, 0) if t.ndim == 4 else t).numpy()


def from_jax_npz(npz: Mapping[str, Any]) -> StateDict:
    """Rename (and transpose) the arrays of an original
    google-research/vision_transformer checkpoint (``ViT-B_16.npz`` layout) to a
    vit16 state dict.

    Layout (``D`` width, ``H`` heads, ``hd = D / H``, kernels are (in, out)):
    ``embedding/kernel`` (P, P, C, D) and ``/bias``; ``cls`` (1, 1, D);
    ``Transformer/posembed_input/pos_embedding`` (1, T, D);
    ``Transformer/encoderblock_N/`` with ``LayerNorm_0`` (before attention),
    ``MultiHeadDotProductAttention_1/{query,key,value}/kernel`` (D, H, hd) and
    ``/bias`` (H, hd), ``.../out/kernel`` (H, hd, D), ``LayerNorm_2``,
    ``MlpBlock_3/Dense_{0,1}``; ``Transformer/encoder_norm``; optional
    ``pre_logits`` and ``head``. Keys may sit under ``opt/target/`` or
    ``params/``; other arrays outside that prefix (optimizer state) are ignored.

    A hybrid (``R50+ViT-B_16.npz``; :mod:`vit16.models.hybrid`) also has its
    ResNet: ``conv_root/kernel`` (7, 7, C, 64) and ``gn_root/{scale,bias}``;
    ``blockS/unitU/`` (from 1) with ``conv{1,2,3}/kernel`` (k, k, in, out),
    ``gn{1,2,3}/{scale,bias}`` and, in each stage's first unit,
    ``conv_proj/kernel`` and ``gn_proj/{scale,bias}``; its ``embedding/kernel``
    is (1, 1, 1024, D) for 1x1 patches of the stride-16 feature map.

    The names say nothing about pooling: a GAP checkpoint (no ``cls``) needs
    a model built with ``pool="gap", class_token=False, fc_norm=False``.

    Args:
        npz: ``np.load(path)`` or any mapping of name -> array.

    Raises:
        KeyError: not this layout (no ``embedding/kernel``), arrays vit16's
            ViT cannot hold, or an incomplete query/key/value triple.
    """
    names = list(npz.keys())
    prefix = next((p for p in _JAX_PREFIXES if p + "embedding/kernel" in names), None)
    if prefix is None:
        raise KeyError(
            "no 'embedding/kernel' array: not a google-research/vision_transformer ViT "
            f"checkpoint (arrays: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''})"
        )
    w = {k[len(prefix):]: k for k in names if k.startswith(prefix)}
    out: StateDict = {}
    unknown: list[str] = []
    qkv: dict[tuple[int, str, str], torch.Tensor] = {}
    for key, full in w.items():
        value = npz[full]
        m = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.+)", key)
        if key == "embedding/kernel":
            out["patch_embed.proj.weight"] = _tensor(value).permute(3, 2, 0, 1).contiguous()
        elif key in _JAX_TOP:
            out[_JAX_TOP[key]] = _tensor(value)
        elif key in _JAX_DENSE:
            out[_JAX_DENSE[key]] = _tensor(value).T.contiguous()
        elif m is None and (backbone := _from_jax_backbone(key, value)) is not None:
            out[backbone[0]] = backbone[1]
        elif m is None:
            unknown.append(full)
        else:
            i, sub = int(m.group(1)), m.group(2)
            mha = re.fullmatch(re.escape(_JAX_MHA) + r"(query|key|value)/(kernel|bias)", sub)
            if sub in _JAX_BLOCK:
                out[f"blocks.{i}.{_JAX_BLOCK[sub]}"] = _tensor(value)
            elif sub in _JAX_BLOCK_DENSE:
                out[f"blocks.{i}.{_JAX_BLOCK_DENSE[sub]}"] = _tensor(value).T.contiguous()
            elif sub == _JAX_MHA + "out/kernel":  # (H, hd, D) -> (D, H*hd)
                t = _tensor(value)
                out[f"blocks.{i}.attn.proj.weight"] = t.reshape(-1, t.shape[-1]).T.contiguous()
            elif mha:
                qkv[(i, mha.group(2), mha.group(1))] = _tensor(value)
            else:
                unknown.append(full)
    out.update(_fuse_qkv(qkv))
    if unknown:
        raise KeyError(
            f"JAX checkpoint has arrays vit16's VisionTransformer cannot hold: "
            f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''} (MAP heads and "
            "scanned big_vision layouts are not supported)"
        )
    return out


def to_jax_npz(state_dict: Mapping[str, torch.Tensor], num_heads: int) -> dict[str, np.ndarray]:
    """Inverse of :func:`from_jax_npz`: a vit16 ViT state dict as the arrays of a
    google-research/vision_transformer ``.npz`` (``np.savez(path, **arrays)``).

    Args:
        num_heads: attention heads (the JAX layout keeps them as an axis).

    Raises:
        KeyError: keys with no JAX counterpart.
    """
    top = {v: k for k, v in _JAX_TOP.items()}
    dense = {v: k for k, v in _JAX_DENSE.items()}
    block = {v: k for k, v in _JAX_BLOCK.items()}
    block_dense = {v: k for k, v in _JAX_BLOCK_DENSE.items()}
    out: dict[str, np.ndarray] = {}
    unknown = []
    for key, t in state_dict.items():
        t = t.detach().cpu().float()
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if key == "patch_embed.proj.weight":
            out["embedding/kernel"] = t.permute(2, 3, 1, 0).numpy()
        elif key in top:
            out[top[key]] = t.numpy()
        elif key in dense:
            out[dense[key]] = t.T.numpy()
        elif m is None and (backbone := _to_jax_backbone(key, t)) is not None:
            out[backbone[0]] = backbone[1]
        elif m is None:
            unknown.append(key)
        else:
            bp, sub = f"Transformer/encoderblock_{m.group(1)}/", m.group(2)
            if sub in block:
                out[bp + block[sub]] = t.numpy()
            elif sub in block_dense:
                out[bp + block_dense[sub]] = t.T.numpy()
            elif sub == "attn.proj.weight":  # (D, H*hd) -> (H, hd, D)
                out[bp + _JAX_MHA + "out/kernel"] = t.T.reshape(num_heads, -1, t.shape[0]).numpy()
            elif sub == "attn.qkv.weight":  # (3*D, D) -> 3 x (D, H, hd)
                for name, part in zip(("query", "key", "value"), t.chunk(3)):
                    out[bp + _JAX_MHA + f"{name}/kernel"] = part.T.reshape(t.shape[1], num_heads, -1).numpy()
            elif sub == "attn.qkv.bias":
                for name, part in zip(("query", "key", "value"), t.chunk(3)):
                    out[bp + _JAX_MHA + f"{name}/bias"] = part.reshape(num_heads, -1).numpy()
            else:
                unknown.append(key)
    if unknown:
        raise KeyError(f"no JAX counterpart for {', '.join(unknown[:8])}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out
