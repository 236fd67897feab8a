"""Class probabilities of a model on image files of any size: the files of
folders, each image through the model's evaluation transform (the data set's
resize and centre crop to the model's input size, then its mean/std), top-k
class names and probabilities.

    files, problems = find_images(["photos/", "cat.jpg"])
    traits = dataset_traits(lm.data, data_root=None)
    rows, problems = predict_files(lm.model, files, traits, lm.data.img_size, topk=5)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["CIFAR10_CLASSES", "IMAGE_SUFFIXES", "DataTraits", "dataset_traits", "find_images",
           "predict_files", "predict_transform"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File suffixes a folder is searched for (case-insensitive)."""

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
"""CIFAR-10's label names in label order (its ``batches.meta``), for when the data is not on disk."""


@dataclass
class DataTraits:
    """What predicting needs of a data set: the normalisation (per-channel in
    [0, 1]), the class names in label order, whether its images are stored
    decoded at a fixed small size (CIFAR: no crop margin at evaluation), and a
    note saying where the names came from when not from the data on disk."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str]
    decoded: bool
    note: str = ""


def dataset_traits(data, data_root: str | None = None, num_classes: int | None = None) -> DataTraits:
    """The traits of the data set ``data.name``: read from the data on disk when
    it is found there (CIFAR; ImageNet's names are torchvision's category names
    and its folders are never listed), else vit16's built-in statistics with
    CIFAR-10's names or ``class 0 .. class K-1``.

    Args:
        data: a :class:`~vit16.config.DataConfig`.
        data_root: ``--data-root``; num_classes: the model's class count (for
            the fallback names), ``None`` = the data set's.

    Returns:
        a :class:`DataTraits`.

    Raises:
        UnknownNameError: an unregistered data set.
        ValueError: a data set without built-in statistics that is not on disk.
    """
    from vit16.analysis.images import load_source
    from vit16.data import DataNotFoundError
    from vit16.data import sources
    from vit16.registry import DATASETS

    name = DATASETS.canonical(data.name)
    if name == "imagenet":
        from torchvision.models import ViT_B_16_Weights

        names = list(ViT_B_16_Weights.IMAGENET1K_V1.meta["categories"])  # sorted-wnid order, as vit16's labels
        return DataTraits(*sources.IMAGENET_STATS, names, decoded=False)
    try:
        source = load_source(data, data_root)
        return DataTraits(source.mean, source.std, list(source.class_names), source.decoded)
    except DataNotFoundError:
        stats = {"cifar10": sources.CIFAR10_STATS, "cifar100": sources.CIFAR100_STATS}.get(name)
        if stats is None:
            raise ValueError(f"{name} is not under the data root and vit16 has no built-in statistics "
                             "for it; pass --data-root DIR holding it") from None
    k = num_classes or (10 if name == "cifar10" else 100)
    if name == "cifar10" and k == 10:
        return DataTraits(*stats, list(CIFAR10_CLASSES), decoded=True)
    return DataTraits(*stats, [f"class {i}" for i in range(k)], decoded=True,
                      note=f"{name} is not under the data root: classes are numbered (pass --data-root "
                           "for their names)")


def find_images(paths: list[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """The image files ``paths`` name: files as given (whatever their suffix),
    folders searched recursively for :data:`IMAGE_SUFFIXES` (sorted by path).

    Returns:
        ``(files, problems)``: the files, each once in the order found, and one
        line per path that is neither a file nor a folder with images.
    """
    files: list[Path] = []
    problems: list[str] = []
    for arg in paths:
        path = Path(arg).expanduser()
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{path}: a folder without image files ({', '.join(IMAGE_SUFFIXES)})")
        else:
            found = []
            problems.append(f"{path}: no such file or folder")
        files += [p for p in found if p not in files]
    return files, problems


def predict_transform(img_size: int, decoded: bool):
    """The evaluation transform for an image of any size, uint8 (3, h, w) ->
    uint8 (3, S, S): :func:`vit16.data.transforms.eval_transform` of a file
    (shorter side to ``S * 256 / 224``, centre crop S) or, for data sets stored
    decoded at a small size (CIFAR), of a decoded image (shorter side to S,
    bicubic) followed by a centre crop to S, so a 32x32 CIFAR image is used
    whole, as the trainer evaluates it."""
    from torchvision.transforms import v2

    from vit16.config import DataConfig
    from vit16.data.transforms import eval_transform

    t = eval_transform(DataConfig(img_size=img_size), decoded, None)
    return v2.Compose([t, v2.CenterCrop(img_size)]) if decoded else t


@torch.no_grad()
def predict_files(model: nn.Module, files: list[Path], traits: DataTraits, img_size: int, *,
                  topk: int = 5, batch_size: int = 32,
                  device: torch.device | str = "cpu") -> tuple[list[dict], list[str]]:
    """The top-``topk`` classes of each image file.

    Args:
        model: maps float32 (B, 3, S, S) to logits (B, K), eval mode.
        files: image files (any size, any format torchvision or PIL decodes).
        traits: the data set's normalisation and class names (:func:`dataset_traits`).
        img_size: S; topk: classes per image (at most K); batch_size: images per forward.

    Returns:
        ``(rows, problems)``: per decoded image ``{"file", "top": [{"class", "index",
        "prob"}, ...]}`` (probabilities of the float32 softmax, descending), in
        ``files`` order, and one line per file that does not decode (naming it).

    Raises:
        ValueError: ``topk`` < 1, or the model's class count differs from the names'.
    """
    from vit16.data.augment import normalize
    from vit16.data.decode import load_image
    from vit16.data.roots import BadDataError

    if topk < 1:
        raise ValueError(f"--topk {topk} must be >= 1")
    transform = predict_transform(img_size, traits.decoded)
    rows, problems = [], []
    for i in range(0, len(files), batch_size):
        chunk = []
        for f in files[i:i + batch_size]:
            try:
                chunk.append((f, transform(load_image(str(f)))))
            except BadDataError as err:  # one line naming the file; the others are still predicted
                problems.append(str(err))
        if not chunk:
            continue
        x = normalize(torch.stack([img for _, img in chunk]).to(device), traits.mean, traits.std)
        probs = model(x).float().softmax(dim=1).cpu()
        if probs.shape[1] != len(traits.class_names):
            raise ValueError(f"the model outputs {probs.shape[1]} classes but the data set has "
                             f"{len(traits.class_names)}; pass the --dataset its head was trained for")
        p, idx = probs.topk(min(topk, probs.shape[1]), dim=1)
        rows += [{"file": str(f), "top": [{"class": traits.class_names[j], "index": j, "prob": q}
                                          for q, j in zip(pr.tolist(), ix.tolist())]}
                 for (f, _), pr, ix in zip(chunk, p, idx)]
    return rows, problems
