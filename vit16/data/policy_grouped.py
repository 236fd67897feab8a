"""The previous batch policy, kept only for the side-by-side speed measurement
of :mod:`vit16.data.policy_bench` (``BatchPolicy(..., impl="grouped")``): to be
removed once the comparison is recorded. It groups the samples that drew the
same (op, magnitude) and transforms each group with torchvision's own op code,
through torchvision's PRIVATE attributes (``_AUGMENTATION_SPACE``,
``_policies``, ``_apply_image_or_video_transform``, ``_fill``), which break on
upgrades: never use it for training.
"""

from __future__ import annotations

from collections import defaultdict

import torch


class GroupedPolicy:
    """The previous per-(op, magnitude) grouped policy on a torchvision v2
    policy ``transform`` (uses its private attributes; for the speed
    comparison only, see :class:`BatchPolicy`)."""

    def __init__(self, transform, name: str):
        self.transform = transform
        self.name = name
        self._space = self.transform._AUGMENTATION_SPACE
        self._ops = list(self._space)
        self._mags: dict[tuple, list[float] | None] = {}

    def _magnitude(self, op: str, index: int, bins: int, h: int, w: int, negate: bool) -> float:
        key = (op, bins, h, w)
        if key not in self._mags:
            mags = self._space[op][0](bins, h, w)
            self._mags[key] = None if mags is None else [float(m) for m in mags]
        mags = self._mags[key]
        if mags is None:
            return 0.0
        return -mags[index] if self._space[op][1] and negate else mags[index]

    def sample(self, n: int, h: int, w: int, gen: torch.Generator) -> list[list[tuple[str, float] | None]]:
        """Draw the ops: ``stages[s][i]`` is sample ``i``'s (op, magnitude) in stage ``s`` or None."""
        t = self.transform
        stages = []
        if self.name == "autoaugment":
            policies = t._policies
            choice = torch.randint(len(policies), (n,), generator=gen).tolist()
            for s in range(2):
                fire = (torch.rand(n, generator=gen) <= torch.tensor(
                    [policies[c][s][1] for c in choice])).tolist()
                neg = (torch.rand(n, generator=gen) <= 0.5).tolist()
                stage = []
                for i, c in enumerate(choice):
                    op, _, idx = policies[c][s]
                    stage.append((op, self._magnitude(op, idx or 0, 10, h, w, neg[i])) if fire[i] else None)
                stages.append(stage)
            return stages
        num_ops = t.num_ops if self.name == "randaugment" else 1
        for _ in range(num_ops):
            ops = torch.randint(len(self._ops), (n,), generator=gen).tolist()
            if self.name == "randaugment":
                bins = [t.magnitude] * n
            else:
                bins = torch.randint(t.num_magnitude_bins, (n,), generator=gen).tolist()
            neg = (torch.rand(n, generator=gen) <= 0.5).tolist()
            stages.append([(self._ops[o], self._magnitude(self._ops[o], k, t.num_magnitude_bins, h, w, ng))
                           for o, k, ng in zip(ops, bins, neg)])
        return stages

    def apply(self, images: torch.Tensor, stages: list[list[tuple[str, float] | None]]) -> torch.Tensor:
        """Apply drawn ``stages`` to uint8 ``images`` (B, 3, H, W); returns a new tensor."""
        t = self.transform
        out = images.clone()
        for stage in stages:
            groups: dict[tuple[str, float], list[int]] = defaultdict(list)
            for i, op in enumerate(stage):
                if op is not None and op[0] != "Identity":
                    groups[op].append(i)
            for (op, mag), idx in groups.items():
                sel = torch.tensor(idx, device=images.device)
                out[sel] = t._apply_image_or_video_transform(out[sel], op, mag, interpolation=t.interpolation,
                                                             fill=t._fill)
        return out

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> augmented uint8 (B, 3, H, W), per-sample ops drawn from ``gen``."""
        return self.apply(images, self.sample(images.shape[0], images.shape[2], images.shape[3], gen))
