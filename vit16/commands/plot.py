"""``python -m vit16 plot``: training curves (validation top-1 and training
loss against the epoch) of several runs in one figure, from their
``metrics.jsonl``, with the numbers in a CSV beside the PNG.

    python -m vit16 plot runs/quick runs/proxy_scratch --out results/curves.png
    python -m vit16 plot runs/a runs/b --labels "cls token,GAP" --out cls_vs_gap.png
    python -m vit16 plot --pruning runs/imp_quick runs/refill_quick --out results/pruning.png

With ``--pruning`` the runs are pruning runs (:mod:`vit16.prune`) and the
figure is test top-1 against sparsity, one point per round.

Needs matplotlib (``pip install -e ".[plots]"``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vit16.analysis.curves import read_metrics, read_rounds
from vit16.analysis.figures import plot_curves, plot_pruning, require_matplotlib
from vit16.analysis.output import write_csv
from vit16.commands.common import reports_user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage (exit code 2, argparse's message).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 plot",
                                description="Training curves of runs (metrics.jsonl) in one figure.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or metrics.jsonl files)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="figure to write; FILE.csv beside it")
    p.add_argument("--labels", help="comma-separated legend labels, one per run (default: directory names)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--pruning", action="store_true",
                   help="pruning runs: test top-1 against sparsity, a point per round")
    return p.parse_args(argv)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 plot``: write the figure and its CSV.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on stderr).
    """
    args = parse_args(argv)
    require_matplotlib()
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else [
        (Path(r).parent if Path(r).name == "metrics.jsonl" else Path(r)).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels has {len(labels)} labels for {len(args.runs)} runs")
    read = read_rounds if args.pruning else read_metrics
    runs = [(label, read(r)) for label, r in zip(labels, args.runs)]
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: expected a .png file")
    (plot_pruning if args.pruning else plot_curves)(runs, out, args.title)
    keys = (("round", "sparsity", "params", "val_top1", "test_top1") if args.pruning else
            ("epoch", "step", "train_loss", "val_top1", "val_top5", "val_loss"))
    write_csv(out.with_suffix(".csv"), ("run",) + keys,
              ([label] + [row.get(k) for k in keys] for label, rows in runs for row in rows))
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0
