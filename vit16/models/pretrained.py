"""Initial weights: resolve an ``init = "..."`` string to a state dict in
vit16's names and load it into a model (the pre-train -> fine-tune step of
the paper, section 3.2).

Accepted strings (``init`` in an experiment table or ``--set init=...``):

=========================================  ===============================================
``runs/NAME/best.pt`` (any path)           a vit16 checkpoint (``best.pt``, ``last.pt``) or
                                           any PyTorch file holding a state dict in vit16
                                           names (at the top level or under ``model`` /
                                           ``state_dict``); a ``.npz`` path is read as a
                                           google-research/vision_transformer checkpoint
``torchvision:NAME``                       ``torchvision.models.get_weight(NAME)``, e.g.
                                           ``torchvision:ViT_B_16_Weights.IMAGENET1K_V1``;
                                           downloaded once to the ``torch.hub`` cache
``torchvision:PATH``                       a torchvision state dict file (``.pth``)
``timm:NAME``                              ``timm.create_model(NAME, pretrained=True)``, e.g.
                                           ``timm:vit_base_patch16_224.augreg_in21k_ft_in1k``
                                           (needs ``pip install timm``; timm downloads it)
``timm:PATH``                              a timm state dict (``.pth``, ``.bin``,
                                           ``.safetensors``) or a JAX ``.npz``
``jax:PATH``                               a google-research/vision_transformer ``.npz``
                                           (e.g. ``ViT-B_16.npz``), whatever its suffix
=========================================  ===============================================

After the prefix, a value with a ``/`` or one of the suffixes ``.pth .pt .bin
.ckpt .safetensors .npz`` is a file, anything else a library weight name.

For a :class:`~vit16.models.VisionTransformer` the foreign layouts are renamed
by :func:`~vit16.models.from_torchvision`, :func:`~vit16.models.from_timm` and
:func:`~vit16.models.from_jax_npz`; any other model (``resnet50``) takes torchvision/timm
state dicts as they are. Loading then goes through
:func:`~vit16.models.load_weights`: keys match strictly (one error lists the
missing and unexpected keys and the shape mismatches), the position embedding
is resized to the model's patch grid, a patch-embedding kernel of another patch
size is resampled to the model's with FlexiViT's pseudo-inverse resize (Beyer
et al., CVPR 2023, section 3.4), and a head of another class count is swapped
for the model's new one (pre-logits dropped; zero-initialised when the model
was built with ``zero_head=True``).

ImageNet weights into the 32px CIFAR models: ``init =
"timm:vit_small_patch16_224.augreg_in21k_ft_in1k"`` for ``vit_small`` (32px,
patch 4) loads every block as it is, the 16x16 kernel resampled to 4x4 and the
14x14 position embedding resized to 8x8 (the returned notes say so). The
hybrid (``vit_r50_b16``) takes timm's ``vit_base_r50_s16_224`` and the JAX
``R50+ViT-B_16.npz`` the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from vit16.checkpoint import FORMAT_KEY, FORMAT_VERSION, CheckpointError
from vit16.models.convert import from_timm, from_torchvision
from vit16.models.jax import from_jax_npz
from vit16.models.load import load_weights
from vit16.models.state import fold_masks
from vit16.models.vit import VisionTransformer

__all__ = [
    "FILE_SUFFIXES",
    "INIT_PREFIXES",
    "load_pretrained",
    "parse_init",
    "read_init",
]

StateDict = dict[str, torch.Tensor]

INIT_PREFIXES = ("torchvision", "timm", "jax")
"""Prefixes an ``init`` string may start with (``PREFIX:NAME`` or ``PREFIX:PATH``)."""

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".npz")
"""After a prefix, values with these suffixes (or with a ``/``) are file paths."""

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers

_HINT = ("init must be a checkpoint path (runs/NAME/best.pt, a .npz), torchvision:NAME|PATH, "
         "timm:NAME|PATH or jax:PATH")


# ----------------------------------------------------------------------------- parsing


def parse_init(spec: str | os.PathLike) -> tuple[str, str]:
    """Split an ``init`` string into ``(kind, value)``.

    ``kind`` is ``"file"`` (a vit16 checkpoint or a ``.npz``), ``"torchvision"``,
    ``"torchvision_file"``, ``"timm"``, ``"timm_file"`` or ``"jax_file"``;
    ``value`` the weight name or the path (``~`` expanded).

    Raises:
        CheckpointError: an empty string, an unknown ``PREFIX:`` or nothing after one.
    """
    if isinstance(spec, os.PathLike):
        return "file", os.fspath(spec)
    spec = spec.strip()
    if not spec:
        raise CheckpointError(f"init is empty; {_HINT}")
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_.+-]+):(.*)", spec, flags=re.S)
    if m is None or Path(spec).expanduser().exists():
        return "file", os.path.expanduser(spec)
    prefix, value = m.group(1).lower(), m.group(2).strip()
    if prefix not in INIT_PREFIXES:
        raise CheckpointError(
            f"init {spec!r}: unknown prefix {m.group(1) + ':'!r} (known: "
            f"{', '.join(p + ':' for p in INIT_PREFIXES)}); {_HINT}"
        )
    if not value:
        raise CheckpointError(f"init {spec!r}: nothing after {prefix + ':'!r}; {_HINT}")
    is_file = (not value.lower().startswith(("hf-hub:", "hf_hub:"))
               and ("/" in value or os.sep in value or value.startswith(("~", "."))
                    or value.lower().endswith(FILE_SUFFIXES)))
    if prefix == "jax":
        return "jax_file", os.path.expanduser(value)
    return (f"{prefix}_file", os.path.expanduser(value)) if is_file else (prefix, value)


# ----------------------------------------------------------------------------- reading files


def _fail(spec: Any, message: str) -> CheckpointError:
    return CheckpointError(f"init {os.fspath(spec)!r}: {message}")


def _check_file(spec: Any, path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "not found"
        raise _fail(spec, f"{path} {what}; check the path ({_HINT})")
    return p


def _strip_wrappers(sd: Mapping[str, Any]) -> StateDict:
    out = {}
    for key, value in sd.items():
        for wrapper in _WRAPPER_PREFIXES:
            key = key.removeprefix(wrapper)
        out[key] = value
    return out


def _torch_file(spec: Any, path: Path) -> Any:
    def load(mmap: bool) -> Any:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            return load(mmap=True)  # a last.pt's optimizer state is never read into memory
        except RuntimeError:
            return load(mmap=False)  # legacy (non-zip) torch files cannot be mapped
    except Exception as err:  # truncated zip, bad pickle, disallowed global, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(spec, f"{path} is not a readable PyTorch weights file, or is truncated or "
                          f"corrupt ({type(err).__name__}: {reason[:200]})") from None


def _state_dict_of(spec: Any, path: Path, obj: Any) -> StateDict:
    """The state dict inside a loaded torch file: a vit16 checkpoint's ``model``,
    else a ``model`` or ``state_dict`` entry, else the file's top level. The
    masks of a pruned checkpoint (:mod:`vit16.prune`) are folded into its weights."""
    if isinstance(obj, dict) and FORMAT_KEY in obj:
        version = obj[FORMAT_KEY]
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise _fail(spec, f"checkpoint {path} has format version {version!r}, newer than "
                              f"this vit16 understands ({FORMAT_VERSION}); upgrade vit16")
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if (not isinstance(obj, dict) or not obj
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise _fail(spec, f"{path} holds no state dict (no 'model' or 'state_dict' entry of "
                          f"tensors; found: {keys})")
    state = _strip_wrappers(obj)
    if any(k.endswith(".weight_orig") for k in state):  # a pruned run: weight = orig * mask
        state = fold_masks(state)[0]
    return state


def _safetensors_file(spec: Any, path: Path) -> StateDict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise _fail(spec, f"reading {path.name} needs safetensors: pip install safetensors") from None
    try:
        return _strip_wrappers(load_file(str(path), device="cpu"))
    except Exception as err:
        raise _fail(spec, f"{path} is not a readable .safetensors file ({type(err).__name__}: "
                          f"{str(err)[:200]})") from None


def _npz_file(spec: Any, path: Path) -> StateDict:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:
        raise _fail(spec, f"{path} is not a readable .npz file ({type(err).__name__}: "
                          f"{str(err)[:200]})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _fail(spec, f"{path} is a single .npy array, not an .npz of named arrays")
    with npz:
        try:
            return from_jax_npz(npz)
        except KeyError as err:
            raise _fail(spec, f"{path}: {err.args[0]}") from None


def _weights_file(spec: Any, path: Path) -> StateDict:
    """A state dict from a .safetensors, .npz (JAX layout) or PyTorch file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _safetensors_file(spec, path)
    if suffix == ".npz":
        return _npz_file(spec, path)
    return _state_dict_of(spec, path, _torch_file(spec, path))


