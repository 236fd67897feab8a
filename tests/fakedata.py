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


# The 37 breeds of Oxford-IIIT Pets as its file names spell them (cats capitalised,
# dogs lower case); class ids 1..37 follow this order (alphabetical, ignoring case).
PETS_BREEDS = sorted(
    ["Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon", "Persian",
     "Ragdoll", "Russian_Blue", "Siamese", "Sphynx", "american_bulldog", "american_pit_bull_terrier",
     "basset_hound", "beagle", "boxer", "chihuahua", "english_cocker_spaniel", "english_setter",
     "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger",
     "miniature_pinscher", "newfoundland", "pomeranian", "pug", "saint_bernard", "samoyed", "scottish_terrier",
     "shiba_inu", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier"], key=str.lower)


def write_oxford_pets(root: Path, trainval: int = 2, test: int = 1, size=(36, 44)) -> dict[str, list]:
    """torchvision's OxfordIIITPet layout under ``root``: ``oxford-iiit-pet/images/
    <Breed>_<n>.jpg`` (``size`` = (H, W), not square) and ``annotations/
    {trainval,test}.txt`` ("IMAGE_ID CLASS_ID SPECIES BREED_ID" lines), ``trainval``
    and ``test`` images per breed. Returns each split's [(image id, label 0..36)]
    in file order (the test file lists its images breed-interleaved)."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    written: dict[str, list] = {"trainval": [], "test": []}
    species_ids = {1: 0, 2: 0}
    breed_ids = {}
    for label, breed in enumerate(PETS_BREEDS):
        species = 1 if breed[0].isupper() else 2
        species_ids[species] += 1
        breed_ids[breed] = (species, species_ids[species])
    order = {"trainval": [(b, i) for b in range(37) for i in range(trainval)],
             "test": [(b, trainval + i) for i in range(test) for b in range(37)]}
    for split, items in order.items():
        lines = []
        for label, n in items:
            breed = PETS_BREEDS[label]
            image_id = f"{breed}_{n + 1}"
            img = data_image(label, n, max(size))[: size[0], : size[1]]
            Image.fromarray(img).save(base / "images" / f"{image_id}.jpg", quality=95)
            species, breed_id = breed_ids[breed]
            lines.append(f"{image_id} {label + 1} {species} {breed_id}")
            written[split].append((image_id, label))
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return written


def write_flowers102(root: Path, train: int = 1, val: int = 1, test: int = 1, size=(40, 30)) -> dict[str, list]:
    """torchvision's Flowers102 layout under ``root`` (needs scipy):
    ``flowers-102/jpg/image_NNNNN.jpg``, ``imagelabels.mat`` (``labels``: 1..102
    per image id) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``), with
    ``train``/``val``/``test`` images per class. Image ids are handed out class
    by class, each class's ids dealt to test, val, train in turn (so the splits
    interleave as in the real files). Returns each split's [(image id, label 0..101)]."""
    from scipy.io import savemat

    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    per = train + val + test
    labels, sets = [], {"trnid": [], "valid": [], "tstid": []}
    written: dict[str, list] = {"train": [], "val": [], "test": []}
    for c in range(102):
        kinds = ["tstid"] * test + ["valid"] * val + ["trnid"] * train
        for k, kind in enumerate(kinds):
            image_id = c * per + k + 1
            labels.append(c + 1)
            sets[kind].append(image_id)
            written[{"trnid": "train", "valid": "val", "tstid": "test"}[kind]].append((image_id, c))
            img = data_image(c, image_id, max(size))[: size[0], : size[1]]
            Image.fromarray(img).save(base / "jpg" / f"image_{image_id:05d}.jpg", quality=95)
    savemat(base / "imagelabels.mat", {"labels": np.asarray([labels], dtype=np.uint8)})
    savemat(base / "setid.mat", {k: np.asarray([v], dtype=np.uint16) for k, v in sets.items()})
    return written
