"""Where data sets live and what they must hold: the data root, the errors
for a missing data set (:class:`DataNotFoundError`) and for data files that
exist but cannot be used (:class:`BadDataError`), and the checks of decoded
arrays (images, labels, class names) that raise the latter."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ENV_DATA = "VIT16_DATA"
LAYOUT_DOC = "shared/data/README.md"  # the layout of cifar100.npz
DEFAULT_ROOT = "./data"


class DataNotFoundError(FileNotFoundError):
    """A data set is in none of the places it was looked for.

    ``str(err)`` is one line: the data set, every path tried and how to get
    the data.
    """

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return str(self.args[0])


class BadDataError(ValueError):
    """A data file exists but cannot be used: an image that does not decode,
    an array of the wrong shape, dtype or range, a label out of range.

    ``str(err)`` is one line naming the file (and array) and the fix. Raised
    inside a DataLoader worker, torch re-raises it in the main process as
    ``BadDataError("Caught BadDataError in DataLoader worker process N.\\n
    Original Traceback ...")``; the constructor keeps that one line, followed
    by where it was caught, so the CLI still prints one line.
    """

    def __init__(self, message: str):
        lines = str(message).strip().splitlines()
        if len(lines) > 1:  # re-raised from a worker: the original message is the last line
            original = lines[-1].split(f"{type(self).__name__}: ", 1)[-1]
            head = lines[0]
            where = head[len("Caught "):].split(" ", 1)[-1].rstrip(".") if head.startswith("Caught ") else ""
            message = f"{original} ({where})" if where else " ".join(line.strip() for line in lines)
        super().__init__(message)


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


# ---------------------------------------------------------------- checks of decoded arrays


def check_images(where: str, key: str, x: np.ndarray, size: tuple[int, int] = (32, 32)) -> None:
    """Check that array ``key`` of ``where`` holds images: uint8 (N > 0, H, W, 3), RGB.

    Raises:
        BadDataError: one line naming ``where``, ``key``, the problem and the fix.
    """
    want = (*size, 3)
    if x.ndim == 4 and x.shape[1:] == (3, *size):
        raise BadDataError(f"{where}: array {key!r} has shape {x.shape}, channels first; expected "
                           f"(N, {size[0]}, {size[1]}, 3): store x.transpose(0, 2, 3, 1)")
    if x.ndim != 4 or x.shape[1:] != want or not len(x):
        raise BadDataError(f"{where}: array {key!r} has shape {x.shape}; expected (N, {size[0]}, {size[1]}, 3) "
                           "with N > 0 (images, height, width, RGB)")
    if x.dtype != np.uint8:
        raise BadDataError(f"{where}: array {key!r} is {x.dtype}; expected uint8 pixel values 0-255 "
                           "(from floats in [0, 1]: (x * 255).round().astype(np.uint8))")


def check_labels(where: str, key: str, y: np.ndarray, count: int, classes: int | None, x_key: str) -> None:
    """Check that array ``key`` of ``where`` holds ``count`` integer labels in
    ``[0, classes)`` (any range for ``classes = None``), one per image of ``x_key``.

    Raises:
        BadDataError: one line naming ``where``, ``key``, the problem and the fix.
    """
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise BadDataError(f"{where}: array {key!r} is {y.dtype} of shape {y.shape}; expected integer "
                           "class indices of shape (N,)")
    if len(y) != count:
        raise BadDataError(f"{where}: array {key!r} has {len(y)} labels but {x_key!r} has {count} images; "
                           "they must have one label per image")
    if classes is not None and y.size and (y.min() < 0 or y.max() >= classes):
        raise BadDataError(f"{where}: array {key!r} holds labels {y.min()}..{y.max()}; expected "
                           f"0..{classes - 1} ({classes} classes): fix the labels or the label setting")


def check_names(where: str, key: str, names, classes: int) -> None:
    """Check that ``names`` (array ``key`` of ``where``) lists ``classes`` class names.

    Raises:
        BadDataError: one line naming ``where``, ``key``, the count found and expected.
    """
    names = np.asarray(names)
    if names.ndim != 1 or len(names) != classes or names.dtype.kind not in "US":
        raise BadDataError(f"{where}: {key!r} holds {names.size} {names.dtype} values; expected "
                           f"{classes} class names (strings), one per label 0..{classes - 1}")


def check_arrays(where: str, arrays: dict, labels: dict[str, tuple[str, int]], names: dict[str, int],
                 fix: str = "replace the file") -> None:
    """Check a decoded data set: ``labels`` maps each label array to (its image
    array, class count), ``names`` each class-name array to its class count;
    ``fix`` ends the message for a missing array.

    Raises:
        BadDataError: a named array is missing or fails :func:`check_images`,
            :func:`check_labels` or :func:`check_names`.
    """
    for key in [*{x for x, _ in labels.values()}, *labels, *names]:
        if key not in arrays:
            raise BadDataError(f"{where} has no array {key!r} (it holds {', '.join(sorted(arrays))}); {fix}")
    for x_key in {x for x, _ in labels.values()}:
        check_images(where, x_key, arrays[x_key])
    for key, (x_key, classes) in labels.items():
        check_labels(where, key, arrays[key], len(arrays[x_key]), classes, x_key)
    for key, classes in names.items():
        check_names(where, key, arrays[key], classes)


CIFAR100_LABELS = {"fine": ("y_train", "y_test", "fine_names", 100),
                   "coarse": ("y_train_coarse", "y_test_coarse", "coarse_names", 20)}


def check_cifar100_npz(path: Path, arrays: dict, label: str | None = None) -> None:
    """Check the arrays of a CIFAR-100 ``.npz`` (layout: shared/data/README.md):
    images always, each label set ("fine", "coarse") as far as it is present,
    and ``label``'s arrays must be present.

    Raises:
        BadDataError: one line naming ``path``, the array and the fix.
    """
    need = ["x_train", "x_test", *(CIFAR100_LABELS[label][:3] if label else ())]
    for key in need:
        if key not in arrays:
            use = f"label = {label!r}" if key[0] != "x" else "every label"
            other = "; or use label = 'fine'" if label == "coarse" else ""
            raise BadDataError(f"{path} has no array {key!r}, needed for {use} (it holds "
                               f"{', '.join(sorted(arrays))}); add it (layout: {LAYOUT_DOC}){other}")
    for key in ("x_train", "x_test"):
        check_images(str(path), key, arrays[key])
    for y_train, y_test, names, classes in CIFAR100_LABELS.values():
        for key, x_key in ((y_train, "x_train"), (y_test, "x_test")):
            if key in arrays:
                check_labels(str(path), key, arrays[key], len(arrays[x_key]), classes, x_key)
        if names in arrays:
            check_names(str(path), names, arrays[names], classes)
