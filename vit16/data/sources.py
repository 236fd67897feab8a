"""Data set sources registered in :data:`vit16.registry.DATASETS`.

A builder takes ``(cfg: DataConfig, root: Path, experiment: str = "")`` and
returns a :class:`Source`: the official train and test splits, decoded to
uint8 arrays (CIFAR) or as file lists (ImageNet), plus class names and
normalisation statistics. Splitting off validation data is
:mod:`vit16.data.splits`' job.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vit16.data import cache, decode
from vit16.data.presence import locate
from vit16.data.roots import BadDataError, DataNotFoundError, check_arrays, check_cifar100_npz
from vit16.registry import DATASETS

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class Split:
    """Images and labels of one split.

    Exactly one of ``images`` (uint8 (N, H, W, 3), RGB, decoded) and
    ``files`` (N image paths, decoded lazily) is set; ``labels`` is int64 (N,).
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "Split":
        """The samples at positions ``idx`` (int array), in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return Split(
            labels=self.labels[idx],
            images=None if self.images is None else self.images[idx],
            files=None if self.files is None else [self.files[i] for i in idx],
        )


@dataclass
class Source:
    """A data set as read from disk: official train and test splits.

    ``image_size`` is the stored resolution of decoded arrays (32 for CIFAR),
    ``None`` for file lists; ``mean``/``std`` are per-channel in [0, 1].
    ``autoaugment_policy`` is the torchvision ``AutoAugmentPolicy`` value
    that ``auto_augment = "autoaugment"`` uses for this data set: "cifar10"
    for small 32x32 CIFAR-like images, "imagenet" for photographs.
    """

    name: str
    train: Split
    test: Split
    class_names: list[str]
    description: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    autoaugment_policy: str
    image_size: int | None = None

    @property
    def decoded(self) -> bool:
        """Whether the images are in memory as arrays (not file lists)."""
        return self.train.images is not None


def _check_class_folders(name: str, folder: Path, splits: tuple[str, str], listings: dict, expected: int) -> None:
    """One line if the splits' class folders differ, are not ``expected`` many, or one is empty."""
    first, second = (listings[s][2] for s in splits)
    if first != second:
        def only(a: list[str], b: list[str]) -> str:
            return ", ".join(sorted(set(a) - set(b))) or "none"

        raise BadDataError(f"{folder}: {splits[0]}/ and {splits[1]}/ have different class folders (only in "
                           f"{splits[0]}/: {only(first, second)}; only in {splits[1]}/: {only(second, first)}); "
                           "give both the same class folders")
    empty = [f"{s}/{first[i]}" for s in splits
             for i in np.flatnonzero(np.bincount(listings[s][1], minlength=len(first)) == 0)]
    if len(first) != expected:
        note = f", {len(empty)} of them empty ({', '.join(empty[:5])})" if empty else ""
        raise BadDataError(f"{folder}: {name} needs {expected} classes, found {len(first)} class folders{note}; "
                           f"remove the folders that are not classes of {name}")
    if empty:
        raise BadDataError(f"{folder}/{empty[0]} holds no images ({', '.join(decode.IMG_EXTENSIONS)}; "
                           f"{len(empty)} empty class folder(s) in all); put its images in it or remove it")


def _image_folder_arrays(name: str, folder: Path, splits: tuple[str, str], expected: int
                         ) -> tuple[dict[str, np.ndarray], str]:
    """Decode ``folder/{train,test}/<class>/*`` (32x32 images, ``expected``
    classes) through the cache, whose key covers every class folder (empty
    ones included), every file's path, size and mtime, and the decoder.

    Returns the arrays and a label for descriptions ("JPEG ImageFolder").

    Raises:
        BadDataError: class folders that differ between the splits, are not
            ``expected`` many or are empty (checked before anything is decoded
            or cached); images that do not decode or are not 32x32.
    """
    listings = {s: decode.list_image_folder(folder / s) for s in splits}
    _check_class_folders(name, folder, splits, listings, expected)
    classes = listings[splits[0]][2]
    entries = [(f"{s}/{rel}", size, mtime) for s in splits for rel, size, mtime in listings[s][3]]
    entries += [(f"{s}/{cls}/", -1, -1) for s in splits for cls in listings[s][2]]
    key = cache.fingerprint(entries, tag=f"{name}-imagefolder\n{decode.DECODER}\n32x32")

    def build() -> dict[str, np.ndarray]:
        files = {s: listings[s][0] for s in splits}
        return {
            "x_train": decode.decode_images(files[splits[0]]),
            "y_train": listings[splits[0]][1],
            "x_test": decode.decode_images(files[splits[1]]),
            "y_test": listings[splits[1]][1],
            "names": np.asarray(classes, dtype=str),
        }

    def check(a: dict[str, np.ndarray]) -> None:
        check_arrays(str(folder), a, {"y_train": ("x_train", expected), "y_test": ("x_test", expected)},
                     {"names": expected})
        if (list(a["names"]) != classes or not np.array_equal(a["y_train"], listings[splits[0]][1])
                or not np.array_equal(a["y_test"], listings[splits[1]][1])):
            raise ValueError(f"its labels or class names are not those of {folder}")

    jpeg = any(f.lower().endswith((".jpg", ".jpeg")) for f in listings[splits[0]][0][:100])
    label = "JPEG ImageFolder" if jpeg else "ImageFolder"
    return cache.cached_arrays(f"{name}-imagefolder", key, build, check), label


