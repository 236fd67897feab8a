"""What every command shares: bad input reported as one ``error:`` line (exit
code 2), the ``--device`` choice, and the model arguments of the analysis
commands (``inspect``, ``fewshot``)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

import torch

from vit16.analysis.figures import PlotsUnavailableError
from vit16.checkpoint import CheckpointError
from vit16.config import ConfigError
from vit16.registry import UnknownNameError
from vit16.files import RunDirBusyError, os_error_line
from vit16.trainer import ResumeMismatchError, RunInterrupted, TrainingDivergedError

__all__ = ["USER_ERRORS", "add_device_argument", "add_model_arguments", "choose_device",
           "reports_user_errors"]

# Errors that mean bad input (config, names, files, a missing extra), reported
# as one line; VIT16_DEBUG=1 shows the traceback instead.
USER_ERRORS = (ValueError, UnknownNameError, FileNotFoundError, CheckpointError,
               ResumeMismatchError, TrainingDivergedError, PlotsUnavailableError, RunDirBusyError)

INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""


def reports_user_errors(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorate a command's ``main(argv) -> exit code`` so that bad input
    (:data:`USER_ERRORS`) and filesystem errors (``OSError``: the errno meaning
    and the path) print one ``error: ...`` line to stderr and return 2; Ctrl-C
    prints one ``interrupted: ...`` line and returns :data:`INTERRUPTED`.

    Args:
        main: the command's entry point.

    Returns:
        the wrapped entry point, same signature.

    Raises:
        the caught error itself when the environment sets ``VIT16_DEBUG``
        (for the traceback); any other error as ``main`` raises it.
    """

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except (RunInterrupted, KeyboardInterrupt) as err:
            if os.environ.get("VIT16_DEBUG"):
                raise
            print(f"interrupted: {err or 'stopped at once; the last last.pt written (if any) '}"
                  f"{'' if err else 'is where the same command resumes'}", file=sys.stderr)
            return INTERRUPTED
        except USER_ERRORS as err:
            if os.environ.get("VIT16_DEBUG"):
                raise
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # read-only file system, permission denied, full disk, ...
            if os.environ.get("VIT16_DEBUG"):
                raise
            print(f"error: {os_error_line(err)}; free space, fix the permissions or choose "
                  "another path (VIT16_DEBUG=1 shows where)", file=sys.stderr)
            return 2

    return wrapped


def add_device_argument(p: argparse.ArgumentParser) -> None:
    """``--device {cpu,cuda}``, default ``None``: resolved by :func:`choose_device`."""
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")


def choose_device(name: str | None) -> torch.device:
    """The device a command runs on.

    Args:
        name: ``--device`` (``cpu``, ``cuda``, ``cuda:1``...); ``None`` means
            CUDA when available, else the CPU.

    Returns:
        the :class:`torch.device`.

    Raises:
        ConfigError: CUDA asked for where there is none.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available; use --device cpu")
    return device


def add_model_arguments(p: argparse.ArgumentParser, dataset_help: str) -> None:
    """The arguments the analysis commands share, as
    :func:`vit16.analysis.loading.load_model` takes them: ``CKPT_OR_NAME``
    (``model_spec``), ``--model``, ``--dataset`` (described by
    ``dataset_help``) and ``--data-root``."""
    p.add_argument("model_spec", metavar="CKPT_OR_NAME",
                   help="run directory, checkpoint, or torchvision:/timm:/.npz weights (with --model)")
    p.add_argument("--model", help="registered model for weights without a stored config (e.g. vit_b16)")
    p.add_argument("--dataset", help=f"{dataset_help} (default: the checkpoint's, else cifar10)")
    p.add_argument("--data-root", help="folder holding the data sets (default: $VIT16_DATA, else ./data)")
