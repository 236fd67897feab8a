"""Filesystem guards of a run, checked before the first step: writable
places, one process per run directory, and one-line messages for OS errors.

    check_writable_dir("runs/quick", "--out")
    check_writable_file("results/RESULTS.md", "--results")
    with RunLock("runs/quick"):   # a second process gets RunDirBusyError
        ...
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

__all__ = ["LOCK_NAME", "PathNotWritableError", "RunDirBusyError", "RunLock",
           "check_writable_dir", "check_writable_file", "os_error_line"]

LOCK_NAME = ".lock"
"""The lock file in a run directory (holds the owner's PID)."""


class PathNotWritableError(ValueError):
    """A place the run must write to cannot be written; ``str(err)`` is one
    line: the option, the path, the reason (errno meaning) and the fix."""


class RunDirBusyError(RuntimeError):
    """Another process owns the run directory; ``str(err)`` names its PID."""


def os_error_line(err: OSError) -> str:
    """``"No space left on device (ENOSPC): /path"``: the errno meaning, its
    symbol and the file(s) of ``err``, one line."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in errno.errorcode:
        reason += f" ({errno.errorcode[err.errno]})"
    files = [str(f) for f in (err.filename, err.filename2) if f is not None]
    return f"{reason}: {' -> '.join(files)}" if files else reason


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create directory ``path`` if needed and check that a file can be written in it.

    Args:
        path: the directory.
        what: the option or role that named it (``"--out"``), for the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PathNotWritableError: ``path`` is a file, cannot be created, or is not
            writable (read-only file system, permission denied, full disk).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathNotWritableError(f"{what} {path} is a file, not a directory; choose a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise PathNotWritableError(
            f"{what} {path} cannot be written ({os_error_line(err)}); choose a writable place "
            "or fix its permissions"
        ) from None
    return path


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """Check that ``path`` can be appended to (an existing file is opened for
    appending and left unchanged; a new one's directory must be writable).

    Raises:
        PathNotWritableError: ``path`` is a directory or cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise PathNotWritableError(f"{what} {path} is a directory; name a markdown file")
    if not path.exists():
        check_writable_dir(path.parent, f"the directory of {what}")
        return path
    try:
        with open(path, "a"):
            pass
    except OSError as err:
        raise PathNotWritableError(
            f"{what} {path} cannot be written ({os_error_line(err)}); choose another file "
            "or fix its permissions"
        ) from None
    return path


class RunLock:
    """An advisory ``fcntl.flock`` on ``run_dir/.lock`` while a process owns the
    run directory. The kernel drops it when the process dies (``kill -9``
    included), so no stale lock is left; the file keeps the last owner's PID.

    Raises (on entering):
        RunDirBusyError: another live process holds the lock.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.file = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise RunDirBusyError(
                f"{self.path.parent} is in use by another run (PID {owner}); wait for it to "
                "finish, stop it, or use another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None
