"""Reading data sets from disk: ImageFolder listings, image decoding,
CIFAR python batches and the CIFAR-100 ``.npz``, each checked as it is read.

Every problem with a file is a :class:`~vit16.data.roots.BadDataError`
naming the file (and array) and the fix. What the C decoders print about a
file that still decodes (libjpeg's "Corrupt JPEG data: ...") becomes a
warning naming that file. Nothing here caches; :mod:`vit16.data.sources`
wraps these in the decode cache.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import tempfile
import threading
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, UnidentifiedImageError

from vit16.data.roots import (CIFAR100_LABELS, LAYOUT_DOC, BadDataError, DataNotFoundError, check_cifar100_npz,
                              check_labels, check_names)

try:  # libjpeg-turbo decoding, about 2x faster than PIL on 32x32 JPEGs (deprecated in 0.29)
    import torchvision
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    HAVE_TV_DECODE = True
except ImportError:  # a torchvision without image decoding: PIL only
    HAVE_TV_DECODE = False

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DECODER = f"torchvision {torchvision.__version__}, PIL {PIL.__version__}" if HAVE_TV_DECODE \
    else f"PIL {PIL.__version__}"  # part of the decode cache key: another decoder, other pixels
_CHUNK = 1000


def list_image_folder(folder: Path) -> tuple[list[str], np.ndarray, list[str], list[tuple[str, int, int]]]:
    """List an ImageFolder ``folder/<class>/<image>`` (classes and files sorted).

    Returns:
        files: paths (str) of every image, class by class.
        labels: int64 (N,), the class index of each file.
        classes: the sorted class folder names (empty ones included).
        stats: ``(path relative to folder, size, mtime_ns)`` per file, for the cache key.

    Raises:
        FileNotFoundError: if ``folder`` does not exist or holds no class folder.
    """
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
    files: list[str] = []
    labels: list[int] = []
    stats: list[tuple[str, int, int]] = []
    for idx, cls in enumerate(classes):
        with os.scandir(folder / cls) as it:
            entries = sorted(
                (e for e in it if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)),
                key=lambda e: e.name,
            )
        for e in entries:
            st = e.stat()
            files.append(e.path)
            labels.append(idx)
            stats.append((f"{cls}/{e.name}", st.st_size, st.st_mtime_ns))
    return files, np.asarray(labels, dtype=np.int64), classes, stats


# ---------------------------------------------------------------- decoder messages

_CAPTURE_LOCK = threading.Lock()
_capture_fds: dict[int, int] = {}  # pid -> fd of an unlinked temporary file (one per process: fork)


def _new_lock_after_fork() -> None:  # a DataLoader worker must not inherit a held lock
    global _CAPTURE_LOCK
    _CAPTURE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def _redirect_stderr() -> tuple[int, int] | None:
    """Point file descriptor 2 at this process's capture file; (its fd, saved fd 2)."""
    try:
        fd = _capture_fds.get(os.getpid())
        if fd is None:
            fd, name = tempfile.mkstemp(prefix="vit16-decoder-", suffix=".txt")
            os.unlink(name)
            _capture_fds[os.getpid()] = fd
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(fd, 2)
        return fd, saved
    except OSError:  # no fd 2, no temporary directory: decode without capturing
        return None


@contextlib.contextmanager
def decoder_messages():
    """Capture what C code (libjpeg, libpng) prints to file descriptor 2 inside
    the block; yields a list that holds that text (one ``str``) afterwards.

    One capture at a time per process (a lock); without a usable fd 2 the
    block runs uncaptured and the list stays empty.
    """
    said: list[str] = []
    with _CAPTURE_LOCK:
        redirected = _redirect_stderr()
        try:
            yield said
        finally:
            if redirected is not None:
                fd, saved = redirected
                os.dup2(saved, 2)
                os.close(saved)
                size = os.fstat(fd).st_size
                said.append(os.pread(fd, size, 0).decode(errors="replace") if size else "")


def _warn_decoded_with_messages(path: str, said: list[str]) -> bool:
    text = " ".join("".join(said).split())
    if text:
        warnings.warn(f"{path}: the image decoder reported {text!r}; the image was decoded but may be "
                      "damaged: replace it with an intact copy", stacklevel=3)
    return bool(text)


# ---------------------------------------------------------------- images


