"""The allowed values of every key of an experiment table (:mod:`vit16.config`).

:data:`RANGES` gives each numeric key its interval, :data:`CHOICES` each
enumerated string key its values, and :func:`range_problems` checks a
resolved :class:`~vit16.config.ExperimentConfig` against both and against the
rules that tie keys together (``micro_batch_size`` divides ``batch_size``,
``sgd`` with ``nesterov`` needs momentum). A bound may be another key
(``schedule.min_lr <= optim.lr``, ``schedule.warmup_epochs <= epochs``).

Every problem is one line naming ``[TABLE.section]``, the key, its value and
what it may be. ``ModelConfig`` keys left ``None`` (the builder's default) are
not checked. This module imports nothing of vit16 (it reads the config's
attributes), so :func:`vit16.config.resolve` can call it; the choice tuples
below are the single list of each key's values for every module that needs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["AMP_MODES", "AUTO_AUGMENT_POLICIES", "CHOICES", "CIFAR100_LABELS", "OPTIMIZERS",
           "PRUNE_METHODS", "PRUNE_SCOPES", "RANGES", "Choice", "Range", "Ref", "SECTION_NAMES",
           "range_problems", "section_problems"]

AMP_MODES = ("auto", "bf16", "fp16", "off")
"""``amp``: bf16 on CUDA / off on the CPU, bf16, fp16 with a GradScaler, float32."""
OPTIMIZERS = ("adamw", "sgd")
"""``optim.name`` (case-insensitive)."""
AUTO_AUGMENT_POLICIES = ("randaugment", "autoaugment", "trivialaugment")
"""``data.auto_augment`` besides ``""`` (off)."""
CIFAR100_LABELS = ("fine", "coarse")
"""``data.label``: CIFAR-100's 100 classes or its 20 superclasses."""
PRUNE_METHODS = ("imp", "refill", "rsst")
"""``prune.method`` besides ``""`` (train once, no pruning)."""
PRUNE_SCOPES = ("global", "layer")
"""``prune.scope``: magnitude ranking over all blocks or within each matrix."""

