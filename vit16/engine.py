"""One optimizer step, one training epoch, and evaluation (the shape of DeiT's
``engine.py`` and torchvision's ``references/classification/train.py``).

:func:`train_one_epoch` runs the optimizer steps of one epoch of a
:class:`Loop` (from the current batch position, so a resumed epoch goes on
where it stopped), reading losses back from the device once every
:data:`SYNC_EVERY` steps (:class:`LossMonitor`) and writing ``last.pt`` every
``checkpoint_minutes``; :func:`end_epoch` validates, writes ``best.pt``, a
line of ``metrics.jsonl`` and ``last.pt``. A NaN/inf loss is caught, with its
exact step, before any checkpoint could contain it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from vit16 import distributed
from vit16.config import ExperimentConfig
from vit16.optim import set_lr
from vit16.progress import Progress
from vit16.results import format_duration
from vit16.runstate import Checkpointer, Counters, RunInterrupted, TrainingDivergedError
from vit16.runtime import Runtime, autocast
from vit16.stop import StopRequest

__all__ = ["SYNC_EVERY", "SYNC_SECONDS", "Loop", "LossMonitor", "end_epoch", "evaluate", "forward_batches",
           "optimizer_step", "train_one_epoch"]

SYNC_EVERY = 10
"""Optimizer steps between reading losses back from the device (progress + NaN check);
also done when :data:`SYNC_SECONDS` have passed, and always before a checkpoint."""

SYNC_SECONDS = 2.0


def forward_batches(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    autocast_dtype: torch.dtype | None = None,
                    channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(logits float32 (B, K), labels (B,))`` of every batch of ``loader``: the
    forward pass of both evaluations (this module's and
    :mod:`vit16.analysis.evaluation`), under autocast with ``autocast_dtype``
    (None = float32), images in channels-last memory format if asked. The
    caller sets eval mode and disables gradients."""
    for images, labels in loader:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, autocast_dtype):
            logits = model(images)
        yield logits.float(), labels


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean cross-entropy of ``model`` over ``loader``.

    Args:
        model: maps images ``(B, 3, H, W)`` float32 to logits ``(B, K)``.
        loader: yields ``(images, labels)``; labels int64 ``(B,)``, on the model's device.
        autocast_dtype: run the forward under autocast with this dtype (None = float32).
        channels_last: convert images to channels-last memory format.

    Returns:
        ``{"top1": %, "top5": %, "loss": mean loss (nats), "count": images}``.
        Counts are exact sums over batches, kept in one float64 tensor that is
        summed over ranks when torch.distributed is initialised. Top-5 is
        top-``K`` when there are fewer than 5 classes.

    Raises:
        ValueError: the loader yielded no batch.
    """
    was_training = model.training
    model.eval()
    counts = None
    for logits, labels in forward_batches(model, loader, autocast_dtype, channels_last):
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == labels[:, None]  # (B, k) bool
        batch = torch.stack([
            hits[:, 0].sum().double(),
            hits.any(dim=1).sum().double(),
            F.cross_entropy(logits, labels, reduction="sum").double(),
            torch.tensor(labels.shape[0], dtype=torch.float64, device=labels.device),
        ])
        counts = batch if counts is None else counts + batch
    model.train(was_training)
    if counts is None and distributed.is_initialized():  # an empty shard still joins the sum
        counts = torch.zeros(4, dtype=torch.float64, device=next(model.parameters()).device)
    if counts is None:
        raise ValueError("evaluation loader yielded no batches; check the split sizes")
    if distributed.is_initialized():
        torch.distributed.all_reduce(counts)
    correct1, correct5, loss_sum, n = counts.tolist()
    if n == 0:
        raise ValueError("evaluation loader yielded no batches; check the split sizes")
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n,
            "count": int(n)}


@dataclasses.dataclass
class Loop:
    """Everything the epochs of one run share; built by :func:`vit16.trainer.train`.

    ``model`` is the raw module (its ``state_dict`` is checkpointed);
    ``train_model`` / ``eval_model`` are its wrapped forms (:func:`vit16.runtime.wrap_model`);
    ``sched(step)`` is the learning rate of an optimizer step.
    """

    cfg: ExperimentConfig
    rt: Runtime
    data: Any  # a vit16.data.DataBundle
    model: nn.Module
    train_model: nn.Module
    eval_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sched: Callable[[int], float]
    counters: Counters
    ckpt: Checkpointer
    progress: Progress
    steps_per_epoch: int
    stop_step: int
    grad_hook: Callable[[int, int], None] | None = None
    epoch_hook: Callable[[int], None] | None = None
    ema: AveragedModel | None = None  # EMA of the weights (cfg.ema_decay > 0)
    ema_reset_steps: int = 0  # steps during which the EMA copies the weights (ema_warmup)
    tb: Any = None  # a vit16.tblog.TensorBoardLog (rank 0, log.tensorboard = true)
    lr: float = 0.0
    stop: StopRequest = dataclasses.field(default_factory=StopRequest)  # Ctrl-C, Slurm USR2
    seg_steps: int = 0  # steps done in this invocation, for the ETA
    seg_t0: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.monitor = LossMonitor(self)
        self.lr = self.sched(self.counters.step)

    def evaluate(self, loader, model: nn.Module | None = None) -> dict[str, float]:
        """:func:`evaluate` of ``model`` (default ``eval_model``) with this run's
        precision and memory format."""
        return evaluate(self.eval_model if model is None else model, loader,
                        autocast_dtype=self.rt.autocast_dtype, channels_last=self.cfg.channels_last)


class LossMonitor:
    """Per-step losses kept on the device and read back in one sync (``flush``):
    the NaN/inf check, the progress bar and the epoch's loss and time sums."""

    def __init__(self, loop: Loop):
        self.loop = loop
        self.pending: list[torch.Tensor] = []  # 0-d losses not yet read back
        self.t_mark = time.perf_counter()  # training time is counted from here

    def due(self) -> bool:
        """A flush is due: :data:`SYNC_EVERY` steps or :data:`SYNC_SECONDS` seconds.
        With several ranks by count only, never by a rank's clock (a collective)."""
        if self.loop.rt.world_size > 1:
            return len(self.pending) >= SYNC_EVERY
        return len(self.pending) >= SYNC_EVERY or time.perf_counter() - self.t_mark >= SYNC_SECONDS

    def flush(self) -> None:
        """Read the pending losses back (one sync), stop on NaN/inf, update the bar.

        Raises:
            TrainingDivergedError: a loss is NaN or infinite (names the step).
        """
        loop, c = self.loop, self.loop.counters
        values = torch.stack(self.pending)
        if loop.rt.world_size > 1:  # the mean over ranks: the global batch's loss, equal on
            values = distributed.all_reduce_mean(values)  # every rank, so all stop at once
        values = values.tolist()
        first_step = c.step - len(values)
        for j, v in enumerate(values):
            if not math.isfinite(v):
                raise TrainingDivergedError(
                    f"training diverged: loss = {v} at optimizer step {first_step + j} "
                    f"(epoch {c.epoch + 1}, lr {loop.sched(first_step + j):.3g}); "
                    f"{loop.ckpt.kept_message()}; lower optim.lr, set optim.clip_grad_norm "
                    "(e.g. 1.0) or lengthen schedule.warmup_epochs"
                )
        self.pending.clear()
        if loop.tb is not None:
            loop.tb.steps(first_step, values, loop.sched)
        now = time.perf_counter()
        c.train_seconds += now - self.t_mark
        c.epoch_train_seconds += now - self.t_mark
        self.t_mark = now
        c.epoch_loss_sum += sum(values)
        c.epoch_loss_steps += len(values)
        ips = c.epoch_loss_steps * loop.cfg.batch_size / max(c.epoch_train_seconds, 1e-9)
        loop.progress.update(c.batch_in_epoch // loop.rt.accum_steps, loop.steps_per_epoch,
                             values[-1], loop.lr, ips)


