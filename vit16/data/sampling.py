"""Which samples each training micro-batch holds, and the seed of its augmentation.

Everything is a pure function of ``(seed, epoch, batch)`` through explicit
generators (never the global RNG), so any batch can be rebuilt on its own:
that is what makes mid-epoch resumption bit-identical.

Layout of an epoch with ``W`` ranks and micro-batch ``B``: the epoch's
permutation is cut into global micro-batches of ``W * B`` samples; rank
``r``'s micro-batch ``b`` is the ``r``-th block of ``B`` of global
micro-batch ``b``. Ranks therefore get disjoint, equal shards, the
``n mod (W * B)`` samples at the end are dropped, and with the same ``W * B``
the samples of each optimizer step do not depend on ``W``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Independent random streams derived from (seed, epoch, ...).
STREAM_ORDER, STREAM_AUGMENT, STREAM_MIX, STREAM_WORKERS = 0, 1, 2, 3


def derive_seed(*keys: int) -> int:
    """A 63-bit seed determined by the integer ``keys`` (numpy SeedSequence
    hashing: nearby keys give unrelated seeds)."""
    entropy = [int(k) % (1 << 64) for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


class EpochSampler:
    """Micro-batch index lists of one rank, a function of ``(seed, epoch)``.

    Args:
        num_samples: size ``n`` of the training split.
        micro_batch_size: ``B``, samples per micro-batch on this rank.
        seed: the experiment seed.
        rank, world_size: this rank and the number of ranks ``W``.
        repeats: repeated augmentation ``k``: an epoch draws ``ceil(n / k)``
            distinct samples, repeats each ``k`` times (copies adjacent) and
            keeps the first ``n``, so the epoch length does not change.

    Raises:
        ValueError: bad sizes, rank, or ``repeats < 1``.
    """

    def __init__(self, num_samples: int, micro_batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, repeats: int = 1):
        if micro_batch_size < 1:
            raise ValueError(f"micro batch size must be >= 1, got {micro_batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if repeats < 1:
            raise ValueError(f"repeated_aug = {repeats} must be >= 1")
        self.num_samples = num_samples
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.repeats = repeats

    def __len__(self) -> int:
        """Micro-batches per epoch on each rank (the incomplete rest is dropped)."""
        return self.num_samples // (self.micro_batch_size * self.world_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's global sample order: int64 (n,), shared by every rank."""
        g = generator(self.seed, epoch, STREAM_ORDER)
        n = self.num_samples
        if self.repeats == 1:
            return torch.randperm(n, generator=g)
        distinct = torch.randperm(n, generator=g)[: math.ceil(n / self.repeats)]
        return distinct.repeat_interleave(self.repeats)[:n]

    def batches(self, epoch: int) -> torch.Tensor:
        """This rank's micro-batches of the epoch: int64 (len(self), B) sample indices."""
        per_rank, b, w = len(self), self.micro_batch_size, self.world_size
        perm = self.permutation(epoch)[: per_rank * w * b]
        return perm.view(per_rank, w, b)[:, self.rank].contiguous()

    def global_batch(self, batch: int) -> int:
        """The index of this rank's micro-batch ``batch`` among all ranks' micro-batches."""
        return batch * self.world_size + self.rank

    def batch_generator(self, epoch: int, batch: int, stream: int = STREAM_AUGMENT) -> torch.Generator:
        """The CPU generator that draws micro-batch ``batch``'s augmentation."""
        return generator(self.seed, epoch, stream, self.global_batch(batch))

    def sample_seeds(self, epoch: int, batch: int) -> list[int]:
        """One seed per sample of micro-batch ``batch`` (for per-sample augmentation in workers)."""
        g = self.batch_generator(epoch, batch, STREAM_WORKERS)
        return torch.randint(0, 2**62, (self.micro_batch_size,), generator=g).tolist()
