"""Built-in model names of ``vit16.MODELS``: the ViT sizes of the paper and the
course plan, the paper's R50+ViT-B/16 hybrid, torchvision's ResNet-50 baseline
and a CIFAR ResNet-20 of torchvision's blocks.

Every builder takes ``num_classes`` and any :class:`VisionTransformer` option
as keyword overrides: ``MODELS.build("vit_b16", num_classes=10, drop_path=0.1)``.
"""

from __future__ import annotations

import inspect

import torchvision
from torch import nn

from vit16.models.resnet_cifar import CifarResNet
from vit16.models.vit import VisionTransformer
from vit16.registry import MODELS

VIT_OPTIONS = [p for p in inspect.signature(VisionTransformer).parameters]


def _check_options(model: str, overrides: dict, valid: list[str]) -> None:
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(
            f"model {model!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid)}"
        )


def _vit(name: str, defaults: dict, overrides: dict) -> VisionTransformer:
    _check_options(name, overrides, VIT_OPTIONS)
    return VisionTransformer(**{**defaults, **overrides})


CIFAR = dict(img_size=32, patch_size=4, num_classes=10)
IMAGENET = dict(img_size=224, patch_size=16, num_classes=1000)


@MODELS.register("vit_small_cifar")
def vit_small_cifar(**overrides) -> VisionTransformer:
    """The course plan's small ViT: 32px, patch 4, 6 blocks, D=384, 6 heads, MLP 1536 (10.7M params)."""
    return _vit("vit_small_cifar", dict(CIFAR, depth=6, embed_dim=384, num_heads=6, mlp_dim=1536), overrides)


@MODELS.register("vit_tiny")
def vit_tiny(**overrides) -> VisionTransformer:
    """RSST's vit_tiny: 32px, patch 4, 9 blocks, D=192, 3 heads, MLP 384 (2.7M params)."""
    return _vit("vit_tiny", dict(CIFAR, depth=9, embed_dim=192, num_heads=3, mlp_dim=384), overrides)


@MODELS.register("vit_quick")
def vit_quick(**overrides) -> VisionTransformer:
    """The CPU-sized ViT of the ``quick``, ``ablate*``, ``proxy*`` and ``*_quick``
    experiments: 32px, patch 8, 4 blocks, D=128, 4 heads, MLP 256 (558,474 params
    with 10 classes)."""
    return _vit("vit_quick", dict(CIFAR, patch_size=8, depth=4, embed_dim=128, num_heads=4, mlp_dim=256),
                overrides)


@MODELS.register("vit_small")
def vit_small(**overrides) -> VisionTransformer:
    """ViT-S at 32px: patch 4, 12 blocks, D=384, 6 heads, MLP 1536 (21.3M params)."""
    return _vit("vit_small", dict(CIFAR, depth=12, embed_dim=384, num_heads=6, mlp_dim=1536), overrides)


@MODELS.register("vit_base")
def vit_base(**overrides) -> VisionTransformer:
    """ViT-B at 32px: patch 4, 12 blocks, D=768, 12 heads, MLP 3072 (85.2M params)."""
    return _vit("vit_base", dict(CIFAR, depth=12, embed_dim=768, num_heads=12, mlp_dim=3072), overrides)


@MODELS.register("vit_s16", aliases=("vit_small_imagenet",))
def vit_s16(**overrides) -> VisionTransformer:
    """ViT-S/16 at 224px: 12 blocks, D=384, 6 heads, MLP 1536 (22.1M params)."""
    return _vit("vit_s16", dict(IMAGENET, depth=12, embed_dim=384, num_heads=6, mlp_dim=1536), overrides)


@MODELS.register("vit_b16", aliases=("vit_base_imagenet",))
def vit_b16(**overrides) -> VisionTransformer:
    """ViT-B/16 (paper Table 1) at 224px: 12 blocks, D=768, 12 heads, MLP 3072 (86.6M params)."""
    return _vit("vit_b16", dict(IMAGENET, depth=12, embed_dim=768, num_heads=12, mlp_dim=3072), overrides)


@MODELS.register("vit_l16", aliases=("vit_large_imagenet",))
def vit_l16(**overrides) -> VisionTransformer:
    """ViT-L/16 (paper Table 1) at 224px: 24 blocks, D=1024, 16 heads, MLP 4096 (304.3M params)."""
    return _vit("vit_l16", dict(IMAGENET, depth=24, embed_dim=1024, num_heads=16, mlp_dim=4096), overrides)


R50_B16 = dict(IMAGENET, hybrid_layers=(3, 4, 9), depth=12, embed_dim=768, num_heads=12, mlp_dim=3072)


@MODELS.register("vit_r50_b16")
def vit_r50_b16(**overrides) -> VisionTransformer:
    """R50+ViT-B/16, the paper's hybrid (section 3.1, 4.1) at 224px: a BiT ResNet-50
    with stage 4's units moved into stage 3 (units 3, 4, 9; stride 16), then
    ViT-B on its 14x14 map of 1x1 patches (98.7M params); timm's
    ``vit_base_r50_s16_224`` weight for weight."""
    return _vit("vit_r50_b16", R50_B16, overrides)


@MODELS.register("vit_r50_b16_384")
def vit_r50_b16_384(**overrides) -> VisionTransformer:
    """R50+ViT-B/16 at 384px (24x24 patches, the paper's fine-tuning resolution;
    99.0M params); timm's ``vit_base_r50_s16_384``."""
    return _vit("vit_r50_b16_384", dict(R50_B16, img_size=384), overrides)


@MODELS.register("resnet50")
def resnet50(num_classes: int = 1000, **overrides) -> nn.Module:
    """torchvision's ResNet-50 as it is (He et al., 2016; the paper's BiT baseline
    family), for 224px input."""
    _check_options("resnet50", overrides, ["num_classes"])
    return torchvision.models.resnet50(num_classes=num_classes)


@MODELS.register("resnet50_cifar")
def resnet50_cifar(num_classes: int = 10, **overrides) -> nn.Module:
    """torchvision's ResNet-50 for 32px input: a 3x3 stride-1 stem convolution and
    no max-pool (the usual CIFAR variant), so the last stage sees 4x4 maps."""
    _check_options("resnet50_cifar", overrides, ["num_classes"])
    model = torchvision.models.resnet50(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


@MODELS.register("resnet20_cifar")
def resnet20_cifar(num_classes: int = 10, **overrides) -> CifarResNet:
    """He et al. 2016's CIFAR ResNet-20 (Deep Residual Learning, section 4.2) of
    torchvision ``BasicBlock``s, the CPU-sized CNN baseline: 3x3 stem with 16
    channels, 3 stages of 3 blocks with 16/32/64 channels (stride 2 at stages 2
    and 3), global average pool, linear head. Option B (1x1 conv + BN projection)
    shortcuts in the two downsampling blocks where the paper has option A
    (zero-padded identity): 272,474 params with 10 classes (option A: 269,722).
    ``depth`` (6n + 2: 32, 44, 56, 110) and ``width`` (stage-1 channels) give the
    paper's other CIFAR ResNets; :class:`~vit16.models.resnet_cifar.CifarResNet`."""
    _check_options("resnet20_cifar", overrides, ["num_classes", "depth", "width"])
    return CifarResNet(num_classes=num_classes, **overrides)
