"""The shared results table: one markdown row per finished run.

Many runs (processes, SLURM jobs) may finish at the same time and append to
the same file: :func:`append_result` holds an exclusive ``fcntl.flock`` on a
``.lock`` file beside the table while it writes, so rows never interleave.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "COLUMNS",
    "PRUNE_COLUMNS",
    "append_result",
    "device_name",
    "format_duration",
    "format_row",
    "header",
    "read_rows",
    "utc_date",
]

COLUMNS: tuple[tuple[str, str], ...] = (
    ("date", "date (UTC)"),
    ("experiment", "experiment"),
    ("model", "model"),
    ("params", "params (M)"),
    ("dataset", "dataset"),
    ("epochs", "epochs"),
    ("val_top1", "val top-1 %"),
    ("test_top1", "test top-1 % (final)"),
    ("test_top1_best", "test top-1 % (best-val ckpt)"),
    ("test_top1_ema", "test top-1 % (EMA)"),
    ("best_weights", "best-val weights"),
    ("wall_time_s", "wall time"),
    ("images_per_s", "train images/s"),
    ("device", "device"),
    ("git_commit", "git commit"),
    ("overrides", "overrides"),
    ("out_dir", "run dir"),
    ("world_size", "ranks"),
)
"""(row key, column header) in table order."""

PRUNE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("date", "date (UTC)"),
    ("experiment", "experiment"),
    ("method", "method"),
    ("round", "round"),
    ("sparsity", "sparsity % (qkv, proj, fc1, fc2)"),
    ("heads", "heads per block"),
    ("neurons", "MLP neurons per block"),
    ("params", "params (M, after export)"),
    ("epochs", "epochs"),
    ("val_top1", "val top-1 %"),
    ("test_top1", "test top-1 %"),
    ("wall_time_s", "wall time"),
    ("device", "device"),
    ("git_commit", "git commit"),
    ("overrides", "overrides"),
)
"""The pruning table (``results/PRUNING.md``): one row per pruning round
(:mod:`vit16.prune`); ``sparsity`` is a % (float, 2 decimals), ``heads`` and
``neurons`` strings such as ``"3 3 2"``."""


def utc_date() -> str:
    """Now in UTC as the tables' ``date`` cell: ``YYYY-MM-DD HH:MM``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def header(columns: tuple[tuple[str, str], ...] = COLUMNS) -> str:
    """The two header lines of the table (column names and the ``---`` rule), with newline."""
    names = [h for _, h in columns]
    return "| " + " | ".join(names) + " |\n" + "|" + "|".join("---" for _ in names) + "|\n"


def format_duration(seconds: float) -> str:
    """``552.3`` -> ``"9m 12s"``; ``"1h 02m"`` from an hour up; ``"45s"`` under a minute."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def device_name(device: torch.device | str) -> str:
    """Human name of ``device``: ``"CPU (2 threads)"`` or ``torch.cuda.get_device_name()``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"CPU ({n} thread{'s' if n > 1 else ''})"
    return device.type.upper()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _pct(value: Any) -> str:
    return "-" if value is None else (f"{value:.2f}" if isinstance(value, (int, float)) else value)


def _epochs(value: Any) -> Any:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    return value


