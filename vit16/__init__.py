"""vit16: Vision Transformers ("An Image is Worth 16x16 Words", Dosovitskiy et
al., ICLR 2021) at the scale a lab or a student has.

Importing the package registers every built-in model, data set and schedule:
``vit16.MODELS``, ``vit16.DATASETS`` and ``vit16.SCHEDULES``.
"""

from vit16.registry import DATASETS, MODELS, SCHEDULES, Registry, UnknownNameError
from vit16 import data, models, schedules  # noqa: F401  (register the built-ins)

__all__ = ["DATASETS", "MODELS", "SCHEDULES", "Registry", "UnknownNameError", "data", "models", "schedules"]
__version__ = "0.1.0"
