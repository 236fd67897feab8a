"""Measurement of the batch policies (:class:`vit16.data.augment.BatchPolicy`):
images/s, aten ops per batch and host-to-device copies per batch.

The counts are taken on any device, a CPU included: aten ops with
``torch.profiler`` (top-level ``aten::`` events, nested ones not counted),
copies with a ``torch.overrides.TorchFunctionMode`` that counts the calls that
move host data to a device on CUDA (``Tensor.to`` / ``Tensor.cuda`` with a
device, ``torch.tensor`` / ``torch.as_tensor`` with a device).
"""

from __future__ import annotations

import time

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

from vit16.data.augment import BatchPolicy


class TransferCounter(TorchFunctionMode):
    """Counts, while active, the calls that copy host data to a device on CUDA:
    ``Tensor.to`` / ``Tensor.cuda`` given a device, ``torch.tensor`` /
    ``torch.as_tensor`` given a device (on a CPU run they are still counted,
    as the copies they would be). ``count``: the number so far."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            rest = list(args[1:]) + list(kwargs.values())
            if func is torch.Tensor.cuda or any(isinstance(a, (torch.device, str)) for a in rest):
                self.count += 1
        elif func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None:
            self.count += 1
        return func(*args, **kwargs)


VIEW_OPS = frozenset(f"aten::{name}" for name in (
    "view", "reshape", "unsqueeze", "squeeze", "slice", "select", "expand", "as_strided", "unbind",
    "transpose", "permute", "narrow", "split", "alias", "detach", "lift_fresh", "t", "view_as", "expand_as"))
"""Ops that only make views (no kernel runs on a device); ``aten::reshape`` of a
contiguous tensor is one."""


def count_aten_ops(fn, views: bool = True) -> int:
    """Top-level ``aten::`` operator calls (those not inside another aten op)
    made by ``fn()``, from ``torch.profiler`` on the CPU activity; without
    :data:`VIEW_OPS` when ``views`` is False."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return sum(1 for e in top if views or e.name not in VIEW_OPS)


def count_transfers(fn) -> int:
    """Host-to-device copies requested by ``fn()`` (:class:`TransferCounter`)."""
    with TransferCounter() as counter:
        fn()
    return counter.count


def bench_policy(name: str, batch: int = 512, steps: int = 10, device: str = "cpu",
                 autoaugment_policy: str = "cifar10", seed: int = 0) -> dict:
    """Time policy ``name`` (implementation ``impl``) on random uint8 32x32 batches.

    Args:
        name: "autoaugment", "randaugment" or "trivialaugment".
        batch: images per call; steps: timed calls (the best of them is kept,
            the machine may be shared), after one untimed call.

    Returns:
        ``{"images_per_s", "ms_per_batch", "aten_ops", "non_view_ops", "copies"}``:
        images/s and ms of the fastest call; aten ops (all top-level ones, and
        those that are not views) and host-device copies of one call.
    """
    dev = torch.device(device)
    policy = BatchPolicy(name, autoaugment_policy)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed)).to(dev)
    gen = torch.Generator().manual_seed(seed)

    def call() -> None:
        """One policy call on the batch, synchronised on CUDA."""
        policy(images, gen)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    call()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return {"images_per_s": batch / best, "ms_per_batch": 1e3 * best,
            "aten_ops": count_aten_ops(call), "non_view_ops": count_aten_ops(call, views=False),
            "copies": count_transfers(call)}


def print_policy_table(names: list[str], device: str = "cpu", batch: int = 512, steps: int = 10) -> None:
    """Print the markdown table of :func:`bench_policy` for every policy in
    ``names``, with its aten ops at 2x and 4x the batch (the same count: no
    work depends on the batch content)."""
    print(f"\n| policy (32px, batch {batch}) | images/s | ms/batch | aten ops/batch (not views) "
          f"| host-device copies/batch | aten ops at batch {2 * batch} / {4 * batch} |")
    print("|---|---|---|---|---|---|")
    for name in names:
        r = bench_policy(name, batch, steps, device)
        big = " / ".join(str(bench_policy(name, b, 1, device)["aten_ops"]) for b in (2 * batch, 4 * batch))
        print(f"| {name} | {r['images_per_s']:,.0f} | {r['ms_per_batch']:.1f} | "
              f"{r['aten_ops']} ({r['non_view_ops']}) | {r['copies']} | {big} |", flush=True)
