"""Learning-rate schedules, evaluated once per optimizer step.

Every schedule is registered in :data:`vit16.registry.SCHEDULES` and built as::

    sched = SCHEDULES.build(cfg.schedule.name, cfg=cfg.schedule, base_lr=cfg.optim.lr,
                            steps_per_epoch=spe, total_steps=cfg.epochs * spe)
    lr = sched(step)          # absolute learning rate (float) for optimizer step `step`

or with :func:`build_schedule`. Steps are 0-based optimizer steps (one step =
one global batch, after gradient accumulation). Epoch quantities in the
config (``warmup_epochs``, ``milestones``) are converted to steps with
``round(epochs * steps_per_epoch)``.

Notation used by the docstrings: ``s`` = step, ``W`` = warmup steps,
``T`` = total steps, ``lr`` = base LR, ``lr0`` = ``warmup_start_lr``,
``lr_min`` = ``min_lr``. During warmup (``s < W``) every schedule gives
``lr0 + (lr - lr0) * s / W``, so step 0 runs at ``lr0`` and step ``W`` is the
first step at ``lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vit16.config import ScheduleConfig
from vit16.registry import SCHEDULES

__all__ = [
    "Schedule",
    "WarmupCosine",
    "WarmupLinear",
    "Constant",
    "Step",
    "build_schedule",
    "warmup_steps",
]


def warmup_steps(cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> int:
    """``round(cfg.warmup_epochs * steps_per_epoch)`` (an int number of steps).

    ``warmup_epochs`` is in ``[0, epochs]`` (:func:`vit16.config.check_ranges`),
    so with ``total_steps = epochs x steps_per_epoch`` the warmup fits the run.
    """
    return round(cfg.warmup_epochs * steps_per_epoch)


@dataclass
class Schedule:
    """Base class: linear warmup, then :meth:`after_warmup`.

    Attributes:
        base_lr: peak learning rate ``lr`` (absolute, e.g. 1e-3).
        warmup: warmup length ``W`` in optimizer steps.
        total: run length ``T`` in optimizer steps.
        warmup_start_lr: ``lr0``, the LR at step 0 when ``W > 0``.
        min_lr: ``lr_min``, the LR the decaying schedules reach at step ``T``.
    """

    base_lr: float
    warmup: int
    total: int
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        """The learning rate (float, absolute) for 0-based optimizer step ``step``."""
        if step < self.warmup:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * step / self.warmup
        return self.after_warmup(step)

    def progress(self, step: int) -> float:
        """Fraction of the post-warmup phase done: ``clamp((s - W) / (T - W), 0, 1)``."""
        span = max(1, self.total - self.warmup)
        return min(1.0, max(0.0, (step - self.warmup) / span))

    def after_warmup(self, step: int) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass
class WarmupCosine(Schedule):
    """Warmup, then half-cosine decay from ``lr`` to ``lr_min``.

    For ``s >= W``, with ``t = (s - W) / (T - W)`` clamped to [0, 1]::

        lr(s) = lr_min + 0.5 * (lr - lr_min) * (1 + cos(pi * t))

    so ``lr(W) = lr``, ``lr((W + T) / 2) = (lr + lr_min) / 2`` and ``lr(T) = lr_min``
    (the last step actually run, ``T - 1``, is just above ``lr_min``).
    """

    def after_warmup(self, step: int) -> float:
        t = self.progress(step)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))


@dataclass
class WarmupLinear(Schedule):
    """Warmup, then linear decay from ``lr`` to ``lr_min``.

    For ``s >= W``, with ``t = (s - W) / (T - W)`` clamped to [0, 1]::

        lr(s) = lr + (lr_min - lr) * t
    """

    def after_warmup(self, step: int) -> float:
        return self.base_lr + (self.min_lr - self.base_lr) * self.progress(step)


@dataclass
class Constant(Schedule):
    """Warmup (optional), then constant: ``lr(s) = lr`` for ``s >= W``."""

    def after_warmup(self, step: int) -> float:
        return self.base_lr


@dataclass
class Step(Schedule):
    """Warmup (optional), then step decay at milestones.

    ``milestone_steps`` are ``round(m * steps_per_epoch)`` for each milestone
    ``m`` (in epochs). For ``s >= W``::

        lr(s) = lr * gamma ** (number of milestone steps <= s)
    """

    milestone_steps: tuple[int, ...] = ()
    gamma: float = 0.1

    def after_warmup(self, step: int) -> float:
        passed = sum(1 for m in self.milestone_steps if step >= m)
        return self.base_lr * self.gamma**passed


def _check(cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int) -> int:
    """The warmup steps, after checking the run's length (the option values are
    checked by :func:`vit16.config.check_ranges`)."""
    if steps_per_epoch < 1 or total_steps < 1:
        raise ValueError(
            f"schedule needs at least one step (steps_per_epoch={steps_per_epoch}, "
            f"total_steps={total_steps}); check epochs and batch_size against the data set size"
        )
    return warmup_steps(cfg, steps_per_epoch, total_steps)


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(
    cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int
) -> WarmupCosine:
    """Linear warmup then cosine decay to ``cfg.min_lr`` (see :class:`WarmupCosine`)."""
    w = _check(cfg, base_lr, steps_per_epoch, total_steps)
    return WarmupCosine(base_lr, w, total_steps, cfg.warmup_start_lr, cfg.min_lr)


@SCHEDULES.register("warmup_linear")
def warmup_linear(
    cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int
) -> WarmupLinear:
    """Linear warmup then linear decay to ``cfg.min_lr`` (see :class:`WarmupLinear`)."""
    w = _check(cfg, base_lr, steps_per_epoch, total_steps)
    return WarmupLinear(base_lr, w, total_steps, cfg.warmup_start_lr, cfg.min_lr)


@SCHEDULES.register("constant")
def constant(
    cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int
) -> Constant:
    """Optional linear warmup, then the constant ``base_lr`` (see :class:`Constant`)."""
    w = _check(cfg, base_lr, steps_per_epoch, total_steps)
    return Constant(base_lr, w, total_steps, cfg.warmup_start_lr, cfg.min_lr)


@SCHEDULES.register("step")
def step(cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int) -> Step:
    """Optional linear warmup, then ``x gamma`` at each milestone (epochs; see :class:`Step`).

    Raises:
        ValueError: no milestones (their range and ``gamma``'s are
            :func:`vit16.config.check_ranges`').
    """
    w = _check(cfg, base_lr, steps_per_epoch, total_steps)
    if not cfg.milestones:
        raise ValueError(
            "schedule 'step' needs milestones (epochs), e.g. schedule.milestones = [30, 60, 90]"
        )
    ms = tuple(sorted(round(m * steps_per_epoch) for m in cfg.milestones))
    return Step(base_lr, w, total_steps, cfg.warmup_start_lr, cfg.min_lr, ms, cfg.gamma)


def build_schedule(
    cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, total_steps: int
) -> Schedule:
    """Build the schedule named ``cfg.name``; ``sched(step) -> lr`` (float).

    ``cfg`` and ``base_lr`` are in their ranges (:func:`vit16.config.check_ranges`,
    which :func:`vit16.config.resolve` and :func:`vit16.runtime.setup_runtime` call).

    Raises:
        vit16.registry.UnknownNameError: unknown schedule name (lists the known ones).
        ValueError: no step to schedule, or options the schedule needs and lacks
            (``step`` without milestones).
    """
    return SCHEDULES.build(
        cfg.name,
        cfg=cfg,
        base_lr=base_lr,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
