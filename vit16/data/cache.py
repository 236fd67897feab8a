"""Decode cache: decoded uint8 arrays stored once, outside the data folder.

A cache entry is one uncompressed ``.npz`` under :func:`cache_dir`, named
after the data set and a fingerprint of everything that defines its arrays:
the source files (paths, sizes, modification times), the class folders
(empty ones included), the decoder and its version, and
:data:`CACHE_VERSION`. A changed source therefore misses the cache and is
decoded again.

The cache is an optimisation, never a source of truth: an entry is written
only after the arrays passed the data set's checks, atomically (temporary
file, then ``os.replace``); an entry that cannot be read, or whose arrays
fail those checks, is reported in a warning naming it and rebuilt from the
source.
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
CACHE_VERSION = 2  # bump when the layout of cached arrays or the key changes

Arrays = dict[str, np.ndarray]


def cache_dir() -> Path:
    """``$VIT16_CACHE``, else ``~/.cache/vit16`` (not created here)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vit16"


def fingerprint(entries: Iterable[tuple[str, int, int]], tag: str = "") -> str:
    """Hex sha256 over ``(relative path, size, mtime_ns)`` triples (sorted),
    ``tag`` (decoder, settings) and :data:`CACHE_VERSION`."""
    h = hashlib.sha256(f"v{CACHE_VERSION}\n{tag}\n".encode())
    for rel, size, mtime in sorted(entries):
        h.update(f"{rel}\t{size}\t{mtime}\n".encode())
    return h.hexdigest()


def file_fingerprint(path: Path, tag: str = "") -> str:
    """Fingerprint of one file (npz, pickle batches): absolute path, size, mtime.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    return files_fingerprint([path], tag)


def files_fingerprint(paths: Iterable[Path], tag: str = "") -> str:
    """Fingerprint of several files (pickle batches), each by absolute path, size, mtime.

    Raises:
        FileNotFoundError: if one of ``paths`` does not exist.
    """
    entries = []
    for p in paths:
        st = p.stat()
        entries.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return fingerprint(entries, tag)


def entry_path(name: str, key: str) -> Path:
    """Where the cache entry ``name`` with fingerprint ``key`` lives."""
    return cache_dir() / f"{name}-{key[:20]}.npz"


def _clear_hint(path: Path) -> str:
    return f"delete {path} (or the whole cache, {cache_dir()}) to clear it"


def _load(path: Path, check: Callable[[Arrays], None] | None) -> Arrays | None:
    """The arrays of entry ``path``, or None (with a warning naming it) when it
    cannot be read or its arrays fail ``check``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, AttributeError) as err:
        warnings.warn(f"decode cache entry {path} is unreadable ({type(err).__name__}: {err}); "
                      f"decoding the data again and replacing it ({_clear_hint(path)})", stacklevel=3)
        return None
    if check is not None:
        try:
            check(arrays)
        except (ValueError, KeyError) as err:
            warnings.warn(f"decode cache entry {path} does not hold valid data ({err}); "
                          f"decoding the data again and replacing it ({_clear_hint(path)})", stacklevel=3)
            return None
    return arrays


def _store(path: Path, arrays: Arrays) -> None:
    """Write ``arrays`` to ``path`` atomically; an unwritable cache only warns."""
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
            stacklevel=3,
        )


def cached_arrays(
    name: str, key: str, build: Callable[[], Arrays], check: Callable[[Arrays], None] | None = None
) -> Arrays:
    """Arrays of cache entry ``name``-``key``; on a miss, ``build()`` them,
    ``check`` them, then store them.

    Args:
        name: readable part of the file name ("cifar10-imagefolder").
        key: the fingerprint of everything that defines the arrays (:func:`fingerprint`).
        build: decodes the source; returns name -> array (no object arrays).
        check: raises ``ValueError`` (one line) if the arrays are not valid
            data; run on built arrays before they are stored, and on cached
            ones before they are returned.

    Returns:
        name -> array, fully loaded in memory.

    Raises:
        whatever ``build`` or ``check`` raises for the source itself: nothing
        is stored then. A cache entry that is unreadable or fails ``check``
        only warns (naming it) and is rebuilt; a cache directory that cannot
        be written only warns: the arrays are returned uncached.
    """
    path = entry_path(name, key)
    if path.is_file():
        arrays = _load(path, check)
        if arrays is not None:
            return arrays
    arrays = build()
    if check is not None:
        check(arrays)
    _store(path, arrays)
    return arrays
