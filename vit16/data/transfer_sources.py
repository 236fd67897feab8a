"""The transfer data sets of the paper (Tables 2 and 3: Oxford-IIIT Pets,
Oxford Flowers-102) and a user's own ImageFolder, registered in
:data:`vit16.registry.DATASETS` beside :mod:`vit16.data.sources`.

All three return a :class:`~vit16.data.sources.Source` of file lists (nothing
is decoded up front): images of any size go through the DataLoader
transforms (random resized crop and flip for training, resize and centre crop
for evaluation). Their normalisation is ImageNet's statistics
(:data:`~vit16.data.sources.IMAGENET_STATS`): photographs, as the
ImageNet-pre-trained models they are fine-tuned from expect; their
AutoAugment policy is "imagenet". The validation split is held out of the
training split by :mod:`vit16.data.splits` (``data.val_size``), as for the
others.

Pets and Flowers are read in torchvision's on-disk layout, and
``data.download = true`` downloads them with ``torchvision.datasets``'
own ``download=True``. torchvision keeps the file paths and labels of these
data sets in private attributes only, so the official split files are parsed
here: Pets ``annotations/{trainval,test}.txt``, Flowers ``imagelabels.mat``
and ``setid.mat`` (with ``scipy.io.loadmat``, as torchvision does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vit16.config import ConfigError
from vit16.data import decode
from vit16.data.presence import locate
from vit16.data.roots import BadDataError, DataNotFoundError
from vit16.data.sources import IMAGENET_STATS, Source, Split
from vit16.registry import DATASETS

PETS_DIR = "oxford-iiit-pet"
"""Pets' folder under the data root (torchvision's ``OxfordIIITPet`` layout)."""
FLOWERS_DIR = "flowers-102"
"""Flowers' folder under the data root (torchvision's ``Flowers102`` layout)."""
PETS_CLASSES, FLOWERS_CLASSES = 37, 102


def _only(a: list[str], b: list[str]) -> str:
    extra = sorted(set(a) - set(b))
    return ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "") or "none"


# ---------------------------------------------------------------- a user's ImageFolder


def _empty_class_folders(folder: Path, split: str, labels: np.ndarray, classes: list[str]) -> None:
    empty = [classes[i] for i in np.flatnonzero(np.bincount(labels, minlength=len(classes)) == 0)]
    if empty:
        raise BadDataError(f"{folder / split / empty[0]} holds no images ({', '.join(decode.IMG_EXTENSIONS)}; "
                           f"{len(empty)} empty class folder(s) in {split}/); put images in it or remove it "
                           f"from every split")


@DATASETS.register("imagefolder", aliases=("image_folder",))
def imagefolder(cfg, root: Path, experiment: str = "") -> Source:
    """A user's own data: the ImageFolder ``root/train/<class>/*`` and
    ``root/test/<class>/*`` (or ``root/val/<class>/*`` when there is no
    ``test/``), ``root`` being ``data.root`` or ``--data-root`` itself.

    Class names are the class folder names, sorted; the label of an image is
    its folder's position among them. ``test/`` (else ``val/``) is the test
    split; the validation split is ``data.val_size`` class-balanced images held
    out of ``train/``, as for every data set (a ``val/`` beside ``test/`` is not
    read). Statistics and AutoAugment policy: ImageNet's (module docstring).

    Raises:
        DataNotFoundError: ``root/train`` or both ``root/test`` and ``root/val`` are missing.
        BadDataError: the two splits have different class folders (one line
            naming the differences), or a class folder holds no images.
    """
    train_dir, held = root / "train", locate("imagefolder", root, experiment)  # "test", else "val"
    tr_files, tr_labels, classes, _ = decode.list_image_folder(train_dir)
    te_files, te_labels, te_classes, _ = decode.list_image_folder(root / held)
    if te_classes != classes:
        raise BadDataError(f"{root}: train/ and {held}/ have different class folders (only in train/: "
                           f"{_only(classes, te_classes)}; only in {held}/: {_only(te_classes, classes)}); "
                           "give both the same class folders")
    _empty_class_folders(root, "train", tr_labels, classes)
    _empty_class_folders(root, held, te_labels, classes)
    unused = " (val/ not read)" if held == "test" and (root / "val").is_dir() else ""
    return Source("imagefolder", Split(tr_labels, files=tr_files), Split(te_labels, files=te_files), classes,
                  f"ImageFolder {root} (train/, {held}/{unused}; {len(classes)} classes)", *IMAGENET_STATS,
                  autoaugment_policy="imagenet")


# ---------------------------------------------------------------- torchvision's downloads


def _download(name: str, root: Path, make) -> None:
    """Call ``make()`` (a torchvision dataset with ``download=True``).

    Raises:
        DataNotFoundError: the download failed, in one line naming the cause.
    """
    try:
        make()
    except Exception as err:  # urllib, socket, archive and disk errors alike
        raise DataNotFoundError(
            f"data set {name!r}: downloading it with torchvision into {root} failed ({type(err).__name__}: "
            f"{err}); pass --data-root DIR / VIT16_DATA pointing at a copy"
        ) from None


def _check_files_exist(images: Path, files: list[str], listed_in: str) -> None:
    """Every file of ``files`` (names in ``images``) is there, else one line."""
    present = set(os.listdir(images))
    missing = [f for f in files if f not in present]
    if missing:
        raise BadDataError(f"{images / missing[0]} is missing ({len(missing)} of the {len(files)} images that "
                           f"{listed_in} lists); copy or extract the data set again")


# ---------------------------------------------------------------- Oxford-IIIT Pets


def read_pets_split(path: Path) -> list[tuple[str, int]]:
    """The ``(image id, label 0..36)`` pairs of a Pets split file
    (``annotations/trainval.txt`` or ``test.txt``: lines
    ``Abyssinian_100 1 1 1``: image id, class id 1..37, species, breed id).

    Raises:
        BadDataError: a line that is not four fields with a class id in 1..37.
    """
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 4 or not fields[1].isdigit() or not 1 <= int(fields[1]) <= PETS_CLASSES:
            raise BadDataError(f"{path}, line {n}: {line.strip()!r} is not 'IMAGE_ID CLASS_ID SPECIES BREED_ID' "
                               f"with CLASS_ID in 1..{PETS_CLASSES}; download the annotations again")
        entries.append((fields[0], int(fields[1]) - 1))
    return entries


def pets_class_names(entries: list[tuple[str, int]], where: Path) -> list[str]:
    """The 37 breed names by label, from the image ids ("american_bulldog_12"
    -> "American Bulldog"), as torchvision's ``OxfordIIITPet.classes`` names them.

    Raises:
        BadDataError: a label without images, or one label with two breeds.
    """
    names: dict[int, str] = {}
    for image_id, label in entries:
        name = " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))
        if names.setdefault(label, name) != name:
            raise BadDataError(f"{where}: class id {label + 1} is given to both {names[label]!r} and {name!r} "
                               "images; download the annotations again")
    absent = [str(i + 1) for i in range(PETS_CLASSES) if i not in names]
    if absent:
        raise BadDataError(f"{where}: no trainval images of class id(s) {', '.join(absent[:10])}; Pets needs "
                           f"all {PETS_CLASSES} classes: download the annotations again")
    return [names[i] for i in range(PETS_CLASSES)]


@DATASETS.register("oxford_pets", aliases=("oxford_iiit_pet", "pets"))
def oxford_pets(cfg, root: Path, experiment: str = "") -> Source:
    """Oxford-IIIT Pets (Parkhi et al., 2012), 37 breeds, the paper's official
    splits: ``trainval`` (3,680 images) for training, ``test`` (3,669) as the
    test split, from torchvision's layout ``root/oxford-iiit-pet/images/*.jpg``
    and ``annotations/{trainval,test}.txt``. With ``cfg.download`` a missing copy
    is downloaded by ``torchvision.datasets.OxfordIIITPet(download=True)``.

    Raises:
        DataNotFoundError: the folders or split files are missing (download off).
        BadDataError: a split file's line is malformed, a class has no trainval
            image, or an image it lists is missing.
    """
    import torchvision

    folder = root / PETS_DIR
    images, splits = folder / "images", [folder / "annotations" / f"{s}.txt" for s in ("trainval", "test")]
    def fetch() -> None:
        _download("oxford_pets", root,
                  lambda: torchvision.datasets.OxfordIIITPet(str(root), split="trainval", download=True))

    locate("oxford_pets", root, experiment, fetch if cfg.download else None)
    train, test = (read_pets_split(p) for p in splits)
    names = pets_class_names(train, splits[0])
    out = []
    for entries, path in ((train, splits[0]), (test, splits[1])):
        files = [f"{image_id}.jpg" for image_id, _ in entries]
        _check_files_exist(images, files, f"annotations/{path.name}")
        labels = np.asarray([label for _, label in entries], dtype=np.int64)
        out.append(Split(labels, files=[str(images / f) for f in files]))
    return Source("oxford_pets", out[0], out[1], names,
                  f"Oxford-IIIT Pets ({folder}, trainval/test)", *IMAGENET_STATS, autoaugment_policy="imagenet")


# ---------------------------------------------------------------- Oxford Flowers-102


def _loadmat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The int64 1-d arrays ``keys`` of the MATLAB file ``path`` (scipy).

    Raises:
        ConfigError: scipy is not installed.
        BadDataError: the file does not load or lacks a key.
    """
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ConfigError(f"flowers102 reads {path.name} with scipy (as torchvision's Flowers102 does), which is "
                          "not installed: pip install scipy") from None
    try:
        mat = loadmat(str(path), squeeze_me=True)
    except Exception as err:  # scipy raises ValueError, TypeError, ... on damaged files
        raise BadDataError(f"{path} does not load as a MATLAB file ({type(err).__name__}: {err}); "
                           "download it again") from None
    absent = [k for k in keys if k not in mat]
    if absent:
        raise BadDataError(f"{path} has no {', '.join(absent)} (it holds "
                           f"{', '.join(k for k in mat if not k.startswith('__'))}); download it again")
    return {k: np.atleast_1d(np.asarray(mat[k])).astype(np.int64).ravel() for k in keys}


def flowers_class_names() -> list[str]:
    """The 102 category names by label (1..102 in ``imagelabels.mat`` -> 0..101):
    torchvision's ``Flowers102.classes`` list, else "class 1" ... "class 102"."""
    import torchvision

    names = getattr(torchvision.datasets.Flowers102, "classes", None)
    if isinstance(names, (list, tuple)) and len(names) == FLOWERS_CLASSES:
        return [str(n) for n in names]
    return [f"class {i}" for i in range(1, FLOWERS_CLASSES + 1)]


def _flowers_split(folder: Path, ids: np.ndarray, labels: np.ndarray, listed_in: str) -> Split:
    """The Split of image ids ``ids`` (1-based, ascending), labels 0..101."""
    bad = ids[(ids < 1) | (ids > len(labels))]
    if bad.size:
        raise BadDataError(f"{folder / 'setid.mat'}: {listed_in} holds image id {int(bad[0])}, outside "
                           f"1..{len(labels)} (imagelabels.mat); download both .mat files again")
    ids = np.sort(ids)
    files = [f"image_{i:05d}.jpg" for i in ids]
    _check_files_exist(folder / "jpg", files, f"setid.mat's {listed_in}")
    return Split(labels[ids - 1], files=[str(folder / "jpg" / f) for f in files])


@DATASETS.register("flowers102", aliases=("oxford_flowers102", "flowers"))
def flowers102(cfg, root: Path, experiment: str = "") -> Source:
    """Oxford Flowers-102 (Nilsback & Zisserman, 2008), 102 categories, the
    paper's official splits: ``train`` + ``val`` (1,020 + 1,020 images) for
    training, ``test`` (6,149) as the test split, from torchvision's layout
    ``root/flowers-102/jpg/image_NNNNN.jpg``, ``imagelabels.mat`` (``labels``,
    1..102 by image id) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``).
    With ``cfg.download`` a missing copy is downloaded by
    ``torchvision.datasets.Flowers102(download=True)``. Needs scipy.

    Raises:
        DataNotFoundError: the folder or a .mat file is missing (download off).
        ConfigError: scipy is not installed.
        BadDataError: damaged .mat files, labels outside 1..102, a class without
            training images, or a listed image missing.
    """
    import torchvision

    folder = root / FLOWERS_DIR
    need = [folder / "jpg", folder / "imagelabels.mat", folder / "setid.mat"]
    def fetch() -> None:
        _download("flowers102", root, lambda: torchvision.datasets.Flowers102(str(root), split="test", download=True))

    locate("flowers102", root, experiment, fetch if cfg.download else None)
    labels = _loadmat(need[1], ("labels",))["labels"] - 1
    if labels.size == 0 or labels.min() < 0 or labels.max() >= FLOWERS_CLASSES:
        found = f"{labels.min() + 1}..{labels.max() + 1}" if labels.size else "none"
        raise BadDataError(f"{need[1]}: labels must be 1..{FLOWERS_CLASSES}, found {found}; download it again")
    sets = _loadmat(need[2], ("trnid", "valid", "tstid"))
    train = _flowers_split(folder, np.concatenate([sets["trnid"], sets["valid"]]), labels, "trnid + valid")
    test = _flowers_split(folder, sets["tstid"], labels, "tstid")
    absent = np.flatnonzero(np.bincount(train.labels, minlength=FLOWERS_CLASSES) == 0)
    if absent.size:
        raise BadDataError(f"{need[2]}: trnid + valid hold no image of class {int(absent[0]) + 1} "
                           f"({absent.size} class(es) without training images); download both .mat files again")
    return Source("flowers102", train, test, flowers_class_names(),
                  f"Oxford Flowers-102 ({folder}, train+val/test)", *IMAGENET_STATS, autoaugment_policy="imagenet")
