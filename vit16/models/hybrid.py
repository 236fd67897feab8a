"""The hybrid architecture of Dosovitskiy et al. (section 3.1, "Hybrid
Architecture"): the patch embedding E of eq. 1 applied to patches of a CNN
feature map instead of raw image patches. With 1x1 patches "the input sequence
is obtained by simply flattening the spatial dimensions of the feature map and
projecting to the Transformer dimension".

The CNN is the paper's ResNet (section 4.1, "Model Variants") in the form of
Big Transfer (BiT, Kolesnikov et al., 2020), as the original JAX code builds it:

- Group Normalization (Wu & He, 2018), 32 groups, eps 1e-5, in place of Batch
  Normalization;
- weight-standardised convolutions (Qiao et al., 2019): every output filter is
  standardised to zero mean and unit variance (eps 1e-8) before it convolves;
- TensorFlow "SAME" padding: the total padding ``(ceil(i/s) - 1) s + k - i`` is
  split with the odd pixel at the bottom and right (stem, 3x3 convolutions,
  max-pool);
- a 7x7 stride-2 stem convolution, GroupNorm, ReLU and a 3x3 stride-2 max-pool;
- post-activation bottleneck units ("ResNet v1.5": the stride in the 3x3
  convolution): conv1x1-GN-ReLU, conv3x3-GN-ReLU, conv1x1-GN, plus the shortcut,
  then ReLU; the first unit of each stage has a projection shortcut (1x1
  convolution + GN); stage s has ``64 * 2^s`` bottleneck and ``256 * 2^s``
  output channels, stride 1 in the first stage and 2 after;
- "R50+ViT-B/16": ResNet-50 with stage 4 removed and "the same number of layers"
  placed in stage 3, i.e. units (3, 4, 9), output stride 16 and 1024 channels,
  so that a 1x1 patch of the feature map is a 16x16 patch of the image.

Initialisation as the original code (``vit_jax/models_resnet.py``): the last
GroupNorm of each unit starts with zero scale, so every unit starts as its
shortcut; convolutions He-normal (fan out), which weight standardisation makes
scale-free.

Numerics and names follow timm's ``vit_base_r50_s16_224`` (``ResNetV2`` with
``StdConv2dSame(eps=1e-8)``, ``HybridEmbed``), whose weights are the paper's
converted: the original JAX code standardises with ``(W - mean) / (std + 1e-5)``
and its GroupNorm has eps 1e-6, differences of about 1e-5 relative. Parameter
names (``patch_embed.backbone.stem.conv``, ``...stages.S.blocks.U.conv1``, ...)
map one to one to timm's; :func:`~vit16.models.jax.from_jax_npz` reads the
original ``R50+ViT-B_16.npz`` names (``conv_root``, ``blockS/unitU/conv1``, ...).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vit16.models.layers import check_image_size

__all__ = ["Bottleneck", "HybridEmbed", "ResNetBackbone", "ResNetStage", "StdConv2d", "pad_same"]

GROUPS = 32
"""Groups of every GroupNorm (BiT)."""


def pad_same(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow "SAME" padding of (B, C, H, W) ``x`` for a ``kernel_size``
    window moved by ``stride``: the output then has ``ceil(H / stride)`` rows;
    an odd total padding puts the extra row (column) at the bottom (right)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: (left, right, top, bottom)
        total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class StdConv2d(nn.Conv2d):
    """Weight-standardised convolution without bias, "SAME" padding (BiT):
    (B, C_in, H, W) -> (B, C_out, ceil(H/stride), ceil(W/stride)).

    The filter ``W`` of each output channel is used as
    ``(W - mean(W)) / sqrt(var(W) + eps)`` (mean and biased variance over its
    ``C_in * k * k`` weights); the stored parameter is the raw ``W``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 eps: float = 1e-8):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        """The standardised filters, (C_out, C_in, k, k)."""
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), unbiased=False, keepdim=True)
        return (self.weight - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardized_weight(), None, self.stride)


def group_norm(channels: int) -> nn.GroupNorm:
    """BiT's normalisation: GroupNorm with 32 groups, eps 1e-5."""
    return nn.GroupNorm(GROUPS, channels, eps=1e-5)


