"""A classifier's test-set numbers beyond top-1: the confusion matrix, per-class
accuracy, top-5 and the mean loss, counted exactly (integer counts, summed
over ranks when torch.distributed is initialised, as
:func:`vit16.engine.evaluate` does), and the loader that reads a split the way
the trainer does (:func:`vit16.data.build_data` with the run's data config).

    loader, info = eval_loader(cfg, "test", device, data_root=root)
    ev = confusion_counts(model, loader, info["num_classes"])
    ev.top1, ev.per_class_accuracy(), ev.confusion  # %, % (K,), int64 (K, K)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vit16 import distributed
from vit16.analysis.output import write_csv, write_json
from vit16.engine import forward_batches

__all__ = ["Evaluation", "confusion_counts", "eval_loader", "plot_confusion", "write_evaluation"]


@dataclass
class Evaluation:
    """Exact counts of one evaluation over ``count`` images of ``K`` classes.

    ``confusion``: int64 (K, K) on the CPU, ``confusion[t, p]`` = images of
    true class ``t`` predicted as ``p`` (the top-1 class); ``top5_correct``:
    images whose label is among the 5 largest logits (``min(5, K)``);
    ``loss_sum``: summed cross-entropy (nats, float64 of per-batch float32 sums).
    """

    confusion: torch.Tensor
    top5_correct: int
    loss_sum: float

    @property
    def count(self) -> int:
        """Images evaluated."""
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        """Top-1 accuracy, % (trace of the confusion matrix over the count)."""
        return 100.0 * int(self.confusion.diagonal().sum()) / self.count

    @property
    def top5(self) -> float:
        """Top-5 accuracy, % (top-K with fewer than 5 classes)."""
        return 100.0 * self.top5_correct / self.count

    @property
    def loss(self) -> float:
        """Mean cross-entropy per image, nats."""
        return self.loss_sum / self.count

    def per_class_accuracy(self) -> torch.Tensor:
        """Recall of each class, % : float64 (K,), ``confusion[k, k] / row k's sum``;
        NaN for a class without images."""
        c = self.confusion.double()
        rows = c.sum(dim=1)
        return torch.where(rows > 0, 100.0 * c.diagonal() / rows.clamp(min=1), torch.nan)

    def metrics(self) -> dict[str, Any]:
        """``{"top1", "top5" (%), "loss" (nats), "count", "num_classes"}``."""
        return {"top1": self.top1, "top5": self.top5, "loss": self.loss, "count": self.count,
                "num_classes": int(self.confusion.shape[0])}


@torch.no_grad()
def confusion_counts(model: nn.Module, loader, num_classes: int, *,
                     autocast_dtype: torch.dtype | None = None, channels_last: bool = False) -> Evaluation:
    """Run ``model`` over ``loader`` and count its predictions by true class.

    The forward is :func:`vit16.engine.evaluate`'s (eval mode, the same
    autocast and memory format, logits in float32, top-1 = first of ``topk``),
    so ``top1``/``top5``/``loss`` equal its numbers for the same loader.

    Args:
        model: maps images float32 ``(B, 3, H, W)`` to logits ``(B, K)``.
        loader: yields ``(images, labels int64 (B,))`` on the model's device.
        num_classes: ``K``, the data set's class count.
        autocast_dtype: forward under autocast with this dtype (None = float32).
        channels_last: convert images to channels-last memory format.

    Returns:
        an :class:`Evaluation`; its counts are summed over ranks when
        torch.distributed is initialised (each rank passes its own shard).

    Raises:
        ValueError: the model outputs another number of classes than
            ``num_classes``, a label is out of range, or no rank saw an image.
    """
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(())).device
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # top-5 hits, loss sum
    try:
        for logits, labels in forward_batches(model, loader, autocast_dtype, channels_last):
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise ValueError(f"the model outputs {logits.shape[-1]} classes but the data set has "
                                 f"{num_classes}; evaluate it on the data set its head was trained "
                                 "for (--dataset), or fine-tune it first")
            top = logits.topk(min(5, num_classes), dim=1).indices  # (B, k)
            cells = torch.bincount(labels * num_classes + top[:, 0], minlength=num_classes * num_classes)
            if cells.numel() != confusion.numel():  # a label >= K (bincount refuses negative ones)
                raise ValueError(f"labels out of range 0..{num_classes - 1}")
            confusion = confusion + cells.to(confusion.device)
            sums = sums + torch.stack([(top == labels[:, None]).any(dim=1).sum().double(),
                                       F.cross_entropy(logits, labels, reduction="sum").double()]
                                      ).to(sums.device)
    finally:
        model.train(was_training)
    if distributed.is_initialized():  # an empty shard still joins the sums
        torch.distributed.all_reduce(confusion)
        torch.distributed.all_reduce(sums)
    result = Evaluation(confusion.view(num_classes, num_classes).cpu(), int(sums[0].item()), float(sums[1].item()))
    if result.count == 0:
        raise ValueError("the evaluation loader yielded no images; check the split sizes")
    return result


def eval_loader(cfg, split: str, device: torch.device | str, *, rank: int = 0, world_size: int = 1,
                data_root: str | None = None, crop_ratio: float | None = None):
    """This rank's loader of the ``split`` of ``cfg.data``, as the trainer reads it.

    Without ``crop_ratio`` it is :func:`vit16.data.build_data`'s own val/test
    loader (same split, shard, transform, normalisation and batch size
    ``cfg.eval_batch_size``). With ``crop_ratio`` R the transform becomes:
    resize the shorter side to ``round(S / R)`` then centre-crop S (``S =
    cfg.data.img_size``; bicubic for decoded arrays as the trainer resizes them,
    bilinear for files).

    Args:
        cfg: an :class:`~vit16.config.ExperimentConfig` (``data``, ``eval_batch_size`` > 0).
        split: ``"test"`` or ``"val"`` (held out of the training set, ``cfg.data.val_size``).
        device: where batches go; rank, world_size: this process's shard.
        data_root: ``--data-root``; crop_ratio: in (0, 1], or None.

    Returns:
        ``(loader, info)``: an :class:`~vit16.data.EvalLoader` and
        ``{"num_classes", "class_names", "description", "images"}`` (images in the
        whole split, over all ranks).

    Raises:
        ValueError: an unknown split, a crop ratio out of (0, 1], an empty split.
        DataNotFoundError, BadDataError, ConfigError, UnknownNameError: as
            :func:`vit16.data.build_data` raises them.
    """
    from torchvision.transforms import v2

    from vit16.analysis.images import load_source
    from vit16.data import EvalLoader, build_data
    from vit16.data.splits import eval_shard, split_train
    from vit16.data.transforms import SplitDataset

    if split not in ("test", "val"):
        raise ValueError(f"split {split!r} is not one of test, val")
    if crop_ratio is not None and not 0 < crop_ratio <= 1:
        raise ValueError(f"--crop-ratio {crop_ratio} is not in (0, 1]; e.g. 0.875 = 224/256")
    dcfg = cfg.data
    if split == "test":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(dcfg, val_size=0))  # no val split to build
    if crop_ratio is None:  # micro batch 1: only eval batches are used; any training split fits
        bundle = build_data(cfg, device, rank, world_size, data_root=data_root, micro_batch_size=1)
        loader = bundle.test if split == "test" else bundle.val
        names, description = bundle.class_names, bundle.description
    else:
        source = load_source(dcfg, data_root)
        part = (source.test if split == "test"
                else split_train(source.train, dcfg.val_size, dcfg.fraction, dcfg.train_limit)[1])
        shard = part.subset(eval_shard(len(part), rank, world_size))
        mode = v2.InterpolationMode.BICUBIC if source.decoded else v2.InterpolationMode.BILINEAR
        size = dcfg.img_size
        t = v2.Compose([v2.Resize(round(size / crop_ratio), interpolation=mode, antialias=True),
                        v2.CenterCrop(size)])
        loader = EvalLoader(shard, cfg.eval_batch_size, device, source.mean, source.std,
                            SplitDataset(shard, t), dcfg.num_workers)
        names, description = list(source.class_names), source.description
    images = loader.num_samples
    if world_size > 1:
        images = int(sum(distributed.all_gather_objects(images)))
    if images == 0:
        raise ValueError(f"the {split} split of {dcfg.name} is empty"
                         + ("; set data.val_size > 0 or use --split test" if split == "val" else ""))
    return loader, {"num_classes": len(names), "class_names": names, "description": description,
                    "images": images}


def write_evaluation(out: str | Path, ev: Evaluation, class_names: list[str],
                     extra: dict[str, Any] | None = None) -> list[Path]:
    """Write ``metrics.json`` (:meth:`Evaluation.metrics`, the per-class
    accuracy and ``extra``), ``confusion.csv`` (rows = true class, columns =
    predicted, integer counts) and ``per_class.csv`` (class, images, correct,
    accuracy %) into ``out``.

    Returns:
        the paths written.
    """
    out = Path(out)
    acc = ev.per_class_accuracy().tolist()
    c = ev.confusion.tolist()
    per_class = {name: (None if math.isnan(a) else a) for name, a in zip(class_names, acc)}
    metrics = {**ev.metrics(), **(extra or {}), "per_class_top1": per_class}
    return [
        write_json(out / "metrics.json", metrics),
        write_csv(out / "confusion.csv", ["true \\ predicted", *class_names],
                  ([name, *row] for name, row in zip(class_names, c))),
        write_csv(out / "per_class.csv", ["class", "images", "correct", "top1"],
                  ([name, sum(row), row[k], "" if math.isnan(acc[k]) else acc[k]]
                   for k, (name, row) in enumerate(zip(class_names, c)))),
    ]


def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: str | Path,
                   title: str = "") -> Path:
    """The confusion matrix as an image: rows = true class, columns = predicted,
    colour = share of the row (recall), counts written in the cells when K <= 20.

    Args:
        confusion: int64 (K, K) counts.
        class_names: K names for the ticks (shown when K <= 40).
        path: the PNG to write.

    Raises:
        PlotsUnavailableError: matplotlib is not installed.
    """
    from vit16.analysis.figures import require_matplotlib

    Figure = require_matplotlib()
    c = confusion.double()
    share = c / c.sum(dim=1, keepdim=True).clamp(min=1)
    k = c.shape[0]
    side = min(max(4.0, 0.45 * k + 2), 16.0)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 40:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
    if k <= 20:
        for t in range(k):
            for p in range(k):
                ax.text(p, t, int(c[t, p]), ha="center", va="center", fontsize=6,
                        color="white" if share[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
