"""FLOPs of a model, counted by :class:`torch.utils.flop_counter.FlopCounterMode`
(the matrix multiplies and convolutions PyTorch dispatches; not estimated).

One multiply-add counts as 2 FLOPs. Element-wise operations (norms,
activations, softmax, additions) are not counted, as in the usual tables of
model FLOPs (e.g. the GFLOPs columns of torchvision's model documentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vit16.models.vit import VisionTransformer
from vit16.registry import MODELS

__all__ = ["forward_flops", "model_gflops", "native_img_size", "train_step_flops"]


def native_img_size(model: nn.Module) -> int | None:
    """The input side in pixels ``model`` is built for: a ViT's
    ``patch_embed.img_size``, else the model's ``default_img_size`` attribute
    (:class:`~vit16.models.resnet_cifar.CifarResNet`: 32); ``None`` for a model
    that takes any size and names none (torchvision's ResNets)."""
    if isinstance(model, VisionTransformer):
        return model.patch_embed.img_size
    size = getattr(model, "default_img_size", None)
    return size if isinstance(size, int) else None


def forward_flops(model: nn.Module, img_size: int | None = None, in_chans: int = 3) -> int:
    """FLOPs of one forward pass per image (multiply-add = 2 FLOPs), counted on
    one ``(1, in_chans, img_size, img_size)`` image in eval mode without
    gradients, on the model's own device (the meta device works: no memory).

    Args:
        model: any module taking image batches.
        img_size: input side in pixels; ``None``: :func:`native_img_size`.
        in_chans: input channels.

    Returns:
        the FLOPs of one image (an int; divide by 1e9 for GFLOPs).

    Raises:
        ValueError: ``img_size`` is ``None`` for a model without a native size.
    """
    size = img_size if img_size is not None else native_img_size(model)
    if size is None:
        raise ValueError(f"{type(model).__name__} takes any input size and names none; "
                         "pass img_size (32 for CIFAR, 224 for ImageNet)")
    param = next(iter(model.parameters()), None)
    x = torch.zeros(1, in_chans, size, size, device=param.device if param is not None else None)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def model_gflops(name: str, img_size: int | None = None, **options) -> float:
    """Forward GFLOPs per image of the registered model ``name`` (built on the
    meta device: no memory, no initialisation), at ``img_size`` or the model's
    own input size; 2 FLOPs per multiply-add.

    Example: ``model_gflops("resnet20_cifar")`` ~ 0.082, ``model_gflops("resnet50", 224)``
    ~ 8.2 (torchvision's documentation lists 4.09 GFLOPS counting multiply-adds once).

    Args:
        name: a registered model (or alias).
        img_size: input side in pixels; ``None``: the model's (:func:`native_img_size`).
        options: builder options (``num_classes``, ``depth`` ...).

    Raises:
        vit16.UnknownNameError: an unknown model name.
        TypeError: an option the builder does not take.
        ValueError: no ``img_size`` for a model that names none.
    """
    with torch.device("meta"):
        model = MODELS.build(name, **options)
    return forward_flops(model, img_size) / 1e9


def train_step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward + backward pass of the cross-entropy loss on batch
    ``x`` ``(B, C, H, W)`` with labels ``y`` ``(B,)`` (the whole batch, not per
    image; counted, not estimated); the gradients are cleared afterwards."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()
