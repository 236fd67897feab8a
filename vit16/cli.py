"""``train.py``: run one experiment of ``experiments.toml``, list them, or show
one resolved.

    python train.py small_vit_cifar --set optim.lr=3e-4 --data-root ../shared/data
    python train.py --dry-run vitb16_cifar_scratch
    python train.py --list
    torchrun --nproc_per_node 2 train.py quick --device cpu          # DDP, gloo
    python train.py --submit quick --sweep optim.lr=1e-3,3e-4        # Slurm job array
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from vit16.config import ConfigError, ExperimentConfig, load_tables, resolve
from vit16.checkpoint import CheckpointError
from vit16.registry import UnknownNameError
from vit16.trainer import ResumeMismatchError, TrainingDivergedError

# Errors that mean bad input (config, names, files), reported as one line;
# VIT16_DEBUG=1 shows the traceback instead.
USER_ERRORS = (ValueError, UnknownNameError, FileNotFoundError, CheckpointError,
               ResumeMismatchError, TrainingDivergedError)

DEFAULT_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments.toml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
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
                   help="with --submit: one job array over these values, one run directory per "
                        "point (repeatable: the grid of all --sweep keys)")
    p.add_argument("--local", action="store_true",
                   help="with --submit: run the job on this machine with submitit's local "
                        "executor instead of Slurm")
    return p.parse_args(argv)


def toml_dumps(d: dict, prefix: str = "") -> str:
    """A small TOML writer for a resolved config (scalars, lists, nested tables)."""

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


def results_file(cfg: ExperimentConfig, given: str | None) -> str:
    """``--results``, else the default table of ``cfg``'s kind of run."""
    if given:
        return given
    from vit16.prune import DEFAULT_RESULTS as PRUNING_RESULTS

    return PRUNING_RESULTS if cfg.prune.method else "results/RESULTS.md"


def run_experiment(cfg: ExperimentConfig, out_dir: str, **kwargs) -> object:
    """Train ``cfg`` (:func:`vit16.trainer.train`), or run its pruning rounds
    (:func:`vit16.prune.run_pruning`) when ``cfg.prune.method`` is set. Keyword
    arguments as theirs (``data_root``, ``device``, ``resume``, ``results_file``, ``overrides``)."""
    if cfg.prune.method:
        from vit16.prune import run_pruning

        return run_pruning(cfg, out_dir, **kwargs)
    from vit16.trainer import train

    return train(cfg, out_dir, **kwargs)


def count_params(cfg: ExperimentConfig, num_classes: int | None = None) -> int:
    """Parameters of the experiment's model, built on the meta device (no memory, no init).

    Raises:
        vit16.UnknownNameError: unknown model name.
    """
    import vit16

    kwargs = cfg.model.overrides()
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    with torch.device("meta"):
        model = vit16.MODELS.build(cfg.model.name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def print_list(tables: dict) -> None:
    """Rich tables of the experiments and of every registered model, data set and schedule."""
    from rich.console import Console
    from rich.table import Table

    import vit16

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # no truncated cells in logs and pipes
    table = Table(title="Experiments (experiments.toml)")
    for col in ("experiment", "model", "params", "dataset", "img", "epochs", "batch", "lr", "prune"):
        table.add_column(col, no_wrap=True)
    for name in tables:
        cfg = resolve(name, tables)
        prune = f"{cfg.prune.method} x{cfg.prune.rounds}" if cfg.prune.method else ""
        table.add_row(name, cfg.model.name, f"{count_params(cfg) / 1e6:.2f}M", cfg.data.name,
                      str(cfg.data.img_size), str(cfg.epochs), str(cfg.batch_size),
                      f"{cfg.optim.lr:g}", prune)
    console.print(table)
    for registry in (vit16.MODELS, vit16.DATASETS, vit16.SCHEDULES):
        console.print(f"[bold]{registry.kind}s:[/bold] {', '.join(registry.names())}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``train.py``. Returns the process exit code; bad input
    prints one ``error:`` line to stderr and returns 2."""
    args = parse_args(argv)
    import vit16  # registers models, data sets, schedules

    try:
        tables = load_tables(args.experiments)
        if args.list:
            print_list(tables)
            return 0
        if not args.name:
            raise ConfigError("name an experiment (python train.py --list shows them)")
        if (args.sweep or args.local) and not args.submit:
            raise ConfigError(f"{'--sweep' if args.sweep else '--local'} needs --submit "
                              f"(python train.py --submit {args.name or 'NAME'} ...)")
        cfg = resolve(args.name, tables, args.overrides)
        for registry, name in ((vit16.MODELS, cfg.model.name), (vit16.DATASETS, cfg.data.name),
                               (vit16.SCHEDULES, cfg.schedule.name)):
            registry.get(name)  # unknown names fail here, before any work
        if cfg.prune.method:
            from vit16.prune import check_prune_config

            check_prune_config(cfg)
        if args.dry_run:
            print(f"# experiment {cfg.name}: {count_params(cfg) / 1e6:.2f}M parameters")
            print(toml_dumps(cfg.to_dict()), end="")
            return 0
        if args.submit:  # the job may run where CUDA is, so --device is not checked here
            from vit16.slurm import describe, plan_runs, submit

            runs, folder = plan_runs(args.name, tables, args.overrides, args.sweep, args.out,
                                     resume=not args.no_resume)
            submitted = submit(runs, folder, local=args.local, data_root=args.data_root,
                               device=args.device, results_file=results_file(cfg, args.results))
            print(describe(submitted), flush=True)
            return 0
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        run_experiment(cfg, args.out or f"runs/{cfg.name}", data_root=args.data_root, device=device,
                       resume=not args.no_resume, results_file=results_file(cfg, args.results),
                       overrides=args.overrides)
        return 0
    except USER_ERRORS as err:
        if os.environ.get("VIT16_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
