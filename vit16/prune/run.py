"""Iterative pruning rounds: ``train.py NAME`` for a table with a ``[NAME.prune]`` method.

Round ``r`` lives in ``out_dir/round_RR/`` and is an ordinary trainer run
(:func:`vit16.trainer.train`: ``last.pt``, ``best.pt``, ``metrics.jsonl``,
resume, DDP, Slurm requeue) of a model whose prunable layers carry the
round's masks (:func:`vit16.prune.apply_masks`). Per round:

1. masks: none in round 0; later, :func:`vit16.prune.next_masks` on the
   previous round's ``pruned.pt``;
2. weights: round 0 starts from ``init`` (or a random init); the rewind point
   ``out_dir/rewind.pt`` is written before round 0 trains (``rewind_epoch = 0``)
   or at the end of its epoch ``rewind_epoch``; later rounds start from it;
3. train ``epochs``. RSST trains under the previous masks with its growing
   penalty on the weights the new masks drop (:func:`vit16.prune.rsst_lambda`);
4. apply the round's final masks, evaluate val and test, write
   ``pruned.pt`` (the per-round checkpoint), append a row to the pruning
   table (:data:`vit16.results.PRUNE_COLUMNS`) and ``round.json``.

A round with ``round.json`` is done and skipped when the run is started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit16 import distributed
from vit16.checkpoint import git_commit, load_checkpoint, save_checkpoint
from vit16.config import ConfigError, ExperimentConfig, check_ranges
from vit16.engine import evaluate
from vit16.prune.masks import (
    apply_masks,
    fold_masks,
    masked_weights,
    ones_masks,
    prunable_linears,
    sparsity,
)
from vit16.prune.methods import next_masks, rsst_lambda
from vit16.prune.export import export_model
from vit16.results import PRUNE_COLUMNS, append_result, device_name
from vit16.rundir import RunDir
from vit16.runtime import Runtime, build_model, build_run_data, load_init, seed_everything, setup_runtime
from vit16.trainer import train

__all__ = ["DEFAULT_RESULTS", "check_prune_config", "run_pruning"]

DEFAULT_RESULTS = "results/PRUNING.md"


def check_prune_config(cfg: ExperimentConfig) -> None:
    """Validate ``cfg.prune`` before any work: its values
    (:func:`vit16.config.check_ranges`, for configs not made by
    :func:`~vit16.config.resolve`), and that the model is a ViT.

    Raises:
        ConfigError: a ``[NAME.prune]`` value out of its range (unknown method
            or scope, rounds < 1, rate outside [0, 1), rewind_epoch outside
            [0, epochs], a negative reg), or a model that is not a ViT.
    """
    check_ranges(cfg, ("prune",))
    if not _is_vit(cfg):
        raise ConfigError(f"[{cfg.name or 'NAME'}.prune]: pruning works on ViT models, not "
                          f"{cfg.model.name!r}; choose a vit_* model")


def _is_vit(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg.model.name`` builds a :class:`vit16.models.VisionTransformer`
    (with its defaults, on the meta device: no memory, no init)."""
    from vit16.models import VisionTransformer
    from vit16.registry import MODELS

    with torch.device("meta"):
        model = MODELS.build(cfg.model.name)
    return isinstance(model, VisionTransformer)


class RsstPenalty:
    """RSST's growing L2 penalty as a trainer ``grad_hook``: at optimizer step
    ``i`` of ``n``, ``grad += rsst_lambda(i, n) * w`` on the weights that the
    round's masks keep and its target masks drop."""

    def __init__(self, model: nn.Module, drop: dict[str, torch.Tensor], reg: float, exponent: float):
        layers = prunable_linears(model)
        self.params = [(layers[n].weight_orig, drop[n].to(layers[n].weight_orig.device))
                       for n in drop if drop[n].any()]
        self.reg, self.exponent = reg, exponent

    @torch.no_grad()
    def __call__(self, step: int, total_steps: int) -> None:
        lam = rsst_lambda(step, total_steps, self.reg, self.exponent)
        for weight, drop in self.params:
            if weight.grad is not None:
                weight.grad.add_(weight * drop, alpha=lam)

    def norm(self) -> float:
        """L2 norm of the penalised weights."""
        with torch.no_grad():
            return float(sum(((w * d) ** 2).sum() for w, d in self.params) ** 0.5) if self.params else 0.0


