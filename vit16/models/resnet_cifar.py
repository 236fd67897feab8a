"""He et al.'s CIFAR ResNets (Deep Residual Learning for Image Recognition,
CVPR 2016, section 4.2) built from torchvision's
:class:`torchvision.models.resnet.BasicBlock`: the CPU-sized CNN baseline.

A 3x3 convolution with ``width`` channels, three stages of ``n`` basic blocks
(``depth = 6n + 2`` weighted layers) with ``width``, ``2 width`` and
``4 width`` channels on 32x32, 16x16 and 8x8 maps (stride 2 in the first
block of stages 2 and 3), global average pooling and a linear classifier.

The paper's CIFAR networks use option A shortcuts (identity, zero-padded
channels, no parameters); torchvision's ``BasicBlock`` takes a ``downsample``
module, so the two downsampling blocks here use option B (a 1x1 stride-2
convolution + batch norm projection), which adds ``2 width^2 + 4 width`` +
``8 width^2 + 8 width`` parameters (2,752 for ``width = 16``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

__all__ = ["CifarResNet", "cifar_depth_blocks"]


def cifar_depth_blocks(depth: int) -> int:
    """Blocks per stage ``n`` of a CIFAR ResNet of ``depth = 6n + 2`` layers
    (He et al. 2016, section 4.2: 20, 32, 44, 56, 110).

    Raises:
        ValueError: ``depth`` is not 6n + 2 with n >= 1.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth = {depth!r} is not 6n + 2 (n >= 1); use 8, 14, 20, 32, 44, 56 or 110")
    return (depth - 2) // 6


class CifarResNet(nn.Module):
    """A CIFAR ResNet of torchvision ``BasicBlock`` stages (He et al. 2016, section 4.2).

    Layer names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1`` ...
    ``layer3``, ``fc``), so the head is found and replaced as a torchvision
    ResNet's is. Initialisation as torchvision's: Kaiming-normal (fan-out)
    convolutions, batch norm weights 1 and biases 0.

    Args:
        depth: weighted layers, 6n + 2 (20: ResNet-20, three blocks per stage).
        width: channels of the stem and stage 1 (16 in the paper); stages 2
            and 3 have twice and four times as many.
        num_classes: outputs of the linear head.

    Input ``(B, 3, H, W)`` images (32x32 for CIFAR; any size works, the pool
    is global); output ``(B, num_classes)`` logits.

    Raises:
        ValueError: ``depth`` is not 6n + 2, or ``width`` or ``num_classes`` is below 1.
    """

    default_img_size = 32
    """The input side it is designed for (CIFAR); :func:`vit16.models.flops.native_img_size`."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10):
        super().__init__()
        n = cifar_depth_blocks(depth)
        for key, value in (("width", width), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} = {value!r} must be a positive integer")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(width, width, n, stride=1)
        self.layer2 = self._stage(width, 2 * width, n, stride=2)
        self.layer3 = self._stage(2 * width, 4 * width, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:  # option B: a 1x1 projection shortcut
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))
        layers = [BasicBlock(inplanes, planes, stride=stride, downsample=downsample)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, 4 width)`` globally pooled features."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, num_classes)`` logits."""
        return self.fc(self.forward_features(x))
