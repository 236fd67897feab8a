"""The training loop: one function, :func:`train`, readable top to bottom.

    summary = train(cfg, "runs/vit_s_cifar10")

What it does, in order:

1. works out the batch geometry (global batch = micro batch x world size x
   accumulation steps) and the mixed-precision mode;
2. if ``out_dir/last.pt`` exists (and ``resume``), loads it and refuses to go on
   when its config differs from ``cfg`` in a key that changes the math;
3. seeds every RNG, builds the data (:func:`vit16.data.build_data`) and the
   model (``vit16.MODELS``), optionally loads ``cfg.init`` weights;
4. builds the optimizer (:mod:`vit16.optim`), the LR schedule
   (:mod:`vit16.schedules`) and restores the checkpoint state;
5. trains: per optimizer step the LR is set from the schedule, ``accum``
   micro-batches are forwarded/backwarded, gradients clipped, the optimizer
   stepped. ``last.pt`` is written every ``checkpoint_minutes`` minutes (mid
   epoch) and at every epoch end; each epoch ends with a validation pass,
   ``best.pt`` (best val top-1) and a line of ``metrics.jsonl``;
6. at the end evaluates the test set with the final weights and with
   ``best.pt``'s, writes ``summary.json`` and appends a row to the results table.

Files in ``out_dir``: ``last.pt``, ``best.pt``, ``metrics.jsonl``, ``summary.json``.
Only rank 0 writes files. Losses are read back from the device once every
:data:`SYNC_EVERY` steps (and before every checkpoint), so a NaN/inf loss is
caught, with its exact step, before any checkpoint could contain it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vit16 import distributed
from vit16.checkpoint import (
    CheckpointError,
    git_commit,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vit16.config import ExperimentConfig
from vit16.optim import build_optimizer, set_lr
from vit16.progress import Progress
from vit16.results import append_result, device_name, format_duration
from vit16.schedules import build_schedule

__all__ = [
    "AMP_MODES",
    "RESUME_IGNORED_KEYS",
    "RESUME_KEYS",
    "SYNC_EVERY",
    "SYNC_SECONDS",
    "ResumeMismatchError",
    "TrainingDivergedError",
    "amp_settings",
    "batch_geometry",
    "build_model",
    "config_diff",
    "dist_env",
    "evaluate",
    "load_init",
    "resolve_device",
    "seed_everything",
    "train",
    "wrap_model",
]

SYNC_EVERY = 10
"""Optimizer steps between reading losses back from the device (progress + NaN check);
also done when :data:`SYNC_SECONDS` have passed, and always before a checkpoint."""

SYNC_SECONDS = 2.0

RESUME_KEYS = frozenset(
    {"model", "optimizer", "rng", "config", "epoch", "batch_in_epoch", "step", "steps_per_epoch"}
)
"""Keys a ``last.pt`` must hold to be resumed from."""

AMP_MODES = ("auto", "bf16", "fp16", "off")

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
    }
)
"""Config keys that may differ between a checkpoint and the resuming run: they
do not change the training math (where the data lives, when to stop or save).
A table name (``"slurm"``) stands for every key under it."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite. ``str(err)`` names the step and
    the last good checkpoint (which is kept) and suggests fixes."""


class ResumeMismatchError(RuntimeError):
    """``out_dir/last.pt`` was written with a different config; ``str(err)``
    lists the differing keys and says to use a new ``--out`` or ``--no-resume``."""


# ----------------------------------------------------------------------------- helpers


def dist_env() -> tuple[int, int]:
    """``(rank, world_size)`` from the ``RANK`` / ``WORLD_SIZE`` environment
    variables (torchrun sets them; a multi-task ``--submit`` job exports them,
    :func:`vit16.distributed.export_job_env`); ``(0, 1)`` when unset."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or ``cuda`` when available, else ``cpu``. A CUDA device
    without an index is this rank's GPU: the ``LOCAL_RANK``-th visible one."""
    if device is not None:
        return distributed.rank_device(device)
    return distributed.rank_device("cuda" if torch.cuda.is_available() else "cpu")


