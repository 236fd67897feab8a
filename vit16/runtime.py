"""Where and how a run computes: rank, device, batch geometry, mixed precision,
seeds, and the model and data it starts from. One set-up for the trainer
(:func:`vit16.trainer.train`) and the pruning rounds (:mod:`vit16.prune.run`).

    rt = setup_runtime(cfg, device=None)         # process group when WORLD_SIZE > 1
    seed_everything(cfg.seed)
    data = build_run_data(cfg, rt, data_root)    # this rank's loaders
    model = build_model(cfg, data.num_classes)
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import torch
from torch import nn

from vit16 import distributed
from vit16.checkpoint import CheckpointError
from vit16.config import ExperimentConfig, batch_geometry, check_ranges
from vit16.config_checks import AMP_MODES

__all__ = [
    "AMP_MODES",
    "Runtime",
    "amp_settings",
    "build_model",
    "build_run_data",
    "dist_env",
    "load_init",
    "resolve_device",
    "seed_everything",
    "setup_runtime",
    "wrap_model",
]


@dataclass(frozen=True)
class Runtime:
    """This process's place in a run, fixed before the first step.

    ``cfg.batch_size = micro_batch x world_size x accum_steps`` images per
    optimizer step; ``autocast_dtype`` is ``None`` for float32.
    """

    rank: int
    world_size: int
    device: torch.device
    micro_batch: int
    accum_steps: int
    autocast_dtype: torch.dtype | None
    use_scaler: bool

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` with :attr:`autocast_dtype`, or a no-op for float32."""
        return autocast(self.device, self.autocast_dtype)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, dtype)``, or a no-op context when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def setup_runtime(cfg: ExperimentConfig, device: str | torch.device | None = None) -> Runtime:
    """Check every value of ``cfg`` (:func:`vit16.config.check_ranges`: a config
    built by hand or read from a checkpoint, too) and its batch geometry for
    this world size, start the process group when ``WORLD_SIZE > 1`` (NCCL on
    CUDA, gloo on the CPU) and turn on TF32 / cuDNN autotuning on CUDA.

    Raises:
        ConfigError: a value out of its range (one line naming ``[NAME.section]``).
        ValueError: the batch sizes do not divide over the world size.
        vit16.distributed.DistributedSetupError: ``WORLD_SIZE > 1`` without
            ``MASTER_ADDR`` / ``MASTER_PORT``.
    """
    check_ranges(cfg)
    rank, world_size = dist_env()
    device = resolve_device(device)
    micro, accum = batch_geometry(cfg.batch_size, cfg.micro_batch_size, world_size)
    autocast_dtype, use_scaler = amp_settings(cfg.amp, device)
    if world_size > 1:  # torchrun / a --submit job: one process per rank, env:// rendezvous
        device = distributed.setup(device, rank, world_size)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Runtime(rank, world_size, device, micro, accum, autocast_dtype, use_scaler)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy (when installed) and torch (CPU and CUDA)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def build_run_data(cfg: ExperimentConfig, rt: Runtime, data_root: str | None = None):
    """This rank's loaders (:func:`vit16.data.build_data`, a
    :class:`vit16.data.DataBundle`); rank 0 builds first (a download, the
    decode cache), the others after it. Callers seed first (:func:`seed_everything`).

    Raises:
        everything :func:`vit16.data.build_data` raises.
    """
    from vit16.data import build_data  # lazy: heavy, and tests inject a bundle

    with distributed.rank0_first():  # one download, not one per rank
        return build_data(cfg, rt.device, rank=rt.rank, world_size=rt.world_size,
                          data_root=data_root, micro_batch_size=rt.micro_batch)


def build_model(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """``vit16.MODELS.build(cfg.model.name, num_classes=..., **cfg.model.overrides())``.

    Raises:
        ValueError: ``model.num_classes`` is set and differs from the data set's.
    """
    from vit16.registry import MODELS

    overrides = cfg.model.overrides()
    wanted = overrides.pop("num_classes", num_classes)
    if wanted != num_classes:
        raise ValueError(
            f"model.num_classes = {wanted} but the data set has {num_classes} classes; "
            "remove model.num_classes (it defaults to the data set's)"
        )
    return MODELS.build(cfg.model.name, num_classes=num_classes, **overrides)


def load_init(model: nn.Module, path: str | os.PathLike, patch_resize: str = "pinv") -> list[str]:
    """Load the initial weights ``cfg.init`` names into ``model`` through
    :func:`vit16.models.load_pretrained`: a vit16 checkpoint (``runs/NAME/best.pt``,
    ``last.pt``, any file with a ``model`` state dict), ``torchvision:NAME|PATH``,
    ``timm:NAME|PATH`` or a google-research/vision_transformer ``.npz``.
    Keys match strictly; a head of another class count (or a pre-logits layer
    the model lacks) is not loaded, so ``model`` keeps its freshly built head
    (zero with ``model.zero_head``, and a ViT loses its pre-logits layer); a
    ViT ``pos_embed`` on another patch grid is resized, a patch-embedding
    kernel of another patch size resampled (``patch_resize``: ``cfg.init_patch_resize``).

    Returns:
        human-readable notes of what was adapted (empty when nothing was).

    Raises:
        CheckpointError: unknown prefix or weight name, missing, unreadable or
            foreign file, or weights that do not fit the model
            (missing/unexpected keys, shapes).
    """
    from vit16.models import load_pretrained

    try:
        with distributed.rank0_first():  # published weights are downloaded once, by rank 0
            return load_pretrained(model, path, progress=dist_env()[0] == 0, patch_resize=patch_resize)
    except ValueError as err:  # WeightLoadError, or a position embedding that is no grid
        raise CheckpointError(str(err)) from None


def wrap_model(model: nn.Module, cfg: ExperimentConfig, device: torch.device,
               world_size: int) -> tuple[nn.Module, nn.Module]:
    """The one place the model gets wrapped: ``(train_model, eval_model)``.

    ``world_size > 1``: ``train_model`` is ``DistributedDataParallel(model)``
    (gradients averaged over ranks in the backward; its construction
    broadcasts rank 0's weights), and ``eval_model`` is the bare module (each
    rank evaluates its own shard; :func:`vit16.engine.evaluate` sums the
    counts), so evaluation has no collective per batch and ranks may hold
    unequal shards. ``cfg.compile`` compiles the training model only:
    evaluation runs the eager module under ``torch.no_grad()`` (another batch
    size in the last batch and train/eval switches would recompile, and
    compiled modules under ``inference_mode`` are reported to go stale:
    pytorch/pytorch#108863, #104984). ``model`` itself stays the raw module
    whose ``state_dict`` goes into checkpoints. The process group must exist
    (:func:`vit16.distributed.setup`).
    """
    train_model = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids, output_device=ids and ids[0],
                                              gradient_as_bucket_view=True)
    return (torch.compile(train_model) if cfg.compile else train_model), model
