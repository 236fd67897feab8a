"""Data sets and loaders.

Importing this package registers the data sets ``cifar10``, ``cifar100`` and
``imagenet`` in :data:`vit16.registry.DATASETS`. The trainer calls
:func:`build_data`; the benchmark calls :func:`data_throughput`.

Modules: ``roots`` (data root, missing-data error), ``cache`` (decode
cache), ``decode`` (reading files), ``sources`` (registered data sets),
``splits`` (validation split, subsets), ``sampling`` (epoch order, seeds),
``augment`` (batch augmentation on the device), ``transforms`` (per-sample
DataLoader pipelines), ``loaders`` (train/eval loaders), ``build``.
"""

from vit16.data import sources  # noqa: F401  (registers the data sets)
from vit16.data import transfer_sources  # noqa: F401  (registers imagefolder, oxford_pets, flowers102)
from vit16.data.build import DataBundle, build_data, data_throughput
from vit16.data.cache import cache_dir
from vit16.data.loaders import EvalLoader, TrainLoader
from vit16.data.roots import DataNotFoundError, resolve_data_root
from vit16.data.sources import Source, Split
from vit16.data.splits import SPLIT_SEED

__all__ = [
    "DataBundle",
    "DataNotFoundError",
    "EvalLoader",
    "SPLIT_SEED",
    "Source",
    "Split",
    "TrainLoader",
    "build_data",
    "cache_dir",
    "data_throughput",
    "resolve_data_root",
]
