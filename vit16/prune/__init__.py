"""Iterative structured pruning of ViTs: IMP, Refill and RSST (``[NAME.prune]``).

* :mod:`~vit16.prune.masks`: masks on the block matrices (``torch.nn.utils.prune``);
* :mod:`~vit16.prune.structures`: heads and MLP neurons as groups of rows and columns;
* :mod:`~vit16.prune.methods`: how the next round's masks are chosen;
* :mod:`~vit16.prune.run`: the rounds, each an ordinary trainer run;
* :mod:`~vit16.prune.export`: a physically smaller model (``python -m vit16 export-pruned``).
"""

from vit16.prune.masks import (
    PRUNABLE,
    apply_masks,
    fold_masks,
    masked_weights,
    ones_masks,
    prunable_linears,
    sparsity,
)
from vit16.prune.methods import (
    METHODS,
    SCOPES,
    imp_masks,
    next_masks,
    refill_masks,
    rsst_lambda,
)
from vit16.prune.run import DEFAULT_RESULTS, check_prune_config, run_pruning

__all__ = [
    "DEFAULT_RESULTS", "METHODS", "PRUNABLE", "SCOPES", "apply_masks", "check_prune_config",
    "fold_masks", "imp_masks", "masked_weights", "next_masks", "ones_masks", "prunable_linears",
    "refill_masks", "rsst_lambda", "run_pruning", "sparsity",
]