SECTION_NAMES = ("", "model", "data", "optim", "schedule", "slurm", "prune", "log")
"""The parts of an experiment in check order; ``""`` is its top level."""


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _lookup(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@dataclass(frozen=True)
class Ref:
    """A bound set by another key: ``key`` (dotted from the experiment's top
    level, e.g. ``"optim.lr"``) times ``scale``."""

    key: str
    scale: float = 1

    def value(self, cfg: Any) -> float:
        """The bound for experiment ``cfg``."""
        return _lookup(cfg, self.key) * self.scale

    def label(self, cfg: Any) -> str:
        """How the bound reads in a message: ``"optim.lr = 0.001"``."""
        scaled = f" x {_num(self.scale)}" if self.scale != 1 else ""
        return f"{self.key}{scaled} = {_num(self.value(cfg))}"


@dataclass(frozen=True)
class Range:
    """A finite number (or each item of a list) in ``lo .. hi``.

    ``None`` leaves an end unbounded; ``lo_open`` / ``hi_open`` exclude it;
    ``hi`` may be a :class:`Ref`; ``note`` says what special values mean
    (``"0 = off"``).
    """

    lo: float | None = None
    hi: float | Ref | None = None
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""

    def contains(self, x: float, cfg: Any) -> bool:
        """Whether ``x`` is allowed in experiment ``cfg``."""
        if not math.isfinite(x):
            return False
        hi = self.hi.value(cfg) if isinstance(self.hi, Ref) else self.hi
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return hi is None or (x < hi if self.hi_open else x <= hi)

    def describe(self, cfg: Any) -> str:
        """``">= 0 (0 = off)"``, ``"in [0, 1)"``, ``"in [0, optim.lr = 0.001]"``."""
        hi = self.hi.label(cfg) if isinstance(self.hi, Ref) else None if self.hi is None else _num(self.hi)
        if hi is None:
            text = f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        elif self.lo is None:
            text = f"{'<' if self.hi_open else '<='} {hi}"
        else:
            text = f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {hi}{')' if self.hi_open else ']'}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Choice:
    """A string that is one of ``values`` (compared case-insensitively when ``ignore_case``)."""

    values: tuple[str, ...]
    ignore_case: bool = False

    def contains(self, x: str) -> bool:
        """Whether ``x`` is one of the values."""
        return (x.lower() if self.ignore_case else x) in self.values

    def describe(self) -> str:
        """``"one of 'auto', 'bf16', 'fp16', 'off'"``."""
        return "one of " + ", ".join(map(repr, self.values))


SIZE = Range(1)
POSITIVE = Range(0, lo_open=True)
PROBABILITY = Range(0, 1, note="a probability")
DROP_RATE = Range(0, 1, hi_open=True, note="0 = off; 1 would drop everything")

RANGES: dict[str, dict[str, Range]] = {
    "": {
        "seed": Range(0),
        "epochs": SIZE,
        "batch_size": SIZE,
        "micro_batch_size": Range(0, note="0 = batch_size / world size"),
        "eval_batch_size": Range(0, note="0 = the micro batch size"),
        "max_steps": Range(0, note="0 = no cap"),
        "checkpoint_minutes": Range(0, note="0 = at the end of every epoch"),
        "ema_decay": Range(0, 1, hi_open=True, note="0 = no EMA"),
        "ema_steps": Range(1),
    },
    "model": {
        "num_classes": SIZE, "img_size": SIZE, "patch_size": SIZE, "embed_dim": SIZE,
        "depth": SIZE, "num_heads": SIZE, "mlp_ratio": POSITIVE,
        "mlp_dim": Range(0, note="0 = embed_dim x mlp_ratio"),
        "representation_size": Range(0, note="0 = no pre-logits layer"),
        "dropout": DROP_RATE, "attn_dropout": DROP_RATE, "drop_path": DROP_RATE,
        "hybrid_layers": Range(1, note="units per ResNet stage; [] = the stem alone"),
        "width": SIZE,
    },
    "data": {
        "img_size": SIZE,
        "val_size": Range(0, note="0 = no validation split"),
        "train_limit": Range(0, note="0 = no limit"),
        "fraction": Range(0, 1, lo_open=True, note="1 = the whole training set"),
        "num_workers": Range(0, note="0 = load in the main process"),
        "crop_padding": Range(0, note="0 = no random crop"),
        "random_erasing": PROBABILITY,
        "mixup_alpha": Range(0, note="0 = off"),
        "cutmix_alpha": Range(0, note="0 = off"),
        "mix_prob": PROBABILITY,
        "repeated_aug": Range(1, note="1 = off"),
    },
    "optim": {
        "lr": POSITIVE,
        "weight_decay": Range(0),
        "betas": Range(0, 1, hi_open=True),
        "eps": POSITIVE,
        "momentum": Range(0, 1, hi_open=True),
        "head_lr_mult": Range(0, lo_open=True, note="1 = the same LR as the body"),
        "layer_decay": Range(0, 1, lo_open=True, note="1 = off"),
        "clip_grad_norm": Range(0, note="0 = off"),
        "label_smoothing": Range(0, 1, hi_open=True, note="0 = off"),
    },
    "schedule": {
        "warmup_epochs": Range(0, Ref("epochs"), note="0 = no warmup"),
        "warmup_start_lr": Range(0, Ref("optim.lr")),
        "min_lr": Range(0, Ref("optim.lr")),
        "milestones": Range(0, Ref("epochs")),
        "gamma": Range(0, 1, lo_open=True),
    },
    "slurm": {
        "nodes": SIZE,
        "gpus_per_node": Range(0, note="0 = none"),
        "tasks_per_node": Range(0, note="0 = one per GPU"),
        "cpus_per_task": Range(0, note="0 = the cluster's default"),
        "mem_gb": Range(0, note="0 = the cluster's default"),
        "timeout_min": SIZE,
        "array_parallelism": SIZE,
        "max_requeues": Range(0),
        "signal_delay_s": Range(0, Ref("slurm.timeout_min", 60), hi_open=True),
    },
    "prune": {
        "rounds": Range(1, note="round 0 is the dense model"),
        "rate": Range(0, 1, hi_open=True),
        "rewind_epoch": Range(0, Ref("epochs"), note="0 = the initial weights"),
        "reg": Range(0),
        "reg_exponent": POSITIVE,
    },
    "log": {},
}
"""Section (``""`` = top level) -> numeric key -> its allowed values; a list
key (``optim.betas``, ``schedule.milestones``) has the range for each item."""

CHOICES: dict[str, dict[str, Choice]] = {
    "": {"amp": Choice(AMP_MODES), "init_patch_resize": Choice(("pinv", "bilinear"))},
    "data": {"auto_augment": Choice(("", *AUTO_AUGMENT_POLICIES)), "label": Choice(CIFAR100_LABELS)},
    "optim": {"name": Choice(OPTIMIZERS, ignore_case=True)},
    "prune": {"method": Choice(("", *PRUNE_METHODS)), "scope": Choice(PRUNE_SCOPES)},
}
"""Section -> string key -> its values. Names of registered plugins
(``model.name``, ``data.name``, ``schedule.name``) are checked against their
registries, and the model's own options (``pool``, ``pos_embed``) by its
builder (:mod:`vit16.preflight`)."""


def _range_problem(key: str, value: Any, rng: Range, cfg: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    bad = [x for x in items if not rng.contains(x, cfg)]
    if not bad:
        return None
    finite = "" if all(math.isfinite(x) for x in bad) else "a finite number "
    each = "each be " if isinstance(value, list) else "be "
    return f"{key} = {value!r} must {each}{finite}{rng.describe(cfg)}"


def _cross_key_problems(section: str, cfg: Any) -> list[str]:
    """The rules between keys that a single range cannot say."""
    out = []
    if section == "" and cfg.micro_batch_size > 0 and cfg.batch_size % cfg.micro_batch_size:
        out.append(f"micro_batch_size = {cfg.micro_batch_size} must be 0 or a divisor of "
                   f"batch_size = {cfg.batch_size}")
    if section == "optim":
        o = cfg.optim
        if len(o.betas) != 2:
            out.append(f"betas = {o.betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
        if o.name.lower() == "sgd" and o.nesterov and o.momentum <= 0:
            out.append(f"nesterov = true needs momentum > 0 (momentum = {o.momentum!r})")
    return out


def section_problems(cfg: Any, section: str) -> list[str]:
    """The problems of one part of experiment ``cfg``: ``section`` is ``""``
    (top-level keys) or a sub-table name; each is ``"key = value must be ..."``."""
    values = getattr(cfg, section) if section else cfg
    out = []
    for key, rng in RANGES.get(section, {}).items():
        value = getattr(values, key)
        if value is not None and (problem := _range_problem(key, value, rng, cfg)):
            out.append(problem)
    for key, choice in CHOICES.get(section, {}).items():
        value = getattr(values, key)
        if not choice.contains(value):
            out.append(f"{key} = {value!r} must be {choice.describe()}")
    return out + _cross_key_problems(section, cfg)


def range_problems(cfg: Any, sections: Iterable[str] | None = None) -> list[str]:
    """Every out-of-range or unknown value of experiment ``cfg``, one line each.

    Args:
        cfg: a :class:`~vit16.config.ExperimentConfig`.
        sections: the parts to check (names of :data:`SECTION_NAMES`); ``None`` = all.

    Returns:
        ``"[TABLE.section]: key = value must be ..."`` lines (``[TABLE]`` for
        top-level keys), in the order of :data:`SECTION_NAMES`; empty when all is well.
    """
    wanted = SECTION_NAMES if sections is None else tuple(sections)
    unknown = sorted(set(wanted) - set(SECTION_NAMES))
    if unknown:
        raise ValueError(f"unknown config section(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(map(repr, SECTION_NAMES))}")
    table = cfg.name or "NAME"
    out = []
    for section in SECTION_NAMES:
        if section in wanted:
            where = f"[{table}.{section}]" if section else f"[{table}]"
            out += [f"{where}: {p}" for p in section_problems(cfg, section)]
    return out
