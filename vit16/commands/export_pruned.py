"""``python -m vit16 export-pruned CKPT --out FILE``: a pruned checkpoint as a
physically smaller ViT (:func:`vit16.prune.export.export_model`), written to
``FILE`` and compared with the masked model.

    python -m vit16 export-pruned runs/refill_quick/round_04/pruned.pt --out vit_refill.pt
    python -m vit16 export-pruned runs/imp_quick/round_04/pruned.pt --out imp.pt --data-root data

Prints the heads and MLP neurons kept per block, the parameters, the largest
|logit difference| exported vs masked, and images/s of both (best of 3
alternating measurements of the median of ``--steps`` forwards); with
``--data-root``, both models' top-1 on the test set.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from vit16.checkpoint import load_checkpoint, save_checkpoint
from vit16.commands.common import choose_device, reports_user_errors
from vit16.prune.export import build_arch, compare_on, export_model, inference_speed
from vit16.prune.masks import fold_masks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage (exit code 2, argparse's message).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 export-pruned",
                                description="Export a pruned checkpoint as a physically smaller ViT.")
    p.add_argument("checkpoint", help="a pruning round's pruned.pt (or any vit16 ViT checkpoint)")
    p.add_argument("--out", required=True, help="file to write the exported model to")
    p.add_argument("--batch-size", type=int, default=256,
                   help="images per timed forward (default %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="timed forwards per model (default %(default)s)")
    p.add_argument("--device", default="cpu", help="device for the speed test (default %(default)s)")
    p.add_argument("--data-root", help="also compare both models on the test set of the checkpoint's "
                   "data set found under this folder (top-1 %% and largest logit difference)")
    return p.parse_args(argv)


def compare_on_test_set(ckpt: dict, masked: nn.Module, exported: nn.Module, data_root: str,
                        batch_size: int, device: torch.device) -> dict[str, float]:
    """Both models on the test split of the checkpoint's data set (:func:`compare_on`).

    Args:
        ckpt: the loaded checkpoint (its ``config`` names the data set).
        masked, exported: the dense model with masks folded in, and the exported one.
        data_root: folder holding the data sets.
        batch_size: images per batch; device: where the models and batches go.

    Returns:
        ``{"top1_a", "top1_b", "max_diff", "count"}``: masked and exported top-1 (%),
        the largest |logit difference|, the number of test images.

    Raises:
        DataNotFoundError, ConfigError: the data set is not under ``data_root``, or a bad config.
    """
    from vit16.config import from_dict
    from vit16.data import build_data

    cfg = from_dict(ckpt["config"])
    cfg.data.val_size = 0  # only the test split is used
    data = build_data(cfg, device, data_root=data_root, micro_batch_size=batch_size)
    return compare_on(data.test, masked.to(device), exported.to(device))


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 export-pruned``: export, compare, write ``--out``.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on stderr).
    """
    args = parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint, "cpu", hint="pass a run's last.pt or a round's pruned.pt")
    model, arch = export_model(ckpt)
    dense = build_arch({"name": arch["name"], "kwargs": {k: v for k, v in arch["kwargs"].items()
                                                         if k not in ("block_heads", "block_mlp_dims")}})
    dense.load_state_dict(fold_masks(ckpt["model"])[0])
    dense.eval()
    device = choose_device(args.device)
    test = None
    if args.data_root:
        test = compare_on_test_set(ckpt, dense, model, args.data_root, args.batch_size, device)
    img = dense.patch_embed.img_size
    x = torch.randn(args.batch_size, 3, img, img, generator=torch.Generator().manual_seed(0)).to(device)
    dense.to(device)
    model.to(device)
    with torch.inference_mode():
        diff = (dense(x[:32]) - model(x[:32])).abs().max().item()
    speeds = {"dense": 0.0, "exported": 0.0}
    for _ in range(3):  # alternate, keep each model's best: both see the same machine state
        for name, m in (("dense", dense), ("exported", model)):
            speeds[name] = max(speeds[name], inference_speed(m, x, args.steps))
    n_dense = sum(t.numel() for t in dense.parameters())
    n_small = sum(t.numel() for t in model.parameters())
    save_checkpoint(args.out, {"model": model.state_dict(), "arch": arch, "config": ckpt["config"],
                               "num_classes": ckpt.get("num_classes"), "source": str(args.checkpoint)})
    heads, neurons = arch["kwargs"]["block_heads"], arch["kwargs"]["block_mlp_dims"]
    print(f"heads per block {' '.join(map(str, heads))} | MLP neurons per block "
          f"{' '.join(map(str, neurons))}")
    print(f"params: dense {n_dense:,} -> exported {n_small:,} ({100 * n_small / n_dense:.1f}%)")
    print(f"max |logit difference| exported vs masked: {diff:.2e} (batch of 32)")
    if test is not None:
        print(f"test set ({test['count']:,} images): masked top-1 {test['top1_a']:.2f}%, exported top-1 "
              f"{test['top1_b']:.2f}%, max |logit difference| {test['max_diff']:.2e}")
    print(f"inference on {args.device}, batch {args.batch_size}: dense {speeds['dense']:,.0f} images/s, "
          f"exported {speeds['exported']:,.0f} images/s ({speeds['exported'] / speeds['dense']:.2f}x)")
    print(f"wrote {args.out}")
    return 0