class Bottleneck(nn.Module):
    """One post-activation bottleneck unit (see the module docstring):
    (B, in_channels, H, W) -> (B, out_channels, ceil(H/stride), ceil(W/stride)).

    ``downsample`` (1x1 StdConv2d + GroupNorm) is the projection shortcut, built
    when ``project`` is true; otherwise the shortcut is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, project: bool = False):
        super().__init__()
        mid = out_channels // 4
        self.downsample = nn.Sequential(OrderedDict(
            conv=StdConv2d(in_channels, out_channels, 1, stride=stride),
            norm=group_norm(out_channels),
        )) if project else None
        self.conv1 = StdConv2d(in_channels, mid, 1)
        self.norm1 = group_norm(mid)
        self.conv2 = StdConv2d(mid, mid, 3, stride=stride)
        self.norm2 = group_norm(mid)
        self.conv3 = StdConv2d(mid, out_channels, 1)
        self.norm3 = group_norm(out_channels)
        nn.init.zeros_(self.norm3.weight)  # the unit starts as its shortcut (original code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class ResNetStage(nn.Module):
    """``depth`` bottleneck units, the first with the stride and the projection
    shortcut: (B, in_channels, H, W) -> (B, out_channels, H/stride, W/stride)."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, stride: int):
        super().__init__()
        self.blocks = nn.Sequential(*(
            Bottleneck(in_channels if i == 0 else out_channels, out_channels,
                       stride if i == 0 else 1, project=i == 0)
            for i in range(depth)
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Stem(nn.Module):
    """7x7 stride-2 StdConv2d, GroupNorm, ReLU, 3x3 stride-2 max-pool ("SAME"):
    (B, in_chans, H, W) -> (B, width, H/4, W/4)."""

    def __init__(self, in_chans: int, width: int):
        super().__init__()
        self.conv = StdConv2d(in_chans, width, 7, stride=2)
        self.norm = group_norm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, 2)


class ResNetBackbone(nn.Module):
    """The BiT ResNet of the hybrid without its head (module docstring):
    (B, in_chans, H, W) float -> feature map (B, out_channels, H/stride, W/stride).

    Args:
        layers: units per stage; ``(3, 4, 9)`` is the paper's R50 with stage 4
            moved into stage 3 (stride 16), ``(3, 4, 6, 3)`` the plain
            ResNet-50 (stride 32), ``()`` the stem alone (stride 4).
        in_chans: input channels.
        width: stem channels (64); stage s has ``4 * width * 2^s`` channels.

    Raises:
        ValueError: a stage with fewer than one unit.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 9), in_chans: int = 3, width: int = 64):
        super().__init__()
        if any(int(d) < 1 for d in layers):
            raise ValueError(f"hybrid_layers must be positive unit counts per stage, got {list(layers)}")
        self.stem = Stem(in_chans, width)
        self.stages = nn.Sequential()
        channels, self.stride = width, 4
        for s, depth in enumerate(layers):
            stride = 1 if s == 0 else 2
            self.stages.add_module(str(s), ResNetStage(channels, 4 * width * 2**s, int(depth), stride))
            channels, self.stride = 4 * width * 2**s, self.stride * stride
        self.out_channels = channels
        for m in self.modules():  # BiT's init; weight standardisation makes the scale moot
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class HybridEmbed(nn.Module):
    """Eq. 1 on a CNN feature map (section 3.1, "Hybrid Architecture"):
    (B, in_chans, img_size, img_size) float images -> (B, N, D) patch tokens.

    The :class:`ResNetBackbone` maps the image to a (B, C, H/s, W/s) feature map
    (s its stride, 16 for the paper's R50); ``proj`` (the matrix E, a
    convolution of kernel and stride ``patch_size / s``: 1x1 for R50+ViT-B/16)
    embeds its patches. ``patch_size`` is the side of the image patch one token
    covers, in pixels, as in the model's name ("/16"), so ``grid_size`` and
    ``num_patches`` mean what they mean for :class:`~vit16.models.layers.PatchEmbed`.

    Raises:
        ValueError: ``patch_size`` not a multiple of the backbone's stride,
            ``img_size`` not a multiple of ``patch_size`` or, in forward, input
            of another size than ``img_size``.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int,
                 layers: Sequence[int] = (3, 4, 9)):
        super().__init__()
        self.backbone = ResNetBackbone(layers, in_chans)
        stride = self.backbone.stride
        if patch_size % stride:
            raise ValueError(f"patch_size {patch_size} is not a multiple of the hybrid backbone's "
                             f"stride {stride} (hybrid_layers={list(layers)}); choose a patch_size "
                             f"of {stride}, {2 * stride}, ...")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}; "
                             "choose sizes such that img_size % patch_size == 0")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        kernel = patch_size // stride
        self.proj = nn.Conv2d(self.backbone.out_channels, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, self.img_size)
        return self.proj(self.backbone(x)).flatten(2).transpose(1, 2)
