"""Experiment configuration: the schema of one table of ``experiments.toml``.

An experiment is a TOML table with top-level keys and seven sub-tables (``model``,
``data``, ``optim``, ``schedule``, ``prune``; ``slurm`` for ``--submit`` and ``log``,
in :mod:`vit16.config_run`).
``base = "other"`` inherits another table and overrides it key by key
(sub-tables are merged). Every key is checked against the dataclasses below: an unknown
key or a wrong type raises :class:`ConfigError` with one line naming the
table, the key and the close matches; a value out of its range
(:mod:`vit16.config_checks`) one line naming the table, the key and the range.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vit16.config_checks import range_problems
from vit16.config_run import LogConfig, SlurmConfig


class ConfigError(ValueError):
    """A bad experiment table, ``--set`` override or experiment name."""


@dataclass
class ModelConfig:
    """``[NAME.model]``: a registered model and overrides of its defaults.

    ``None`` keeps the builder's default; ``num_classes`` comes from the data
    set unless given. Option meanings: :class:`vit16.models.VisionTransformer`.
    """

    name: str = "vit_small_cifar"
    num_classes: int | None = None
    img_size: int | None = None
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    mlp_dim: int | None = None
    pool: str | None = None
    class_token: bool | None = None
    fc_norm: bool | None = None
    representation_size: int | None = None
    dropout: float | None = None
    attn_dropout: float | None = None
    drop_path: float | None = None
    qkv_bias: bool | None = None
    zero_head: bool | None = None
    pos_embed: str | None = None  # "learned_1d", "none", "learned_2d", "relative" (appendix D.4)
    hybrid_layers: list[int] | None = None  # R50 hybrid (section 3.1): units per stage; [] = stem only
    grad_checkpointing: bool | None = None  # recompute each block's activations in the backward
    width: int | None = None  # resnet20_cifar: channels of its first stage (16)

    def overrides(self) -> dict[str, Any]:
        """The builder keyword arguments that were set (everything but ``name``)."""
        return {
            k: v for k, v in dataclasses.asdict(self).items() if k != "name" and v is not None
        }


@dataclass
class DataConfig:
    """``[NAME.data]``: data set, split and augmentation.

    ``img_size`` is the resolution the model sees (CIFAR is upsampled when it
    is larger than 32). ``root = ""`` means ``--data-root``, else the
    ``VIT16_DATA`` environment variable, else ``./data``.
    """

    name: str = "cifar10"
    root: str = ""
    download: bool = False
    img_size: int = 32
    val_size: int = 5000  # held out of the training set, class-balanced
    train_limit: int = 0  # 0 = every remaining training image; else a class-balanced subset
    fraction: float = 1.0  # imagenet: class-balanced subset of the training set
    label: str = "fine"  # cifar100: "fine" (100 classes) or "coarse" (20 superclasses)
    num_workers: int = 4
    device_resident: bool = True  # CIFAR: the uint8 32px set on the device, augmented (and upsampled) there
    crop_padding: int = 4  # random crop with this zero padding (0 = off)
    hflip: bool = True
    auto_augment: str = ""  # "", "randaugment", "autoaugment", "trivialaugment"
    random_erasing: float = 0.0  # probability
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0  # probability that a batch is mixed at all
    repeated_aug: int = 1  # repeated augmentation (Hoffer et al. 2020): copies per image


@dataclass
class OptimConfig:
    """``[NAME.optim]``: optimizer, loss and gradient options."""

    name: str = "adamw"  # "adamw" or "sgd"
    lr: float = 1e-3  # base learning rate at the global batch size
    weight_decay: float = 0.05  # never applied to biases, norms, pos_embed, cls_token
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    head_lr_mult: float = 1.0  # classification head LR = head_lr_mult x lr
    layer_decay: float = 1.0  # layer-wise LR decay (1.0 = off)
    clip_grad_norm: float = 0.0  # max global grad norm (0 = off)
    label_smoothing: float = 0.0


@dataclass
class ScheduleConfig:
    """``[NAME.schedule]``: learning-rate schedule, evaluated every optimizer step."""

    name: str = "warmup_cosine"
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0
    milestones: list[float] = field(default_factory=list)  # epochs, for "step"
    gamma: float = 0.1  # for "step"


@dataclass
class PruneConfig:
    """``[NAME.prune]``: iterative pruning of the ViT blocks (:mod:`vit16.prune`).

    ``method = ""`` trains once, as usual. Otherwise ``train.py NAME`` runs
    ``rounds`` rounds of ``epochs`` each: round 0 trains the dense model (from
    ``init`` when set, e.g. pretrained weights), every later round removes
    ``rate`` of the remaining prunable weights, rewinds the surviving weights
    to those of epoch ``rewind_epoch`` of round 0 (0 = before training) and
    trains again. Prunable weights: ``qkv``, ``proj``, ``fc1``, ``fc2`` of
    every block; embeddings, norms, biases and the head stay dense.
    """

    method: str = ""  # "", "imp" (unstructured), "refill", "rsst" (structured: heads, neurons)
    rounds: int = 5  # including the dense round 0
    rate: float = 0.2  # fraction of the remaining prunable weights removed per round
    scope: str = "global"  # magnitude ranking: "global" (all blocks) or "layer" (each matrix)
    rewind_epoch: int = 0  # weights of this epoch of round 0 are the rewind point (0 = init)
    reg: float = 1.0  # rsst: final L2 penalty coefficient on the weights being removed (RSST launcher: 1.0)
    reg_exponent: float = 4.0  # rsst: penalty growth lambda_i = reg (exp((i/n)^p) - 1) / (e - 1)


@dataclass
class ExperimentConfig:
    """One resolved experiment (a table of ``experiments.toml`` with its bases)."""

    name: str = ""
    description: str = ""
    base: str = ""
    seed: int = 0
    epochs: int = 100
    batch_size: int = 128  # global batch over all ranks and accumulation steps
    micro_batch_size: int = 0  # per-rank forward batch; 0 = batch_size / world size
    eval_batch_size: int = 0  # 0 = same as micro batch
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU), "bf16", "fp16", "off"
    compile: bool = False
    channels_last: bool = False
    max_steps: int = 0  # stop after this many optimizer steps (0 = no cap); smoke tests
    checkpoint_minutes: float = 10.0  # last.pt every this many minutes and at the end (0 = every epoch)
    init: str = ""  # initial weights (checkpoint path); "" = random init
    init_patch_resize: str = "pinv"  # init kernel of another patch size: "pinv" (FlexiViT) or "bilinear"
    ema_decay: float = 0.0  # EMA of the weights, decay per EMA update (0 = off), e.g. 0.9998
    ema_steps: int = 1  # update the EMA every this many optimizer steps (torchvision's --model-ema-steps)
    ema_warmup: bool = False  # the EMA copies the weights until the LR warmup ends
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML/JSON serialisable, ``None`` values dropped)."""
        return _drop_none(dataclasses.asdict(self))


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "slurm": SlurmConfig,
    "prune": PruneConfig,
    "log": LogConfig,
}


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None
    }


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_table(where: str, table: dict[str, Any], cls: type, sections: dict[str, type]) -> None:
    types_ = _field_types(cls)
    for key, value in table.items():
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key!r} must be a table ([{where}.{key}])")
            _check_table(f"{where}.{key}", value, sections[key], {})
            continue
        if key not in types_ or key in sections:
            valid = [k for k in types_ if k not in sections] + list(sections)
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"[{where}]: unknown key {key!r}; {hint}valid keys: {', '.join(sorted(valid))}"
            )
        if not _type_ok(value, types_[key]):
            raise ConfigError(
                f"[{where}]: {key} = {value!r} has the wrong type; "
                f"expected {_type_name(types_[key])}"
            )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_tables(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read ``experiments.toml``: experiment name -> raw table (bases not applied).

    Raises:
        ConfigError: if the file is missing or is not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {path} not found; pass --experiments FILE")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one ``--set key.sub=value``; the value is read as TOML, and taken
    as a plain string when it is not valid TOML (``model.name=vit_tiny``).

    Raises:
        ConfigError: if ``item`` has no ``=``.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-4")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def resolve(
    name: str, tables: dict[str, dict[str, Any]], overrides: list[str] = ()
) -> ExperimentConfig:
    """Resolve experiment ``name``: apply its ``base`` chain, then ``overrides``
    (``--set`` items), validate every key and return the typed config.

    Raises:
        ConfigError: unknown experiment or key, wrong type, a ``base`` cycle,
            a value out of its range (:func:`check_ranges`).
    """
    if name not in tables:
        close = difflib.get_close_matches(name, list(tables), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"unknown experiment {name!r}: {hint}known experiments: {', '.join(sorted(tables))}"
        )
    chain, current = [], name
    while current:
        if current in chain:
            raise ConfigError(f"[{name}]: base cycle {' -> '.join(chain + [current])}")
        if current not in tables:
            raise ConfigError(f"[{chain[-1]}]: base {current!r} is not a table in the file")
        _check_table(current, tables[current], ExperimentConfig, SECTIONS)
        chain.append(current)
        current = tables[current].get("base", "")
    merged: dict[str, Any] = {}
    for table in reversed(chain):
        merged = _merge(merged, tables[table])
    for item in overrides:
        keys, value = parse_override(item)
        target = merged
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item!r}: {key!r} is not a table")
        target[keys[-1]] = value
    _check_table(name, merged, ExperimentConfig, SECTIONS)
    merged["name"] = name
    cfg = from_dict(merged)
    check_ranges(cfg)
    return cfg


