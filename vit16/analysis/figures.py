"""Matplotlib figures of the analyses (the optional ``plots`` extra).

matplotlib is imported only inside these functions, through
:func:`require_matplotlib`; without it every function raises
:class:`PlotsUnavailableError` with a one-line message naming the extra.
Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no
global state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "PLOTS_HINT",
    "PlotsUnavailableError",
    "plot_attention_distance",
    "plot_curves",
    "plot_filter_components",
    "plot_pos_similarity",
    "plot_rollout",
    "plot_scaling",
    "require_matplotlib",
]

PLOTS_HINT = 'figures need matplotlib, an optional extra: pip install -e ".[plots]"'


class PlotsUnavailableError(ImportError):
    """matplotlib is not installed; ``str(err)`` names the extra to install."""


def require_matplotlib():
    """Return ``matplotlib.figure.Figure``.

    Raises:
        PlotsUnavailableError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailableError(PLOTS_HINT) from None
    return Figure


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def plot_attention_distance(distances: torch.Tensor, path: str | Path, title: str = "",
                            img_size: int | None = None) -> Path:
    """Paper Fig. 7 right: one point per head, mean attention distance (pixels)
    against the block index. ``distances``: (L, heads)."""
    Figure = require_matplotlib()
    d = distances.double().cpu()
    layers, heads = d.shape
    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.add_subplot()
    for h in range(heads):
        ax.scatter(torch.arange(1, layers + 1), d[:, h], s=14, label=f"head {h + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    if img_size:
        ax.set_ylim(0, img_size * 0.75)
    ax.set_xticks(range(1, layers + 1))
    ax.set_title(title or "Mean attention distance")
    if heads <= 16:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    return _save(fig, path)


def plot_pos_similarity(sim: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Paper Fig. 7 centre: a (gh, gw) grid of tiles; tile (r, c) shows the cosine
    similarity of patch (r, c)'s position embedding to every patch's.
    ``sim``: (gh, gw, gh, gw) from :func:`~vit16.analysis.position_embedding_similarity`."""
    Figure = require_matplotlib()
    gh, gw = sim.shape[:2]
    fig = Figure(figsize=(min(1.0 + 0.55 * gw, 9.5), min(0.55 * gh + 0.8, 9.0)))
    axes = fig.subplots(gh, gw, squeeze=False)
    im = None
    for r in range(gh):
        for c in range(gw):
            ax = axes[r][c]
            im = ax.imshow(sim[r, c].cpu().numpy(), vmin=-1, vmax=1, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(str(r + 1), fontsize=7)
            if r == gh - 1:
                ax.set_xlabel(str(c + 1), fontsize=7)
    fig.supylabel("input patch row")
    fig.supxlabel("input patch column")
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    fig.suptitle(title or "Position embedding similarity")
    return _save(fig, path)


def _as_rgb(component: torch.Tensor):
    """(C, P, P) -> (P, P, 3) or (P, P) array min-max scaled to [0, 1]."""
    c = component.double()
    c = (c - c.min()) / (c.max() - c.min()).clamp_min(1e-12)
    return (c.permute(1, 2, 0) if c.shape[0] == 3 else c[0]).numpy()


def plot_filter_components(components: torch.Tensor, explained: torch.Tensor, path: str | Path,
                           title: str = "") -> Path:
    """Paper Fig. 7 left: the principal components of the patch-embedding
    filters as RGB tiles (each scaled to [0, 1]), most variance first, with
    the percentage of variance each explains. ``components``: (k, C, P, P)."""
    Figure = require_matplotlib()
    k = components.shape[0]
    cols = min(7, k)
    rows = (k + cols - 1) // cols
    fig = Figure(figsize=(1.2 * cols, 1.3 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(a for row in axes for a in row):
        ax.set_axis_off()
        if i < k:
            ax.imshow(_as_rgb(components[i]), interpolation="nearest", cmap="gray")
            ax.set_title(f"{100 * float(explained[i]):.1f}%", fontsize=7)
    fig.suptitle(title or "Patch-embedding filters: principal components")
    return _save(fig, path)


def plot_rollout(images: torch.Tensor, masks: torch.Tensor, titles: Sequence[str], path: str | Path,
                 title: str = "") -> Path:
    """Paper Fig. 6: each input image above the image weighted by its attention
    rollout map (upsampled, divided by its maximum).

    Args:
        images: uint8 (n, 3, S, S).
        masks: (n, gh, gw) rollout maps.
        titles: n captions.
    """
    Figure = require_matplotlib()
    n = images.shape[0]
    m = masks.double()[:, None]
    m = m / m.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None, None]
    m = torch.nn.functional.interpolate(m, size=tuple(images.shape[-2:]), mode="bilinear",
                                        align_corners=False).clamp(0, 1)
    fig = Figure(figsize=(1.8 * n, 4.0))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        img = images[i].permute(1, 2, 0).double() / 255.0
        axes[0][i].imshow(img.numpy())
        axes[0][i].set_title(titles[i], fontsize=7)
        axes[1][i].imshow((img * m[i, 0][..., None]).numpy())
        for ax in (axes[0][i], axes[1][i]):
            ax.set_axis_off()
    fig.suptitle(title or "Input (top) and attention rollout (bottom)")
    return _save(fig, path)


def plot_curves(runs: Sequence[tuple[str, list[dict]]], path: str | Path, title: str = "") -> Path:
    """Training curves of several runs: validation top-1 (left) and training
    loss (right) against the epoch. ``runs``: ``(label, metrics.jsonl rows)``."""
    Figure = require_matplotlib()
    fig = Figure(figsize=(9.5, 3.6))
    top1, loss = fig.subplots(1, 2)
    for label, rows in runs:
        val = [(r["epoch"], r["val_top1"]) for r in rows if r.get("val_top1") is not None]
        tr = [(r["epoch"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
        if val:
            top1.plot(*zip(*val), marker="o", ms=3, label=label)
        if tr:
            loss.plot(*zip(*tr), marker="o", ms=3, label=label)
    top1.set_xlabel("epoch")
    top1.set_ylabel("val top-1 (%)")
    loss.set_xlabel("epoch")
    loss.set_ylabel("train loss")
    for ax in (top1, loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_pruning(runs: Sequence[tuple[str, list[dict]]], path: str | Path, title: str = "") -> Path:
    """Test top-1 (%) against sparsity (%) of pruning runs, one line per run and
    a point per round. ``runs``: ``(label, round.json rows)``."""
    Figure = require_matplotlib()
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for label, rows in runs:
        points = [(r["sparsity"], r["test_top1"]) for r in rows if r.get("test_top1") is not None]
        if points:
            ax.plot(*zip(*points), marker="o", ms=4, label=label)
    ax.set_xlabel("sparsity of qkv, proj, fc1, fc2 (%)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_scaling(lines: Sequence[tuple[str, Sequence[tuple[float, float, float | None, int]]]],
                 path: str | Path, xlabel: str, ylabel: str = "test top-1 (%)", title: str = "") -> Path:
    """Paper Fig. 3/4 analogue: a metric (%) against a numeric setting such as
    the fraction of the training data, one line per configuration.

    Args:
        lines: ``(label, points)``, each point ``(x, mean %, sample std % or
            None, n)``; the std is drawn as an error bar (none when ``None``,
            n = 1) and every point is annotated ``n=N``.
        path: the PNG to write.
        xlabel: the x axis title (the setting's name). The x axis is
            logarithmic when every x is positive (else linear), with a tick
            at each x.
    """
    Figure = require_matplotlib()
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    xs = sorted({p[0] for _, points in lines for p in points})
    for label, points in lines:
        x, mean, std, n = zip(*points)
        (line,) = ax.plot(x, mean, marker="o", ms=4, label=label)
        bars = [(a, b, s) for a, b, s in zip(x, mean, std) if s is not None]
        if bars:
            ax.errorbar(*zip(*bars), fmt="none", ecolor=line.get_color(), capsize=3)
        for a, b, k in zip(x, mean, n):
            ax.annotate(f"n={k}", (a, b), textcoords="offset points", xytext=(4, 4), fontsize=6,
                        color=line.get_color())
    if xs and xs[0] > 0:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{v:g}" for v in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, path)