def _pickle_arrays(name: str, folder: Path, train: list[str], test: list[str], meta: str,
                   labels: dict[str, tuple[str, int]], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read CIFAR python batches through the cache (no md5 check; see decode).

    ``labels``: label key -> (its class-name key in ``meta``, class count);
    the label and name keys in ``optional`` may be absent (left out).

    Raises:
        DataNotFoundError: a batch or the meta file is missing.
        BadDataError: a file is damaged or its arrays fail the checks.
    """
    paths = [folder / f for f in (*train, *test, meta)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"{folder} lacks {', '.join(missing)} of the CIFAR python batches "
                                f"({', '.join(p.name for p in paths)}); copy or extract the data set again")
    key = cache.files_fingerprint(paths, tag=f"{name}-pickle")
    classes = {k: n for k, (_, n) in labels.items()}
    name_counts = {nk: n for nk, n in labels.values()}

    def build() -> dict[str, np.ndarray]:
        tr = decode.read_cifar_batches(folder, train, tuple(labels), classes, optional)
        te = decode.read_cifar_batches(folder, test, tuple(labels), classes, optional)
        names = decode.read_cifar_meta(folder / meta, tuple(name_counts), name_counts, optional)
        out = {"x_train": tr["x"], "x_test": te["x"]}
        out.update({f"y_train:{k}": v for k, v in tr.items() if k != "x"})
        out.update({f"y_test:{k}": v for k, v in te.items() if k != "x"})
        out.update({f"names:{k}": np.asarray(v, dtype=str) for k, v in names.items()})
        return out

    def check(a: dict[str, np.ndarray]) -> None:
        def wanted(key: str, field: str) -> bool:
            return key in a or field not in optional

        ys = {f"y_{s}:{k}": (f"x_{s}", n) for k, n in classes.items() for s in ("train", "test")
              if wanted(f"y_{s}:{k}", k)}
        check_arrays(str(folder), a, ys, {f"names:{k}": n for k, n in name_counts.items() if wanted(f"names:{k}", k)})

    return cache.cached_arrays(f"{name}-pickle", key, build, check)


def _need_pickle_labels(folder: Path, a: dict[str, np.ndarray], label: str) -> None:
    keys = [f"y_train:{label}_labels", f"y_test:{label}_labels", f"names:{label}_label_names"]
    absent = [k.split(":")[1] for k in keys if k not in a]
    if absent:
        raise BadDataError(f"{folder}: the CIFAR python batches have no {', '.join(absent)}, needed for "
                           f"label = {label!r}; use label = 'fine' or copy or extract the official batches again")


def download_official(name: str, root: Path) -> None:
    """Download the official python batches of ``name`` ("cifar10" or
    "cifar100") into ``root`` with torchvision (``data.download = true``).

    Raises:
        DataNotFoundError: the download failed (no network, disk full, ...),
            in one line naming the cause and where else data can come from.
    """
    import torchvision

    dataset = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        dataset(str(root), train=True, download=True)
    except Exception as err:  # urllib, socket and disk errors alike
        raise DataNotFoundError(
            f"data set {name!r}: downloading it to {root} failed ({type(err).__name__}: {err}); "
            "pass --data-root DIR / VIT16_DATA pointing at a copy such as ../shared/data"
        ) from None


_C10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


@DATASETS.register("cifar10", aliases=("cifar-10",))
def cifar10(cfg, root: Path, experiment: str = "") -> Source:
    """CIFAR-10 from ``root``: the official python batches
    (``cifar-10-batches-py/``) or an ImageFolder ``cifar10/{train,test}/<class>/``.
    With ``cfg.download`` the official batches are downloaded by torchvision
    when neither is present.

    Raises:
        DataNotFoundError: neither layout is under ``root`` (download off).
        BadDataError: the data fails its checks (one line naming the file and
            the fix): ImageFolder class folders not 10 or empty, images that do
            not decode or are not 32x32, damaged batches, labels out of range.
    """
    pickles, folder = root / "cifar-10-batches-py", root / "cifar10"
    fetch = functools.partial(download_official, "cifar10", root) if cfg.download else None
    if locate("cifar10", root, experiment, fetch) == "pickles":
        a = _pickle_arrays("cifar10", pickles, _C10_TRAIN, ["test_batch"], "batches.meta",
                           {"labels": ("label_names", 10)})
        x_tr, y_tr, x_te, y_te = a["x_train"], a["y_train:labels"], a["x_test"], a["y_test:labels"]
        names, desc = list(a["names:label_names"]), f"CIFAR-10 (python batches {pickles})"
    else:
        a, kind = _image_folder_arrays("cifar10", folder, ("train", "test"), 10)
        x_tr, y_tr, x_te, y_te = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
        names, desc = list(a["names"]), f"CIFAR-10 ({kind} {folder})"
    return Source("cifar10", Split(y_tr, x_tr), Split(y_te, x_te), [str(n) for n in names], desc,
                  *CIFAR10_STATS, autoaugment_policy="cifar10", image_size=32)


@DATASETS.register("cifar100", aliases=("cifar-100",))
def cifar100(cfg, root: Path, experiment: str = "") -> Source:
    """CIFAR-100 from ``root``: the official python batches (``cifar-100-python/``),
    ``cifar100.npz`` (shared/data/README.md layout) or an ImageFolder
    ``cifar100/{train,test}/<class>/`` (fine labels only). ``cfg.label``:
    "fine" (100 classes) or "coarse" (20 superclasses).

    Raises:
        DataNotFoundError: no layout is under ``root`` (download off).
        ValueError: ``label`` is not fine/coarse, or coarse with an ImageFolder.
        BadDataError: the data fails its checks (one line naming the file, the
            array and the fix): missing arrays (the coarse ones only for
            ``label = "coarse"``), images not uint8 (N, 32, 32, 3), labels of
            another length or out of range, class-name lists of the wrong length.
    """
    if cfg.label not in ("fine", "coarse"):
        raise ValueError(f"cifar100: label = {cfg.label!r}; expected 'fine' or 'coarse'")
    pickles, npz, folder = root / "cifar-100-python", root / "cifar100.npz", root / "cifar100"
    fetch = functools.partial(download_official, "cifar100", root) if cfg.download else None
    coarse, layout = cfg.label == "coarse", locate("cifar100", root, experiment, fetch)
    if layout == "pickles":
        a = _pickle_arrays("cifar100", pickles, ["train"], ["test"], "meta",
                           {"fine_labels": ("fine_label_names", 100), "coarse_labels": ("coarse_label_names", 20)},
                           optional=("coarse_labels", "coarse_label_names"))
        k = "coarse" if coarse else "fine"
        _need_pickle_labels(pickles, a, k)
        y_tr, y_te = a[f"y_train:{k}_labels"], a[f"y_test:{k}_labels"]
        names = list(a[f"names:{k}_label_names"])
        x_tr, x_te, where = a["x_train"], a["x_test"], f"python batches {pickles}"
    elif layout == "npz":
        key = cache.file_fingerprint(npz, tag="cifar100-npz")
        a = cache.cached_arrays("cifar100-npz", key, lambda: decode.read_cifar100_npz(npz),
                                lambda arrays: check_cifar100_npz(npz, arrays))
        check_cifar100_npz(npz, a, cfg.label)
        sfx = "_coarse" if coarse else ""
        y_tr, y_te = a[f"y_train{sfx}"], a[f"y_test{sfx}"]
        names = list(a["coarse_names" if coarse else "fine_names"])
        x_tr, x_te, where = a["x_train"], a["x_test"], f"npz {npz}"
    else:
        if coarse:
            raise ValueError(f"cifar100: label = 'coarse' needs the python batches or cifar100.npz; "
                             f"the ImageFolder {folder} has fine labels only")
        a, kind = _image_folder_arrays("cifar100", folder, ("train", "test"), 100)
        x_tr, y_tr, x_te, y_te = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
        names, where = list(a["names"]), f"{kind} {folder}"
    title = "CIFAR-100 coarse (20 superclasses)" if coarse else "CIFAR-100"
    return Source("cifar100", Split(y_tr, x_tr), Split(y_te, x_te), [str(n) for n in names],
                  f"{title} ({where})", *CIFAR100_STATS, autoaugment_policy="cifar10", image_size=32)


@DATASETS.register("imagenet", aliases=("imagenet1k", "ilsvrc2012"))
def imagenet(cfg, root: Path, experiment: str = "") -> Source:
    """ImageNet-1k as file lists from the ImageFolder ``root/imagenet/{train,val}``
    (official val as the test split). Nothing is decoded up front; the
    class-balanced ``fraction`` subsample is taken by :mod:`vit16.data.splits`.

    Raises:
        DataNotFoundError: the folders are missing (ImageNet is never downloaded).
        ValueError: train/ and val/ have different classes.
    """
    folder = root / "imagenet"
    locate("imagenet", root, experiment)  # never downloaded
    tr_files, tr_labels, classes, _ = decode.list_image_folder(folder / "train")
    te_files, te_labels, te_classes, _ = decode.list_image_folder(folder / "val")
    if te_classes != classes:
        raise ValueError(f"{folder}: train/ and val/ have different class folders")
    return Source("imagenet", Split(tr_labels, files=tr_files), Split(te_labels, files=te_files),
                  classes, f"ImageNet (ImageFolder {folder})", *IMAGENET_STATS, autoaugment_policy="imagenet")
