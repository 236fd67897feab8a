"""Where data sets live: the data root and the error for a missing data set."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "VIT16_DATA"
DEFAULT_ROOT = "./data"


class DataNotFoundError(FileNotFoundError):
    """A data set is in none of the places it was looked for.

    ``str(err)`` is one line: the data set, every path tried and how to get
    the data.
    """

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return str(self.args[0])


def resolve_data_root(cli_root: str | None, cfg_root: str) -> Path:
    """The data root: ``--data-root`` (``cli_root``), else ``cfg.data.root``,
    else the ``VIT16_DATA`` environment variable, else ``./data``.

    The path is returned as given (``~`` expanded, not made absolute), so
    descriptions read ``../shared/data/cifar10`` rather than a long absolute
    path. It is not checked for existence: the data set builders do that.
    """
    for candidate in (cli_root, cfg_root, os.environ.get(ENV_DATA)):
        if candidate:
            return Path(candidate).expanduser()
    return Path(DEFAULT_ROOT)


def not_found(name: str, tried: list[Path], experiment: str = "", hint: str = "") -> DataNotFoundError:
    """Build the one-line :class:`DataNotFoundError` for data set ``name``.

    Args:
        name: the data set ("cifar10").
        tried: every path looked at, in order (shown absolute).
        experiment: the experiment table name for the ``[NAME.data]`` hint.
        hint: how to get the data; default: the download / data-root advice.
    """
    table = experiment or "NAME"
    paths = ", ".join(str(Path(p).absolute()) for p in tried)
    if not hint:
        hint = (
            f"set download = true in the [{table}.data] table, or pass --data-root DIR / "
            f"{ENV_DATA} pointing at a copy such as ../shared/data"
        )
    return DataNotFoundError(f"data set {name!r} not found; tried {paths}; {hint}")
