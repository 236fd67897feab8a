"""Linear few-shot evaluation (paper section 4.1, Fig. 4, Fig. 6 of the
appendix's few-shot results): frozen features, a closed-form ridge
classifier onto {-1, 1}^K targets per (shots, seed), the ridge strength
chosen on held-out training images, top-1 on the test set, mean and spread
over seeds. This module works on feature tensors; :mod:`vit16.commands.fewshot` is the
command line that extracts them from a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vit16.analysis.ridge import L2_GRID, add_bias, ridge_solve, signed_targets

__all__ = ["FewShotResult", "fewshot_indices", "fit_fewshot", "holdout_indices", "needed_indices",
           "run_fewshot", "summarize"]


def holdout_indices(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """``per_class`` random images of every class (sorted positions), for
    choosing the ridge strength; the same for every seed and shot count.

    Raises:
        ValueError: a class has fewer than ``per_class`` images.
    """
    rng = np.random.default_rng([seed, 7])
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than the "
                             f"{per_class} held out per class; lower --holdout")
        out.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(out)).astype(np.int64)


def fewshot_indices(labels: np.ndarray, shots: int, seed: int, exclude: np.ndarray = ()) -> np.ndarray:
    """``shots`` random images of every class for seed ``seed``, never one of
    ``exclude``. Nested: for one seed, the k-shot set is contained in every
    larger shot set (each class's images are drawn in one random order and the
    first ``shots`` are taken).

    Returns:
        int64 (shots * classes,), class by class.

    Raises:
        ValueError: a class has fewer than ``shots`` images left.
    """
    rng = np.random.default_rng([seed, 11])
    allowed = np.ones(len(labels), dtype=bool)
    allowed[np.asarray(exclude, dtype=np.int64)] = False
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero((labels == c) & allowed)
        if len(idx) < shots:
            raise ValueError(f"class {c} has {len(idx)} training images outside the held-out "
                             f"set, fewer than {shots} shots")
        out.append(rng.permutation(idx)[:shots])
    return np.concatenate(out).astype(np.int64)


def _standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean = train.mean(0, keepdim=True)
    std = train.std(0, unbiased=False, keepdim=True) + 1e-5
    return [add_bias((t.double() - mean) / std) for t in (train, *others)]


def _top1(x: torch.Tensor, w: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, F), (M, F, K), (N,) -> (M,) top-1 in percent."""
    pred = (x @ w).argmax(-1)  # (M, N)
    return (pred == labels.to(pred.device)).double().mean(-1) * 100.0


def fit_fewshot(train_x: torch.Tensor, train_y: torch.Tensor, holdout_x: torch.Tensor,
                holdout_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                num_classes: int, l2_grid: Sequence[float] = L2_GRID) -> dict:
    """One few-shot problem: features standardised with the training shots'
    mean and std (plus a constant bias feature, big_vision's recipe), a ridge
    classifier onto {-1, 1}^K for every strength of ``l2_grid``, the strength
    with the best held-out top-1 (ties: the strongest), its test top-1.

    Args:
        train_x, holdout_x, test_x: (N, F) frozen features.
        train_y, holdout_y, test_y: (N,) int labels.

    Returns:
        ``{"l2", "holdout_top1", "test_top1"}`` (top-1 in percent).
    """
    tx, hx, sx = _standardize(train_x, holdout_x, test_x)
    w = ridge_solve(tx, signed_targets(train_y, num_classes), l2_grid)
    held = _top1(hx, w, holdout_y)
    best = int(torch.nonzero(held == held.max()).max())  # strongest among ties
    return {"l2": float(l2_grid[best]), "holdout_top1": float(held[best]),
            "test_top1": float(_top1(sx, w[best:best + 1], test_y)[0])}


@dataclass
class FewShotResult:
    """Test top-1 (percent) of one shot count over seeds."""

    shots: int
    per_seed: list[dict] = field(default_factory=list)  # {"seed", "l2", "holdout_top1", "test_top1"}

    @property
    def mean(self) -> float:
        return float(np.mean([r["test_top1"] for r in self.per_seed]))

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof 1; 0 for one seed)."""
        v = [r["test_top1"] for r in self.per_seed]
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    def to_dict(self) -> dict:
        v = [r["test_top1"] for r in self.per_seed]
        return {"shots": self.shots, "mean_top1": self.mean, "std_top1": self.std,
                "min_top1": float(min(v)), "max_top1": float(max(v)), "seeds": self.per_seed}


def summarize(shots: int, per_seed: list[dict]) -> FewShotResult:
    """Collect per-seed results of one shot count."""
    return FewShotResult(shots, list(per_seed))


def run_fewshot(pool_x: torch.Tensor, pool_y: np.ndarray, holdout: np.ndarray, test_x: torch.Tensor,
                test_y: torch.Tensor, num_classes: int, shots: Sequence[int], seeds: Sequence[int],
                l2_grid: Sequence[float] = L2_GRID, rows: np.ndarray | None = None) -> list[FewShotResult]:
    """Few-shot top-1 for every shot count over every seed.

    Args:
        pool_x: (R, F) features of training images: of every image of
            ``pool_y`` (R = N), or only of the images at the sorted positions
            ``rows`` (e.g. :func:`needed_indices`).
        pool_y: int (N,) labels of all the training images.
        holdout: positions in ``pool_y`` of the held-out images (ridge choice).
        test_x, test_y: (M, F) test features and (M,) labels.
        shots: images per class, e.g. (1, 5, 10, 25).
        seeds: one few-shot draw per seed.
        rows: sorted positions in ``pool_y`` of the rows of ``pool_x``; None = all.

    Returns:
        one :class:`FewShotResult` per shot count, in the order of ``shots``.

    Raises:
        ValueError: ``rows`` lacks an image that is needed.
    """
    labels = torch.as_tensor(pool_y)

    def features(idx: np.ndarray) -> torch.Tensor:
        if rows is None:
            return pool_x[idx]
        at = np.minimum(np.searchsorted(rows, idx), len(rows) - 1)
        if not np.array_equal(rows[at], idx):
            raise ValueError("the features given lack some held-out or few-shot images")
        return pool_x[at]

    hx, hy = features(holdout), labels[holdout]
    results = []
    for k in shots:
        per_seed = []
        for seed in seeds:
            idx = fewshot_indices(pool_y, k, seed, exclude=holdout)
            r = fit_fewshot(features(idx), labels[idx], hx, hy, test_x, test_y, num_classes, l2_grid)
            per_seed.append({"seed": int(seed), **r})
        results.append(summarize(k, per_seed))
    return results


def needed_indices(pool_y: np.ndarray, holdout: np.ndarray, shots: Sequence[int],
                   seeds: Sequence[int]) -> np.ndarray:
    """Every training-pool position :func:`run_fewshot` will read (the held-out
    images and each seed's largest shot set, which contains the smaller ones)."""
    k = max(shots)
    parts = [holdout] + [fewshot_indices(pool_y, k, s, exclude=holdout) for s in seeds]
    return np.unique(np.concatenate(parts))

