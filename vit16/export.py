"""A trained classifier as a file other runtimes load, with a dynamic batch size,
and the check that the file computes the model's logits.

=============== ================================================ ==========================
format          written by                                       run by
=============== ================================================ ==========================
``onnx``        ``torch.onnx.export(dynamo=True)``, opset         onnxruntime (CPU)
                :data:`ONNX_OPSET`, one file
``torchscript`` ``torch.jit.trace`` + ``save``                    ``torch.jit.load``
``exported``    ``torch.export.export`` + ``torch.export.save``   ``torch.export.load(...).module()``
=============== ================================================ ==========================

The input is named ``images`` (float32 ``(B, 3, S, S)``, normalised as in
training), the output ``logits`` (float32 ``(B, K)``); ``B`` is a dynamic
dimension in every format. ONNX needs the optional ``export`` extra
(``pip install -e ".[export]"``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = ["EXPORT_HINT", "FORMATS", "ONNX_OPSET", "ExportError", "check_file_name", "export_to_file",
           "load_exported_file", "max_logit_difference", "require_onnx"]

FORMATS = ("onnx", "torchscript", "exported")
"""The ``--format`` values."""

ONNX_OPSET = 18
"""The ONNX opset the ``onnx`` format is written with (the default ai.onnx opset
of torch's dynamo exporter; onnxruntime >= 1.14 runs it)."""

EXPORT_HINT = 'ONNX export needs onnx, onnxscript and onnxruntime, an optional extra: pip install -e ".[export]"'

_OTHER = {"onnx": "exported", "torchscript": "exported", "exported": "torchscript"}


class ExportError(ValueError):
    """A model that cannot be written (or read back) in a format, or a missing
    extra; ``str(err)`` is one line naming the format and what to try instead."""


def require_onnx() -> None:
    """Check that the ``export`` extra (onnx, onnxscript, onnxruntime) is installed.

    Raises:
        ExportError: one of them is missing (the line names the extra).
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError(EXPORT_HINT) from None


def check_file_name(fmt: str, path: str | os.PathLike) -> None:
    """Refuse an ``exported`` file not named ``*.pt2`` (``torch.export.load`` reads
    only PT2 archives by that name).

    Raises:
        ExportError: the name does not fit the format.
    """
    if fmt == "exported" and Path(path).suffix != ".pt2":
        raise ExportError(f"--format exported writes a PT2 archive: name the file {Path(path).stem}.pt2")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300] if text else ''}".rstrip(": ")


def _write(model: nn.Module, fmt: str, path: Path, example: torch.Tensor) -> None:
    batch = torch.export.Dim("batch", min=1)
    if fmt == "onnx":
        large = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8e9  # protobuf's 2 GB
        torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), opset_version=ONNX_OPSET, dynamo=True,
                          external_data=large, verbose=False)
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # shape checks traced as constants: the check below runs B != 2
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))
    else:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))


@contextlib.contextmanager
def _quiet():
    """The exporters print progress, warnings and log records: only our one line is shown."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir")]
    levels = [log.level for log in loggers]
    try:
        for log in loggers:
            log.setLevel(logging.ERROR)
        with (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()),
              warnings.catch_warnings()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def export_to_file(model: nn.Module, fmt: str, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """Write ``model`` (eval mode, CPU) to ``path`` in format ``fmt`` with a
    dynamic batch dimension.

    Args:
        model: maps float32 ``(B, 3, S, S)`` to logits ``(B, K)``.
        fmt: one of :data:`FORMATS`.
        path: the file to write (its folder is created).
        example: a float32 ``(B, 3, S, S)`` input to trace with (``B >= 2``, so
            that the batch size stays symbolic).

    Returns:
        the path written.

    Raises:
        ExportError: an unknown format, the ``export`` extra missing (onnx), or
            the exporter failed (one line: the format, its error, the format to try).
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    path = Path(path)
    check_file_name(fmt, path)
    if fmt == "onnx":
        require_onnx()
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    try:
        with _quiet():
            _write(model, fmt, path, example.cpu())
    except Exception as err:  # whatever the exporter raises on an unsupported construct
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise ExportError(f"{fmt} export failed ({_first_line(err)}); try --format {_OTHER[fmt]}") from None
    return path


def load_exported_file(fmt: str, path: str | os.PathLike) -> Callable[[torch.Tensor], torch.Tensor]:
    """Read back a file :func:`export_to_file` wrote, as a function of images.

    Args:
        fmt: its format; path: the file.

    Returns:
        ``f(images float32 (B, 3, S, S), CPU) -> logits float32 (B, K), CPU``:
        onnxruntime's CPU session for ONNX, the loaded module otherwise.

    Raises:
        ExportError: the runtime cannot load or run the file (one line).
    """
    if fmt == "onnx":
        require_onnx()
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ExportError(f"onnxruntime cannot load {path} ({_first_line(err)})") from None
        return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation in favour of torch.export
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    except Exception as err:
        raise ExportError(f"{path} cannot be loaded as {fmt} ({_first_line(err)})") from None

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return run


@torch.no_grad()
def max_logit_difference(run: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
                         images: torch.Tensor) -> float:
    """The largest ``|run(images) - model(images)|`` over every logit.

    Args:
        run: the exported model (:func:`load_exported_file`).
        model: the PyTorch model (eval mode, CPU).
        images: float32 ``(B, 3, S, S)`` on the CPU.

    Returns:
        the maximum absolute difference (float; ``inf`` when the shapes differ).

    Raises:
        ExportError: the exported model fails on this batch size (one line).
    """
    try:
        got = run(images).float()
    except Exception as err:
        raise ExportError(f"the exported model fails on a batch of {images.shape[0]} "
                          f"({_first_line(err)})") from None
    want = model.eval()(images).float()
    if got.shape != want.shape:
        return float("inf")
    return float((got - want).abs().max())
