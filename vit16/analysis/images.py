"""Images and frozen features for the analyses: uint8 batches of a split at
the model's input size (for showing them) and their normalised form (for the
model), without any augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from vit16.config import DataConfig
from vit16.data import Source, Split
from vit16.data.augment import normalize

__all__ = ["extract_features", "image_batches", "load_source", "model_inputs"]


def load_source(data: DataConfig, data_root: str | None = None) -> Source:
    """Read the data set ``data.name`` (official train and test splits).

    Raises:
        DataNotFoundError: not under the data root (``--data-root``, ``VIT16_DATA``, ``./data``).
        UnknownNameError: an unregistered data set.
    """
    from vit16.data import resolve_data_root
    from vit16.registry import DATASETS

    root = resolve_data_root(data_root, data.root)
    return DATASETS.build(data.name, cfg=data, root=root, experiment="")


def image_batches(source: Source, split: Split, data: DataConfig, batch_size: int,
                  num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 (B, 3, S, S), int64 (B,))`` batches of ``split`` in order, at
    ``S = data.img_size`` with the evaluation transform (resize; centre crop
    for files), on the CPU."""
    from torch.utils.data import DataLoader

    from vit16.data.transforms import SplitDataset, eval_transform

    if source.decoded and source.image_size == data.img_size:
        for i in range(0, len(split), batch_size):
            imgs = torch.from_numpy(np.ascontiguousarray(split.images[i:i + batch_size]))
            yield imgs.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(split.labels[i:i + batch_size])
        return
    dataset = SplitDataset(split, eval_transform(data, source.decoded, source.image_size))
    for imgs, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        yield imgs, labels


def model_inputs(images: torch.Tensor, source: Source, device: torch.device | str) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> normalised float32 on ``device`` (the training normalisation)."""
    return normalize(images.to(device), source.mean, source.std)


@torch.no_grad()
def extract_features(model, source: Source, split: Split, data: DataConfig, batch_size: int,
                     device: torch.device | str, num_workers: int = 0) -> torch.Tensor:
    """Frozen pre-logits features of every image of ``split``: the pooled
    representation before the head (after the tanh pre-logits layer when the
    model has one), ``model.forward_head(model.forward_features(x), pre_logits=True)``.

    Returns:
        float32 (N, F) on the CPU, rows in split order.
    """
    out = []
    for imgs, _ in image_batches(source, split, data, batch_size, num_workers):
        x = model_inputs(imgs, source, device)
        out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)

