"""Training progress display, kept apart from the training logic.

On a terminal (stdout is a TTY): a rich live bar per epoch with loss, LR,
images/s and ETA. Otherwise (CI logs, SLURM files): plain lines, one every
``plain_every_s`` seconds inside an epoch. Both print a one-line summary per
epoch. Only the rank that owns the display (rank 0) prints anything.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Per-epoch progress reporting.

    Args:
        enabled: print anything at all (``False`` on ranks other than 0).
        live: rich live bar; ``None`` = when stdout is a TTY.
        plain_every_s: seconds between plain in-epoch lines when not live.

    Use as a context manager so a live bar is always torn down (also on errors).
    """

    def __init__(self, enabled: bool = True, live: bool | None = None, plain_every_s: float = 60.0):
        self.enabled = enabled
        self.live = enabled and (sys.stdout.isatty() if live is None else live)
        self.plain_every_s = plain_every_s
        self._bar: Any = None
        self._task: Any = None
        self._last_plain = 0.0
        self._label = ""
        if self.live:
            from rich.console import Console

            self.console = Console()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop_bar()

    def log(self, message: str) -> None:
        """Print one line (rank 0 only)."""
        if not self.enabled:
            return
        if self.live:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)
        else:
            print(message, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        """Begin epoch ``epoch`` (1-based) of ``epochs`` with ``steps`` optimizer
        steps, ``done`` of which are already done (mid-epoch resume)."""
        if not self.enabled:
            return
        self._label = f"epoch {epoch}/{epochs}"
        self._last_plain = time.monotonic()
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as RichProgress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._stop_bar()
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=steps, completed=done, info="")

    def update(self, done: int, steps: int, loss: float, lr: float, images_per_s: float) -> None:
        """Report ``done`` of ``steps`` optimizer steps in this epoch; ``loss`` is the
        latest training loss, ``lr`` the base LR (float), ``images_per_s`` the
        training throughput (images/s)."""
        if not self.enabled:
            return
        info = f"loss {loss:.4f}  lr {lr:.2e}  {images_per_s:,.0f} img/s"
        if self.live and self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
        elif not self.live and time.monotonic() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.monotonic()
            print(f"{self._label}  step {done}/{steps}  {info}", flush=True)

    def end_epoch(self, summary: str) -> None:
        """Close the epoch's bar and print its one-line ``summary``."""
        self._stop_bar()
        self.log(summary)

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None
