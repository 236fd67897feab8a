"""Per-sample pipelines for the DataLoader (worker) path: datasets and
torchvision v2 transforms on uint8 tensors.

Each training sample is transformed under its own seed (drawn by
:class:`~vit16.data.sampling.EpochSampler`), so its augmentation does not
depend on the worker that loads it or on skipped batches.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vit16.data import decode
from vit16.data.augment import BatchPolicy
from vit16.data.sources import Split


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """Seed torch's default CPU generator (used by v2 transforms) inside the
    block and restore its state afterwards (cheap; CUDA untouched)."""
    g = torch.default_generator
    state = g.get_state()
    g.manual_seed(seed)
    try:
        yield
    finally:
        g.set_state(state)


def train_transform(cfg, decoded: bool, stored_size: int | None, autoaugment_policy: str) -> v2.Compose:
    """Training transform, uint8 (3, h, w) -> uint8 (3, S, S), S = ``cfg.img_size``.

    Decoded 32x32 arrays (CIFAR): resize to S if S differs, then
    ``RandomCrop(S, padding=crop_padding)`` (padding in pixels at S),
    flip, policy. Files (ImageNet): ``RandomResizedCrop(S)``, flip, policy.
    ``autoaugment_policy``: see :class:`~vit16.data.augment.BatchPolicy`.
    """
    size = cfg.img_size
    ops: list[v2.Transform] = []
    if decoded:
        if stored_size != size:
            ops.append(v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True))
        if cfg.crop_padding > 0:
            ops.append(v2.RandomCrop(size, padding=cfg.crop_padding))
    else:
        ops.append(v2.RandomResizedCrop(size, antialias=True))
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if cfg.auto_augment:
        ops.append(BatchPolicy(cfg.auto_augment, autoaugment_policy).transform)
    return v2.Compose(ops or [v2.Identity()])


def eval_transform(cfg, decoded: bool, stored_size: int | None) -> v2.Compose:
    """Eval transform, uint8 (3, h, w) -> uint8 (3, S, S): decoded arrays are
    resized to S; files are resized to ``S * 256 / 224`` then centre-cropped to S."""
    size = cfg.img_size
    if decoded:
        if stored_size == size:
            return v2.Compose([v2.Identity()])
        return v2.Compose([v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)])
    return v2.Compose([v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)])


class SplitDataset(Dataset):
    """A :class:`~vit16.data.sources.Split` as a map-style dataset of uint8 tensors.

    ``dataset[i]`` -> (uint8 (3, S, S), int label); ``dataset[(i, seed)]``
    transforms sample ``i`` under ``seed`` (training, reproducible).
    """

    def __init__(self, split: Split, transform: v2.Compose):
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def _load(self, i: int) -> torch.Tensor:
        if self.split.images is not None:
            return torch.from_numpy(self.split.images[i]).permute(2, 0, 1)
        return decode.load_image(self.split.files[i])

    def __getitem__(self, item):
        if isinstance(item, tuple):
            i, seed = item
            with seeded_global_rng(seed):
                img = self.transform(self._load(i))
        else:
            i = item
            img = self.transform(self._load(i))
        return img.contiguous(), int(self.split.labels[i])
