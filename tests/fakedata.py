"""Small data sets that tests write themselves, in every layout vit16 reads
(ImageFolder, torchvision's CIFAR pickles, the shared cifar100.npz layout)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

C10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def data_image(label: int, i: int, size: int = 32) -> np.ndarray:
    """A deterministic uint8 (size, size, 3) image that encodes (label, i)."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx * 7 + label * 13) % 256, (yy * 5 + i * 11) % 256, (xx + yy + label + i) % 256], -1)
    return img.astype(np.uint8)


def write_image_folder(folder: Path, classes: list[str], per_class: dict[str, int], ext: str = "png",
                       size=(32, 32)) -> None:
    for split, n in per_class.items():
        for c, name in enumerate(classes):
            d = folder / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = data_image(c, i, max(size))[: size[0], : size[1]]
                Image.fromarray(img).save(d / f"{i:04d}.{ext}")


def write_cifar10_pickles(root: Path, per_batch: int = 20, test: int = 20) -> dict:
    """torchvision's cifar-10-batches-py layout with tiny batches; returns the arrays written."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {"x": [], "y": []}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = [int(v) for v in np.arange(n) % 10]
        data = x.transpose(0, 3, 1, 2).reshape(n, 3072)
        with open(d / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": y, "data": data, "filenames": [""] * n}, f)
        written["x"].append(x)
        written["y"].append(y)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": C10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return written


def write_cifar100_npz(path: Path, per_class: int = 2, test_per_class: int = 1) -> None:
    def part(n):
        y = np.repeat(np.arange(100), n).astype(np.int16)
        x = np.stack([data_image(int(c), i) for i, c in enumerate(y)])
        return x, y, (y // 5).astype(np.int16)

    x_tr, y_tr, yc_tr = part(per_class)
    x_te, y_te, yc_te = part(test_per_class)
    np.savez(path, x_train=x_tr, y_train=y_tr, y_train_coarse=yc_tr, x_test=x_te, y_test=y_te,
             y_test_coarse=yc_te, fine_names=np.array([f"fine{i:02d}" for i in range(100)]),
             coarse_names=np.array([f"coarse{i:02d}" for i in range(20)]))


def set_args(items: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]`` for train.py's argv."""
    return [arg for item in items for arg in ("--set", item)]


def damaged_image_bytes(kind: str) -> bytes:
    """The bytes of a damaged image file, deterministic.

    ``"random"``: random bytes (no image format); ``"truncated"``: the first
    half of a JPEG; ``"empty"``: zero bytes; ``"noisy"``: a JPEG whose
    entropy-coded data is damaged, so it still decodes while libjpeg prints
    "Corrupt JPEG data: ..." to stderr.
    """
    rng = np.random.default_rng(0)
    if kind == "random":
        return rng.integers(0, 256, 500, dtype=np.uint8).tobytes()
    if kind == "empty":
        return b""
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=75)
    good = buf.getvalue()
    if kind == "truncated":
        return good[: len(good) // 2]
    assert kind == "noisy", kind
    data = bytearray(good)
    start = good.find(b"\xff\xda") + 20  # inside the scan, past its header
    for i in range(start, start + 40):
        if data[i] != 0xFF and data[i - 1] != 0xFF and data[i] ^ 0x55 != 0xFF:
            data[i] ^= 0x55
    return bytes(data)


def write_cifar100_npz_with(path: Path, **changes) -> None:
    """:func:`write_cifar100_npz`, then each ``key=array`` replaces that array
    and each ``key=None`` removes it (``key=callable``: applied to the array)."""
    write_cifar100_npz(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for key, change in changes.items():
        if change is None:
            del arrays[key]
        else:
            arrays[key] = change(arrays[key]) if callable(change) else change
    np.savez(path, **arrays)


def rewrite_pickle(path: Path, **changes) -> None:
    """Rewrite the dict pickled at ``path`` (a CIFAR batch or meta): ``key=value``
    replaces, ``key=None`` removes, ``key=callable`` is applied to the value."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    for key, change in changes.items():
        if change is None:
            del entry[key]
        else:
            entry[key] = change(entry[key]) if callable(change) else change
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def write_cifar100_pickles(root: Path, coarse: bool = True) -> None:
    """torchvision's cifar-100-python layout: 200 train / 100 test images,
    fine label ``i % 100``, coarse ``fine // 5`` (left out with ``coarse=False``)."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    x = np.random.default_rng(1).integers(0, 256, (200, 3072), dtype=np.uint8)
    fine = list(range(100)) * 2
    for name, n in (("train", 200), ("test", 100)):
        entry = {"data": x[:n], "fine_labels": fine[:n]}
        if coarse:
            entry["coarse_labels"] = [v // 5 for v in fine[:n]]
        with open(d / name, "wb") as f:
            pickle.dump(entry, f)
    meta = {"fine_label_names": [f"f{i}" for i in range(100)]}
    if coarse:
        meta["coarse_label_names"] = [f"c{i}" for i in range(20)]
    with open(d / "meta", "wb") as f:
        pickle.dump(meta, f)
