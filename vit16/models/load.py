"""Load a (converted) state dict into a model, adapting what fine-tuning changes:
the position embedding grid (resized, paper section 3.2), the patch size
(the patch-embedding kernel resampled, FlexiViT section 3.4) and the head
(replaced when the class count differs, with the pre-logits layer dropped)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vit16.models.vit import VisionTransformer, resample_patch_embed, resize_pos_embed


class WeightLoadError(ValueError):
    """A state dict that does not fit the model: missing or unexpected keys, or
    shapes that cannot be adapted."""


def _describe(items: list[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


PATCH_RESIZES = ("pinv", "bilinear")
"""How a patch-embedding kernel of another patch size is resampled: "pinv",
FlexiViT's pseudo-inverse resize; "bilinear", the naive resize of the kernel
itself (the baseline FlexiViT's section 3.4 improves on)."""


def _adapt_embeddings(model: VisionTransformer, sd: dict[str, torch.Tensor],
                      own: dict[str, torch.Tensor], patch_resize: str = "pinv") -> list[str]:
    """Resize ``sd``'s position embedding to the model's patch grid and resample
    its patch-embedding kernel to the model's patch size, in place; the notes."""
    notes = []
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        pe, prefix, grid = sd["pos_embed"], model.num_prefix_tokens, model.patch_embed.grid_size
        old_grid = math.isqrt(pe.shape[1] - prefix)
        sd["pos_embed"] = resize_pos_embed(pe, grid, prefix)
        notes.append(f"position embedding resized from {old_grid}x{old_grid} to {grid}x{grid} patches")
    kernel = "patch_embed.proj.weight"
    if kernel in sd and kernel in own:
        w, target = sd[kernel], own[kernel].shape
        if w.ndim == 4 and w.shape[:2] == target[:2] and w.shape[2:] != target[2:]:
            if patch_resize == "bilinear":
                sd[kernel] = F.interpolate(w.float(), size=tuple(target[2:]), mode="bilinear",
                                           align_corners=False).to(w.dtype)
                how = "bilinear resize of the kernel"
            else:
                sd[kernel] = resample_patch_embed(w, tuple(target[2:]))
                how = "FlexiViT pseudo-inverse resize"
            notes.append(f"patch embedding resampled from {w.shape[2]}x{w.shape[3]} to "
                         f"{target[2]}x{target[3]} pixels ({how})")
    return notes


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "weights",
                 patch_resize: str = "pinv") -> list[str]:
    """Load ``state_dict`` (vit16 names) into ``model`` strictly, after three
    adaptations for a :class:`VisionTransformer`:

    - ``pos_embed`` on another patch grid is resized by bicubic interpolation;
    - a patch-embedding kernel of another patch size (ImageNet's 16x16 into a
      32px patch-4 model) is resampled by FlexiViT's pseudo-inverse resize
      (:func:`~vit16.models.vit.resample_patch_embed`), so that an image patch
      resized to the new size gets (nearly; exactly when the new size is
      larger) the token the original patch got (``patch_resize = "bilinear"``:
      the kernel itself resized instead, the naive baseline);
    - a head of another class count (or a pre-logits layer the model lacks) is
      not loaded: the model keeps its freshly initialised head (zero when built
      with ``zero_head=True``); a :class:`VisionTransformer` built with a
      pre-logits layer then loses it (``reset_classifier``, as the paper
      fine-tunes), its new head initialised as the built one was.

    Returns:
        human-readable notes of what was adapted (empty when nothing was).

    Raises:
        WeightLoadError: one message listing missing keys, unexpected keys and
            shape mismatches.
    """
    sd = dict(state_dict)
    own = model.state_dict()
    notes = _adapt_embeddings(model, sd, own, patch_resize) if isinstance(model, VisionTransformer) else []
    swap = False
    head_keys = [k for k in sd if k.split(".")[0] in ("head", "pre_logits", "fc")]
    head_mismatch = any(k not in own or sd[k].shape != own[k].shape for k in head_keys)
    if head_mismatch:
        for k in head_keys:
            del sd[k]
        head = getattr(model, "head", None)
        head = head if isinstance(head, nn.Module) else getattr(model, "fc", None)
        zero = isinstance(head, nn.Linear) and not head.weight.any() and not (
            head.bias is not None and head.bias.any())
        # the paper's fine-tuning head: pre-logits dropped, a new linear head on the
        # pooled features, initialised as the model's own head was built (done below,
        # once the rest is known to fit)
        swap = isinstance(model, VisionTransformer) and model.pre_logits is not None
        if swap:
            own = {k: v for k, v in own.items() if not k.startswith("pre_logits.")}
            notes.append("pre-logits layer dropped")
        notes.append("classification head not loaded (different classes or no pre-logits); "
                     f"kept the model's new {'zero-initialised ' if zero else ''}head")
    missing = [k for k in own if k not in sd and not (head_mismatch and k.split(".")[0] in ("head", "fc"))]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing keys: {_describe(missing)}" if missing else "",
                 f"unexpected keys: {_describe(unexpected)}" if unexpected else "",
                 f"shape mismatches: {_describe(shapes)}" if shapes else ""]
        raise WeightLoadError(
            f"{source} do not fit {type(model).__name__}: " + "; ".join(p for p in parts if p)
            + ". Check that the model name and options (depth, embed_dim, patch_size, pool, "
            "class_token, representation_size) match the weights."
        )
    if head_mismatch and swap:
        model.reset_classifier(model.num_classes, zero_init=zero)
    model.load_state_dict(sd, strict=False)
    return notes
