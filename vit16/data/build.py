"""``build_data``: from an experiment configuration to the trainer's loaders."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from vit16.config import ConfigError, batch_geometry, check_ranges
from vit16.data.augment import BatchAugment, BatchPolicy
from vit16.data.loaders import DeviceTrainLoader, EvalLoader, TrainLoader, WorkerTrainLoader
from vit16.data.roots import resolve_data_root
from vit16.data.sampling import EpochSampler
from vit16.data.splits import eval_shard, split_train
from vit16.data.transforms import SplitDataset, eval_transform, train_transform
from vit16.registry import DATASETS


@dataclass
class DataBundle:
    """What the trainer gets from :func:`build_data`.

    ``description`` names the data set and where it was read, for the
    results table ("CIFAR-10 (JPEG ImageFolder ../shared/data/cifar10)").
    """

    train: TrainLoader
    val: EvalLoader
    test: EvalLoader
    num_classes: int
    class_names: list[str]
    description: str


def build_data(cfg, device: torch.device, rank: int = 0, world_size: int = 1,
               data_root: str | None = None, micro_batch_size: int | None = None) -> DataBundle:
    """Read the data set of ``cfg.data``, split it and build this rank's loaders.

    Args:
        cfg: the :class:`~vit16.config.ExperimentConfig`.
        device: where batches are delivered.
        rank, world_size: distributed position; train batches are disjoint
            shards of each epoch, val/test are disjoint non-padded shards.
        data_root: ``--data-root``; see :func:`~vit16.data.roots.resolve_data_root`.
        micro_batch_size: per-rank batch; default the trainer's, from
            :func:`~vit16.config.batch_geometry`.

    Returns:
        a :class:`DataBundle`. The device-resident fast path is used when
        ``cfg.data.device_resident`` and the source is decoded (CIFAR): at
        32px as stored, or augmented at 32 and upsampled on the device to a
        larger ``cfg.data.img_size`` (224, 384); otherwise a DataLoader with
        ``cfg.data.num_workers`` workers.

    Raises:
        DataNotFoundError: the data set is not under the data root.
        ConfigError: a ``[NAME.data]`` value out of its range
            (:func:`vit16.config.check_ranges`), or a ``crop_padding`` the
            device path cannot scale to 32px (:func:`_device_upsampling`).
        UnknownNameError: ``cfg.data.name`` is not a registered data set.
        ValueError: splits do not fit the data, the batch sizes do not
            divide, or the training split is smaller than one global micro-batch.
    """
    dcfg, table = cfg.data, cfg.name or "NAME"
    check_ranges(cfg, ("data",))  # configs not made by resolve() too
    device = torch.device(device)
    mb = micro_batch_size or batch_geometry(cfg.batch_size, cfg.micro_batch_size, world_size)[0]
    eval_bs = cfg.eval_batch_size or mb
    root = resolve_data_root(data_root, dcfg.root)
    source = DATASETS.build(dcfg.name, cfg=dcfg, root=root, experiment=table)
    train, val = split_train(source.train, dcfg.val_size, dcfg.fraction, dcfg.train_limit)
    test = source.test
    num_classes = len(source.class_names)

    sampler = EpochSampler(len(train), mb, cfg.seed, rank, world_size, dcfg.repeated_aug)
    if len(sampler) == 0:
        raise ValueError(
            f"{table}: the training split has {len(train)} images, fewer than one global micro-batch "
            f"of {mb * world_size} ({world_size} rank(s) x {mb}); lower the batch size or train_limit"
        )
    fast = dcfg.device_resident and source.decoded and dcfg.img_size >= source.image_size
    out_size, padding = _device_upsampling(dcfg, source.image_size, table) if fast else (None, None)
    augment = BatchAugment(dcfg, source.mean, source.std, num_classes, geometric=fast,
                           autoaugment_policy=source.autoaugment_policy, out_size=out_size,
                           crop_padding=padding)
    val_shard, test_shard = (s.subset(eval_shard(len(s), rank, world_size)) for s in (val, test))
    if fast:
        train_loader: TrainLoader = DeviceTrainLoader(train, sampler, augment, device)
        val_loader, test_loader = (EvalLoader(s, eval_bs, device, source.mean, source.std, out_size=out_size)
                                   for s in (val_shard, test_shard))
    else:
        t_train = train_transform(dcfg, source.decoded, source.image_size, source.autoaugment_policy)
        t_eval = eval_transform(dcfg, source.decoded, source.image_size)
        train_loader = WorkerTrainLoader(SplitDataset(train, t_train), sampler, augment, device,
                                         dcfg.num_workers)
        val_loader, test_loader = (
            EvalLoader(s, eval_bs, device, source.mean, source.std, SplitDataset(s, t_eval), dcfg.num_workers)
            for s in (val_shard, test_shard)
        )
    return DataBundle(train_loader, val_loader, test_loader, num_classes, list(source.class_names),
                      source.description)


def _device_upsampling(dcfg, stored: int, table: str) -> tuple[int | None, int | None]:
    """``(out_size, crop padding in stored pixels)`` of the device-resident path:
    ``(None, None)`` at the stored size; for CIFAR at ``img_size`` > 32 the
    batch is augmented at 32 and upsampled on the device, so the table's
    ``crop_padding`` (pixels at ``img_size``) is scaled to stored pixels.

    Raises:
        ConfigError: that padding is not a whole number of stored pixels.
    """
    if dcfg.img_size == stored:
        return None, None
    padding, rest = divmod(dcfg.crop_padding * stored, dcfg.img_size)
    if rest:
        step = dcfg.img_size / math.gcd(dcfg.img_size, stored)
        raise ConfigError(
            f"[{table}.data]: crop_padding = {dcfg.crop_padding} at img_size = {dcfg.img_size} is "
            f"not a whole number of the stored {stored}px pixels (the device path crops at {stored}px); "
            f"use a multiple of {step:g} (e.g. {round(dcfg.crop_padding / step) * step:g}) or "
            "device_resident = false")
    return dcfg.img_size, padding


def data_throughput(cfg, device: torch.device, batches: int = 50, data_root: str | None = None,
                    micro_batch_size: int | None = None, warmup: int = 3) -> dict[str, float]:
    """Images per second of the training loader alone, augmentation included,
    and what one micro-batch costs in calls.

    Builds the data (decode cache included, not timed), skips ``warmup``
    micro-batches (worker start-up), then times ``batches`` micro-batches,
    crossing epochs if needed; CUDA work is synchronised before the clock stops.
    One more micro-batch, untimed, is counted.
    ``micro_batch_size`` as in :func:`build_data` (default: the trainer's).

    Returns:
        ``{"images_per_s", "copies", "aten_ops"}``: training images/s; the
        host-to-device copies and the top-level aten ops (views included) of
        one micro-batch in this process (:mod:`vit16.data.policy_bench`'s
        counters; a DataLoader worker's work is not in them; the first
        micro-batch of an epoch also copies the epoch's sample order).

    Raises:
        everything :func:`build_data` raises.
    """
    from vit16.data.policy_bench import count_aten_ops, count_transfers

    device = torch.device(device)
    loader = build_data(cfg, device, data_root=data_root, micro_batch_size=micro_batch_size).train

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def endless():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream = endless()
    for _ in range(warmup):
        next(stream)
    sync()
    t0, images = time.perf_counter(), 0
    for _ in range(batches):
        images += next(stream)[0].shape[0]
    sync()
    rate = images / (time.perf_counter() - t0)
    copies = count_transfers(lambda: next(stream))
    ops = count_aten_ops(lambda: next(stream))
    return {"images_per_s": rate, "copies": copies, "aten_ops": ops}