def batch_geometry(batch_size: int, micro_batch_size: int, world_size: int) -> tuple[int, int]:
    """``(micro_batch, accum_steps)`` with ``batch_size = micro_batch x world_size x accum_steps``.

    ``micro_batch_size = 0`` means ``batch_size // world_size`` (no accumulation).

    Raises:
        ValueError: the sizes do not divide (names them and the fix).
    """
    if batch_size < 1 or micro_batch_size < 0 or world_size < 1:
        raise ValueError(
            f"batch_size = {batch_size} must be >= 1 and micro_batch_size = {micro_batch_size} >= 0"
        )
    if batch_size % world_size:
        raise ValueError(
            f"batch_size = {batch_size} is not divisible by the world size {world_size}; "
            "choose a batch_size that is a multiple of the number of processes"
        )
    micro = micro_batch_size or batch_size // world_size
    if batch_size % (micro * world_size):
        raise ValueError(
            f"batch_size = {batch_size} is not a multiple of micro_batch_size = {micro} x world "
            f"size {world_size}; choose a micro_batch_size that divides {batch_size // world_size}"
        )
    return micro, batch_size // (micro * world_size)


def amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for ``cfg.amp`` on ``device``.

    ``"auto"``: bf16 on CUDA (fp16 + GradScaler on GPUs without bf16), off elsewhere;
    ``"bf16"``; ``"fp16"`` (with ``torch.amp.GradScaler``); ``"off"`` (float32).

    Raises:
        ValueError: an unknown mode (lists the known ones).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp = {amp!r} is not one of {', '.join(AMP_MODES)}")
    if amp == "auto":
        if device.type != "cuda":
            return None, False
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        return torch.float16, True
    return None, False


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy (when installed) and torch (CPU and CUDA)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


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
    strings (dotted keys, sorted), leaving out the keys in ``ignore``."""
    a, b = _flatten(old), _flatten(new)
    ignore = set(ignore)
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or key.split(".", 1)[0] in ignore:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            fa = "(unset)" if va is missing else repr(va)
            fb = "(unset)" if vb is missing else repr(vb)
            diffs.append(f"{key}: {fa} -> {fb}")
    return diffs


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place when torch.distributed is initialised (no-op otherwise)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


def wrap_model(
    model: nn.Module, cfg: ExperimentConfig, device: torch.device, world_size: int
) -> tuple[nn.Module, nn.Module]:
    """The one place the model gets wrapped: ``(train_model, eval_model)``.

    ``world_size > 1``: ``train_model`` is ``DistributedDataParallel(model)``
    (gradients averaged over ranks in the backward; its construction
    broadcasts rank 0's weights), and ``eval_model`` is the bare module (each
    rank evaluates its own shard; :func:`evaluate` sums the counts), so
    evaluation has no collective per batch and ranks may hold unequal
    shards. ``torch.compile`` wraps both when ``cfg.compile``. ``model``
    itself stays the raw module whose ``state_dict`` goes into checkpoints.
    The process group must exist (:func:`vit16.distributed.setup`).
    """
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids, output_device=ids and ids[0])
        if cfg.compile:
            return torch.compile(ddp), torch.compile(model)
        return ddp, model
    fwd = torch.compile(model) if cfg.compile else model
    return fwd, fwd


@torch.inference_mode()
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
    for images, labels in loader:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(images.device, autocast_dtype):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == labels[:, None]  # (B, k) bool
        batch = torch.stack(
            [
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                F.cross_entropy(logits, labels, reduction="sum").double(),
                torch.tensor(labels.shape[0], dtype=torch.float64, device=labels.device),
            ]
        )
        counts = batch if counts is None else counts + batch
    model.train(was_training)
    if counts is None and distributed.is_initialized():  # an empty shard still joins the sum
        counts = torch.zeros(4, dtype=torch.float64, device=next(model.parameters()).device)
    if counts is None:
        raise ValueError("evaluation loader yielded no batches; check the split sizes")
    correct1, correct5, loss_sum, n = _all_reduce_sum(counts).tolist()
    if n == 0:
        raise ValueError("evaluation loader yielded no batches; check the split sizes")
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n,
            "count": int(n)}


def load_init(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load the initial weights ``cfg.init`` names into ``model`` through
    :func:`vit16.models.load_pretrained`: a vit16 checkpoint (``runs/NAME/best.pt``,
    ``last.pt``, any file with a ``model`` state dict), ``torchvision:NAME|PATH``,
    ``timm:NAME|PATH`` or a google-research/vision_transformer ``.npz``
    (:mod:`vit16.models.pretrained`). Keys match strictly; a head of another
    class count (or a pre-logits layer the model lacks) is not loaded, so
    ``model`` keeps its freshly built head (zero with ``model.zero_head``, and
    a ViT loses its pre-logits layer); a ViT ``pos_embed`` on another patch
    grid is resized.

    Returns:
        human-readable notes of what was adapted (empty when nothing was).

    Raises:
        CheckpointError: unknown prefix or weight name, missing, unreadable or
            foreign file, or weights that do not fit the model
            (missing/unexpected keys, shapes).
    """
    from vit16.models import load_pretrained

    try:
        return load_pretrained(model, path, progress=dist_env()[0] == 0)
    except ValueError as err:  # WeightLoadError, or a position embedding that is no grid
        raise CheckpointError(str(err)) from None


