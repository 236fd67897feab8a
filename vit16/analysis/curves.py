"""Training curves: the rows of a run's ``metrics.jsonl`` (one JSON object
per epoch, written by :func:`vit16.trainer.train`)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_metrics", "read_rounds"]


def read_metrics(run: str | Path) -> list[dict]:
    """The per-epoch rows of a run (``RUN_DIR/metrics.jsonl`` or that file),
    sorted by epoch; when an epoch appears twice (a resumed run), the last row wins.

    Raises:
        FileNotFoundError: no ``metrics.jsonl``.
        ValueError: a line that is not a JSON object with an ``epoch``, or no rows.
    """
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass run directories written by train.py")
    rows: dict[int, dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise ValueError(f"{path}:{n}: expected a JSON object with an integer 'epoch'")
        rows[row["epoch"]] = row
    if not rows:
        raise ValueError(f"{path} has no rows yet (the run has not finished an epoch)")
    return [rows[e] for e in sorted(rows)]


def read_rounds(run: str | Path) -> list[dict]:
    """The rounds of a pruning run (``RUN_DIR/round_RR/round.json``, written by
    :func:`vit16.prune.run_pruning`), in round order.

    Raises:
        FileNotFoundError: ``run`` has no finished round.
    """
    files = sorted(Path(run).glob("round_*/round.json"))
    if not files:
        raise FileNotFoundError(f"{run} has no round_*/round.json; pass pruning run directories "
                                "(train.py NAME with a [NAME.prune] table) that finished a round")
    return [json.loads(f.read_text()) for f in files]
