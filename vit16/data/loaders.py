"""Train and eval loaders: the device-resident fast path and the DataLoader path.

Both kinds of :class:`TrainLoader` yield ``(images, targets)`` micro-batches
already on the device and share epoch bookkeeping: ``set_epoch`` before
each pass, with ``start_batch`` to resume mid-epoch (the trainer's resume).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from vit16.data.augment import BatchAugment, normalize_constants, normalize_with, upsample
from vit16.data.sampling import STREAM_WORKERS, EpochSampler, derive_seed
from vit16.data.sources import Split
from vit16.data.transforms import SplitDataset

Batch = tuple[torch.Tensor, torch.Tensor]


def _to_device_images(images, device: torch.device) -> torch.Tensor:
    """uint8 numpy (N, H, W, 3) -> uint8 tensor (N, 3, H, W) on ``device`` (contiguous)."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()


class TrainLoader:
    """Training micro-batches of one rank; iterate once per ``set_epoch``.

    Iterating yields ``len(self)`` (or ``len(self) - start_batch``) pairs
    ``(images float32 (B, 3, S, S) normalised on the device, targets)``;
    targets are int64 (B,), or float32 (B, num_classes) soft targets when
    MixUp/CutMix is configured. Epoch ``e``'s batches depend only on
    ``(seed, e, rank)`` (and the configuration).
    """

    def __init__(self, sampler: EpochSampler, augment: BatchAugment, device: torch.device):
        self.sampler = sampler
        self.augment = augment
        self.device = torch.device(device)
        self.epoch: int | None = None
        self._start = 0
        self._armed = False

    def __len__(self) -> int:
        """Micro-batches per epoch (the incomplete last one is dropped)."""
        return len(self.sampler)

    @property
    def micro_batch_size(self) -> int:
        """Images per micro-batch on this rank."""
        return self.sampler.micro_batch_size

    @property
    def num_samples(self) -> int:
        """Images in the training split (all ranks together)."""
        return self.sampler.num_samples

    def set_epoch(self, epoch: int, start_batch: int | None = None) -> None:
        """Prepare to iterate epoch ``epoch`` from micro-batch ``start_batch``.

        ``start_batch = k`` skips the first ``k`` micro-batches; the rest are
        bit-identical to those of an uninterrupted pass. ``None`` means 0.

        Raises:
            ValueError: ``start_batch`` is not in [0, len(self)].
        """
        start_batch = start_batch or 0
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch = {start_batch} is not in [0, {len(self)}]")
        self.epoch, self._start, self._armed = epoch, start_batch, True

    def __iter__(self) -> Iterator[Batch]:
        if not self._armed:
            raise RuntimeError("call loader.set_epoch(epoch) before iterating each epoch")
        self._armed = False
        return self._iterate(self.epoch, self._start)

    def _iterate(self, epoch: int, start: int) -> Iterator[Batch]:
        raise NotImplementedError


class DeviceTrainLoader(TrainLoader):
    """Fast path: the whole uint8 training split lives on the device
    ((N, 3, 32, 32)); each micro-batch is gathered and augmented there (and
    upsampled, for CIFAR at 224 / 384: :class:`~vit16.data.augment.BatchAugment`).
    When the augmentation crops or flips, the set is kept padded and mirrored
    (:class:`~vit16.data.crop.CropSource`) and each micro-batch's crops are
    read straight from it; ``images`` is then a view of it."""

    def __init__(self, split: Split, sampler: EpochSampler, augment: BatchAugment, device: torch.device):
        super().__init__(sampler, augment, device)
        images = _to_device_images(split.images, self.device)
        self.source = augment.crop_source(images)
        self.images = images if self.source is None else self.source.images
        self.labels = torch.from_numpy(split.labels).to(self.device)

    def _iterate(self, epoch: int, start: int) -> Iterator[Batch]:
        batches = self.sampler.batches(epoch).to(self.device)
        for b in range(start, len(self)):
            idx = batches[b]
            gen = self.sampler.batch_generator(epoch, b)
            labels = self.labels.index_select(0, idx)
            if self.source is not None:
                yield self.augment.from_source(self.source, idx, labels, gen)
            else:
                yield self.augment(self.images.index_select(0, idx), labels, gen)


class _SeededBatchSampler(Sampler):
    """Batch sampler for the DataLoader: lists of ``(index, sample seed)`` of
    epoch ``epoch`` from batch ``start`` (set before each pass). It holds no
    reference to the loader, so dropping the loader shuts its workers down
    at once instead of waiting for the garbage collector."""

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler
        self.epoch = 0
        self.start = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        s, epoch = self.sampler, self.epoch
        batches = s.batches(epoch)
        for b in range(self.start, len(s)):
            yield list(zip(batches[b].tolist(), s.sample_seeds(epoch, b)))


class WorkerTrainLoader(TrainLoader):
    """DataLoader path: ``num_workers`` processes decode and transform each
    sample (uint8, under its own seed); normalisation, random erasing and
    MixUp/CutMix run on the device in ``__iter__``."""

    def __init__(self, dataset: SplitDataset, sampler: EpochSampler, augment: BatchAugment,
                 device: torch.device, num_workers: int):
        super().__init__(sampler, augment, device)
        self.dataset = dataset
        self._gen = torch.Generator()
        self._batch_sampler = _SeededBatchSampler(sampler)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self._batch_sampler,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=self._gen,
        )

    def _iterate(self, epoch: int, start: int) -> Iterator[Batch]:
        self._gen.manual_seed(derive_seed(self.sampler.seed, epoch, STREAM_WORKERS))
        self._batch_sampler.epoch, self._batch_sampler.start = epoch, start
        for b, (images, labels) in enumerate(self.loader, start=start):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            gen = self.sampler.batch_generator(epoch, b)
            yield self.augment(images, labels, gen)


class EvalLoader:
    """Evaluation batches of one rank's shard, fixed order, no augmentation.

    Yields ``(images float32 (B, 3, S, S) normalised on the device, labels
    int64 (B,))``; the last batch may be smaller. Either the uint8 shard
    lives on the device (``dataset=None``: ``split`` is decoded, at size S or
    upsampled to ``out_size`` = S on the device by
    :func:`~vit16.data.augment.upsample`), or a DataLoader over ``dataset``
    decodes and resizes.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, mean, std,
                 dataset: SplitDataset | None = None, num_workers: int = 0, out_size: int | None = None):
        self.device = torch.device(device)
        self.out_size = out_size
        self.batch_size = batch_size
        self.constants = normalize_constants(mean, std, self.device)  # built once, not per batch
        self.num_samples = len(split)
        self.loader = None
        if dataset is None:
            self.images = _to_device_images(split.images, self.device)
            self.labels = torch.from_numpy(split.labels).to(self.device)
        else:
            self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                     pin_memory=self.device.type == "cuda",
                                     persistent_workers=num_workers > 0, generator=torch.Generator())

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.loader is None:
            for i in range(0, self.num_samples, self.batch_size):
                imgs = self.images[i : i + self.batch_size]
                if self.out_size:
                    imgs = upsample(imgs, self.out_size)
                yield normalize_with(imgs, self.constants), self.labels[i : i + self.batch_size]
            return
        for imgs, labels in self.loader:
            imgs = imgs.to(self.device, non_blocking=True)
            yield normalize_with(imgs, self.constants), labels.to(self.device, non_blocking=True)