def _load_round(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A round's weights as ``(plain state dict, masks)`` (masks empty for a dense round)."""
    return fold_masks(load_checkpoint(path, "cpu")["model"])


def run_pruning(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    data_root: str | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    results_file: str | os.PathLike | None = DEFAULT_RESULTS,
    overrides: Iterable[str] = (),
    data: Any = None,
) -> list[dict[str, Any]]:
    """Run every pruning round of ``cfg`` (module docstring) into ``out_dir``.

    Args:
        cfg: an experiment with ``cfg.prune.method`` set.
        out_dir: holds ``rewind.pt`` and ``round_RR/`` per round.
        data_root, device, overrides: as for :func:`vit16.trainer.train`.
        resume: go on from the rounds already done (and the round in progress);
            ``False`` deletes ``out_dir``'s rounds and starts over.
        results_file: the pruning table that gets one row per round (``None`` = none).
        data: a data bundle to use instead of building one (tests).

    Returns:
        one dict per round: ``round``, ``sparsity`` (%, exact zeros among the
        prunable weights), ``heads`` / ``neurons`` (per block), ``params``
        (of the exported model), ``val_top1`` / ``test_top1`` (% after the
        round's masks), ``summary`` (the trainer's), and for RSST rounds
        ``penalised_norm_start`` / ``penalised_norm_end`` (L2 norm of the
        weights under the penalty, before the mask cuts them).

    Raises:
        ConfigError: a bad ``[NAME.prune]`` table (:func:`check_prune_config`).
        Everything :func:`vit16.trainer.train` raises.
    """
    check_prune_config(cfg)
    rt = setup_runtime(cfg, device)
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as owned:
        if rt.is_main:  # writable, and ours alone, before any data is built
            owned.enter_context(RunDir(out_dir).claim(results_file))
        return _run_rounds(cfg, rt, out_dir, data_root=data_root, resume=resume,
                           results_file=results_file, overrides=overrides, data=data)


def _run_rounds(cfg: ExperimentConfig, rt: Runtime, out_dir: Path, *, data_root, resume,
                results_file, overrides, data) -> list[dict[str, Any]]:
    """The rounds of :func:`run_pruning`, in a run directory this process owns."""
    if rt.is_main:
        if not resume:
            for old in [*out_dir.glob("round_*"), out_dir / "rewind.pt"]:
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    seed_everything(cfg.seed)
    if data is None:
        data = build_run_data(cfg, rt, data_root)
    rounds = _Rounds(cfg, rt, out_dir, data, git_commit())
    rows = []
    for r in range(cfg.prune.rounds):
        rdir = out_dir / f"round_{r:02d}"
        if (rdir / "round.json").exists():
            rows.append(json.loads((rdir / "round.json").read_text()))
            continue
        plan = rounds.plan(r)
        norm_start = plan.penalty.norm() if plan.penalty else None
        summary = train(rounds.round_cfg, rdir, device=rt.device, resume=True, results_file=None,
                        overrides=overrides, model=plan.model, data=data, grad_hook=plan.penalty,
                        epoch_hook=plan.epoch_hook)
        distributed.barrier()  # rank 0's last.pt is complete
        row, pruned = rounds.measure(r, plan, summary)
        row["penalised_norm_start"] = norm_start
        if rt.is_main:
            save_checkpoint(rdir / "pruned.pt", pruned)
            if results_file is not None:
                append_result(results_file, _table_row(cfg, row, rt.device, rounds.commit, overrides),
                              columns=PRUNE_COLUMNS)
            tmp = rdir / "round.json.tmp"
            tmp.write_text(json.dumps(row, indent=2) + "\n")
            os.replace(tmp, rdir / "round.json")
            _log_round(cfg, row)
        distributed.barrier()
        rows.append(row)
    return rows


@dataclasses.dataclass
class _RoundPlan:
    """How round ``r`` trains: its model (masked for ``r > 0``), the RSST
    penalty, the masks it ends with, and the rewind hook of round 0."""

    model: nn.Module
    final_masks: dict[str, torch.Tensor] | None = None
    drop: dict[str, torch.Tensor] | None = None  # the weights RSST's penalty fades
    penalty: RsstPenalty | None = None
    epoch_hook: Any = None


@dataclasses.dataclass
class _Rounds:
    """What the rounds of one pruning run share."""

    cfg: ExperimentConfig
    rt: Runtime
    out_dir: Path
    data: Any
    commit: str

    def __post_init__(self) -> None:
        self.round_cfg = dataclasses.replace(self.cfg, init="")  # rounds start from rewind.pt
        self.rewind_path = self.out_dir / "rewind.pt"

    def fresh_model(self) -> nn.Module:
        seed_everything(self.cfg.seed)
        return build_model(self.round_cfg, self.data.num_classes)

    def save_rewind(self, model: nn.Module, epoch: int) -> None:
        if self.rt.is_main:
            save_checkpoint(self.rewind_path, {"model": model.state_dict(), "epoch": epoch,
                                               "config": self.cfg.to_dict(),
                                               "num_classes": self.data.num_classes})

    def plan(self, r: int) -> _RoundPlan:
        """Round ``r``'s starting model and masks (module docstring, steps 1-3)."""
        p, model = self.cfg.prune, self.fresh_model()
        if r == 0:
            prunable_linears(model)  # a non-ViT fails here, before training
            if self.cfg.init:
                load_init(model, self.cfg.init, self.cfg.init_patch_resize)
            if p.rewind_epoch == 0:
                self.save_rewind(model, 0)
                return _RoundPlan(model)

            def epoch_hook(epoch: int) -> None:
                if epoch == p.rewind_epoch:
                    self.save_rewind(model, epoch)

            return _RoundPlan(model, epoch_hook=epoch_hook)
        depth, head_dim = len(model.blocks), model.blocks[0].attn.head_dim
        prev_state, prev_masks = _load_round(self.out_dir / f"round_{r - 1:02d}" / "pruned.pt")
        prev_masks = prev_masks or ones_masks(model)
        weights = {n: prev_state[f"{n}.weight"] for n in prev_masks}
        final_masks = next_masks(p.method, weights, prev_masks, p.rate, p.scope, depth, head_dim)
        train_masks = prev_masks if p.method == "rsst" else final_masks
        model.load_state_dict(load_checkpoint(self.rewind_path, "cpu")["model"])
        apply_masks(model, train_masks)
        plan = _RoundPlan(model, final_masks)
        if p.method == "rsst" and p.reg > 0:
            plan.drop = {n: train_masks[n] * (1 - final_masks[n]) for n in final_masks}
            plan.penalty = RsstPenalty(model, plan.drop, p.reg, p.reg_exponent)
        return plan

    def measure(self, r: int, plan: _RoundPlan,
                summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Round ``r``'s result, its final weights under its final masks: the
        measured row and the ``pruned.pt`` checkpoint (module docstring, step 4)."""
        rdir = self.out_dir / f"round_{r:02d}"
        state, _ = _load_round(rdir / "last.pt")
        model = self.fresh_model()
        model.load_state_dict(state)
        if r > 0:
            apply_masks(model, plan.final_masks)
        model.to(self.rt.device)
        row = _measure(model, self.data)
        pruned = {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                  "config": self.cfg.to_dict(), "num_classes": self.data.num_classes, "round": r,
                  "git_commit": self.commit}
        exported, arch = export_model(pruned)  # the structures still acting, and their size
        row.update(heads=arch["kwargs"]["block_heads"], neurons=arch["kwargs"]["block_mlp_dims"],
                   params=sum(t.numel() for t in exported.parameters()))
        row.update(round=r, summary=summary, penalised_norm_start=None, penalised_norm_end=None)
        if plan.drop is not None:
            row["penalised_norm_end"] = float(sum(((state[f"{n}.weight"] * d) ** 2).sum()
                                                  for n, d in plan.drop.items()) ** 0.5)
        return row, pruned


def _measure(model: nn.Module, data: Any) -> dict[str, Any]:
    """Sparsity and val/test top-1 of a (masked) model."""
    val = evaluate(model, data.val) if data.val is not None and len(data.val) else None
    test = evaluate(model, data.test) if data.test is not None and len(data.test) else None
    return {"sparsity": sparsity(masked_weights(model)),
            "val_top1": val and val["top1"], "test_top1": test and test["top1"]}


def _table_row(cfg: ExperimentConfig, row: dict[str, Any], device: torch.device, commit: str,
               overrides: Iterable[str]) -> dict[str, Any]:
    """The results-table row (:data:`vit16.results.PRUNE_COLUMNS`) of a round."""
    return {
        "experiment": cfg.name, "method": cfg.prune.method, "round": row["round"],
        "sparsity": row["sparsity"], "heads": " ".join(map(str, row["heads"])),
        "neurons": " ".join(map(str, row["neurons"])), "params": row["params"],
        "epochs": row["summary"]["epochs"], "val_top1": row["val_top1"],
        "test_top1": row["test_top1"], "wall_time_s": row["summary"]["wall_time_s"],
        "device": device_name(device), "git_commit": commit, "overrides": list(overrides),
    }


def _log_round(cfg: ExperimentConfig, row: dict[str, Any]) -> None:
    fade = ""
    if row["penalised_norm_end"] is not None:
        fade = (f" | penalised weights' norm {row['penalised_norm_start']:.3g} -> "
                f"{row['penalised_norm_end']:.3g}")
    print(f"{cfg.name} round {row['round']}/{cfg.prune.rounds - 1}: sparsity {row['sparsity']:.2f}% "
          f"| heads {' '.join(map(str, row['heads']))} | val top-1 {_pct(row['val_top1'])} | "
          f"test top-1 {_pct(row['test_top1'])}{fade}", flush=True)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}%"
