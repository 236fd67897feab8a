"""Models: the Vision Transformer, the registered sizes, and converters from
torchvision's and timm's state dicts."""

from vit16.models.vit import VisionTransformer, resize_pos_embed
from vit16.models import registered  # noqa: F401  (fills vit16.MODELS)
from vit16.models.convert import from_timm, from_torchvision, to_timm, to_torchvision
from vit16.models.load import WeightLoadError, load_weights

__all__ = [
    "VisionTransformer", "resize_pos_embed", "from_timm", "from_torchvision", "to_timm",
    "to_torchvision", "load_weights", "WeightLoadError",
]
