"""``python -m vit16 inspect``: the paper's section 4.5 analyses of one model.

    python -m vit16 inspect runs/quick --out results/inspect_quick --data-root ../shared/data
    python -m vit16 inspect torchvision:ViT_B_16_Weights.IMAGENET1K_V1 --model vit_b16 --out insp

Writes into ``--out``, each PNG with its numbers beside it:

- ``attention_distance.png/.csv``: mean attention distance (pixels) of every
  head of every block on real images (Fig. 7 right);
- ``pos_embed_similarity.png/.csv``: cosine similarity of the position
  embeddings (Fig. 7 centre; learned 1-D or 2-D embeddings only);
- ``patch_embed_pca.png/.json``: first principal components of the
  patch-embedding filters (Fig. 7 left);
- ``attention_rollout.png/.json``: attention rollout maps of a few test
  images (Fig. 6);
- ``summary.json``.

``CKPT_OR_NAME``: a run directory, a vit16 checkpoint, or an ``init`` string
(``torchvision:``, ``timm:``, ``.npz``, state-dict file) with ``--model``.
Figures need matplotlib (``pip install -e ".[plots]"``); ``--no-plots``
writes only the numbers.
"""

from __future__ import annotations

import argparse

from vit16.commands.common import (
    add_device_argument,
    add_model_arguments,
    choose_device,
    reports_user_errors,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage (exit code 2, argparse's message).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 inspect",
                                description="Attention distance, position-embedding similarity, "
                                            "patch-embedding PCs and attention rollout of a ViT.")
    add_model_arguments(p, dataset_help="data set for the images")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the figures and numbers")
    p.add_argument("--split", choices=["test", "train"], default="test", help="images from (default: test)")
    p.add_argument("--images", type=int, default=256,
                   help="class-balanced images for the attention distance (0 = all; default %(default)s)")
    p.add_argument("--rollout-images", type=int, default=6, help="images in the rollout figure (default 6)")
    p.add_argument("--components", type=int, default=28, help="filter principal components (default 28)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    add_device_argument(p)
    p.add_argument("--no-plots", action="store_true", help="write only the CSV/JSON numbers (no matplotlib)")
    return p.parse_args(argv)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 inspect``: run the analyses into ``--out``, print a summary.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on stderr).
    """
    from vit16.analysis.figures import require_matplotlib
    from vit16.analysis.images import load_source
    from vit16.analysis.inspection import inspect_model
    from vit16.analysis.loading import load_model

    args = parse_args(argv)
    if not args.no_plots:
        require_matplotlib()  # before any work
    for name in ("images", "rollout_images", "components", "batch_size"):
        if getattr(args, name) < (0 if name == "images" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be >= {0 if name == 'images' else 1}")
    device = choose_device(args.device)
    lm = load_model(args.model_spec, args.model, args.dataset, device)
    source = load_source(lm.data, args.data_root)
    summary = inspect_model(lm, source, args.out, split=args.split, images=args.images,
                            rollout_images=args.rollout_images, components=args.components,
                            batch_size=args.batch_size, device=device, plots=not args.no_plots)
    dist = summary["attention_distance"]
    print(f"{summary['model']}: mean attention distance (pixels, min/mean/max over heads) "
          f"on {dist['images']} {args.split} images:")
    for i, (lo, mid, hi) in enumerate(zip(dist["per_layer_min_px"], dist["per_layer_mean_px"],
                                          dist["per_layer_max_px"]), start=1):
        print(f"  layer {i:2d}: {lo:6.1f} {mid:6.1f} {hi:6.1f}")
    print(f"wrote {', '.join(summary['files'])} to {args.out}")
    return 0
