"""Distributed data parallel plumbing: the process group and the few collectives
the trainer needs.

One trainer serves every launch; only the process count differs:

* one process: ``python train.py NAME`` (no process group at all);
* ``torchrun --nproc_per_node N train.py NAME``: torchrun sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
  (the ``env://`` rendezvous);
* a Slurm job submitted by ``python train.py --submit NAME``: every task calls
  :func:`export_job_env`, which derives the same variables from the job
  (``submitit.helpers.TorchDistributedEnvironment``).

:func:`setup` then starts the process group: NCCL on CUDA, gloo on the CPU.
The group lives as long as the process (it is destroyed at exit), so
:func:`vit16.trainer.train` can be called more than once.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from vit16.config import ConfigError

__all__ = [
    "DistributedSetupError",
    "all_gather_objects",
    "all_reduce_mean",
    "backend_for",
    "barrier",
    "export_job_env",
    "finish",
    "is_initialized",
    "local_rank",
    "rank0_decides",
    "rank0_first",
    "rank_device",
    "rank_seed",
    "setup",
    "teardown",
]

TIMEOUT_MIN = 30
"""Collective timeout (minutes): a rank that died leaves the others waiting at most this long."""


class DistributedSetupError(ConfigError):
    """The environment asks for several processes but does not say how to reach
    rank 0 (``train.py`` prints it as one ``error:`` line)."""


def is_initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def local_rank() -> int:
    """``LOCAL_RANK`` (torchrun, or exported from the Slurm job), else 0."""
    return int(os.environ.get("LOCAL_RANK", 0))


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: torch.device | str) -> torch.device:
    """This rank's device: a CUDA device without an index becomes the
    ``LOCAL_RANK``-th visible GPU (modulo the visible count, so one GPU per
    task also works); everything else is returned unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", local_rank() % max(torch.cuda.device_count(), 1))
    return device


def setup(device: torch.device | str, rank: int, world_size: int) -> torch.device:
    """Start the default process group for ``world_size > 1`` (idempotent) and
    return this rank's device (see :func:`rank_device`).

    Raises:
        DistributedSetupError: ``MASTER_ADDR`` / ``MASTER_PORT`` are missing
            (launch with ``torchrun`` or ``--submit``), or an existing group
            has another size.
    """
    device = rank_device(device)
    if world_size <= 1:
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise DistributedSetupError(
                f"a process group of size {dist.get_world_size()} (rank {dist.get_rank()}) already "
                f"exists, but RANK/WORLD_SIZE say {rank}/{world_size}"
            )
        return device
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedSetupError(
            f"WORLD_SIZE={world_size} but {' and '.join(missing)} not set; launch several "
            "processes with torchrun (torchrun --nproc_per_node N train.py NAME) or submit with "
            "python train.py --submit NAME"
        )
    dist.init_process_group(
        backend=backend_for(device), init_method="env://", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(minutes=TIMEOUT_MIN),
    )
    atexit.register(teardown)
    return device


def teardown() -> None:
    """Destroy the default process group if there is one (registered at exit:
    the error path, where a barrier could wait for a rank that is gone)."""
    if is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """The normal end of a multi-rank command: wait for every rank, then destroy
    the process group while the interpreter is fully alive. Ranks that leave at
    different moments and destroy gloo's group during interpreter shutdown can
    abort (``terminate called without an active exception``, SIGABRT). No-op
    without a process group."""
    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over ranks (a new tensor on ``t``'s device); ``t``
    itself without a process group."""
    if not is_initialized():
        return t
    out = t.detach().to(_collective_device(), dtype=torch.float64, copy=True)
    dist.all_reduce(out)
    return (out / dist.get_world_size()).to(t.device, t.dtype)


def rank0_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (a broadcast): decisions taken from a
    clock, such as "checkpoint now", must agree when collectives follow."""
    if not is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled); ``[obj]``
    without a process group."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The global-RNG seed of rank ``rank > 0`` (rank 0 keeps ``seed``, so its
    stream is the single-process one): a 63-bit hash of the arguments."""
    import numpy as np

    entropy = [int(seed) % (1 << 64), 0x5EED, int(rank), int(step)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def export_job_env() -> int:
    """Inside a submitit job (Slurm or local executor): export ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` for the
    ``env://`` rendezvous and return the world size. A one-task job exports
    nothing (it trains as a single process). ``CUDA_VISIBLE_DEVICES`` is left
    alone: each rank picks the ``LOCAL_RANK``-th visible GPU."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            os.environ.pop(key, None)  # never inherit a launcher's from the submitting shell
        return 1
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                          overwrite=True)
    return env.num_tasks


def barrier() -> None:
    """Wait for every rank (no-op without a process group): files rank 0 just
    wrote are visible to all ranks after it."""
    if is_initialized():
        dist.barrier()


@contextlib.contextmanager
def rank0_first() -> Iterator[None]:
    """Rank 0 runs the block first (a download, a cache write), the other ranks
    after it, from what it left on disk; no-op without a process group."""
    if not is_initialized():
        yield
        return
    if dist.get_rank() != 0:
        dist.barrier()
    try:
        yield
    finally:
        if dist.get_rank() == 0:
            dist.barrier()
