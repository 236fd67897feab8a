"""Checks of a resolved experiment that need its plugins, for ``--dry-run``
and before any data is read: the model, optimizer and schedule builders are
run (the model on the meta device: no memory, no init), and what they reject
becomes one :class:`~vit16.config.ConfigError` line naming ``[TABLE.section]``.

The value ranges of every key are checked earlier, by
:func:`vit16.config.resolve`; these are the options only a builder knows
(``model.depth`` on a ResNet, ``embed_dim`` not divisible by ``num_heads``,
``optim.layer_decay`` on a model without blocks, ``step`` without milestones).
"""

from __future__ import annotations

import torch
from torch import nn

from vit16.config import ConfigError, ExperimentConfig
from vit16.models import VisionTransformer
from vit16.optim import build_optimizer
from vit16.registry import MODELS, SCHEDULES

__all__ = ["check_model_options", "check_options", "check_schedule_options"]


def _table(cfg: ExperimentConfig, section: str) -> str:
    return f"[{cfg.name or 'NAME'}.{section}]"


def _check_vit(cfg: ExperimentConfig, model: VisionTransformer) -> None:
    """What a ViT's builder accepts but training would get wrong or ignore."""
    m, where = cfg.model, _table(cfg, "model")
    size = model.patch_embed.img_size
    if size != cfg.data.img_size:
        source = "model.img_size" if m.img_size is not None else f"the default of {m.name!r}"
        raise ConfigError(
            f"{where}: the model takes {size}px images ({source}) but data.img_size = "
            f"{cfg.data.img_size}; set model.img_size = {cfg.data.img_size} (or data.img_size = {size})"
        )
    hidden = model.blocks[0].mlp.fc1.out_features if len(model.blocks) else None
    if m.mlp_ratio is not None and not m.mlp_dim and hidden != int(model.embed_dim * m.mlp_ratio):
        raise ConfigError(
            f"{where}: mlp_ratio = {m.mlp_ratio!r} has no effect: model {m.name!r} sets mlp_dim = "
            f"{hidden}; set model.mlp_dim, or model.mlp_dim = 0 to size the MLP by mlp_ratio"
        )


def check_model_options(cfg: ExperimentConfig, num_classes: int | None = None) -> nn.Module:
    """Build ``cfg.model`` on the meta device, as training would.

    Args:
        cfg: the resolved experiment.
        num_classes: classes of the head when ``cfg.model`` does not set them
            (default: the builder's).

    Returns:
        the model, on the meta device (for counting parameters).

    Raises:
        vit16.UnknownNameError: ``cfg.model.name`` is not registered.
        ConfigError: the builder rejects an option (an unknown one, sizes that
            do not divide, an unknown ``pool`` or ``pos_embed``), or a ViT's
            input size differs from ``data.img_size``, or ``model.mlp_ratio``
            is set where the builder's ``mlp_dim`` overrides it.
    """
    kwargs = cfg.model.overrides()
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    try:
        with torch.device("meta"):
            model = MODELS.build(cfg.model.name, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{_table(cfg, 'model')}: {err}") from None
    if isinstance(model, VisionTransformer):
        _check_vit(cfg, model)
    return model


def check_schedule_options(cfg: ExperimentConfig) -> None:
    """Build ``cfg.schedule`` for a nominal run of one step per epoch.

    Raises:
        vit16.UnknownNameError: ``cfg.schedule.name`` is not registered.
        ConfigError: the schedule rejects its options (``step`` without milestones, ...).
    """
    try:
        SCHEDULES.build(cfg.schedule.name, cfg=cfg.schedule, base_lr=cfg.optim.lr,
                        steps_per_epoch=1, total_steps=cfg.epochs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{_table(cfg, 'schedule')}: {err}") from None


def check_options(cfg: ExperimentConfig, num_classes: int | None = None) -> nn.Module:
    """:func:`check_model_options`, then build the optimizer over the meta
    model's parameters, then :func:`check_schedule_options`.

    Returns:
        the model, on the meta device.

    Raises:
        vit16.UnknownNameError: an unknown model or schedule name.
        ConfigError: an option a builder rejects (named as ``[TABLE.section]``).
    """
    model = check_model_options(cfg, num_classes)
    try:
        build_optimizer(model, cfg.optim)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{_table(cfg, 'optim')}: {err}") from None
    check_schedule_options(cfg)
    return model
