"""What one command runs: a single experiment, or the grid of a ``--sweep``
(one run directory per point), each a :class:`RunSpec` checked before
anything runs. ``python train.py NAME --sweep KEY=V1,V2`` runs the points
one after another on this machine; with ``--submit`` they are one Slurm job
array (:mod:`vit16.slurm`).

    runs, log_folder = plan_runs("quick", tables, [], ["seed=0,1,2"], None)
    # runs/quick/seed=0, runs/quick/seed=1, runs/quick/seed=2
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from vit16.config import ConfigError, ExperimentConfig, resolve
from vit16.experiment import check_experiment

__all__ = ["RunSpec", "SweepError", "parse_sweep", "plan_runs"]


class SweepError(ConfigError):
    """A bad ``--sweep`` item; ``str(err)`` is one line saying why and the form expected."""


@dataclasses.dataclass
class RunSpec:
    """One run of a submission: the resolved config and where it writes."""

    cfg: ExperimentConfig
    out_dir: str
    overrides: list[str]
    resume: bool = True



def _split_values(raw: str) -> list[str]:
    """Split ``a,b,[1,2],"x,y"`` at the commas outside brackets and quotes."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_sweep(items: list[str]) -> list[list[str]]:
    """``--sweep`` items (``KEY=V1,V2``) -> the grid's points, each a list of
    ``--set`` items (the cartesian product, first key outermost).

    Raises:
        SweepError: an item without ``=``, an empty value, or a key swept twice.
    """
    axes, keys = [], []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"--sweep {item!r}: expected KEY=V1,V2,..., e.g. --sweep optim.lr=1e-3,3e-4")
        values = _split_values(raw)
        if any(v == "" for v in values):
            raise SweepError(f"--sweep {item!r}: empty value; expected KEY=V1,V2,...")
        if key in keys:
            raise SweepError(f"--sweep {key}: given twice; list every value in one --sweep {key}=V1,V2")
        keys.append(key)
        axes.append([f"{key}={v}" for v in values])
    return [list(point) for point in itertools.product(*axes)] if axes else [[]]


def _point_dir(point: list[str]) -> str:
    """A run directory name for a sweep point: ``optim.lr=1e-3,model.drop_path=0``."""
    name = ",".join(point)
    return "".join(c if c.isalnum() or c in "._=,+-" else "_" for c in name)


def plan_runs(name: str, tables: dict, overrides: list[str], sweeps: list[str], out: str | None,
              resume: bool = True) -> tuple[list[RunSpec], Path]:
    """The runs of one command and the submitit log folder of a ``--submit``.

    One run: ``out`` (default ``runs/NAME``), logs in ``OUT/submitit``. A
    sweep: ``OUT/<point>`` per point, logs in ``OUT/submitit``. Paths are as
    given (relative to the working directory; :func:`vit16.slurm.submit`
    makes them absolute for the job). Every point is resolved and checked
    (:func:`vit16.experiment.check_experiment`) here, before anything runs.

    Raises:
        ConfigError: a bad key or value in ``--set`` / ``--sweep`` / the table.
        SweepError: a bad ``--sweep``.
    """
    base = Path(out or f"runs/{name}")
    points = parse_sweep(sweeps)
    runs = []
    for point in points:
        items = list(overrides) + point
        cfg = resolve(name, tables, items)
        check_experiment(cfg)  # every point, here: not on the cluster, not mid-sweep
        out_dir = base / _point_dir(point) if sweeps else base
        runs.append(RunSpec(cfg, str(out_dir), items, resume))
    return runs, base / "submitit"
