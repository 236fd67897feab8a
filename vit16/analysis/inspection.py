"""What ``python -m vit16 inspect`` writes: each analysis of the paper's
section 4.5 on a loaded model, as a PNG (unless ``plots=False``) and the
numbers behind it (CSV or JSON with the same stem)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vit16.analysis import figures
from vit16.analysis.attention import (
    attention_distance_over_images,
    attention_rollout,
    rollout_maps,
)
from vit16.analysis.embeddings import patch_embedding_pca, position_embedding_similarity
from vit16.analysis.images import image_batches, model_inputs
from vit16.analysis.loading import LoadedModel
from vit16.analysis.output import write_csv, write_json
from vit16.data import Source, Split
from vit16.data.splits import balanced_indices

__all__ = ["attention_distance_outputs", "filter_outputs", "inspect_model", "pos_embed_outputs",
           "rollout_outputs", "select_images"]


def select_images(split: Split, count: int, seed: int = 0) -> Split:
    """A class-balanced random subset of ``count`` images (all when ``count``
    is 0 or at least the split's size), in split order."""
    if count <= 0 or count >= len(split):
        return split
    return split.subset(balanced_indices(split.labels, count, np.random.default_rng([seed, 5])))


def attention_distance_outputs(lm: LoadedModel, source: Source, split: Split, out: Path,
                               batch_size: int, device, plots: bool) -> dict:
    """``attention_distance.csv`` (layer, head, pixels; 1-based layer and head)
    and ``.png`` (Fig. 7 right). Returns the per-layer summary."""
    model = lm.model
    batches = (model_inputs(x, source, device)
               for x, _ in image_batches(source, split, lm.data, batch_size, lm.data.num_workers))
    dist, n = attention_distance_over_images(model, batches)
    write_csv(out / "attention_distance.csv", ("layer", "head", "mean_distance_px"),
              ((layer + 1, h + 1, float(dist[layer, h])) for layer in range(dist.shape[0])
               for h in range(dist.shape[1])))
    if plots:
        figures.plot_attention_distance(dist, out / "attention_distance.png",
                                        f"{lm.label}: mean attention distance ({n} images)",
                                        model.patch_embed.img_size)
    return {"images": n, "per_layer_mean_px": [float(v) for v in dist.mean(1)],
            "per_layer_min_px": [float(v) for v in dist.min(1).values],
            "per_layer_max_px": [float(v) for v in dist.max(1).values]}


def pos_embed_outputs(lm: LoadedModel, out: Path, plots: bool) -> dict:
    """``pos_embed_similarity.csv`` (query row/col, key row/col, 0-based;
    cosine) and ``.png`` (Fig. 7 centre); skipped for models without an
    absolute position embedding (``pos_embed`` "none" or "relative")."""
    model = lm.model
    pe = model.patch_pos_embed()
    if pe is None:
        return {"skipped": f"pos_embed = {model.pos_embed_type!r} has no absolute position embedding"}
    g = model.patch_embed.grid_size
    sim = position_embedding_similarity(pe, g)
    write_csv(out / "pos_embed_similarity.csv", ("query_row", "query_col", "key_row", "key_col", "cosine"),
              ((r, c, rr, cc, float(sim[r, c, rr, cc])) for r in range(g) for c in range(g)
               for rr in range(g) for cc in range(g)))
    if plots:
        figures.plot_pos_similarity(sim, out / "pos_embed_similarity.png",
                                    f"{lm.label}: position embedding similarity")
    return {"grid": g, "type": model.pos_embed_type}


def filter_outputs(lm: LoadedModel, out: Path, components: int, plots: bool) -> dict:
    """``patch_embed_pca.json`` (explained variance ratios, components
    (k, C, P, P)) and ``.png`` (Fig. 7 left)."""
    comps, explained = patch_embedding_pca(lm.model.patch_embed.proj.weight.cpu(), components)
    write_json(out / "patch_embed_pca.json", {
        "explained_variance_ratio": explained.tolist(), "shape": list(comps.shape),
        "components": comps.tolist()})
    if plots:
        figures.plot_filter_components(comps, explained, out / "patch_embed_pca.png",
                                       f"{lm.label}: patch-embedding filters, first {len(comps)} PCs")
    return {"components": len(comps), "explained_variance_ratio": explained[:5].tolist()}


@torch.no_grad()
def rollout_outputs(lm: LoadedModel, source: Source, split: Split, out: Path, count: int,
                    device, plots: bool) -> dict:
    """``attention_rollout.json`` (per image: label, prediction, rollout map
    (G, G)) and ``.png`` (Fig. 6) for the first ``count`` images of ``split``."""
    model = lm.model
    imgs, labels = next(image_batches(source, split.subset(np.arange(min(count, len(split)))),
                                      lm.data, max(count, 1)))
    tokens, maps = model.forward_attention(model_inputs(imgs, source, device))
    masks = rollout_maps(attention_rollout(maps), model.patch_embed.grid_size,
                         model.num_prefix_tokens).cpu()
    names = source.class_names
    own_classes = lm.native_data and model.num_classes == len(names)
    preds = model.forward_head(tokens).argmax(-1).cpu() if own_classes else None
    rows, titles = [], []
    for i in range(len(imgs)):
        label = int(labels[i])
        pred = None if preds is None else int(preds[i])
        rows.append({"label": label, "label_name": names[label], "predicted": pred,
                     "predicted_name": None if pred is None else names[pred], "map": masks[i].tolist()})
        titles.append(names[label] + ("" if pred is None else f" ({names[pred]})"))
    write_json(out / "attention_rollout.json", {
        "method": "Abnar & Zuidema 2020: mean over heads, + identity, rows renormalised, "
                  "product over blocks; class-token row over the patches (GAP: mean patch row)",
        "images": rows})
    if plots:
        figures.plot_rollout(imgs, masks, titles, out / "attention_rollout.png",
                             f"{lm.label}: input (top), attention rollout (bottom); label (prediction)")
    return {"images": len(rows)}


def inspect_model(lm: LoadedModel, source: Source, out: str | Path, *, split: str = "test",
                  images: int = 256, rollout_images: int = 6, components: int = 28,
                  batch_size: int = 32, device="cpu", plots: bool = True) -> dict:
    """Run every analysis and write its files into ``out``, plus
    ``summary.json`` (what was loaded, the data, the per-layer attention
    distances). Returns the summary.

    Raises:
        PlotsUnavailableError: ``plots`` without matplotlib (checked first).
    """
    if plots:
        figures.require_matplotlib()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = select_images(source.test if split == "test" else source.train, images)
    model = lm.model
    summary = {
        "model": lm.label, "source": lm.source, "load_notes": lm.notes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "img_size": model.patch_embed.img_size, "patch_size": model.patch_embed.patch_size,
        "grid": model.patch_embed.grid_size, "pool": model.pool, "pos_embed": model.pos_embed_type,
        "data": source.description, "split": split,
        "attention_distance": attention_distance_outputs(lm, source, chosen, out, batch_size, device, plots),
        "pos_embed_similarity": pos_embed_outputs(lm, out, plots),
        "patch_embed_pca": filter_outputs(lm, out, components, plots),
        "attention_rollout": rollout_outputs(lm, source, chosen, out, rollout_images, device, plots),
    }
    summary["files"] = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".csv", ".json")
                              and p.name != "summary.json") + ["summary.json"]
    write_json(out / "summary.json", summary)
    return summary
