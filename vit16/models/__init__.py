"""Models: the Vision Transformer (:mod:`~vit16.models.vit`, its layers in
:mod:`~vit16.models.layers`, the hybrid's ResNet in
:mod:`~vit16.models.hybrid`), He et al.'s CIFAR ResNets of torchvision blocks
(:mod:`~vit16.models.resnet_cifar`), the registered sizes, converters from
torchvision's and timm's (:mod:`~vit16.models.convert`) and the original JAX
code's weights (:mod:`~vit16.models.jax`), and ``init`` resolution
(:mod:`~vit16.models.pretrained`)."""

from vit16.models.vit import VisionTransformer, resample_patch_embed, resize_pos_embed
from vit16.models.hybrid import HybridEmbed
from vit16.models.resnet_cifar import CifarResNet
from vit16.models import registered  # noqa: F401  (fills vit16.MODELS)
from vit16.models.convert import from_timm, from_torchvision, to_timm, to_torchvision
from vit16.models.jax import from_jax_npz, to_jax_npz
from vit16.models.load import WeightLoadError, load_weights
from vit16.models.pretrained import load_pretrained, read_init

__all__ = [
    "VisionTransformer", "CifarResNet", "resize_pos_embed", "from_timm", "from_torchvision", "to_timm",
    "to_torchvision", "load_weights", "WeightLoadError", "from_jax_npz", "to_jax_npz",
    "read_init", "load_pretrained", "HybridEmbed", "resample_patch_embed",
]