def build_model(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """``vit16.MODELS.build(cfg.model.name, num_classes=..., **cfg.model.overrides())``.

    Raises:
        ValueError: ``model.num_classes`` is set and differs from the data set's.
    """
    from vit16 import MODELS  # lazy: the models register themselves on import

    overrides = cfg.model.overrides()
    wanted = overrides.pop("num_classes", num_classes)
    if wanted != num_classes:
        raise ValueError(
            f"model.num_classes = {wanted} but the data set has {num_classes} classes; "
            "remove model.num_classes (it defaults to the data set's)"
        )
    return MODELS.build(cfg.model.name, num_classes=num_classes, **overrides)


@dataclasses.dataclass
class _Counters:
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


def _rewrite_metrics(path: Path, keep_epochs: int) -> None:
    """Keep only the rows of epochs ``<= keep_epochs`` (atomic rewrite)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for line in rows:
        try:
            if json.loads(line).get("epoch", math.inf) <= keep_epochs:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- train


def train(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    data_root: str | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    results_file: str | os.PathLike | None = "results/RESULTS.md",
    overrides: Iterable[str] = (),
    model: nn.Module | None = None,
    data: Any = None,
    grad_hook: Callable[[int, int], None] | None = None,
    epoch_hook: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir``; return the run summary (also in ``summary.json``).

    Args:
        cfg: the resolved experiment.
        out_dir: run directory (``last.pt``, ``best.pt``, ``metrics.jsonl``, ``summary.json``).
        data_root: data directory passed to :func:`vit16.data.build_data`.
        device: ``"cuda"``, ``"cpu"``...; default CUDA when available.
        resume: continue from ``out_dir/last.pt`` when it exists; ``False``
            starts over and overwrites the run directory's files.
        results_file: markdown table to append the result row to (``None`` = skip).
        overrides: the ``--set`` items, recorded in the results row.
        model: use this module instead of building ``cfg.model`` (tests).
        data: use this bundle instead of :func:`vit16.data.build_data` (tests, pruning rounds).
        grad_hook: called as ``grad_hook(step, total_steps)`` at every optimizer
            step, with the final (unscaled, clipped) gradients, right before
            ``optimizer.step()``; may change ``.grad`` in place (the RSST penalty).
        epoch_hook: called as ``epoch_hook(epoch)`` (1-based) on every rank when
            an epoch is complete, before its ``last.pt`` (a rewind point).

    Returns:
        dict with ``experiment``, ``model``, ``params`` (count), ``dataset``,
        ``epochs`` (float, epochs trained), ``steps``, ``val_top1``/``val_top5``
        (%, final), ``val_loss``, ``best_val_top1`` (%), ``best_epoch``,
        ``test_top1``/``test_top5`` (%, final weights), ``test_top1_best`` (%,
        best.pt's weights), ``wall_time_s``, ``train_time_s`` (seconds),
        ``images_per_s`` (training images/s), ``device``, ``git_commit``,
        ``out_dir``, ``overrides``. Val/test values are ``None`` without that split.

    Raises:
        ValueError: bad batch geometry, AMP mode, optimizer or schedule options.
        CheckpointError: ``last.pt`` (or ``cfg.init``) is truncated, corrupt or foreign.
        ResumeMismatchError: ``last.pt`` was written with a different config.
        TrainingDivergedError: the loss became NaN/inf (``last.pt`` keeps the last good state).
        vit16.distributed.DistributedSetupError: ``WORLD_SIZE > 1`` without
            ``MASTER_ADDR`` / ``MASTER_PORT`` (not launched by torchrun or ``--submit``).
    """
    t_start = time.monotonic()
    rank, world_size = dist_env()
    is_main = rank == 0
    device = resolve_device(device)
    out_dir = Path(out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    metrics_path, summary_path = out_dir / "metrics.jsonl", out_dir / "summary.json"
    micro, accum = batch_geometry(cfg.batch_size, cfg.micro_batch_size, world_size)
    autocast_dtype, use_scaler = amp_settings(cfg.amp, device)
    if cfg.epochs < 1:
        raise ValueError(f"epochs = {cfg.epochs} must be >= 1")
    if world_size > 1:  # torchrun / a --submit job: one process per rank, env:// rendezvous
        device = distributed.setup(device, rank, world_size)  # NCCL on CUDA, gloo on the CPU
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    # --- resume: read and check last.pt before building anything heavy
    ckpt = None
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path, "cpu")
        missing = sorted(RESUME_KEYS - set(ckpt))
        if missing:
            raise CheckpointError(
                f"{last_path} is a vit16 checkpoint but not a resumable last.pt (missing "
                f"{', '.join(missing)}); delete it or pass --no-resume"
            )
        diff = config_diff(ckpt.get("config", {}), cfg.to_dict())
        if diff:
            raise ResumeMismatchError(
                f"{last_path} was written with a different config ({len(diff)} differing: "
                f"{'; '.join(diff)}); use a new --out directory, or --no-resume to start over"
            )
        target = cfg.epochs * ckpt.get("steps_per_epoch", 0)
        if cfg.max_steps > 0:
            target = min(target, cfg.max_steps)
        if ckpt["step"] >= target and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            if summary.get("steps") == ckpt["step"]:
                if is_main:
                    print(f"{out_dir}: already finished at step {ckpt['step']}; returning its "
                          "summary (pass --no-resume to train again)", flush=True)
                return summary

    # --- seed, data, model
    seed_everything(cfg.seed)
    if data is None:
        from vit16.data import build_data  # lazy: tests inject a bundle

        data = build_data(cfg, device, rank=rank, world_size=world_size, data_root=data_root,
                          micro_batch_size=micro)
    if model is None:
        model = build_model(cfg, data.num_classes)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    init_notes = load_init(model, cfg.init) if cfg.init and ckpt is None else None
    n_params = sum(p.numel() for p in model.parameters())

    steps_per_epoch = len(data.train) // accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"the training loader gives {len(data.train)} micro-batches per epoch, fewer than the "
            f"{accum} accumulation steps of one optimizer step; lower batch_size"
        )
    total_steps = cfg.epochs * steps_per_epoch
    stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps > 0 else total_steps
    sched = build_schedule(cfg.schedule, cfg.optim.lr, steps_per_epoch, total_steps)
    optimizer = build_optimizer(model, cfg.optim, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    commit = git_commit()
    has_val = data.val is not None and len(data.val) > 0
    has_test = data.test is not None and len(data.test) > 0

    # --- restore the checkpoint, or clear a previous run's files
    counters = _Counters()
    if ckpt is not None:
        if ckpt.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
            raise ResumeMismatchError(
                f"{last_path} was written with {ckpt['steps_per_epoch']} steps per epoch, the data "
                f"now gives {steps_per_epoch} (the training set changed); use a new --out "
                "directory, or --no-resume to start over"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        fields = {f.name for f in dataclasses.fields(_Counters)}
        counters = _Counters(**{k: v for k, v in ckpt.items() if k in fields})
        if is_main:
            _rewrite_metrics(metrics_path, keep_epochs=counters.epoch)
    elif is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (last_path, best_path, metrics_path, summary_path):  # a previous run's
            stale.unlink(missing_ok=True)
    if is_main:  # temp files of a save that a kill interrupted
        for stale in [*out_dir.glob(".last.pt.*.tmp"), *out_dir.glob(".best.pt.*.tmp")]:
            stale.unlink(missing_ok=True)
    last_saved_step = counters.step if ckpt is not None else None
    train_model, eval_model = wrap_model(model, cfg, device, world_size)
    wall_base = counters.wall_seconds

    def wall_now() -> float:
        return wall_base + time.monotonic() - t_start

    def save_last() -> None:
        """Write last.pt (rank 0). With several ranks this is a collective: every
        rank calls it at the same step and rank 0 stores every rank's RNG state."""
        nonlocal last_saved_step, last_ckpt_time
        counters.wall_seconds = wall_now()
        rng_ranks = distributed.all_gather_objects(rng_state()) if world_size > 1 else None
        if is_main:
            save_checkpoint(last_path, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                **dataclasses.asdict(counters),
                "steps_per_epoch": steps_per_epoch,
                "rng": rng_state(),
                **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
                "config": cfg.to_dict(),
                "git_commit": commit,
                "num_classes": data.num_classes,
            })
        last_saved_step = counters.step
        last_ckpt_time = time.monotonic()

    progress = Progress(enabled=is_main)
    amp_name = str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "off"
    where = f"resumed at epoch {counters.epoch + 1} step {counters.step}" if ckpt else "new run"
    if init_notes is not None:
        where += f", init from {cfg.init}" + "".join(f"; {note}" for note in init_notes)
    progress.log(
        f"{cfg.name or cfg.model.name}: {cfg.model.name} ({n_params / 1e6:.2f}M params) on "
        f"{getattr(data, 'description', cfg.data.name)} | {device_name(device)} | batch "
        f"{cfg.batch_size} = {micro} x {world_size} x {accum} accum | "
        f"{steps_per_epoch} steps/epoch, {stop_step} steps | amp {amp_name} | {where} | {out_dir}"
    )
    # last thing before the loop: nothing else may draw from the global RNG. With several
    # ranks each has its own stream (dropout, drop-path); rank 0's is the single-process one.
    if ckpt is not None:
        rng_ranks = ckpt.get("rng_ranks") or []
        if world_size > 1 and len(rng_ranks) == world_size:
            set_rng_state(rng_ranks[rank])
        elif rank == 0:
            set_rng_state(ckpt["rng"])
        else:  # the checkpoint was written by another number of ranks
            seed_everything(distributed.rank_seed(cfg.seed, rank, counters.step))
    elif rank > 0:
        seed_everything(distributed.rank_seed(cfg.seed, rank))
    last_ckpt_time = time.monotonic()
    seg_steps, seg_t0 = 0, time.monotonic()  # for the run ETA
    lr = sched(counters.step)

    # --- the loop
    pending: list[torch.Tensor] = []  # per-step losses (0-d tensors on device) not yet read back
    t_mark = time.perf_counter()  # training time is counted from here at the next flush()

    def flush() -> None:
        """Read the pending losses back (one sync), stop on NaN/inf, update the bar."""
        nonlocal t_mark
        values = torch.stack(pending)
        if world_size > 1:  # the mean over ranks: the global batch's loss, equal on every rank,
            values = distributed.all_reduce_mean(values)  # so a NaN stops every rank at once
        values = values.tolist()
        first_step = counters.step - len(values)
        for j, v in enumerate(values):
            if not math.isfinite(v):
                kept = (f"last good checkpoint kept: {last_path} (step {last_saved_step})"
                        if last_saved_step is not None else "no checkpoint was written yet")
                raise TrainingDivergedError(
                    f"training diverged: loss = {v} at optimizer step {first_step + j} "
                    f"(epoch {counters.epoch + 1}, lr {sched(first_step + j):.3g}); {kept}; "
                    "lower optim.lr, set optim.clip_grad_norm (e.g. 1.0) or lengthen "
                    "schedule.warmup_epochs"
                )
        pending.clear()
        now = time.perf_counter()
        counters.train_seconds += now - t_mark
        counters.epoch_train_seconds += now - t_mark
        t_mark = now
        counters.epoch_loss_sum += sum(values)
        counters.epoch_loss_steps += len(values)
        ips = counters.epoch_loss_steps * cfg.batch_size / max(counters.epoch_train_seconds, 1e-9)
        progress.update(counters.batch_in_epoch // accum, steps_per_epoch, values[-1], lr, ips)

    with progress:
        while counters.step < stop_step:
            epoch = counters.epoch
            first = counters.batch_in_epoch // accum
            data.train.set_epoch(epoch, start_batch=counters.batch_in_epoch)
            batches = iter(data.train)
            progress.start_epoch(epoch + 1, cfg.epochs, steps_per_epoch, first)
            model.train()
            t_mark = time.perf_counter()
            epoch_done = False
            for i in range(first, steps_per_epoch):
                lr = sched(counters.step)
                set_lr(optimizer, lr)
                step_loss = torch.zeros((), device=device)
                for m in range(accum):
                    try:
                        images, targets = next(batches)
                    except StopIteration:
                        raise RuntimeError(
                            f"the training loader stopped after {i * accum + m} micro-batches of "
                            f"epoch {epoch + 1} but its len() is {len(data.train)}"
                        ) from None
                    if cfg.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    no_sync = m < accum - 1 and hasattr(train_model, "no_sync")  # DDP
                    with train_model.no_sync() if no_sync else contextlib.nullcontext():
                        with _autocast(device, autocast_dtype):
                            logits = train_model(images)
                        loss = F.cross_entropy(logits.float(), targets,
                                               label_smoothing=cfg.optim.label_smoothing) / accum
                        scaler.scale(loss).backward()
                    step_loss += loss.detach()
                if cfg.optim.clip_grad_norm > 0 or grad_hook is not None:
                    scaler.unscale_(optimizer)
                if cfg.optim.clip_grad_norm > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
                if grad_hook is not None:
                    grad_hook(counters.step, stop_step)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)

                counters.step += 1
                counters.batch_in_epoch = (i + 1) * accum
                counters.images_seen += cfg.batch_size
                seg_steps += 1
                pending.append(step_loss)
                epoch_done = i + 1 == steps_per_epoch
                stop = counters.step >= stop_step
                ckpt_due = (cfg.checkpoint_minutes > 0 and not (epoch_done or stop)
                            and time.monotonic() - last_ckpt_time >= 60 * cfg.checkpoint_minutes)
                sync_due = (len(pending) >= SYNC_EVERY
                            or time.perf_counter() - t_mark >= SYNC_SECONDS)
                if world_size > 1:  # flush() and save_last() are collectives: decide alike
                    sync_due = len(pending) >= SYNC_EVERY  # by count, never by a rank's clock
                    ckpt_due = ckpt_due and sync_due
                if sync_due or ckpt_due or epoch_done or stop:
                    flush()  # before any checkpoint: a NaN never reaches last.pt
                    if world_size > 1:
                        ckpt_due = distributed.rank0_decides(ckpt_due)
                if ckpt_due:
                    save_last()
                    t_mark = time.perf_counter()  # saving is not training time
                if stop:
                    break

            # --- end of epoch (or of the run): validate, best.pt, metrics, last.pt
            if pending:
                flush()
            train_loss = counters.epoch_loss_sum / max(counters.epoch_loss_steps, 1)
            epoch_images = counters.epoch_loss_steps * cfg.batch_size
            ips = epoch_images / max(counters.epoch_train_seconds, 1e-9)
            t_eval = time.perf_counter()
            val = (evaluate(eval_model, data.val, autocast_dtype=autocast_dtype,
                            channels_last=cfg.channels_last) if has_val else None)
            counters.last_val = val
            is_best = val is not None and val["top1"] > counters.best_val_top1
            if is_best:
                counters.best_val_top1 = val["top1"]
                counters.best_epoch, counters.best_step = epoch + 1, counters.step
                if is_main:
                    save_checkpoint(best_path, {
                        "model": model.state_dict(), "epoch": epoch + 1, "step": counters.step,
                        "val_top1": val["top1"], "config": cfg.to_dict(), "git_commit": commit,
                        "num_classes": data.num_classes,
                    })
            row = {
                "epoch": epoch + 1, "step": counters.step, "lr": lr, "train_loss": train_loss,
                "val_top1": val and val["top1"], "val_top5": val and val["top5"],
                "val_loss": val and val["loss"], "images_per_s": ips,
                "seconds": counters.epoch_train_seconds + time.perf_counter() - t_eval,
            }
            if is_main:
                _append_jsonl(metrics_path, row)
            eta = (time.monotonic() - seg_t0) / max(seg_steps, 1) * (stop_step - counters.step)
            val_text = "no val" if val is None else (
                f"val top-1 {val['top1']:.2f}% top-5 {val['top5']:.2f}% loss {val['loss']:.4f}"
                + (" *" if is_best else ""))
            progress.end_epoch(
                f"epoch {epoch + 1}/{cfg.epochs} step {counters.step} | loss {train_loss:.4f} | "
                f"lr {lr:.2e} | {val_text} | {ips:,.0f} img/s | {row['seconds']:.1f}s | "
                f"ETA {format_duration(eta)}"
            )
            if epoch_done and epoch_hook is not None:
                epoch_hook(epoch + 1)
            if epoch_done:
                counters.epoch += 1
                counters.batch_in_epoch = 0
                counters.epoch_loss_sum, counters.epoch_loss_steps = 0.0, 0
                counters.epoch_train_seconds = 0.0
            save_last()

    # --- test: final weights, then best.pt's
    test = (evaluate(eval_model, data.test, autocast_dtype=autocast_dtype,
                     channels_last=cfg.channels_last) if has_test else None)
    test_best = None
    if has_test and counters.best_step >= 0 and best_path.exists():
        if counters.best_step == counters.step:
            test_best = test
        else:
            final_weights = {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}
            model.load_state_dict(load_checkpoint(best_path, "cpu")["model"])
            test_best = evaluate(eval_model, data.test, autocast_dtype=autocast_dtype,
                                 channels_last=cfg.channels_last)
            model.load_state_dict(final_weights)

    val = counters.last_val
    summary = {
        "experiment": cfg.name,
        "model": cfg.model.name,
        "params": n_params,
        "dataset": getattr(data, "description", cfg.data.name),
        "epochs": counters.step / steps_per_epoch,
        "steps": counters.step,
        "val_top1": val and val["top1"],
        "val_top5": val and val["top5"],
        "val_loss": val and val["loss"],
        "best_val_top1": counters.best_val_top1 if counters.best_step >= 0 else None,
        "best_epoch": counters.best_epoch if counters.best_step >= 0 else None,
        "test_top1": test and test["top1"],
        "test_top5": test and test["top5"],
        "test_top1_best": test_best and test_best["top1"],
        "wall_time_s": wall_now(),
        "train_time_s": counters.train_seconds,
        "images_per_s": counters.images_seen / max(counters.train_seconds, 1e-9),
        "device": device_name(device),
        "git_commit": commit,
        "out_dir": str(out_dir),
        "overrides": list(overrides),
    }
    if is_main:
        tmp = summary_path.with_name(summary_path.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, summary_path)
        if results_file is not None:
            append_result(results_file, {k: summary[k] for k in (
                "experiment", "model", "params", "dataset", "epochs", "val_top1", "test_top1",
                "test_top1_best", "device", "git_commit", "overrides")}
                | {"wall_time_s": summary["wall_time_s"], "images_per_s": summary["images_per_s"]})
        progress.log(
            f"done: val top-1 {_pct(summary['val_top1'])} (best {_pct(summary['best_val_top1'])}) "
            f"| test top-1 {_pct(summary['test_top1'])} (best-val ckpt "
            f"{_pct(summary['test_top1_best'])}) | {format_duration(summary['wall_time_s'])} "
            f"| {summary['images_per_s']:,.0f} img/s"
        )
    return summary


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}%"
