"""``python -m vit16 evaluate WEIGHTS --dataset NAME``: top-1, top-5, mean loss,
per-class accuracy and the confusion matrix of any weights vit16 loads.

    python -m vit16 evaluate runs/quick                      # its best.pt on its own test set
    python -m vit16 evaluate runs/quick/last.pt --split val --out results/eval_quick
    python -m vit16 evaluate torchvision:ViT_B_16_Weights.IMAGENET1K_V1 --model vit_b16 --dataset imagenet
    torchrun --nproc_per_node 4 -m vit16 evaluate runs/vit_b16_imagenet   # exact over the ranks

``WEIGHTS``: a run directory (its ``best.pt``, else ``last.pt``), a vit16
checkpoint (pruned or exported ones too), or ``torchvision:``, ``timm:``, a
JAX ``.npz`` or a state-dict file with ``--model``. A checkpoint is evaluated
with its own data configuration (image size, normalisation, validation split,
evaluation batch size, precision), so the test top-1 equals the trainer's for
the same weights. ``--img-size`` rebuilds a ViT at another size (position
embedding resized), ``--crop-ratio`` changes the centre crop.

Writes into ``--out`` (default ``runs/evaluate/LABEL-DATASET-SPLIT``):
``metrics.json``, ``confusion.csv`` (rows = true class, integer counts),
``per_class.csv`` and, with matplotlib (``pip install -e ".[plots]"``),
``confusion.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from vit16.commands.common import add_device_argument, add_model_arguments, choose_device, reports_user_errors
from vit16.runtime import AMP_MODES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage (exit code 2, argparse's message).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 evaluate",
                                description="Top-1/top-5, loss, per-class accuracy and confusion matrix "
                                            "of a model on a data set's test (or validation) split.")
    add_model_arguments(p, dataset_help="data set to evaluate on")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="test split, or the validation split held out of training (default: test)")
    p.add_argument("--img-size", type=int, help="input size in pixels (default: the model's)")
    p.add_argument("--crop-ratio", type=float, metavar="R",
                   help="resize to img-size / R, centre-crop img-size (default: the trainer's "
                        "evaluation transform)")
    p.add_argument("--batch-size", type=int, help="images per forward (default: the run's evaluation batch)")
    p.add_argument("--workers", type=int, help="DataLoader workers decoding and resizing (default: the "
                   "run's data.num_workers; unused for CIFAR at its stored 32px)")
    p.add_argument("--amp", choices=AMP_MODES,
                   help="precision (default: the checkpoint's amp, else off = float32)")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default runs/evaluate/LABEL-DATASET-SPLIT)")
    p.add_argument("--no-plots", action="store_true", help="no confusion.png")
    add_device_argument(p)
    return p.parse_args(argv)


def _setup(device_name: str | None):
    """``(rank, world_size, device)``; the process group under torchrun."""
    from vit16 import distributed
    from vit16.runtime import dist_env, resolve_device

    rank, world_size = dist_env()
    device = resolve_device(choose_device(device_name))
    if world_size > 1:
        device = distributed.setup(device, rank, world_size)
    return rank, world_size, device


def _run_row(lm, split: str, args: argparse.Namespace) -> float | None:
    """The trainer's own test top-1 of the weights evaluated (its ``summary.json``), when comparable."""
    if (lm.path is None or split != "test" or not lm.native_data or args.img_size or args.crop_ratio
            or lm.path.name not in ("best.pt", "last.pt")):
        return None
    summary = lm.path.parent / "summary.json"
    try:
        row = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    value = row.get("test_top1_best" if lm.path.name == "best.pt" else "test_top1")
    return value if isinstance(value, (int, float)) else None


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 evaluate``: evaluate, write ``--out``, print the numbers.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on stderr).
    """
    from vit16.analysis.evaluation import confusion_counts, eval_loader, plot_confusion, write_evaluation
    from vit16.analysis.figures import PlotsUnavailableError
    from vit16.analysis.loading import load_model
    from vit16.config import ExperimentConfig, batch_geometry
    from vit16.runtime import amp_settings

    args = parse_args(argv)
    for name, least in (("img_size", 1), ("batch_size", 1), ("workers", 0)):
        if getattr(args, name) is not None and getattr(args, name) < least:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {least}")
    rank, world_size, device = _setup(args.device)
    lm = load_model(args.model_spec, args.model, args.dataset, device, img_size=args.img_size, vit_only=False)
    cfg = lm.config or ExperimentConfig(name=lm.label, amp="off")
    batch = args.batch_size or cfg.eval_batch_size or batch_geometry(cfg.batch_size, cfg.micro_batch_size, 1)[0]
    data = lm.data if args.workers is None else dataclasses.replace(lm.data, num_workers=args.workers)
    cfg = dataclasses.replace(cfg, data=data, eval_batch_size=batch, amp=args.amp or cfg.amp)
    autocast_dtype, _ = amp_settings(cfg.amp, device)
    loader, info = eval_loader(cfg, args.split, device, rank=rank, world_size=world_size,
                               data_root=args.data_root, crop_ratio=args.crop_ratio)
    ev = confusion_counts(lm.model, loader, info["num_classes"], autocast_dtype=autocast_dtype,
                          channels_last=cfg.channels_last)
    if rank != 0:
        return 0
    out = Path(args.out or Path("runs") / "evaluate" / f"{lm.label}-{lm.data.name}-{args.split}")
    extra = {"weights": lm.source, "label": lm.label, "dataset": info["description"], "split": args.split,
             "img_size": lm.data.img_size, "crop_ratio": args.crop_ratio, "amp": cfg.amp,
             "batch_size": batch, "world_size": world_size, "notes": lm.notes}
    files = write_evaluation(out, ev, info["class_names"], extra)
    for note in lm.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{lm.label} on {info['description']}, {args.split} split ({ev.count:,} images, "
          f"{lm.data.img_size}px): top-1 {ev.top1:.2f}% | top-5 {ev.top5:.2f}% | loss {ev.loss:.4f}")
    if (row := _run_row(lm, args.split, args)) is not None:
        print(f"the trainer's test top-1 of {lm.path}: {row:.2f}% (summary.json)")
    acc = ev.per_class_accuracy()
    worst = [(info["class_names"][k], float(acc[k])) for k in acc.nan_to_num(101).argsort()[:3].tolist()]
    print("lowest per-class top-1: " + ", ".join(f"{name} {a:.1f}%" for name, a in worst))
    print(f"wrote {', '.join(f.name for f in files)} to {out}")
    if not args.no_plots:
        try:
            png = plot_confusion(ev.confusion, info["class_names"], out / "confusion.png",
                                 f"{lm.label}: {lm.data.name} {args.split}, top-1 {ev.top1:.2f}%")
            print(f"figure: {png}")
        except PlotsUnavailableError as err:
            print(f"note: confusion.png not written: {err}", file=sys.stderr)
    return 0