def _read(path: str) -> bytes | str:
    """The bytes of ``path``, or a message saying why it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        return f"{path} cannot be read ({err.strerror or err})"


def _decode_bytes(path: str, data: bytes) -> torch.Tensor:
    """uint8 (3, H, W) from the bytes of one file (torchvision decoders, PIL fallback).

    Raises BadDataError (naming ``path``, no fix) if neither decodes it."""
    if not data:
        raise BadDataError(f"{path} is empty (0 bytes)")
    if HAVE_TV_DECODE:
        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass
    try:
        with Image.open(io.BytesIO(data)) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    except UnidentifiedImageError:
        reason = "not an image format that torchvision or PIL reads"
    except Exception as err:  # whatever PIL's decoders raise on damaged bytes (OSError, SyntaxError, ...)
        reason = f"{type(err).__name__}: {err}"
    raise BadDataError(f"{path} cannot be decoded ({reason})")


def load_image(path: str) -> torch.Tensor:
    """Decode one image file to a uint8 RGB tensor (3, H, W).

    Uses torchvision's libjpeg-turbo / libpng decoders and falls back to PIL
    for formats they do not read. What a decoder prints about an image that
    still decodes becomes a warning naming ``path``.

    Raises:
        BadDataError: the file cannot be read or decoded (one line naming it).
    """
    data = _read(path)
    if isinstance(data, str):
        raise BadDataError(f"{data}; check that it exists and is readable, or delete it")
    try:
        with decoder_messages() as said:
            img = _decode_bytes(path, data)
    except BadDataError as err:
        raise BadDataError(f"{err}; replace it with an intact copy or delete it") from None
    _warn_decoded_with_messages(path, said)
    return img


def _decode_many(paths: list[str], blobs: list[bytes | str]) -> list[torch.Tensor | str]:
    """Each file decoded (uint8 (3, H, W)) or the message saying why not; JPEGs batched."""
    results: list[torch.Tensor | str | None] = [None] * len(blobs)
    jpeg = [i for i, b in enumerate(blobs) if isinstance(b, bytes) and b[:2] == b"\xff\xd8"]
    if jpeg and HAVE_TV_DECODE:
        try:
            tensors = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg]
            for i, img in zip(jpeg, decode_jpeg(tensors, mode=ImageReadMode.RGB)):
                results[i] = img
        except RuntimeError:  # one bad file fails the batch: decode one by one below
            pass
    for i, blob in enumerate(blobs):
        if results[i] is None:
            try:
                results[i] = blob if isinstance(blob, str) else _decode_bytes(paths[i], blob)
            except BadDataError as err:
                results[i] = str(err)
    return results


def _decode_chunk(args: tuple[list[str], list[bytes | str], np.ndarray, int]) -> list[str]:
    """Decode one chunk into ``out[start:]``; returns a message per file that cannot be used."""
    paths, blobs, out, start = args
    problems = []
    for i, img in enumerate(_decode_many(paths, blobs)):
        if isinstance(img, str):
            problems.append(img)
        elif tuple(img.shape[1:]) != out.shape[1:3]:
            problems.append(f"{paths[i]} is {img.shape[2]}x{img.shape[1]}, expected "
                            f"{out.shape[2]}x{out.shape[1]} like the other images of the data set")
        else:
            torch.from_numpy(out[start + i]).copy_(img.permute(1, 2, 0))
    return problems


def _name_noisy_files(paths: list[str], said: str) -> None:
    """Decode again, chunk by chunk, to find the files the decoder printed ``said``
    about and warn naming each; text no file explains goes back to stderr."""
    named = False
    for i in range(0, len(paths), _CHUNK):
        chunk = paths[i : i + _CHUNK]
        blobs = [_read(p) for p in chunk]
        with decoder_messages() as batch:
            _decode_many(chunk, blobs)
        if not "".join(batch).strip():
            continue
        for p, blob in zip(chunk, blobs):
            with decoder_messages() as one:
                _decode_many([p], [blob])
            named = _warn_decoded_with_messages(p, one) or named
    if not named:  # printed by something else while the images decoded
        sys.stderr.write(said)


def decode_images(paths: list[str], size: tuple[int, int] = (32, 32), workers: int = 0) -> np.ndarray:
    """Decode equally sized images into one uint8 array (N, H, W, 3), RGB.

    The calling thread reads the files chunk by chunk (parallel reads were
    slower here) while a thread pool decodes the chunks already read: batched libjpeg-turbo
    (``torchvision.io.decode_jpeg``) for JPEGs, which releases the GIL;
    ``decode_image`` / PIL for other formats. ``workers = 0``: the CPU count.
    Every file is tried before a problem is reported. A file that decodes
    while the decoder prints a message (libjpeg's "Corrupt JPEG data")
    gets a warning naming it.

    Raises:
        BadDataError: files that cannot be read or decoded, or that are not
            ``size`` (H, W): one line with their count and the first three.
    """
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    workers = workers or min(8, os.cpu_count() or 1)
    problems: list[str] = []

    def read(i: int) -> tuple[list[str], list[bytes | str], np.ndarray, int]:
        return paths[i : i + _CHUNK], [_read(p) for p in paths[i : i + _CHUNK]], out, i

    with decoder_messages() as said:
        if workers <= 1:
            for i in range(0, len(paths), _CHUNK):
                problems += _decode_chunk(read(i))
        else:
            with ThreadPoolExecutor(workers) as pool:  # this thread reads while the pool decodes
                futures = [pool.submit(_decode_chunk, read(i)) for i in range(0, len(paths), _CHUNK)]
                for fut in futures:
                    problems += fut.result()
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        head = f"{len(problems)} of {len(paths)} images cannot be used: " if len(problems) > 1 else ""
        raise BadDataError(f"{head}{'; '.join(problems[:3])}{more}; replace or delete "
                           f"{'these files' if len(problems) > 1 else 'the file'}")
    if "".join(said).strip():
        _name_noisy_files(paths, "".join(said))
    return out


def _read_pickle(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataNotFoundError(f"{path} is missing; copy or extract the whole {what} folder again") from None
    except Exception as err:  # whatever unpickling damaged bytes raises (EOFError, UnpicklingError, ...)
        raise BadDataError(f"{path} is not a readable {what} file ({type(err).__name__}: {err}); "
                           "copy or extract the data set again") from None
    if not isinstance(obj, dict):
        raise BadDataError(f"{path} holds a {type(obj).__name__}, not the dict of a {what} file; "
                           "copy or extract the data set again")
    return obj


def _field(path: Path, entry: dict, key: str):
    if key not in entry:
        raise BadDataError(f"{path} has no {key!r} entry (it holds {', '.join(sorted(map(str, entry)))}); "
                           "copy or extract the data set again")
    return entry[key]


def read_cifar_batches(folder: Path, files: list[str], label_keys: tuple[str, ...],
                       classes: dict[str, int] | None = None, optional: tuple[str, ...] = ()
                       ) -> dict[str, np.ndarray]:
    """Read CIFAR python batches (the ``cifar-10-python.tar.gz`` format) without md5 checks.

    Each file is a pickle of a dict with ``data`` (uint8 (N, 3072), CHW
    planes) and one list per label key; ``classes`` (label key -> class
    count) bounds the labels. A key in ``optional`` that the first batch
    lacks is left out of the result (one it has, every batch must have).

    Returns:
        ``x``: uint8 (N, 32, 32, 3); one int64 (N,) array per label key read.

    Raises:
        DataNotFoundError: a batch file is missing.
        BadDataError: a batch is not a readable pickle, lacks ``data`` or a
            label key, or has data that is not uint8 (N, 3072), labels of
            another length or out of range.
    """
    xs: list[np.ndarray] = []
    ys: dict[str, list[np.ndarray]] = {}
    for name in files:
        path = folder / name
        entry = _read_pickle(path, "CIFAR python batch")
        data = np.asarray(_field(path, entry, "data"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise BadDataError(f"{path}: 'data' is {data.dtype} of shape {data.shape}; expected uint8 "
                               "(N, 3072), one image of 3 x 32 x 32 planes per row: copy or extract it again")
        if not xs:
            ys = {k: [] for k in label_keys if k in entry or k not in optional}
        xs.append(data.reshape(-1, 3, 32, 32))
        for k in ys:
            y = np.asarray(_field(path, entry, k))
            check_labels(str(path), k, y, len(data), (classes or {}).get(k), "data")
            ys[k].append(y.astype(np.int64))
    out = {"x": np.ascontiguousarray(np.concatenate(xs).transpose(0, 2, 3, 1))}
    out.update({k: np.concatenate(v) for k, v in ys.items()})
    return out


def read_cifar_meta(path: Path, keys: tuple[str, ...], counts: dict[str, int] | None = None,
                    optional: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Class-name lists from a CIFAR ``batches.meta`` / ``meta`` pickle;
    ``counts`` (key -> class count) is the length each list must have; a key
    in ``optional`` that the file lacks is left out.

    Raises:
        DataNotFoundError: the file is missing.
        BadDataError: it is not a readable pickle, lacks a key, or a list has
            another length than ``counts`` says.
    """
    meta = _read_pickle(path, "CIFAR python meta")
    out = {k: [str(n) for n in _field(path, meta, k)] for k in keys if k in meta or k not in optional}
    for k, n in (counts or {}).items():
        if k in out:
            check_names(str(path), k, np.asarray(out[k], dtype=str), n)
    return out


def read_cifar100_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the CIFAR-100 ``.npz`` (layout: shared/data/README.md),
    checked (:func:`check_cifar100_npz`), labels as int64, names as unicode
    arrays. Slow (LZMA): cache the result.

    Raises:
        BadDataError: the file is not a readable ``.npz`` or an array fails the checks.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as err:
        raise BadDataError(f"{path} is not a readable .npz of arrays ({type(err).__name__}: {err}); "
                           f"replace it (layout: {LAYOUT_DOC})") from None
    check_cifar100_npz(path, out)
    for y_train, y_test, names, _ in CIFAR100_LABELS.values():
        out.update({k: out[k].astype(np.int64) for k in (y_train, y_test) if k in out})
        if names in out:
            out[names] = out[names].astype(str)
    return out