def optimizer_step(loop: Loop, batches: Iterator, i: int) -> torch.Tensor:
    """Optimizer step ``i`` of the epoch: set the LR, forward/backward
    ``accum_steps`` micro-batches from ``batches``, unscale, clip, call the
    grad hook, step the optimizer, update the EMA. Returns the step's loss, a
    0-d tensor on the device (not synchronised).

    Raises:
        RuntimeError: the loader ran out before its ``len()``.
    """
    cfg, rt, model = loop.cfg, loop.rt, loop.train_model
    loop.lr = loop.sched(loop.counters.step)
    set_lr(loop.optimizer, loop.lr)
    step_loss = torch.zeros((), device=rt.device)
    for m in range(rt.accum_steps):
        try:
            images, targets = next(batches)
        except StopIteration:
            raise RuntimeError(
                f"the training loader stopped after {i * rt.accum_steps + m} micro-batches of "
                f"epoch {loop.counters.epoch + 1} but its len() is {len(loop.data.train)}"
            ) from None
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        no_sync = m < rt.accum_steps - 1 and hasattr(model, "no_sync")  # DDP
        with model.no_sync() if no_sync else contextlib.nullcontext():
            with rt.autocast():
                logits = model(images)
            loss = F.cross_entropy(logits.float(), targets,
                                   label_smoothing=cfg.optim.label_smoothing) / rt.accum_steps
            loop.scaler.scale(loss).backward()
        step_loss += loss.detach()
    if cfg.optim.clip_grad_norm > 0 or loop.grad_hook is not None:
        loop.scaler.unscale_(loop.optimizer)
    if cfg.optim.clip_grad_norm > 0:
        nn.utils.clip_grad_norm_(loop.model.parameters(), cfg.optim.clip_grad_norm)
    if loop.grad_hook is not None:
        loop.grad_hook(loop.counters.step, loop.stop_step)
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    loop.optimizer.zero_grad(set_to_none=True)
    if loop.ema is not None and (loop.counters.step + 1) % cfg.ema_steps == 0:  # one sync per update
        if loop.counters.step < loop.ema_reset_steps:  # ema_warmup: the EMA starts after warmup
            loop.ema.n_averaged.zero_()  # n_averaged = 0: the next update copies the weights
        loop.ema.update_parameters(loop.model)
    return step_loss


