"""The files of one run directory, and owning it while a run goes on.

    out_dir/last.pt           everything needed to resume (:mod:`vit16.runstate`)
    out_dir/best.pt           weights of the best validation top-1
    out_dir/metrics.jsonl     one line per epoch
    out_dir/summary.json      the finished run's summary
    out_dir/results_row.json  its results-table row, kept until a table holds it
    out_dir/tensorboard/      TensorBoard event files (log.tensorboard = true, :mod:`vit16.tblog`)
    out_dir/.lock             held by the process that owns the directory

Only rank 0 touches these files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch

from vit16.checkpoint import CheckpointError, load_checkpoint
from vit16.config import ExperimentConfig, from_dict
from vit16.files import (PathNotWritableError, RunLock, check_writable_dir, check_writable_file,
                         os_error_line)
from vit16.results import append_result, format_row
from vit16.runstate import RESUME_KEYS, ResumeMismatchError, config_diff

__all__ = ["RunDir"]


class RunDir:
    """The files of one run directory (module docstring)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = Path(out_dir)
        self.last = self.path / "last.pt"
        self.best = self.path / "best.pt"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.row = self.path / "results_row.json"
        self.tensorboard = self.path / "tensorboard"

    @contextlib.contextmanager
    def claim(self, results_file: str | os.PathLike | None = None) -> Iterator["RunDir"]:
        """Own the run directory while the block runs (rank 0): check that it and
        ``results_file`` are writable, then hold its :class:`~vit16.files.RunLock`.

        Raises:
            PathNotWritableError: the directory or the table cannot be written.
            RunDirBusyError: another process owns the directory (names its PID).
        """
        check_writable_dir(self.path, "--out")
        if results_file is not None:
            check_writable_file(results_file, "--results")
        with RunLock(self.path):
            yield self

    def read_resumable(self, cfg: ExperimentConfig) -> dict[str, Any] | None:
        """``last.pt`` loaded on the CPU and checked against ``cfg``, or ``None`` without one.

        Raises:
            CheckpointError: ``last.pt`` is truncated, corrupt, foreign or not resumable.
            ResumeMismatchError: it was written with a different config.
        """
        if not self.last.exists():
            return None
        ckpt = load_checkpoint(self.last, "cpu")
        missing = sorted(RESUME_KEYS - set(ckpt))
        if missing:
            raise CheckpointError(
                f"{self.last} is a vit16 checkpoint but not a resumable last.pt (missing "
                f"{', '.join(missing)}); delete it or pass --no-resume"
            )
        diff = config_diff(ckpt.get("config", {}), cfg.to_dict())
        if diff and all(d.split(":")[0] in SHAPE_KEYS for d in diff) and _same_model(ckpt, cfg):
            diff = []  # e.g. quick's model renamed: vit_tiny + size overrides -> vit_quick
        if diff:
            raise ResumeMismatchError(
                f"{self.last} was written with a different config ({len(diff)} differing: "
                f"{'; '.join(diff)}); use a new --out directory, or --no-resume to start over"
            )
        return ckpt

    def finished_summary(self, cfg: ExperimentConfig, ckpt: dict[str, Any]) -> dict[str, Any] | None:
        """The ``summary.json`` of a run that ``ckpt`` shows finished, else ``None``."""
        target = cfg.epochs * ckpt.get("steps_per_epoch", 0)
        if cfg.max_steps > 0:
            target = min(target, cfg.max_steps)
        if ckpt["step"] < target or not self.summary.exists():
            return None
        summary = json.loads(self.summary.read_text())
        return summary if summary.get("steps") == ckpt["step"] else None

    def prepare(self, resumed_epochs: int | None) -> None:
        """Before training (rank 0): trim ``metrics.jsonl`` to the ``resumed_epochs``
        done, or (``None``: a new run) delete a previous run's files; remove the
        temporary files of a save that a kill interrupted."""
        if resumed_epochs is not None:
            self._trim_metrics(resumed_epochs)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            for stale in (self.last, self.best, self.metrics, self.summary, self.row):
                stale.unlink(missing_ok=True)
            shutil.rmtree(self.tensorboard, ignore_errors=True)
        for stale in [*self.path.glob(".last.pt.*.tmp"), *self.path.glob(".best.pt.*.tmp")]:
            stale.unlink(missing_ok=True)

    def _trim_metrics(self, keep_epochs: int) -> None:
        """Keep only the rows of epochs ``<= keep_epochs`` (atomic rewrite)."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                if line.strip() and json.loads(line).get("epoch", math.inf) <= keep_epochs:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        _write_atomic(self.metrics, "".join(line + "\n" for line in kept))

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's row to ``metrics.jsonl`` (flushed and fsync'ed)."""
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        _write_atomic(self.summary, json.dumps(summary, indent=2) + "\n")

    def save_row(self, row: dict[str, Any]) -> None:
        """Keep the finished run's results row (with its ``date``) in ``results_row.json``,
        so that a row that could not be appended is appended by a later invocation."""
        _write_atomic(self.row, json.dumps(row, indent=2) + "\n")

    def append_row(self, results_file: str | os.PathLike) -> bool:
        """Append the kept results row to ``results_file`` unless that table
        already holds it. Returns whether a row was appended.

        Raises:
            PathNotWritableError: the table cannot be written (names it, and
                that the row is kept and appended by the next run of the same command).
        """
        if not self.row.exists():
            return False
        row = json.loads(self.row.read_text())
        path = Path(results_file)
        if path.is_file() and format_row(row) in path.read_text(encoding="utf-8"):
            return False
        try:
            append_result(path, row)
        except OSError as err:
            raise PathNotWritableError(
                f"the results row could not be appended to {path} ({os_error_line(err)}); it is "
                f"kept in {self.row} and appended when the same command runs again (or give "
                "another --results)"
            ) from None
        return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


SHAPE_KEYS = frozenset({"model.name", "model.img_size", "model.patch_size", "model.embed_dim",
                        "model.depth", "model.num_heads", "model.mlp_dim", "model.mlp_ratio"})
"""Model keys that may differ between a checkpoint and a resuming run when both
build the same network (:func:`_same_model`): a registered name standing for
size overrides. Every other key (drop_path, pool, ...) must be equal."""


def _same_model(ckpt: dict[str, Any], cfg: ExperimentConfig) -> bool:
    """Whether the checkpoint's ``[NAME.model]`` and ``cfg``'s build the same
    network (the same modules and parameter shapes, built on the meta device),
    so that a model renamed between versions still resumes."""
    from vit16.registry import MODELS

    def build(model_cfg) -> torch.nn.Module:
        kwargs = {"num_classes": ckpt.get("num_classes", 1000), **model_cfg.overrides()}
        with torch.device("meta"):
            return MODELS.build(model_cfg.name, **kwargs)

    try:
        old, new = build(from_dict(ckpt["config"]).model), build(cfg.model)
    except (TypeError, ValueError, KeyError):
        return False
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (old, new)]
    return repr(old) == repr(new) and shapes[0] == shapes[1]
