"""Map torchvision's and timm's ViT state dicts to vit16's parameter names and back.

vit16 names follow timm (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``,
``pre_logits``, ``head``). Values are never changed, only renamed: the qkv
weight of all three libraries stacks q, k and v rows head by head in the same order.
A hybrid's ResNet (:mod:`vit16.models.hybrid`) has timm's names too
(``patch_embed.backbone.stem.conv``, ``...stages.S.blocks.U.{conv,norm}{1,2,3}``,
``...downsample.{conv,norm}``), as timm's ``vit_base_r50_s16_224`` holds them.
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]

_TORCHVISION_BLOCK = {
    "ln_1": "norm1",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.proj",
    "ln_2": "norm2",
    "mlp.0": "mlp.fc1",
    "mlp.3": "mlp.fc2",
    "mlp.linear_1": "mlp.fc1",  # torchvision < 0.13 names
    "mlp.linear_2": "mlp.fc2",
}
_TORCHVISION_TOP = {
    "conv_proj": "patch_embed.proj",
    "class_token": "cls_token",
    "encoder.pos_embedding": "pos_embed",
    "encoder.ln": "norm",
    "heads.pre_logits": "pre_logits",
    "heads.head": "head",
}


def _rename_prefix(key: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return None


def _fail_unknown(source: str, unknown: list[str]) -> None:
    if unknown:
        raise KeyError(
            f"{source} state dict has keys vit16's VisionTransformer cannot hold: "
            f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''} "
            "(a ViT variant with extra parts, e.g. register tokens or LayerScale, is not supported)"
        )


def from_torchvision(state_dict: StateDict) -> StateDict:
    """Rename a ``torchvision.models.VisionTransformer`` state dict (e.g. of
    ``vit_b_16()``) to vit16's names.

    Raises:
        KeyError: on keys that have no vit16 counterpart.
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        m = re.fullmatch(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)", key)
        if m:
            new = _rename_prefix(m.group(2), _TORCHVISION_BLOCK)
            new = new and f"blocks.{m.group(1)}.{new}"
        else:
            new = _rename_prefix(key, _TORCHVISION_TOP)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    _fail_unknown("torchvision", unknown)
    return out


def to_torchvision(state_dict: StateDict) -> StateDict:
    """Inverse of :func:`from_torchvision` (vit16 names -> torchvision names)."""
    block = {v: k for k, v in _TORCHVISION_BLOCK.items() if "linear_" not in k}
    top = {v: k for k, v in _TORCHVISION_TOP.items()}
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m:
            out[f"encoder.layers.encoder_layer_{m.group(1)}.{_rename_prefix(m.group(2), block)}"] = value
        else:
            out[_rename_prefix(key, top)] = value
    return out


_TIMM_KNOWN = re.compile(
    r"(patch_embed\.proj|cls_token|pos_embed|norm|fc_norm|head|pre_logits\.fc|"
    r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)|"
    r"patch_embed\.backbone\.(stem\.(conv|norm)|"  # the hybrid's ResNetV2 (timm.models.resnetv2)
    r"stages\.\d+\.blocks\.\d+\.(conv[123]|norm[123]|downsample\.(conv|norm))))(\.(weight|bias))?"
)


def from_timm(state_dict: StateDict) -> StateDict:
    """Rename a timm ``VisionTransformer`` state dict to vit16's names; a
    hybrid's (``vit_base_r50_s16_224``, ``_384``) backbone keys keep their names.

    timm's ``global_pool="avg"`` models normalise after pooling (``fc_norm``):
    build the vit16 model with ``pool="gap"`` (whose default is ``fc_norm=True``)
    to load them; their ``fc_norm`` becomes vit16's ``norm``.

    Raises:
        KeyError: on keys that have no vit16 counterpart (register tokens,
            LayerScale, attention pooling, ...) or both ``norm`` and ``fc_norm``.
    """
    out, unknown = {}, []
    has_fc_norm = any(k.startswith("fc_norm.") for k in state_dict)
    for key, value in state_dict.items():
        if not _TIMM_KNOWN.fullmatch(key):
            unknown.append(key)
            continue
        if key.startswith("fc_norm."):
            key = "norm." + key[len("fc_norm."):]
        elif key.startswith("norm.") and has_fc_norm:
            unknown.append(key)
            continue
        elif key.startswith("pre_logits.fc."):
            key = "pre_logits." + key[len("pre_logits.fc."):]
        out[key] = value
    _fail_unknown("timm", unknown)
    return out


def to_timm(state_dict: StateDict, fc_norm: bool = False) -> StateDict:
    """Inverse of :func:`from_timm`. Pass ``fc_norm=True`` for a model that
    normalises after pooling (vit16 ``pool="gap"`` default), so that the final
    norm is saved as timm's ``fc_norm``."""
    out = {}
    for key, value in state_dict.items():
        if fc_norm and key.startswith("norm."):
            key = "fc_norm." + key[len("norm."):]
        elif key.startswith("pre_logits."):
            key = "pre_logits.fc." + key[len("pre_logits."):]
        out[key] = value
    return out
