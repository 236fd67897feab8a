"""The paper's analyses (section 4.1 few-shot, section 4.5 "Inspecting the
Vision Transformer", appendix D) as small functions on tensors, one job per
module:

- :mod:`~vit16.analysis.attention`: mean attention distance, attention rollout;
- :mod:`~vit16.analysis.embeddings`: position-embedding similarity, PCA of the
  patch-embedding filters;
- :mod:`~vit16.analysis.ridge`, :mod:`~vit16.analysis.fewshot`: the linear
  few-shot evaluation;
- :mod:`~vit16.analysis.loading`, :mod:`~vit16.analysis.images`: a model from
  ``CKPT_OR_NAME`` and its images and features;
- :mod:`~vit16.analysis.curves`: training curves from ``metrics.jsonl``;
- :mod:`~vit16.analysis.figures` (needs the ``plots`` extra), :mod:`~vit16.analysis.output`.

The commands: ``python -m vit16 inspect``, ``python -m vit16 fewshot``,
``python -m vit16 plot``.
"""

from vit16.analysis.attention import (
    attention_distance_over_images,
    attention_rollout,
    mean_attention_distance,
    patch_distances,
    rollout_maps,
)
from vit16.analysis.embeddings import patch_embedding_pca, position_embedding_similarity
from vit16.analysis.fewshot import FewShotResult, fit_fewshot, run_fewshot
from vit16.analysis.ridge import ridge_solve, signed_targets

__all__ = [
    "FewShotResult", "attention_distance_over_images", "attention_rollout", "fit_fewshot",
    "mean_attention_distance", "patch_distances", "patch_embedding_pca",
    "position_embedding_similarity", "ridge_solve", "rollout_maps", "run_fewshot", "signed_targets",
]
