"""``python -m vit16 train`` (``train.py``): run one experiment of
``experiments.toml``, list them, or show one resolved.

    python train.py small_vit_cifar --set optim.lr=3e-4 --data-root ../shared/data
    python train.py --dry-run vitb16_cifar_scratch
    python train.py --list
    torchrun --nproc_per_node 2 train.py quick --device cpu          # DDP, gloo
    python train.py quick --sweep seed=0,1,2                         # three seeds, here
    python train.py --submit quick --sweep optim.lr=1e-3,3e-4        # Slurm job array
"""

from __future__ import annotations

import argparse
import sys

from vit16 import distributed
from vit16.commands.common import add_device_argument, choose_device, reports_user_errors
from vit16.config import ConfigError, ExperimentConfig, load_tables, resolve
from vit16.experiment import (DEFAULT_EXPERIMENTS, check_experiment, default_results_file,
                              run_experiment)
from vit16.preflight import check_model_options
from vit16.registry import UnknownNameError
from vit16.sweep import plan_runs

__all__ = ["count_params", "main", "parse_args", "print_list", "toml_dumps"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``train.py``'s arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage (exit code 2, argparse's message).
    """
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a Vision Transformer experiment from experiments.toml.",
    )
    p.add_argument("name", nargs="?", help="experiment (a table of experiments.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, value parsed as TOML (e.g. --set optim.lr=3e-4); repeatable")
    p.add_argument("--data-root", help="folder holding the data sets (default: the table's data.root, "
                   "else $VIT16_DATA, else ./data)")
    p.add_argument("--out", help="run directory (default: runs/NAME)")
    p.add_argument("--results", help="markdown table that gets one row per finished run (default: "
                   "results/RESULTS.md; results/PRUNING.md, one row per round, for a [NAME.prune] table)")
    add_device_argument(p)
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if the run directory has last.pt")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list", action="store_true", help="list experiments and registered plugins")
    p.add_argument("--experiments", default=str(DEFAULT_EXPERIMENTS),
                   help="experiment file (default: the repository's experiments.toml)")
    p.add_argument("--submit", action="store_true",
                   help="submit the run as a Slurm job (submitit; shape from the [NAME.slurm] "
                        "table) and return at once")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="one run per value, each in its own run directory (OUT/KEY=V), one "
                        "after another on this machine (a rerun skips finished points), or one "
                        "job array with --submit; repeatable: the grid of all --sweep keys")
    p.add_argument("--local", action="store_true",
                   help="with --submit: run the job on this machine with submitit's local "
                        "executor instead of Slurm")
    return p.parse_args(argv)


def toml_dumps(d: dict, prefix: str = "") -> str:
    """A small TOML writer for a resolved config.

    Args:
        d: scalars, lists and nested tables (``ExperimentConfig.to_dict()``).
        prefix: dotted name of the table ``d`` is (for its sub-table headers).

    Returns:
        the TOML text, ending in a newline.
    """

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            lines += ["", f"[{name}]", toml_dumps(v, name).rstrip("\n")]
    return "\n".join(lines) + "\n"


def count_params(cfg: ExperimentConfig, num_classes: int | None = None) -> int:
    """Parameters of the experiment's model, built on the meta device (no memory, no init).

    Args:
        cfg: the resolved experiment.
        num_classes: classes of the head when ``cfg.model`` does not set them.

    Returns:
        the number of parameters.

    Raises:
        vit16.UnknownNameError: unknown model name.
        ConfigError: the builder refuses the ``[NAME.model]`` options
            (:func:`vit16.preflight.check_model_options`).
    """
    model = check_model_options(cfg, num_classes)
    return sum(p.numel() for p in model.parameters())


def print_list(tables: dict) -> list[str]:
    """Print rich tables of the experiments and of every registered model, data set and schedule.

    Args:
        tables: the experiment tables (:func:`vit16.config.load_tables`).

    Returns:
        one line per table that does not resolve (its name and the error);
        the others are listed.
    """
    from rich.console import Console
    from rich.table import Table

    import vit16

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # no truncated cells in logs and pipes
    table = Table(title="Experiments (experiments.toml)")
    for col in ("experiment", "model", "params", "dataset", "img", "epochs", "batch", "lr", "prune"):
        table.add_column(col, no_wrap=True)
    broken = []
    for name in tables:
        try:
            cfg = resolve(name, tables)
            params = count_params(cfg)
        except (ConfigError, UnknownNameError) as err:
            broken.append(f"table {name!r} does not resolve: {err}")
            continue
        prune = f"{cfg.prune.method} x{cfg.prune.rounds}" if cfg.prune.method else ""
        table.add_row(name, cfg.model.name, f"{params / 1e6:.2f}M", cfg.data.name,
                      str(cfg.data.img_size), str(cfg.epochs), str(cfg.batch_size),
                      f"{cfg.optim.lr:g}", prune)
    console.print(table)
    for registry in (vit16.MODELS, vit16.DATASETS, vit16.SCHEDULES):
        console.print(f"[bold]{registry.kind}s:[/bold] {', '.join(registry.names())}")
    return broken


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``train.py`` and ``python -m vit16 train``.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0, or 2 for bad input (one ``error:`` line on stderr).
    """
    args = parse_args(argv)
    tables = load_tables(args.experiments)
    if args.list:
        broken = print_list(tables)
        for line in broken:
            print(f"error: {line}", file=sys.stderr)
        return 2 if broken else 0
    if not args.name:
        raise ConfigError("name an experiment (python train.py --list shows them)")
    if args.local and not args.submit:
        raise ConfigError(f"--local needs --submit (python train.py --submit {args.name} --local)")
    cfg = resolve(args.name, tables, args.overrides)
    check_experiment(cfg)
    if args.dry_run:
        print(f"# experiment {cfg.name}: {count_params(cfg) / 1e6:.2f}M parameters")
        print(toml_dumps(cfg.to_dict()), end="")
        return 0
    results = args.results or default_results_file(cfg)
    runs, folder = plan_runs(args.name, tables, args.overrides, args.sweep, args.out,
                             resume=not args.no_resume)  # every sweep point checked here
    if args.submit:  # the job may run where CUDA is, so --device is not checked here
        from vit16.data.presence import check_present
        from vit16.data.roots import resolve_data_root
        from vit16.slurm import describe, submit

        for run in runs:  # a job that would fail on missing data is never queued
            check_present(run.cfg.data, resolve_data_root(args.data_root, run.cfg.data.root), args.name)

        submitted = submit(runs, folder, local=args.local, data_root=args.data_root,
                           device=args.device, results_file=results)
        print(describe(submitted), flush=True)
        return 0
    device = choose_device(args.device)
    for i, run in enumerate(runs):  # a sweep: one point after another, each resumable
        if args.sweep:
            print(f"sweep point {i + 1}/{len(runs)}: {' '.join(run.overrides)} -> {run.out_dir}",
                  flush=True)
        run_experiment(run.cfg, run.out_dir, data_root=args.data_root, device=device,
                       resume=run.resume, results_file=results, overrides=run.overrides)
    distributed.finish()  # under torchrun: the ranks leave together
    return 0
