"""Class-balanced subsets: the validation split, ``fraction`` and ``train_limit``.

Every selection uses :data:`SPLIT_SEED`, not the experiment seed, so all
runs of a data set share the same validation images and training subset.
"""

from __future__ import annotations

import numpy as np

from vit16.data.sources import Split

SPLIT_SEED = 0


def balanced_indices(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` positions of ``labels`` with (almost) equal counts per class.

    Each class gets ``count // C`` samples; the ``count % C`` left over go
    one each to randomly chosen classes. Within a class, samples are chosen
    uniformly at random.

    Args:
        labels: int (N,) class index per sample.
        count: how many to choose, 0 <= count <= N.
        rng: the generator that decides.

    Returns:
        int64 (count,), sorted ascending.

    Raises:
        ValueError: a class has fewer samples than its share.
    """
    classes, sizes = np.unique(labels, return_counts=True)
    quota = np.full(len(classes), count // len(classes), dtype=np.int64)
    quota[rng.permutation(len(classes))[: count % len(classes)]] += 1
    if (quota > sizes).any():
        c = int(classes[np.argmax(quota - sizes)])
        raise ValueError(
            f"cannot take {count} class-balanced samples: class {c} has "
            f"{int(sizes[classes == c][0])} samples, fewer than its share {int(quota.max())}"
        )
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def stratified_fraction(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``round(fraction * n_c)`` (at least 1) random samples of
    every class ``c`` (classes keep their proportions). int64, sorted."""
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = max(1, int(round(fraction * len(idx))))
        chosen.append(rng.permutation(idx)[:take])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_train(train: Split, val_size: int, fraction: float = 1.0, train_limit: int = 0) -> tuple[Split, Split]:
    """Carve the validation split out of the official training split.

    Steps, each with its own generator seeded by :data:`SPLIT_SEED`:
    ``val_size`` class-balanced validation images; of the rest, a
    class-stratified ``fraction`` (if < 1); then ``train_limit``
    class-balanced images (if > 0).

    Returns:
        (train, val); both keep the original sample order.

    Raises:
        ValueError: ``val_size`` or ``train_limit`` is negative or too large for
            the data, or ``fraction`` is not in (0, 1].
    """
    n = len(train)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size = {val_size} must be in [0, {n - 1}] for a training split of {n}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction = {fraction} must be in (0, 1]")
    if train_limit < 0:
        raise ValueError(f"train_limit = {train_limit} must be >= 0 (0 = no limit)")
    val_idx = balanced_indices(train.labels, val_size, np.random.default_rng([SPLIT_SEED, 1]))
    rest = np.setdiff1d(np.arange(n), val_idx, assume_unique=True)
    if fraction < 1.0:
        keep = stratified_fraction(train.labels[rest], fraction, np.random.default_rng([SPLIT_SEED, 2]))
        rest = rest[keep]
    if train_limit > 0:
        if train_limit > len(rest):
            raise ValueError(f"train_limit = {train_limit} exceeds the {len(rest)} training images left")
        keep = balanced_indices(train.labels[rest], train_limit, np.random.default_rng([SPLIT_SEED, 3]))
        rest = rest[keep]
    return train.subset(rest), train.subset(val_idx)


def eval_shard(n: int, rank: int, world_size: int) -> np.ndarray:
    """Positions of rank ``rank``'s contiguous, non-padded eval shard of ``n``
    samples; shards differ in size by at most one and cover ``range(n)``."""
    return np.array_split(np.arange(n, dtype=np.int64), world_size)[rank]