def train_one_epoch(loop: Loop) -> bool:
    """The optimizer steps of the epoch in progress, from its current batch
    position, until it ends or the run's last step. Returns whether the epoch
    is complete.

    Raises:
        TrainingDivergedError: a NaN/inf loss (before any checkpoint holds it).
    """
    c, rt, accum = loop.counters, loop.rt, loop.rt.accum_steps
    loop.data.train.set_epoch(c.epoch, start_batch=c.batch_in_epoch)
    batches = iter(loop.data.train)
    first = c.batch_in_epoch // accum
    loop.progress.start_epoch(c.epoch + 1, loop.cfg.epochs, loop.steps_per_epoch, first)
    loop.model.train()
    loop.monitor.t_mark = time.perf_counter()
    epoch_done = False
    for i in range(first, loop.steps_per_epoch):
        loop.monitor.pending.append(optimizer_step(loop, batches, i))
        c.step += 1
        c.batch_in_epoch = (i + 1) * accum
        c.images_seen += loop.cfg.batch_size
        loop.seg_steps += 1
        epoch_done = i + 1 == loop.steps_per_epoch
        stop = c.step >= loop.stop_step
        sync_due = loop.monitor.due()
        ckpt_due = not (epoch_done or stop) and loop.ckpt.due()
        if rt.world_size > 1:  # flush() and save_last() are collectives: decide alike
            ckpt_due = ckpt_due and sync_due
        flushed = sync_due or ckpt_due or epoch_done or stop
        if flushed:
            loop.monitor.flush()  # before any checkpoint: a NaN never reaches last.pt
            if rt.world_size > 1:
                ckpt_due = distributed.rank0_decides(ckpt_due)
        if ckpt_due:
            loop.ckpt.save_last()
            loop.monitor.t_mark = time.perf_counter()  # saving is not training time
        if not (epoch_done or stop) and _stop_due(loop, flushed):
            _stop_at_step(loop)  # at an epoch's end, end_epoch validates and saves first
        if stop:
            break
    return epoch_done


def _validate(loop: Loop, epoch: int) -> tuple[bool, dict | None, dict | None]:
    """Validate the raw weights (and the EMA's); on a new best val top-1 of
    either, write ``best.pt`` with the better one's weights. Returns
    ``(new best, raw result, EMA result)``, ``None`` without a validation split."""
    c, val_set = loop.counters, loop.data.val
    if val_set is None or len(val_set) == 0:
        c.last_val = c.last_val_ema = None
        return False, None, None
    val = loop.evaluate(val_set)
    val_ema = loop.evaluate(val_set, loop.ema.module) if loop.ema is not None else None
    c.last_val, c.last_val_ema = val, val_ema
    source, top1 = ("ema", val_ema["top1"]) if val_ema and val_ema["top1"] > val["top1"] else (
        "raw", val["top1"])
    if top1 <= c.best_val_top1:
        return False, val, val_ema
    c.best_val_top1, c.best_epoch, c.best_step, c.best_source = top1, epoch, c.step, source
    loop.ckpt.save_best(epoch, top1, source)
    return True, val, val_ema


