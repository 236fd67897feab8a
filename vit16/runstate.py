"""The resumable state of a run: :class:`Counters` (where training is), the
config check of a resume (:func:`config_diff`), :class:`Checkpointer` (writes
``last.pt`` and ``best.pt``, never from non-finite weights) and the RNG
restore. ``last.pt`` holds the weights, optimizer and scaler state, the
counters, every rank's RNG state and the config; the run directory's files
are :mod:`vit16.rundir`'s.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable

import torch
from torch import nn

from vit16 import distributed
from vit16.checkpoint import rng_state, save_checkpoint, set_rng_state
from vit16.config import ExperimentConfig
from vit16.runtime import seed_everything

__all__ = [
    "RESUME_IGNORED_KEYS",
    "RESUME_KEYS",
    "Checkpointer",
    "Counters",
    "ResumeMismatchError",
    "RunInterrupted",
    "TrainingDivergedError",
    "config_diff",
    "restore_rng",
]

RESUME_KEYS = frozenset(
    {"model", "optimizer", "rng", "config", "epoch", "batch_in_epoch", "step", "steps_per_epoch"}
)
"""Keys a ``last.pt`` must hold to be resumed from."""

RESUME_IGNORED_KEYS = frozenset(
    {
        "description",
        "base",
        "max_steps",
        "checkpoint_minutes",
        "compile",
        "eval_batch_size",
        "data.root",
        "data.download",
        "data.num_workers",
        "slurm",
        "log",
    }
)
"""Config keys that may differ between a checkpoint and the resuming run: they
do not change the training math (where the data lives, when to stop or save).
A table name (``"slurm"``, ``"log"``) stands for every key under it."""


class TrainingDivergedError(RuntimeError):
    """The training loss, the weights or the optimizer state became NaN or
    infinite. ``str(err)`` names the step and the last good checkpoint (which
    is kept) and suggests fixes."""


class RunInterrupted(RuntimeError):
    """Ctrl-C stopped the run after an optimizer step; ``last.pt`` holds that
    step, and ``str(err)`` says how to resume."""


class ResumeMismatchError(RuntimeError):
    """``out_dir/last.pt`` was written with a different config; ``str(err)``
    lists the differing keys and says to use a new ``--out`` or ``--no-resume``."""


@dataclasses.dataclass
class Counters:
    """Where training is; saved flat into ``last.pt``."""

    epoch: int = 0  # 0-based epoch in progress (== epochs done)
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    step: int = 0  # optimizer steps done
    best_val_top1: float = -1.0
    best_epoch: int = 0
    best_step: int = -1
    train_seconds: float = 0.0  # time in the training loop (no eval), over all restarts
    wall_seconds: float = 0.0  # time inside train(), over all restarts
    images_seen: int = 0
    epoch_loss_sum: float = 0.0  # sum of step losses of the epoch in progress
    epoch_loss_steps: int = 0
    epoch_train_seconds: float = 0.0
    last_val: dict | None = None
    last_val_ema: dict | None = None  # the EMA weights' validation (ema_decay > 0)
    best_source: str = "raw"  # whose weights best.pt holds: "raw" or "ema"

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any] | None) -> "Counters":
        """The counters saved in ``ckpt`` (fresh ones for ``None``)."""
        if ckpt is None:
            return cls()
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in ckpt.items() if k in fields})

    def end_epoch(self) -> None:
        """Move to the next epoch: its batch position and loss sums start at 0."""
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        self.epoch_train_seconds = 0.0


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(
    old: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = RESUME_IGNORED_KEYS
) -> list[str]:
    """Differences between two ``cfg.to_dict()`` dicts as ``"key: old -> new"``
    strings (dotted keys, sorted), leaving out the keys in ``ignore``. A key
    that ``old`` lacks (written before vit16 had it) and that ``new`` leaves
    at its default is no difference."""
    a, b = _flatten(old), _flatten(new)
    defaults = _flatten(ExperimentConfig().to_dict())
    ignore = set(ignore)
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or key.split(".", 1)[0] in ignore:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va is missing and key in defaults and vb == defaults[key]:
            continue
        if va != vb:
            fa = "(unset)" if va is missing else repr(va)
            fb = "(unset)" if vb is missing else repr(vb)
            diffs.append(f"{key}: {fa} -> {fb}")
    return diffs


@dataclasses.dataclass
class Checkpointer:
    """Writes ``last.pt`` and ``best.pt`` of a run, and keeps the run's wall clock.

    ``save_last`` is a collective with several ranks: every rank calls it at
    the same step and rank 0 stores every rank's RNG state.
    """

    run_dir: Any  # a vit16.rundir.RunDir
    cfg: ExperimentConfig
    model: nn.Module  # the raw module (not DDP / compiled)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: Any  # torch.optim.swa_utils.AveragedModel of model, or None
    counters: Counters
    steps_per_epoch: int
    num_classes: int
    commit: str
    rank: int
    world_size: int
    t_start: float  # time.monotonic() when train() started
    wall_base: float = 0.0  # wall seconds of earlier invocations
    last_saved_step: int | None = None
    last_save_time: float = dataclasses.field(default_factory=time.monotonic)

    def wall_now(self) -> float:
        """Seconds inside train() over all invocations of this run."""
        return self.wall_base + time.monotonic() - self.t_start

    def due(self) -> bool:
        """``checkpoint_minutes`` have passed since the last ``last.pt``."""
        minutes = self.cfg.checkpoint_minutes
        return minutes > 0 and time.monotonic() - self.last_save_time >= 60 * minutes

    def check_finite(self) -> None:
        """Every floating-point tensor of the weights and the optimizer state is
        finite (one device sync).

        Raises:
            TrainingDivergedError: one is not; names them and the checkpoint kept.
        """
        named = [(f"model.{k}", v) for k, v in self.model.state_dict().items()]
        if self.ema is not None:
            named += [(f"ema.{k}", v) for k, v in self.ema.state_dict().items()]
        named += [(f"optimizer state {i}.{k}", v) for i, s in enumerate(self.optimizer.state.values())
                  for k, v in s.items()]
        named = [(n, v) for n, v in named if torch.is_tensor(v) and v.is_floating_point()]
        if not named:
            return
        finite = torch.stack([torch.isfinite(v).all().to(named[0][1].device) for _, v in named])
        if bool(finite.all()):
            return
        bad = [n for (n, _), ok in zip(named, finite.tolist()) if not ok]
        raise TrainingDivergedError(
            f"training diverged: {len(bad)} tensor(s) non-finite after optimizer step "
            f"{self.counters.step} ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); "
            f"{self.kept_message()}; lower optim.lr, set optim.clip_grad_norm (e.g. 1.0) or "
            "lengthen schedule.warmup_epochs"
        )

    def save_last(self) -> None:
        """Write ``last.pt`` (rank 0), never from non-finite weights or optimizer state.

        Raises:
            TrainingDivergedError: non-finite weights (:meth:`check_finite`).
        """
        self.check_finite()
        self.counters.wall_seconds = self.wall_now()
        rng_ranks = distributed.all_gather_objects(rng_state()) if self.world_size > 1 else None
        if self.rank == 0:
            save_checkpoint(self.run_dir.last, {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                **dataclasses.asdict(self.counters),
                "steps_per_epoch": self.steps_per_epoch,
                "rng": rng_state(),
                **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
                "config": self.cfg.to_dict(),
                "git_commit": self.commit,
                "num_classes": self.num_classes,
            })
        self.last_saved_step = self.counters.step
        self.last_save_time = time.monotonic()

    def save_best(self, epoch: int, val_top1: float, source: str = "raw") -> None:
        """Write ``best.pt`` (rank 0): the weights after 1-based ``epoch``, the raw
        model's or (``source = "ema"``) the EMA's, under the same keys.

        Raises:
            TrainingDivergedError: non-finite weights (:meth:`check_finite`).
        """
        self.check_finite()
        weights = self.ema.module if source == "ema" else self.model
        if self.rank == 0:
            save_checkpoint(self.run_dir.best, {
                "model": weights.state_dict(), "epoch": epoch, "step": self.counters.step,
                "val_top1": val_top1, "weights": source, "config": self.cfg.to_dict(),
                "git_commit": self.commit, "num_classes": self.num_classes,
            })

    def kept_message(self) -> str:
        """What a divergence leaves behind, for its error message."""
        if self.last_saved_step is None:
            return "no checkpoint was written yet"
        return f"last good checkpoint kept: {self.run_dir.last} (step {self.last_saved_step})"


def restore_rng(ckpt: dict[str, Any] | None, rank: int, world_size: int, seed: int, step: int) -> None:
    """Set this rank's global RNG for the loop: the state ``ckpt`` saved (this
    rank's, or rank 0's for a single process), else a rank-specific seed.

    Rank 0 of a new run keeps the stream :func:`vit16.runtime.seed_everything`
    started; a checkpoint written by another number of ranks reseeds ranks > 0
    from ``(seed, rank, step)``. Call it last before the loop: nothing else may
    draw from the global RNG.
    """
    if ckpt is not None:
        rng_ranks = ckpt.get("rng_ranks") or []
        if world_size > 1 and len(rng_ranks) == world_size:
            set_rng_state(rng_ranks[rank])
        elif rank == 0:
            set_rng_state(ckpt["rng"])
        else:  # the checkpoint was written by another number of ranks
            seed_everything(distributed.rank_seed(seed, rank, step))
    elif rank > 0:
        seed_everything(distributed.rank_seed(seed, rank))
