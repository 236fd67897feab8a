"""Where each registered data set's files must be, checked without reading them.

One table, :data:`LAYOUTS`, names for every data set the on-disk layouts it
can be read from (any one is enough) and how to get it when none is there.
The builders of :mod:`vit16.data.sources` and :mod:`vit16.data.transfer_sources`
ask :func:`find_layout` before they read; ``python train.py --submit`` calls
:func:`check_present` for every run before it queues a job, so a job that
would fail on missing data is never submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vit16.data.roots import DataNotFoundError, not_found
from vit16.registry import DATASETS

__all__ = ["LAYOUTS", "Layouts", "check_present", "find_layout", "locate", "not_present"]


@dataclass(frozen=True)
class Layouts:
    """The layouts of one data set under its data root.

    ``options`` maps a layout's name to the paths (relative to the data root)
    it needs; a path ending in "/" must be a folder, any other a file.
    ``hint`` says how to get the data (``{root}`` is replaced by the data
    root); empty: :func:`vit16.data.roots.not_found`'s download / data-root advice.
    ``downloadable``: ``data.download = true`` fetches it when absent.
    """

    options: dict[str, tuple[str, ...]]
    hint: str = ""
    downloadable: bool = True


def _torchvision_hint(folder: str, size: str) -> str:
    return (f"pass --set data.download=true (torchvision downloads it into {{root}}/{folder}, {size}; "
            f"download once, not from every rank) or --data-root DIR / VIT16_DATA pointing at the "
            f"folder that holds {folder}/")


LAYOUTS: dict[str, Layouts] = {
    "cifar10": Layouts({
        "pickles": ("cifar-10-batches-py/test_batch",),
        "imagefolder": ("cifar10/train/", "cifar10/test/"),
    }),
    "cifar100": Layouts({
        "pickles": ("cifar-100-python/test",),
        "npz": ("cifar100.npz",),
        "imagefolder": ("cifar100/train/", "cifar100/test/"),
    }),
    "imagenet": Layouts(
        {"imagefolder": ("imagenet/train/", "imagenet/val/")},
        "ImageNet cannot be downloaded automatically: get ILSVRC2012 from image-net.org, arrange "
        "it as imagenet/{train,val}/<wnid>/*.JPEG and pass --data-root DIR / VIT16_DATA pointing at "
        "its parent", downloadable=False),
    "imagefolder": Layouts(
        {"test": ("train/", "test/"), "val": ("train/", "val/")},
        "set data.root (or pass --data-root DIR) to the folder that holds train/<class>/* and "
        "test/<class>/* (or val/<class>/*)", downloadable=False),
    "oxford_pets": Layouts(
        {"torchvision": ("oxford-iiit-pet/images/", "oxford-iiit-pet/annotations/trainval.txt",
                         "oxford-iiit-pet/annotations/test.txt")},
        _torchvision_hint("oxford-iiit-pet", "about 0.8 GB")),
    "flowers102": Layouts(
        {"torchvision": ("flowers-102/jpg/", "flowers-102/imagelabels.mat", "flowers-102/setid.mat")},
        _torchvision_hint("flowers-102", "about 0.35 GB")),
}
"""Canonical data set name -> its :class:`Layouts`; ``tests/test_data_faults.py``
checks that every registered data set has an entry."""


def _exists(root: Path, rel: str) -> bool:
    path = root / rel
    return path.is_dir() if rel.endswith("/") else path.is_file()


def find_layout(name: str, root: Path) -> str | None:
    """The first layout of data set ``name`` whose paths are all under ``root``
    (its key in ``LAYOUTS[name].options``), ``None`` when there is none.

    Raises:
        UnknownNameError: ``name`` is not a registered data set.
        KeyError: a registered data set has no :data:`LAYOUTS` entry (a bug).
    """
    layouts = LAYOUTS[DATASETS.canonical(name)]
    return next((k for k, paths in layouts.options.items() if all(_exists(root, p) for p in paths)),
                None)


def not_present(name: str, root: Path, experiment: str = "") -> DataNotFoundError:
    """The one-line error for data set ``name`` absent from ``root``: every path
    looked at (each layout's, in order, once) and how to get the data."""
    layouts = LAYOUTS[DATASETS.canonical(name)]
    tried = list(dict.fromkeys(root / p.rstrip("/") for paths in layouts.options.values() for p in paths))
    return not_found(DATASETS.canonical(name), tried, experiment, layouts.hint.replace("{root}", str(root.absolute())))


def locate(name: str, root: Path, experiment: str = "", download=None) -> str | None:
    """The layout of data set ``name`` under ``root`` (:func:`find_layout`), for
    a builder about to read it. When none is there, ``download()`` (the builder's
    download, passed only when ``data.download`` is set) fetches it first and
    the layout found after it is returned.

    Raises:
        DataNotFoundError: no layout is there and there is no ``download``
            (:func:`not_present`'s line).
    """
    layout = find_layout(name, root)
    if layout is not None:
        return layout
    if download is None:
        raise not_present(name, root, experiment)
    download()
    return find_layout(name, root)


def check_present(data, root: Path, experiment: str = "") -> None:
    """Check, without reading it, that the data set of ``data`` (a
    :class:`~vit16.config.DataConfig`) is under ``root`` in one of its layouts;
    nothing is checked when ``data.download`` is set and the data set can be
    downloaded (the job downloads it).

    Raises:
        DataNotFoundError: no layout is there (one line: the paths tried, the fix).
        UnknownNameError: ``data.name`` is not a registered data set.
    """
    layouts = LAYOUTS[DATASETS.canonical(data.name)]
    if (data.download and layouts.downloadable) or find_layout(data.name, root) is not None:
        return
    raise not_present(data.name, root, experiment)
