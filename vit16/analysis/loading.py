"""Resolve ``CKPT_OR_NAME`` of the analysis commands to a model and the data
configuration to look at it with.

Accepted: a run directory (its ``best.pt``, else ``last.pt``), a vit16
checkpoint (its stored ``config`` names the model and the data), or any
other ``init`` string of :mod:`vit16.models.pretrained` (``torchvision:NAME``,
``timm:NAME``, a ``.npz``, a state-dict file) together with ``--model NAME``
(a registered ViT, e.g. ``vit_b16``), looked at on CIFAR-10 unless
``--dataset`` says otherwise. With ``vit_only=False`` (evaluate, predict,
export) any registered model is accepted (``resnet50``), and a model written
by ``python -m vit16 export-pruned`` (its ``arch``) is rebuilt at its smaller size.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vit16.checkpoint import CheckpointError
from vit16.config import DataConfig, ExperimentConfig, from_dict

__all__ = ["LoadedModel", "load_model"]

_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass
class LoadedModel:
    """A model ready for analysis (eval mode, no gradients) and its data."""

    model: torch.nn.Module
    data: DataConfig  # img_size set to the model's
    label: str  # short name for titles: the run or the weights
    source: str  # what was loaded, for summaries
    notes: list[str] = field(default_factory=list)  # adaptations load_pretrained made
    native_data: bool = False  # the data set the model was trained on (its head's classes)
    config: ExperimentConfig | None = None  # a vit16 checkpoint's stored config
    path: Path | None = None  # the checkpoint file read (None for torchvision:/timm: names)


def _checkpoint_file(spec: str) -> Path | None:
    """The file of a run directory or checkpoint path; None when ``spec`` is no path."""
    path = Path(spec).expanduser()
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} is a directory without best.pt or last.pt; "
                              "pass a run directory or a checkpoint file")
    return path if path.is_file() else None


def _stored_config(path: Path) -> tuple[dict | None, dict]:
    """``(config, state)`` of a torch file; config None when it has none."""
    if path.suffix.lower() not in _TORCH_SUFFIXES:
        return None, {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch zip file: load_pretrained reports it
        return None, {}
    if isinstance(state, dict) and isinstance(state.get("config"), dict):
        return state["config"], state
    return None, {}


def _num_classes(state: dict, cfg: ExperimentConfig, path: Path) -> int:
    if isinstance(state.get("num_classes"), int):
        return state["num_classes"]
    sd = state.get("model", {})
    if "head.weight" in sd:
        return int(sd["head.weight"].shape[0])
    if cfg.model.num_classes is not None:
        return cfg.model.num_classes
    raise CheckpointError(f"{path}: cannot tell the number of classes (no num_classes and no "
                          "head.weight in the checkpoint)")


def _at_size(build: Callable[..., torch.nn.Module], img_size: int | None) -> torch.nn.Module:
    """``build()``, rebuilt as ``build(img_size=img_size)`` when it is a ViT of another size."""
    from vit16.models import VisionTransformer

    with warnings.catch_warnings():  # empty layers of fully pruned blocks (exported models)
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")
        model = build()
        if img_size and isinstance(model, VisionTransformer) and model.patch_embed.img_size != img_size:
            model = build(img_size=img_size)
    return model


def load_model(spec: str, model_name: str | None = None, dataset: str | None = None,
               device: torch.device | str = "cpu", *, img_size: int | None = None,
               vit_only: bool = True) -> LoadedModel:
    """Build and load the model ``spec`` names (see the module docstring).

    Args:
        spec: run directory, checkpoint path, or an ``init`` string.
        model_name: registered model for weights without a stored config
            (``torchvision:``, ``timm:``, ``.npz``, plain state dicts).
        dataset: data set to use instead of the checkpoint's (default: the
            checkpoint's, else ``cifar10``).
        device: where the model goes.
        img_size: build a ViT for this input size (pixels; the position
            embedding is resized); ``None`` keeps the weights' own size.
        vit_only: refuse models that are no ViT (the analyses need one).

    Returns:
        a :class:`LoadedModel`; ``data.img_size`` is the model's input size
        (``img_size`` or the stored one for models that are no ViT).

    Raises:
        CheckpointError: unreadable weights, a directory without checkpoints,
            or weights that do not fit the model.
        ValueError: ``--model`` missing or superfluous, or the model is no
            :class:`~vit16.models.VisionTransformer`.
        UnknownNameError: an unknown model name.
    """
    import vit16
    from vit16.models import VisionTransformer, load_pretrained
    from vit16.runtime import build_model

    path = _checkpoint_file(spec)
    config, state = _stored_config(path) if path is not None else (None, {})
    if config is not None:
        if model_name:
            raise ValueError(f"{path} is a vit16 checkpoint that names its model "
                             f"({config.get('model', {}).get('name')}); drop --model")
        cfg = from_dict(config)
        classes, arch = _num_classes(state, cfg, path), state.get("arch")
        if isinstance(arch, dict):  # python -m vit16 export-pruned: the smaller ViT
            model = _at_size(lambda **kw: vit16.MODELS.build(arch["name"], **{**arch["kwargs"], **kw}),
                             img_size)
        else:
            model = _at_size(lambda **kw: build_model(
                dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **kw)), classes), img_size)
        data, native = cfg.data, True
        label, source = cfg.name or path.parent.name, f"vit16 checkpoint {path}"
    else:
        if ":" not in str(spec).split("/")[0] and not Path(spec).exists():
            raise ValueError(f"{spec} not found; give a run directory, a checkpoint, or "
                             "torchvision:/timm:/.npz weights with --model")
        if not model_name:
            raise ValueError(f"{spec!r} is not a vit16 checkpoint with a stored config; name the "
                             "architecture with --model (e.g. --model vit_b16)")
        model = _at_size(lambda **kw: vit16.MODELS.build(model_name, **kw), img_size)
        data, native, cfg = DataConfig(), False, None
        label, source = model_name, f"{spec} into {model_name}"
    del state  # the mapped file is read again by load_pretrained
    if vit_only and not isinstance(model, VisionTransformer):
        raise ValueError(f"the analyses need a VisionTransformer; {label} is a {type(model).__name__}")
    try:
        notes = load_pretrained(model, str(path) if path is not None else spec, progress=False)
    except ValueError as err:  # WeightLoadError
        raise CheckpointError(str(err)) from None
    size = model.patch_embed.img_size if isinstance(model, VisionTransformer) else img_size or data.img_size
    if dataset and dataset != data.name:
        data, native = DataConfig(name=dataset), False
    data = dataclasses.replace(data, img_size=size, download=False)
    model = model.to(device).eval().requires_grad_(False)
    return LoadedModel(model, data, label, source, notes, native, cfg, path)
