"""``python -m vit16 predict WEIGHTS IMAGE_OR_FOLDER...``: the top classes and
their probabilities for images of any size.

    python -m vit16 predict runs/quick photos/ cat.png --topk 3
    python -m vit16 predict torchvision:ViT_B_16_Weights.IMAGENET1K_V1 --model vit_b16 \\
        --dataset imagenet photos/ --json predictions.json

Each image goes through the model's evaluation transform (resize and centre
crop to its input size, then the data set's mean/std). Folders are searched
(recursively) for .jpg .jpeg .png .bmp .webp files. The class names are the
data set's (read from ``--data-root`` when it is there; CIFAR-10's and
ImageNet's are built in). A file that does not decode is one line on stderr
naming it; the others are still predicted. Exit code 0 when at least one
image was predicted, 2 when none was.
"""

from __future__ import annotations

import argparse
import sys

from vit16.commands.common import add_device_argument, add_model_arguments, choose_device, reports_user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage (exit code 2, argparse's message).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 predict",
                                description="Class probabilities of a model on image files.")
    add_model_arguments(p, dataset_help="data set whose classes the model predicts")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and folders of images")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (default %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the predictions to this JSON file")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward (default %(default)s)")
    add_device_argument(p)
    return p.parse_args(argv)


def print_table(rows: list[dict], topk: int) -> None:
    """One table row per image: the file and its top classes with probabilities (%)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # no truncated cells in logs and pipes
    table = Table()
    table.add_column("image", overflow="fold")
    for i in range(1, min(topk, max((len(r["top"]) for r in rows), default=1)) + 1):
        table.add_column(f"top-{i}", no_wrap=True)
    for r in rows:
        table.add_row(r["file"], *(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))
    console.print(table)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 predict``: predict, print the table, write ``--json``.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0 when at least one image was predicted, 2 for
        bad input or when no image could be predicted (one line per problem on stderr).
    """
    from vit16.analysis.loading import load_model
    from vit16.analysis.output import write_json
    from vit16.analysis.prediction import dataset_traits, find_images, predict_files

    args = parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        raise ValueError("--topk and --batch-size must be >= 1")
    files, problems = find_images(args.images)
    device = choose_device(args.device)
    lm = load_model(args.model_spec, args.model, args.dataset, device, vit_only=False)
    num_classes = getattr(lm.model, "num_classes", None)
    traits = dataset_traits(lm.data, args.data_root, num_classes if isinstance(num_classes, int) else None)
    rows, bad = predict_files(lm.model, files, traits, lm.data.img_size, topk=args.topk,
                              batch_size=args.batch_size, device=device)
    for line in problems + bad:
        print(f"skipped: {line}", file=sys.stderr)
    if traits.note:
        print(f"note: {traits.note}", file=sys.stderr)
    if not rows:
        print("error: no image could be predicted; pass image files or folders holding "
              ".jpg/.jpeg/.png/.bmp/.webp files", file=sys.stderr)
        return 2
    print_table(rows, args.topk)
    if args.json:
        path = write_json(args.json, {"weights": lm.source, "dataset": lm.data.name,
                                      "img_size": lm.data.img_size, "predictions": rows,
                                      "failed": problems + bad})
        print(f"wrote {path}")
    return 0