def _stop_due(loop: Loop, collective_point: bool) -> bool:
    """A stop was requested (:mod:`vit16.stop`); with several ranks decided by
    rank 0 at a point every rank reaches at the same step (a collective)."""
    if loop.rt.world_size == 1:
        return loop.stop.requested
    return collective_point and distributed.rank0_decides(loop.stop.requested)


def _stop_at_step(loop: Loop, saved: bool = False) -> None:
    """A stop was requested: write ``last.pt`` at this step boundary (unless
    ``saved``), then call the request's ``then`` (a Slurm requeue) or stop.

    Raises:
        RunInterrupted: names the step and how to resume.
    """
    if loop.monitor.pending:
        loop.monitor.flush()
    if not saved:
        loop.ckpt.save_last()
    c = loop.counters
    if loop.stop.then is not None:
        loop.stop.then()  # submitit: rank 0 requeues the job and exits
        while True:  # the other ranks come back here: Slurm's requeue stops them
            time.sleep(60)
    raise RunInterrupted(
        f"interrupted at optimizer step {c.step} (epoch {c.epoch + 1}); {loop.ckpt.run_dir.last} "
        "holds it: run the same command again to resume"
    )


def end_epoch(loop: Loop, epoch_done: bool) -> None:
    """After :func:`train_one_epoch`: validate, write ``best.pt`` on a new best
    val top-1, a line of ``metrics.jsonl``, the epoch's log line, call the
    epoch hook (a complete epoch) and write ``last.pt`` when due
    (:func:`_save_at_epoch_end`)."""
    c, data = loop.counters, loop.data
    if loop.monitor.pending:
        loop.monitor.flush()
    epoch = c.epoch + 1
    train_loss = c.epoch_loss_sum / max(c.epoch_loss_steps, 1)
    ips = c.epoch_loss_steps * loop.cfg.batch_size / max(c.epoch_train_seconds, 1e-9)
    t_eval = time.perf_counter()
    is_best, val, val_ema = _validate(loop, epoch)
    row = {
        "epoch": epoch, "step": c.step, "lr": loop.lr, "train_loss": train_loss,
        "val_top1": val and val["top1"], "val_top5": val and val["top5"],
        "val_loss": val and val["loss"], "images_per_s": ips,
        "seconds": c.epoch_train_seconds + time.perf_counter() - t_eval,
        **({"val_ema_top1": val_ema and val_ema["top1"]} if loop.ema is not None else {}),
    }
    if loop.rt.is_main:
        loop.ckpt.run_dir.append_metrics(row)
    if loop.tb is not None:
        loop.tb.epoch(row)
    eta = (time.monotonic() - loop.seg_t0) / max(loop.seg_steps, 1) * (loop.stop_step - c.step)
    val_text = "no val" if val is None else (
        f"val top-1 {val['top1']:.2f}% top-5 {val['top5']:.2f}% loss {val['loss']:.4f}"
        + (f" (EMA {val_ema['top1']:.2f}%)" if val_ema else "") + (" *" if is_best else ""))
    loop.progress.end_epoch(
        f"epoch {epoch}/{loop.cfg.epochs} step {c.step} | loss {train_loss:.4f} | "
        f"lr {loop.lr:.2e} | {val_text} | {ips:,.0f} img/s | {row['seconds']:.1f}s | "
        f"ETA {format_duration(eta)}"
    )
    if epoch_done:
        if loop.epoch_hook is not None:
            loop.epoch_hook(epoch)
        c.end_epoch()
    saved = _save_at_epoch_end(loop)
    if c.step < loop.stop_step and _stop_due(loop, True):
        _stop_at_step(loop, saved=saved)


def _save_at_epoch_end(loop: Loop) -> bool:
    """Write ``last.pt`` at an epoch's end when the run is over, when
    ``checkpoint_minutes = 0`` (every epoch), or when ``checkpoint_minutes``
    have passed (epochs of seconds on a GPU do not each write a checkpoint);
    with several ranks rank 0's clock decides. Returns whether it wrote."""
    due = (loop.counters.step >= loop.stop_step or loop.cfg.checkpoint_minutes == 0
           or loop.ckpt.due())
    if loop.rt.world_size > 1:
        due = distributed.rank0_decides(due)
    if due:
        loop.ckpt.save_last()
    return due
