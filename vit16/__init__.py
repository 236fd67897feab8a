"""vit16: Vision Transformers ("An Image is Worth 16x16 Words", Dosovitskiy et
al., ICLR 2021) at the scale a lab or a student has.

Importing the package registers every built-in model, data set and schedule:
``vit16.MODELS``, ``vit16.DATASETS`` and ``vit16.SCHEDULES``.

When torch is not imported yet, importing vit16 (``python train.py``,
``python -m vit16``) first sets ``THP_MEM_ALLOC_ENABLE=1`` unless the
environment already sets it: PyTorch's own switch (since 2.2) to back CPU
tensors of 2 MiB and more with transparent huge pages. Each fresh allocation
above glibc's 32 MiB mmap limit (a 64 x 3 x 224 x 224 float32 batch is
38.5 MiB) otherwise takes one page fault per 4 KiB; measured in
results/BENCH_CPU.md: the CPU data pipeline of CIFAR at 224 about 1.6x
faster, 32px training unchanged within noise. ``THP_MEM_ALLOC_ENABLE=0``
turns it off.
"""

import os
import sys

if "torch" not in sys.modules:  # read once by torch's CPU allocator, at its first allocation
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from vit16.registry import DATASETS, MODELS, SCHEDULES, Registry, UnknownNameError
from vit16 import data, models, schedules  # noqa: F401  (register the built-ins)

__all__ = ["DATASETS", "MODELS", "SCHEDULES", "Registry", "UnknownNameError", "data", "models", "schedules"]
__version__ = "0.1.0"
