"""Closed-form regularised least squares, the paper's linear few-shot
classifier (section 4.1: "solving a regularized least-squares regression
problem that maps the (frozen) representation of a subset of training images
to {-1, 1}^K target vectors"), as in big_vision's few-shot evaluator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["BIAS_CONSTANT", "L2_GRID", "add_bias", "ridge_solve", "signed_targets"]

L2_GRID = tuple(2.0**i for i in range(-10, 20))
"""Ridge strengths tried by default (big_vision's ``l2_regs``)."""

BIAS_CONSTANT = 100.0
"""Value of the constant feature appended for the bias; large, so that the
bias is almost unregularised (big_vision's choice)."""


def signed_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels (N,) int -> float64 (N, K) targets in {-1, 1}: +1 at the class, -1 elsewhere."""
    return 2.0 * torch.nn.functional.one_hot(labels.long(), num_classes).double() - 1.0


def add_bias(x: torch.Tensor, value: float = BIAS_CONSTANT) -> torch.Tensor:
    """(N, F) -> (N, F + 1): append a constant feature (the bias)."""
    return torch.cat([x, x.new_full((x.shape[0], 1), value)], dim=1)


def ridge_solve(x: torch.Tensor, y: torch.Tensor, l2: Sequence[float]) -> torch.Tensor:
    """Ridge regression weights for several strengths at once,
    ``W(l) = argmin ||x W - y||^2 + l ||W||^2 = (x^T x + l I)^-1 x^T y``.

    One eigendecomposition serves every ``l``: of ``x^T x`` (F x F) when
    N >= F, else of ``x x^T`` (N x N), with ``W = x^T (x x^T + l I)^-1 y``
    (the same solution). Computed in float64.

    Args:
        x: (N, F) features.
        y: (N, K) targets.
        l2: strengths, each > 0.

    Returns:
        float64 (len(l2), F, K).

    Raises:
        ValueError: a strength <= 0, or x and y of different lengths.
    """
    if len(l2) == 0 or min(l2) <= 0:
        raise ValueError(f"ridge strengths must be > 0, got {list(l2)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} feature rows but {y.shape[0]} target rows")
    x, y = x.double(), y.double()
    lam = torch.tensor(list(l2), dtype=torch.float64, device=x.device)[:, None, None]
    n, f = x.shape
    if n >= f:
        eig, q = torch.linalg.eigh(x.T @ x)  # (F,), (F, F)
        qty = q.T @ (x.T @ y)  # (F, K)
        return q @ (qty / (eig[:, None] + lam))
    eig, q = torch.linalg.eigh(x @ x.T)  # (N,), (N, N)
    qty = q.T @ y  # (N, K)
    return x.T @ (q @ (qty / (eig[:, None] + lam)))
