"""Checkpoints: atomic writes, loud failures, RNG state, git commit.

A vit16 checkpoint is a ``torch.save``'d dict with a format marker
(``state["vit16_checkpoint"] = FORMAT_VERSION``). The trainer's ``last.pt``
holds::

    model, optimizer, scaler        state_dicts
    epoch, batch_in_epoch, step     where training is (batch_in_epoch counts micro-batches)
    rng                             python / numpy / torch CPU / torch CUDA states (rng_state())
    config                          cfg.to_dict()
    best_val_top1, git_commit, ...  bookkeeping

Only plain Python containers, numbers, strings and tensors are stored, so
checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "CheckpointError",
    "git_commit",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT_KEY = "vit16_checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated/corrupt, not a vit16
    checkpoint, or from a newer format. ``str(err)`` is one line naming the
    file, the problem and what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (plus the format marker) to ``path``.

    The data goes to a temporary file in the same directory, is flushed and
    fsync'ed, then ``os.replace``'d over ``path`` and the directory is fsync'ed:
    a crash at any point leaves either the old file or the new one, never a
    partial file. The temporary file is removed if writing fails.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, FORMAT_KEY: FORMAT_VERSION}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    *,
    hint: str = "delete it or pass --no-resume",
) -> dict[str, Any]:
    """Load a vit16 checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the ``.pt`` file.
        map_location: passed to ``torch.load`` (default ``"cpu"``).
        hint: what the user should do about a bad file, appended to the error.

    Returns:
        The state dict (including the ``vit16_checkpoint`` format key).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, is not a
            vit16 checkpoint (no format marker), or has a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, disallowed global, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {reason[:200]}); "
            f"{hint}"
        ) from None
    if not isinstance(state, dict) or FORMAT_KEY not in state:
        raise CheckpointError(
            f"{path} is not a vit16 checkpoint (no {FORMAT_KEY!r} format key); {hint}"
        )
    version = state[FORMAT_KEY]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, newer than this vit16 "
            f"understands ({FORMAT_VERSION}); upgrade vit16 or {hint}"
        )
    return state


def rng_state() -> dict[str, Any]:
    """Every global RNG state: python ``random``, numpy (when installed), torch
    CPU and, when CUDA is available, every CUDA device. Plain containers and
    tensors only (``weights_only``-loadable)."""
    state: dict[str, Any] = {"python": _to_plain(random.getstate()), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a torch dependency in practice
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype("int64")),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state` (the parts present)."""
    if "python" in state:
        random.setstate(_to_tuple(state["python"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        np.random.set_state(
            (s["kind"], s["keys"].numpy().astype("uint32"), s["pos"], s["has_gauss"],
             s["cached_gaussian"])
        )
    if "cuda" in state and torch.cuda.is_available():
        states = [s.cpu() for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:  # different GPU count: restore the devices both runs have
            for i, s in enumerate(states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)


def _to_plain(x: Any) -> Any:
    return [_to_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def git_commit() -> str:
    """Short hash of the git HEAD of the checkout holding the vit16 package,
    with ``+dirty`` when what decides a run's math (``vit16/``,
    ``experiments.toml``, ``train.py``) differs from HEAD (modified, staged or
    untracked, ``.gitignore`` respected); ``"unknown"`` outside a git checkout
    (e.g. an installed wheel) or when git is missing. Only those are checked,
    so an appended results table or run directories do not make every later
    run dirty."""
    where = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        dirty = bool(git("status", "--porcelain", "--", "vit16", "experiments.toml", "train.py"))
    except (OSError, subprocess.SubprocessError):
        dirty = False
    return commit + ("+dirty" if dirty else "")
