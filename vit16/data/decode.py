"""Reading data sets from disk: ImageFolder listings, image decoding,
CIFAR python batches and the CIFAR-100 ``.npz``.

Nothing here caches; :mod:`vit16.data.sources` wraps these in the decode cache.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

try:  # libjpeg-turbo decoding, about 2x faster than PIL on 32x32 JPEGs (deprecated in 0.29)
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    HAVE_TV_DECODE = True
except ImportError:  # a torchvision without image decoding: PIL only
    HAVE_TV_DECODE = False

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_image_folder(folder: Path) -> tuple[list[str], np.ndarray, list[str], list[tuple[str, int, int]]]:
    """List an ImageFolder ``folder/<class>/<image>`` (classes and files sorted).

    Returns:
        files: paths (str) of every image, class by class.
        labels: int64 (N,), the class index of each file.
        classes: the sorted class folder names.
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


def load_image(path: str) -> torch.Tensor:
    """Decode one image file to a uint8 RGB tensor (3, H, W).

    Uses torchvision's libjpeg-turbo / libpng decoders and falls back to PIL
    for formats they do not read.

    Raises:
        OSError: if neither can decode the file.
    """
    with open(path, "rb") as f:
        return _decode_bytes(path, f.read())


def _decode_bytes(path: str, data: bytes) -> torch.Tensor:
    """uint8 (3, H, W) from the bytes of one file (torchvision decoders, PIL fallback)."""
    if HAVE_TV_DECODE:
        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass
    with Image.open(io.BytesIO(data)) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def _decode_chunk(args: tuple[list[str], list[bytes], np.ndarray, int]) -> None:
    paths, blobs, out, start = args
    jpeg = [i for i, b in enumerate(blobs) if b[:2] == b"\xff\xd8"] if HAVE_TV_DECODE else []
    images: list[torch.Tensor | None] = [None] * len(blobs)
    if jpeg:
        try:
            tensors = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg]
            for i, img in zip(jpeg, decode_jpeg(tensors, mode=ImageReadMode.RGB)):
                images[i] = img
        except RuntimeError:  # one bad file fails the batch: decode one by one below
            pass
    images = [_decode_bytes(paths[i], blobs[i]) if img is None else img for i, img in enumerate(images)]
    for i, img in enumerate(images):
        if tuple(img.shape[1:]) != out.shape[1:3]:
            raise ValueError(
                f"{paths[i]} is {img.shape[2]}x{img.shape[1]}, expected {out.shape[2]}x{out.shape[1]} "
                "like the other images of the data set"
            )
    dst = torch.from_numpy(out[start : start + len(images)])
    dst.copy_(torch.stack(images).permute(0, 2, 3, 1))


def decode_images(paths: list[str], size: tuple[int, int] = (32, 32), workers: int = 0) -> np.ndarray:
    """Decode equally sized images into one uint8 array (N, H, W, 3), RGB.

    The calling thread reads the files chunk by chunk (parallel reads were
    slower here) while a thread pool decodes the chunks already read: batched libjpeg-turbo
    (``torchvision.io.decode_jpeg``) for JPEGs, which releases the GIL;
    ``decode_image`` / PIL for other formats. ``workers = 0``: the CPU count.

    Raises:
        ValueError: if an image is not ``size`` (H, W).
        OSError: if a file cannot be read or decoded.
    """
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    workers = workers or min(8, os.cpu_count() or 1)
    step = 1000

    def read(i: int) -> tuple[list[str], list[bytes], np.ndarray, int]:
        blobs = []
        for p in paths[i : i + step]:
            with open(p, "rb") as f:
                blobs.append(f.read())
        return paths[i : i + step], blobs, out, i

    if workers <= 1:
        for i in range(0, len(paths), step):
            _decode_chunk(read(i))
        return out
    with ThreadPoolExecutor(workers) as pool:  # this thread reads while the pool decodes
        futures = [pool.submit(_decode_chunk, read(i)) for i in range(0, len(paths), step)]
        for fut in futures:
            fut.result()
    return out


def read_cifar_batches(folder: Path, files: list[str], label_keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read CIFAR python batches (the ``cifar-10-python.tar.gz`` format) without md5 checks.

    Each file is a pickle of a dict with ``data`` (uint8 (N, 3072), CHW
    planes) and one list per label key.

    Returns:
        ``x``: uint8 (N, 32, 32, 3); one int64 (N,) array per ``label_keys`` entry.

    Raises:
        FileNotFoundError: a batch file is missing.
        KeyError: a batch lacks ``data`` or a label key.
    """
    xs, ys = [], {k: [] for k in label_keys}
    for name in files:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        for k in label_keys:
            ys[k].extend(entry[k])
    out = {"x": np.ascontiguousarray(np.concatenate(xs).transpose(0, 2, 3, 1))}
    out.update({k: np.asarray(v, dtype=np.int64) for k, v in ys.items()})
    return out


def read_cifar_meta(path: Path, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """Class-name lists from a CIFAR ``batches.meta`` / ``meta`` pickle."""
    with open(path, "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    return {k: [str(n) for n in meta[k]] for k in keys}


def read_cifar100_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the CIFAR-100 ``.npz`` (layout: shared/data/README.md),
    labels as int64, names as unicode arrays. Slow (LZMA): cache the result."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for k in ("y_train", "y_train_coarse", "y_test", "y_test_coarse"):
        out[k] = out[k].astype(np.int64)
    for k in ("fine_names", "coarse_names"):
        out[k] = out[k].astype(str)
    return out
