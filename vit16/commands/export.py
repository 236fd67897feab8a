"""``python -m vit16 export WEIGHTS --format onnx|torchscript|exported --out FILE``:
a model as a file for other runtimes, checked against PyTorch.

    python -m vit16 export runs/quick --format onnx --out quick.onnx
    python -m vit16 export runs/refill_quick/round_04/pruned.pt --format exported --out small.pt2
    python -m vit16 export torchvision:ViT_B_16_Weights.IMAGENET1K_V1 --model vit_b16 \\
        --dataset imagenet --format torchscript --out vit_b16.ts

Formats (:mod:`vit16.export`): ``onnx`` (``torch.onnx.export``, opset 18, run by
onnxruntime; needs ``pip install -e ".[export]"``), ``torchscript``
(``torch.jit.trace``), ``exported`` (``torch.export.export`` + ``torch.export.save``;
``torch.export.load(FILE).module()`` runs it). Input ``images`` float32
``(B, 3, S, S)`` normalised as in training, output ``logits`` ``(B, K)``, the
batch size ``B`` dynamic. A pruned checkpoint is exported as the physically
smaller ViT (:func:`vit16.prune.export.export_model`, as ``export-pruned``).

The file is read back and run on ``--check-batch`` test images of the data set
(under ``--data-root``; random inputs when it is not there), a batch size other
than the one exported with: its logits must equal PyTorch's within 1e-4, else
exit code 1.
"""

from __future__ import annotations

import argparse
import sys

import torch

from vit16.commands.common import add_model_arguments, reports_user_errors
from vit16.export import FORMATS, ONNX_OPSET

TOLERANCE = 1e-4
"""Largest |logit difference| between the exported file and PyTorch that passes the check."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments (``--help`` describes them).

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the parsed namespace.

    Raises:
        SystemExit: ``--help``, or bad usage (exit code 2, argparse's message).
    """
    p = argparse.ArgumentParser(prog="python -m vit16 export",
                                description="Export a model as ONNX, TorchScript or a torch.export "
                                            "program, and check its logits against PyTorch's.")
    add_model_arguments(p, dataset_help="data set whose test images check the export")
    p.add_argument("--format", required=True, choices=FORMATS, help="file format")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write")
    p.add_argument("--check-batch", type=int, default=8,
                   help="test images the exported file is checked on, in one batch (default %(default)s; "
                        "the export itself traces a batch of 2)")
    return p.parse_args(argv)


def check_images(lm, count: int, data_root: str | None) -> tuple[torch.Tensor, str]:
    """``count`` normalised test images of the model's data set (float32 (count, 3, S, S), CPU)
    and what they are; Gaussian noise (and a note on stderr) when the data set is not
    under the data root."""
    from vit16.analysis.images import image_batches, load_source, model_inputs
    from vit16.data import DataNotFoundError

    size = lm.data.img_size
    try:
        source = load_source(lm.data, data_root)
        images, _ = next(image_batches(source, source.test, lm.data, count))
        return model_inputs(images, source, "cpu"), f"{lm.data.name} test images"
    except (DataNotFoundError, StopIteration):
        print(f"note: {lm.data.name} is not under the data root: the check uses random inputs "
              "(--data-root DIR for real images)", file=sys.stderr)
        noise = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))
        return noise, "random inputs"


def smaller_if_pruned(lm) -> tuple[torch.nn.Module, str]:
    """The model to export: a pruned checkpoint's physically smaller ViT, else ``lm.model``;
    and a line saying what was done ("" for an unpruned model)."""
    from vit16.checkpoint import load_checkpoint
    from vit16.prune.export import export_model

    if lm.path is None or lm.config is None:
        return lm.model, ""
    ckpt = load_checkpoint(lm.path, "cpu", hint="pass a run directory or checkpoint")
    if not any(k.endswith(".weight_mask") for k in ckpt.get("model", {})):
        return lm.model, ""
    small, arch = export_model(ckpt)
    dense_n = sum(p.numel() for p in lm.model.parameters())
    small_n = sum(p.numel() for p in small.parameters())
    kw = arch["kwargs"]
    return small.requires_grad_(False), (
        f"pruned checkpoint: exporting the physically smaller ViT, {dense_n:,} -> {small_n:,} parameters "
        f"({100 * small_n / dense_n:.1f}%); heads per block {' '.join(map(str, kw['block_heads']))}, "
        f"MLP neurons per block {' '.join(map(str, kw['block_mlp_dims']))}")


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vit16 export``: export, read back, check, print.

    Args:
        argv: the arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        the process exit code: 0; 1 when the exported logits differ from PyTorch's
        by more than :data:`TOLERANCE`; 2 for bad input or a model the format
        cannot hold (one ``error:`` line on stderr).
    """
    from pathlib import Path

    from vit16.analysis.loading import load_model
    from vit16.export import (check_file_name, export_to_file, load_exported_file, max_logit_difference,
                              require_onnx)

    args = parse_args(argv)
    if args.check_batch < 1:
        raise ValueError("--check-batch must be >= 1")
    check_file_name(args.format, args.out)
    if args.format == "onnx":
        require_onnx()  # before any work
    lm = load_model(args.model_spec, args.model, args.dataset, "cpu", vit_only=False)
    model, pruned = smaller_if_pruned(lm)
    images, what = check_images(lm, max(args.check_batch, 2), args.data_root)
    out = export_to_file(model, args.format, args.out, images[:2])
    diff = max_logit_difference(load_exported_file(args.format, out), lm.model, images[:args.check_batch])
    if pruned:
        print(pruned)
    opset = f", ONNX opset {ONNX_OPSET}" if args.format == "onnx" else ""
    size = lm.data.img_size
    print(f"exported {lm.label} ({sum(p.numel() for p in model.parameters()):,} parameters) as "
          f"{args.format}{opset} to {out} ({Path(out).stat().st_size / 2**20:.1f} MiB): input images float32 "
          f"(B, 3, {size}, {size}) normalised, B dynamic; output logits (B, K)")
    verdict = "ok" if diff <= TOLERANCE else f"FAILED, more than {TOLERANCE:g}"
    print(f"check: max |logit difference| exported vs PyTorch {diff:.2e} on {args.check_batch} {what} "
          f"(traced with a batch of 2): {verdict}")
    if diff > TOLERANCE:
        print(f"error: the exported {args.format} model's logits differ from PyTorch's by {diff:.2e} "
              f"(> {TOLERANCE:g}); do not use {out}, try another --format", file=sys.stderr)
        return 1
    return 0