def format_row(row: dict[str, Any], columns: tuple[tuple[str, str], ...] = COLUMNS) -> str:
    """One table line (with newline) for ``row``.

    Keys: those of ``columns`` (:data:`COLUMNS` or :data:`PRUNE_COLUMNS`); numbers are formatted, strings are used as given:

    * ``date``: optional, default now (UTC, ``YYYY-MM-DD HH:MM``);
    * ``params``: parameter count (int) -> millions with 2 decimals;
    * ``epochs``: int, or float for a partial run (2 decimals);
    * ``val_top1``, ``test_top1``, ``test_top1_best``, ``sparsity``: % (float, 2 decimals; ``None`` -> ``-``);
    * ``wall_time_s``: seconds (float) -> ``"9m 12s"``;
    * ``images_per_s``: training throughput, images/s (float, rounded);
    * ``device``, ``experiment``, ``model``, ``dataset``, ``git_commit``: strings;
    * ``overrides``: the ``--set`` items (list of str), joined with spaces.

    ``|`` inside a value is escaped as ``\\|``.

    Raises:
        ValueError: a missing or unknown key (names them).
    """
    keys = [k for k, _ in columns]
    unknown = sorted(set(row) - set(keys))
    missing = [k for k in keys if k not in row and k != "date"]
    if unknown or missing:
        raise ValueError(
            f"results row: unknown keys {unknown}, missing keys {missing}; expected {keys}"
        )
    r = dict(row)
    if r.get("date") is None:
        r["date"] = utc_date()
    if isinstance(r.get("params"), (int, float)):
        r["params"] = f"{r['params'] / 1e6:.2f}"
    if "epochs" in r:
        r["epochs"] = _epochs(r["epochs"])
    for k in ("val_top1", "test_top1", "test_top1_best", "test_top1_ema", "sparsity"):
        if k in r:
            r[k] = _pct(r[k])
    if isinstance(r.get("wall_time_s"), (int, float)):
        r["wall_time_s"] = format_duration(r["wall_time_s"])
    if isinstance(r.get("images_per_s"), (int, float)):
        r["images_per_s"] = f"{r['images_per_s']:.0f}"
    if not isinstance(r["overrides"], str):
        r["overrides"] = " ".join(str(o) for o in (r["overrides"] or ()))
    return "| " + " | ".join(_cell(r[k]) for k in keys) + " |\n"


def append_result(path: str | os.PathLike, row: dict[str, Any],
                  columns: tuple[tuple[str, str], ...] = COLUMNS) -> Path:
    """Append one row (:func:`format_row` with ``columns``) to the markdown table at ``path``.

    Creates the file (and its directory) with the header when it is absent or
    empty. The whole check-and-append runs under an exclusive ``fcntl.flock``
    on ``<path>.lock``, so concurrent processes never interleave or duplicate
    the header. The row is flushed and fsync'ed before the lock is released.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a bad row (see :func:`format_row`).
        OSError: the file cannot be written.
    """
    path = Path(path)
    line = format_row(row, columns)  # validate before touching the file
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, "a+", encoding="utf-8") as f:
                f.seek(0)
                f.write(_appended_text(f.read(), line, columns))  # "a+" writes at the end
                f.flush()
                os.fsync(f.fileno())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def _appended_text(existing: str, line: str, columns: tuple[tuple[str, str], ...]) -> str:
    """What to append to a table file holding ``existing`` for one row ``line``:
    the header first when the file is empty or its last table has other
    columns (a new table begins), a newline when the file lacks its last one."""
    if not existing:
        return header(columns) + line
    sep = "" if existing.endswith("\n") else "\n"
    if _last_header(existing) != header(columns).splitlines()[0]:
        return sep + "\n" + header(columns) + line
    return sep + line


def _last_header(text: str) -> str | None:
    """The header line of the last table in ``text`` (the line above its ``|---`` rule)."""
    lines = text.splitlines()
    for i in range(len(lines) - 2, -1, -1):
        if lines[i + 1].startswith("|---") and lines[i].startswith("|"):
            return lines[i]
    return None


def read_rows(path: str | os.PathLike,
              columns: tuple[tuple[str, str], ...] = COLUMNS) -> list[dict[str, str]]:
    """The data rows of every table in the file, as dicts keyed like ``columns``
    (cells as strings, escapes undone). Each row is read by the header of its
    own table, so rows of a table written with fewer columns have ``""`` for
    the missing ones; lines that are not table rows are skipped."""
    keys = [k for k, _ in columns]
    titles = {title: key for key, title in columns}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows, current = [], None
    for i, text in enumerate(lines):
        if not text.startswith("|") or text.startswith("|---"):
            continue
        cells = _split_cells(text)
        if i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            current = [titles.get(c) for c in cells]
        elif current is not None and len(cells) == len(current) and "experiment" in current:
            row = dict.fromkeys(keys, "")
            row.update({k: c for k, c in zip(current, cells) if k})
            rows.append(row)
    return rows


def _split_cells(line: str) -> list[str]:
    cells, cur, i = [], [], 1  # skip the leading "|"
    body = line.rstrip()
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            cur.append(body[i + 1])
            i += 2
            continue
        if ch == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    return cells
