"""Facts of the vit16 state-dict format shared by loading and pruning."""

from __future__ import annotations

import torch

__all__ = ["fold_masks"]


def fold_masks(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Turn a masked state dict (``X.weight_orig`` + ``X.weight_mask``, as
    ``torch.nn.utils.prune`` saves it) into a plain one (``X.weight = orig * mask``).

    Args:
        state_dict: name -> tensor; every ``X.weight_orig`` must come with an
            ``X.weight_mask`` of the same shape.

    Returns:
        ``(state_dict, masks)``: the plain state dict (other keys unchanged,
        folded weights in the dtype of ``orig * mask``) and ``{"X": mask}`` for
        every masked layer (empty for a dense state dict).

    Raises:
        KeyError: an ``X.weight_orig`` without its ``X.weight_mask``.
    """
    out, masks = {}, {}
    for key, value in state_dict.items():
        if key.endswith(".weight_orig"):
            layer = key.removesuffix(".weight_orig")
            mask = state_dict[f"{layer}.weight_mask"]
            out[f"{layer}.weight"] = value * mask
            masks[layer] = mask
        elif not key.endswith(".weight_mask"):
            out[key] = value
    return out, masks
