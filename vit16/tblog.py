"""TensorBoard event files of a run (``log.tensorboard = true``).

Written by rank 0 to ``RUN_DIR/tensorboard/`` with
``torch.utils.tensorboard.SummaryWriter``; ``tensorboard --logdir runs`` shows
every run. The step axis is the optimizer step (1-based: the loss of the first
step is at step 1, an epoch's values at the step that ends it, as in
``metrics.jsonl``).

Tags: ``train/loss`` and ``train/lr`` every optimizer step; per epoch
``train/epoch_loss``, ``train/images_per_s`` (images/s), ``val/top1``,
``val/top5`` (%), ``val/loss``, ``val/ema_top1`` (%, with an EMA); at the end
``test/top1``, ``test/top5``, ``test/top1_best``, ``test/top1_ema`` (%).

Resuming from a ``last.pt`` of step S opens the writer with ``purge_step = S + 1``:
TensorBoard hides what the interrupted run logged after its checkpoint, and
the resumed run logs those steps again, so every step appears once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from vit16.config import ConfigError

__all__ = ["TensorBoardLog", "check_available"]

EPOCH_TAGS = {
    "train_loss": "train/epoch_loss", "images_per_s": "train/images_per_s", "val_top1": "val/top1",
    "val_top5": "val/top5", "val_loss": "val/loss", "val_ema_top1": "val/ema_top1",
}
"""``metrics.jsonl`` key -> TensorBoard tag."""
TEST_TAGS = {"test_top1": "test/top1", "test_top5": "test/top5", "test_top1_best": "test/top1_best",
             "test_top1_ema": "test/top1_ema"}
"""Run-summary key -> TensorBoard tag."""


def check_available() -> None:
    """Raises:
        ConfigError: the ``tensorboard`` package is not installed (one line, the fix)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log.tensorboard = true needs the tensorboard package: "
                          "pip install 'vit16[tensorboard]' (or --set log.tensorboard=false)")


class TensorBoardLog:
    """The event log of one run.

    Args:
        log_dir: where the event files go (``RUN_DIR/tensorboard``).
        resumed_step: the step of the checkpoint a resumed run starts from;
            ``None`` for a new run.

    Raises:
        ConfigError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: Path, resumed_step: int | None = None):
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resumed_step is None else resumed_step + 1
        self.writer = SummaryWriter(str(log_dir), purge_step=purge)

    def steps(self, first_step: int, losses: list[float], lr_of) -> None:
        """The losses of optimizer steps ``first_step + 1, first_step + 2, ...``
        (1-based) and their LR, ``lr_of(i)`` for the 0-based step ``i``."""
        for j, loss in enumerate(losses):
            self.writer.add_scalar("train/loss", loss, first_step + j + 1)
            self.writer.add_scalar("train/lr", lr_of(first_step + j), first_step + j + 1)

    def epoch(self, row: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` row, at its ``step``; ``None`` values are skipped."""
        self._scalars(EPOCH_TAGS, row, row["step"])
        self.writer.flush()

    def test(self, summary: dict[str, Any]) -> None:
        """The test results of the run summary, at its last step."""
        self._scalars(TEST_TAGS, summary, summary["steps"])
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def _scalars(self, tags: dict[str, str], values: dict[str, Any], step: int) -> None:
        for key, tag in tags.items():
            if values.get(key) is not None:
                self.writer.add_scalar(tag, values[key], step)
