"""Decode cache: decoded uint8 arrays stored once, outside the data folder.

A cache entry is one uncompressed ``.npz`` under :func:`cache_dir`, named
after the data set and a fingerprint of its source files (paths relative to
the source, sizes, modification times), so a changed source misses the cache
and is decoded again. Entries are written atomically (temporary file, then
``os.replace``); an unreadable entry is decoded again and overwritten.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

ENV_CACHE = "VIT16_CACHE"
CACHE_VERSION = 1  # bump when the layout of cached arrays changes


def cache_dir() -> Path:
    """``$VIT16_CACHE``, else ``~/.cache/vit16`` (not created here)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vit16"


def fingerprint(entries: Iterable[tuple[str, int, int]], tag: str = "") -> str:
    """Hex sha256 over ``(relative path, size, mtime_ns)`` triples (sorted) and ``tag``."""
    h = hashlib.sha256(f"v{CACHE_VERSION}\n{tag}\n".encode())
    for rel, size, mtime in sorted(entries):
        h.update(f"{rel}\t{size}\t{mtime}\n".encode())
    return h.hexdigest()


def file_fingerprint(path: Path, tag: str = "") -> str:
    """Fingerprint of one file (npz, pickle batches): absolute path, size, mtime.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    st = path.stat()
    return fingerprint([(str(path.resolve()), st.st_size, st.st_mtime_ns)], tag)


def files_fingerprint(paths: Iterable[Path], tag: str = "") -> str:
    """Fingerprint of several files (pickle batches), each by absolute path, size, mtime."""
    entries = []
    for p in paths:
        st = p.stat()
        entries.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return fingerprint(entries, tag)


def cached_arrays(
    name: str, key: str, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Arrays of cache entry ``name``-``key``; on a miss, ``build()`` them and store them.

    Args:
        name: readable part of the file name ("cifar10-imagefolder").
        key: the source fingerprint (:func:`fingerprint`).
        build: decodes the source; returns name -> array (no object arrays).

    Returns:
        name -> array, fully loaded in memory.

    A cache directory that cannot be written only warns: the arrays are
    returned uncached.
    """
    path = cache_dir() / f"{name}-{key[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            warnings.warn(f"decode cache {path} is unreadable ({err}); decoding again", stacklevel=2)
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        warnings.warn(
            f"could not write the decode cache {path} ({err}); set {ENV_CACHE} to a writable "
            "directory to avoid decoding again next time",
            stacklevel=2,
        )
    return arrays
