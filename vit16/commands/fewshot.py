"""``python -m vit16 fewshot``: linear few-shot evaluation of frozen features
(paper section 4.1 and Fig. 4; the few-shot columns of appendix D).

    python -m vit16 fewshot runs/quick --dataset cifar10 --shots 1,5,10,25 --seeds 3 \\
        --data-root ../shared/data --out results/fewshot_quick

For every shot count k and seed: k random training images per class, their
frozen pre-logits features, a closed-form regularised least-squares fit onto
{-1, 1}^K targets; the ridge strength is chosen among 2^-10 ... 2^19 by top-1
on ``--holdout`` held-out training images per class (never drawn as shots);
then top-1 on the test set. Prints and writes (``--out``) the mean, the
sample standard deviation, min and max over seeds, and every seed's result.

``CKPT_OR_NAME``: a run directory, a vit16 checkpoint, or an ``init`` string
(``torchvision:``, ``timm:``, ``.npz``, state-dict file) with ``--model``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vit16.commands.common import (
    add_device_argument,
    add_model_arguments,
    choose_device,
    reports_user_errors,
)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage such as ``--shots 1,zero`` (exit code 2).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 fewshot",
                                description="Linear few-shot top-1 of frozen ViT features "
                                            "(regularised least squares, paper section 4.1).")
    add_model_arguments(p, dataset_help="few-shot data set")
    p.add_argument("--shots", type=_int_list, default=[1, 5, 10, 25],
                   help="images per class (default 1,5,10,25)")
    p.add_argument("--seeds", type=int, default=3, help="random draws per shot count (default 3)")
    p.add_argument("--holdout", type=int, default=20,
                   help="held-out training images per class for choosing the ridge strength (default 20)")
    p.add_argument("--test-limit", type=int, default=0,
                   help="class-balanced test images (0 = the whole test set)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add_device_argument(p)
    p.add_argument("--out", metavar="DIR", help="write fewshot.json and fewshot.csv here")
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace, device: torch.device) -> dict:
    """Load, extract features, run every (shots, seed); the JSON report."""
    from vit16.analysis.fewshot import holdout_indices, needed_indices, run_fewshot
    from vit16.analysis.images import extract_features, load_source
    from vit16.analysis.inspection import select_images
    from vit16.analysis.loading import load_model
    from vit16.analysis.ridge import L2_GRID

    lm = load_model(args.model_spec, args.model, args.dataset, device)
    source = load_source(lm.data, args.data_root)
    num_classes = len(source.class_names)
    train_y = source.train.labels
    holdout = holdout_indices(train_y, args.holdout)
    seeds = list(range(args.seeds))
    needed = needed_indices(train_y, holdout, args.shots, seeds)
    t0 = time.perf_counter()
    feats = extract_features(lm.model, source, source.train.subset(needed), lm.data, args.batch_size,
                             device, lm.data.num_workers)
    test = select_images(source.test, args.test_limit)
    test_x = extract_features(lm.model, source, test, lm.data, args.batch_size, device, lm.data.num_workers)
    seconds = time.perf_counter() - t0
    results = run_fewshot(feats, train_y, holdout, test_x, torch.from_numpy(test.labels), num_classes,
                          args.shots, seeds, rows=needed)
    return {
        "model": lm.label, "source": lm.source, "load_notes": lm.notes, "data": source.description,
        "num_classes": num_classes, "feature_dim": int(feats.shape[1]), "holdout_per_class": args.holdout,
        "test_images": len(test), "seeds": seeds, "l2_grid": list(L2_GRID),
        "feature_seconds": round(seconds, 2),
        "method": "frozen pre-logits features standardised on the shots, constant bias feature "
                  "(100), ridge regression onto {-1,1}^K; l2 chosen by held-out top-1",
        "results": [r.to_dict() for r in results],
    }


def write_outputs(report: dict, out: str | Path) -> list[Path]:
    """``fewshot.json`` (everything) and ``fewshot.csv`` (one row per shot count and seed)."""
    from vit16.analysis.output import write_csv, write_json

    out = Path(out)
    rows = [(r["shots"], s["seed"], s["l2"], s["holdout_top1"], s["test_top1"], r["mean_top1"], r["std_top1"])
            for r in report["results"] for s in r["seeds"]]
    return [write_json(out / "fewshot.json", report),
            write_csv(out / "fewshot.csv", ("shots", "seed", "l2", "holdout_top1", "test_top1",
                                            "mean_top1", "std_top1"), rows)]


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 fewshot``: evaluate, print, write ``--out``.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on stderr).
    """
    args = parse_args(argv)
    if args.seeds < 1 or args.holdout < 1 or args.test_limit < 0 or args.batch_size < 1:
        raise ValueError("--seeds, --holdout and --batch-size must be >= 1, --test-limit >= 0")
    report = evaluate(args, choose_device(args.device))
    files = write_outputs(report, args.out) if args.out else []
    print(f"{report['model']} on {report['data']}: linear few-shot top-1 (%) over "
          f"{len(report['seeds'])} seed(s), {report['test_images']} test images")
    for r in report["results"]:
        l2 = ", ".join(f"{s['l2']:g}" for s in r["seeds"])
        print(f"  {r['shots']:3d}-shot: {r['mean_top1']:6.2f} +- {r['std_top1']:5.2f} "
              f"(min {r['min_top1']:.2f}, max {r['max_top1']:.2f}; l2 {l2})")
    if files:
        print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