def check_ranges(cfg: ExperimentConfig, sections: tuple[str, ...] | None = None) -> None:
    """Check every value of ``cfg`` (or of ``sections``: ``""`` = the top level,
    ``"model"``, ``"data"``, ...) against :data:`vit16.config_checks.RANGES`,
    its ``CHOICES`` and the rules between keys.

    Raises:
        ConfigError: the first problem, one line: ``[TABLE.section]: key = value must be ...``.
    """
    problems = range_problems(cfg, sections)
    if problems:
        raise ConfigError(problems[0])


def from_dict(d: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a (validated) nested dict, such
    as the one stored in a checkpoint."""
    top = {k: v for k, v in d.items() if k not in SECTIONS}
    subs = {k: SECTIONS[k](**d.get(k, {})) for k in SECTIONS}
    return ExperimentConfig(**top, **subs)


def batch_geometry(batch_size: int, micro_batch_size: int, world_size: int) -> tuple[int, int]:
    """``(micro_batch, accum_steps)`` with ``batch_size = micro_batch x world_size x accum_steps``.

    ``micro_batch_size = 0`` means ``batch_size // world_size`` (no accumulation).

    Raises:
        ValueError: the sizes do not divide (names them and the fix).
    """
    if batch_size < 1 or micro_batch_size < 0 or world_size < 1:
        raise ValueError(
            f"batch_size = {batch_size} must be >= 1 and micro_batch_size = {micro_batch_size} >= 0"
        )
    if batch_size % world_size:
        raise ValueError(
            f"batch_size = {batch_size} is not divisible by the world size {world_size}; "
            "choose a batch_size that is a multiple of the number of processes"
        )
    micro = micro_batch_size or batch_size // world_size
    if batch_size % (micro * world_size):
        raise ValueError(
            f"batch_size = {batch_size} is not a multiple of micro_batch_size = {micro} x world "
            f"size {world_size}; choose a micro_batch_size that divides {batch_size // world_size}"
        )
    return micro, batch_size // (micro * world_size)
