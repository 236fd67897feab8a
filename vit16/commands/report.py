"""``python -m vit16 report``: mean +- std over seeds from a results table.

    python -m vit16 report                                   # results/RESULTS.md
    python -m vit16 report results/RESULTS.md --experiment quick resnet_quick
    python -m vit16 report --group-by data.fraction --experiment quick resnet_quick

Rows of the same experiment, model and ``--set`` overrides that differ only
in ``seed=`` are one group; per group the table gives n, the seeds, and the
mean, sample std and min-max of val and test top-1 (:mod:`vit16.report`).
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

from vit16.commands.common import reports_user_errors
from vit16.config import ConfigError, load_tables, resolve
from vit16.experiment import DEFAULT_EXPERIMENTS, TRAIN_RESULTS
from vit16.report import METRICS, report
from vit16.results import COLUMNS, read_rows


def table_defaults(experiments_file: str | Path):
    """``default(experiment, key)`` for :func:`vit16.report.group_rows`: the
    value of the dotted ``key`` (``data.fraction``, ``seed``) in the resolved
    table of ``experiment`` in ``experiments_file``; ``None`` when the file,
    the experiment or the key is not there."""
    try:
        tables = load_tables(experiments_file)
    except ConfigError:
        tables = {}

    @lru_cache(maxsize=None)
    def config(experiment: str):
        try:
            return resolve(experiment, tables)
        except ConfigError:
            return None

    def default(experiment: str, key: str) -> object:
        value = config(experiment)
        for part in key.split("."):
            value = getattr(value, part, None)
        return value

    return default


def parse_metrics(text: str) -> list[tuple[str, str]]:
    """``"val_top1,test_top1_best"`` -> (key, title) pairs of :data:`vit16.results.COLUMNS`.

    Raises:
        ValueError: a name that is not a column key (lists the valid ones).
    """
    titles = dict(COLUMNS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in titles]
    if unknown or not names:
        raise ValueError(f"--metrics {text!r}: unknown column {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(k for k in titles if 'top1' in k)}")
    return [(n, titles[n]) for n in names]


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 report``: print the grouped markdown table.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on
        stderr: no such table, no rows, an unknown experiment or metric).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 report",
                                description="n, mean, std and min-max of top-1 over the seeds of each "
                                            "experiment and override set of a results table.")
    p.add_argument("results", nargs="?", default=TRAIN_RESULTS, metavar="RESULTS.md",
                   help=f"the results table (default: {TRAIN_RESULTS})")
    p.add_argument("--group-by", metavar="KEY",
                   help="an override key whose values are groups and a column of their own (data.fraction)")
    p.add_argument("--experiment", nargs="+", action="extend", default=[], metavar="NAME",
                   help="only these experiments (default: all)")
    p.add_argument("--metrics", default=",".join(k for k, _ in METRICS),
                   help="comma-separated results columns to summarise (default: %(default)s)")
    p.add_argument("--experiments", default=str(DEFAULT_EXPERIMENTS),
                   help="experiments file giving the value of --group-by KEY and the seed of rows "
                        "that do not set them (default: the repository's experiments.toml)")
    args = p.parse_args(argv)
    metrics = parse_metrics(args.metrics)
    path = Path(args.results)
    if not path.is_file():
        raise FileNotFoundError(f"no results table {path}: run an experiment first "
                                "(python train.py quick) or pass the table's path")
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path} has no results rows; run an experiment first (python train.py quick)")
    print(report(rows, args.group_by, args.experiment, metrics, table_defaults(args.experiments)), end="")
    return 0