def _layout_hint(sd: Mapping[str, Any]) -> str:
    keys = set(sd)
    if any(k.startswith(("conv_proj.", "encoder.layers.")) for k in keys):
        return "torchvision"
    if "fc_norm.weight" in keys or any(k.startswith("pre_logits.fc.") for k in keys):
        return "timm"
    return ""


# ----------------------------------------------------------------------------- libraries


def _torchvision_download(name: str, progress: bool) -> StateDict:
    """``torchvision.models.get_weight(name).get_state_dict(...)`` (downloads to
    the torch.hub cache on first use)."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError) as err:
        raise CheckpointError(
            f"init 'torchvision:{name}': torchvision has no weights named {name!r} "
            f"({err}); use the full enum name, e.g. torchvision:ViT_B_16_Weights.IMAGENET1K_V1"
        ) from None
    try:
        return weights.get_state_dict(progress=progress)
    except Exception as err:  # no network, a truncated download, a hash mismatch, ...
        raise CheckpointError(
            f"init 'torchvision:{name}': could not fetch {weights.url} ({type(err).__name__}: "
            f"{str(err).strip()[:200]}); download it and pass torchvision:PATH"
        ) from None


def _timm_download(name: str) -> StateDict:
    """``timm.create_model(name, pretrained=True).state_dict()``: timm fetches
    and converts the weights (its own cache); timm is imported only here."""
    try:
        import timm
    except ImportError:
        raise CheckpointError(f"init 'timm:{name}' needs timm: pip install timm") from None
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as err:  # unknown model, no pretrained tag, no network, ...
        raise CheckpointError(
            f"init 'timm:{name}': timm could not provide pretrained weights "
            f"({type(err).__name__}: {str(err).strip()[:200]}); check the name "
            "(timm.list_pretrained()) or download the file and pass timm:PATH"
        ) from None
    return model.state_dict()


def read_init(spec: str | os.PathLike, model: nn.Module | None = None, *,
              progress: bool = True) -> tuple[StateDict, str]:
    """Read the weights an ``init`` string names, renamed to vit16's names.

    Args:
        spec: the ``init`` string (see the module docstring) or a path.
        model: the model they are for. torchvision/timm/JAX layouts are renamed
            when it is a :class:`VisionTransformer` (or ``None``); for any other
            model a torchvision/timm state dict is returned as it is.
        progress: show a download progress bar (``torchvision:NAME``).

    Returns:
        ``(state_dict, source)``, ``source`` a short description for messages.

    Raises:
        CheckpointError: unknown prefix or weight name, missing or unreadable
            file, timm missing for ``timm:``, or a file whose layout is not
            the one its prefix names.
    """
    kind, value = parse_init(spec)
    if kind == "torchvision":
        sd, layout = _torchvision_download(value, progress), "torchvision"
    elif kind == "timm":
        sd, layout = _timm_download(value), "timm"
    else:
        path = _check_file(spec, value)
        if kind == "jax_file" or path.suffix.lower() == ".npz":
            sd, layout = _npz_file(spec, path), "jax"
        else:
            sd = _weights_file(spec, path)
            layout = {"file": "vit16", "torchvision_file": "torchvision", "timm_file": "timm"}[kind]
    source = {"vit16": "checkpoint", "jax": "JAX checkpoint", "torchvision": "torchvision weights",
              "timm": "timm weights"}[layout]
    if layout in ("vit16", "jax") or not (model is None or isinstance(model, VisionTransformer)):
        return sd, source
    try:
        return (from_torchvision if layout == "torchvision" else from_timm)(sd), source
    except KeyError as err:
        found = _layout_hint(sd) or ("vit16/timm" if layout == "torchvision" else "")
        other = f" (it looks like a {found} layout)" if found and found != layout else ""
        raise _fail(spec, f"not a {layout} ViT state dict{other}: {err.args[0]}") from None


def load_pretrained(model: nn.Module, spec: str | os.PathLike, *, progress: bool = True,
                    patch_resize: str = "pinv") -> list[str]:
    """Load the weights ``spec`` names into ``model`` (:func:`read_init`, then
    :func:`~vit16.models.load_weights`, with its ``patch_resize``).

    Returns:
        notes of what was adapted (position embedding resized, head swapped).

    Raises:
        CheckpointError: the weights cannot be found or read (:func:`read_init`).
        WeightLoadError: they do not fit the model; one message lists the
            missing and unexpected keys and the shape mismatches.
    """
    sd, source = read_init(spec, model, progress=progress)
    label = f"init weights {os.fspath(spec)!r} ({source})"
    try:
        return load_weights(model, sd, source=label, patch_resize=patch_resize)
    except ValueError as err:
        layout = _layout_hint(sd) if source == "checkpoint" else ""
        if layout:  # a foreign file given as a plain path: name the prefix it needs
            err.args = (f"{err.args[0]} The file looks like a {layout} state dict: "
                        f"use init = \"{layout}:{os.fspath(spec)}\".",)
        raise
