"""The training run: :func:`train`, from a resolved experiment to a summary.

    summary = train(cfg, "runs/vit_s_cifar10")

In order (each step is a function of its own module):

1. set-up (:func:`vit16.runtime.setup_runtime`): rank, device, batch
   geometry (global batch = micro batch x world size x accumulation steps),
   mixed precision, the process group;
2. resume (:class:`vit16.runstate.RunDir`): ``out_dir/last.pt`` is read and
   checked against ``cfg`` before anything heavy is built; a finished run
   returns its summary;
3. seed every RNG, build the data, the model (``vit16.MODELS``, optionally
   ``cfg.init`` weights), the optimizer (:mod:`vit16.optim`) and the LR
   schedule (:mod:`vit16.schedules`), and restore the checkpoint's state;
4. epochs (:mod:`vit16.engine`): :func:`~vit16.engine.train_one_epoch`
   (``last.pt`` every ``checkpoint_minutes``), then
   :func:`~vit16.engine.end_epoch` (validation, ``best.pt``, a line of
   ``metrics.jsonl``, ``last.pt``);
5. test with the final weights and with ``best.pt``'s, write
   ``summary.json`` and append a row to the results table.

Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vit16.checkpoint import git_commit, load_checkpoint
from vit16.config import ExperimentConfig
from vit16.engine import Loop, end_epoch, train_one_epoch
from vit16.optim import build_optimizer
from vit16.progress import Progress
from vit16.results import device_name, format_duration, utc_date
from vit16.rundir import RunDir
from vit16.runstate import (Checkpointer, Counters, ResumeMismatchError, RunInterrupted,
                            TrainingDivergedError, restore_rng)
from vit16.runtime import (Runtime, build_model, build_run_data, load_init, seed_everything,
                           setup_runtime, wrap_model)
from vit16.schedules import build_schedule, warmup_steps
from vit16.stop import listening
from vit16.tblog import TensorBoardLog

__all__ = ["ResumeMismatchError", "RunInterrupted", "TrainingDivergedError", "train"]

RESULT_KEYS = ("experiment", "model", "params", "dataset", "epochs", "val_top1", "test_top1",
               "test_top1_best", "test_top1_ema", "best_weights", "device", "git_commit",
               "overrides", "wall_time_s", "images_per_s", "out_dir", "world_size")
"""The summary keys that go into a results-table row."""


def train(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    data_root: str | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    results_file: str | os.PathLike | None = "results/RESULTS.md",
    overrides: Iterable[str] = (),
    model: nn.Module | None = None,
    data: Any = None,
    grad_hook: Callable[[int, int], None] | None = None,
    epoch_hook: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir``; return the run summary (also in ``summary.json``).

    Args:
        cfg: the resolved experiment.
        out_dir: run directory (``last.pt``, ``best.pt``, ``metrics.jsonl``, ``summary.json``).
        data_root: data directory passed to :func:`vit16.data.build_data`.
        device: ``"cuda"``, ``"cpu"``...; default CUDA when available.
        resume: continue from ``out_dir/last.pt`` when it exists; ``False``
            starts over and overwrites the run directory's files.
        results_file: markdown table to append the result row to (``None`` = skip).
        overrides: the ``--set`` items, recorded in the results row.
        model: use this module instead of building ``cfg.model`` (tests, pruning rounds).
        data: use this bundle instead of :func:`vit16.data.build_data` (tests, pruning rounds).
        grad_hook: called as ``grad_hook(step, total_steps)`` at every optimizer
            step, with the final (unscaled, clipped) gradients, right before
            ``optimizer.step()``; may change ``.grad`` in place (the RSST penalty).
        epoch_hook: called as ``epoch_hook(epoch)`` (1-based) on every rank when
            an epoch is complete, before its ``last.pt`` (a rewind point).

    Returns:
        the summary of :func:`_summarise`: top-1/top-5 in %, times in seconds,
        ``images_per_s`` training images/s; val/test ``None`` without that split.

    Raises:
        ValueError: bad batch geometry, AMP mode, optimizer or schedule options.
        CheckpointError: ``last.pt`` (or ``cfg.init``) is truncated, corrupt or foreign.
        ResumeMismatchError: ``last.pt`` was written with a different config.
        TrainingDivergedError: the loss became NaN/inf (``last.pt`` keeps the last good state).
        vit16.distributed.DistributedSetupError: ``WORLD_SIZE > 1`` without
            ``MASTER_ADDR`` / ``MASTER_PORT`` (not launched by torchrun or ``--submit``).
    """
    t_start = time.monotonic()
    rt = setup_runtime(cfg, device)
    run_dir = RunDir(out_dir)
    with contextlib.ExitStack() as owned:
        if rt.is_main:  # before any data is built or any step trained
            owned.enter_context(run_dir.claim(results_file))
        ckpt = run_dir.read_resumable(cfg) if resume else None
        if ckpt is not None and (done := run_dir.finished_summary(cfg, ckpt)) is not None:
            if rt.is_main:
                _report_finished(run_dir, ckpt, results_file)
            return done
        seed_everything(cfg.seed)
        if data is None:
            data = build_run_data(cfg, rt, data_root)
        model, init_notes = _place_model(cfg, rt, model, data, ckpt)
        loop = _build_loop(cfg, rt, run_dir, ckpt, model, data, t_start, grad_hook, epoch_hook)
        if loop.tb is not None:
            owned.callback(loop.tb.close)
        loop.progress.log(_start_line(loop, ckpt, init_notes))
        # last thing before the loop: nothing else may draw from the global RNG. With several
        # ranks each has its own stream (dropout, drop-path); rank 0's is the single-process one.
        restore_rng(ckpt, rt.rank, rt.world_size, cfg.seed, loop.counters.step)
        loop.ckpt.last_save_time = loop.seg_t0 = time.monotonic()
        with loop.progress, listening(loop.stop, ctrl_c=rt.world_size == 1):
            while loop.counters.step < loop.stop_step:
                end_epoch(loop, train_one_epoch(loop))
        summary = _summarise(loop, _test(loop), overrides)
        if rt.is_main:
            _write_results(loop, summary, results_file)
        if loop.tb is not None:
            loop.tb.test(summary)
        return summary


def _report_finished(run_dir: RunDir, ckpt: dict, results_file) -> None:
    """Say that the run is already finished; append its results row when the
    named table lacks it (a row that could not be written, or another ``--results``)."""
    appended = results_file is not None and run_dir.append_row(results_file)
    note = f"; appended its results row to {results_file}" if appended else ""
    print(f"{run_dir.path}: already finished at step {ckpt['step']}{note}; returning its "
          "summary (pass --no-resume to train again)", flush=True)


def _place_model(cfg: ExperimentConfig, rt: Runtime, model: nn.Module | None, data: Any,
                 ckpt: dict | None) -> tuple[nn.Module, list[str] | None]:
    """The run's model (built from ``cfg.model`` unless given) on its device, with
    ``cfg.init`` weights for a new run; returns it and the init notes (``None``: no init)."""
    if model is None:
        model = build_model(cfg, data.num_classes)
    model.to(rt.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    init_notes = load_init(model, cfg.init, cfg.init_patch_resize) if cfg.init and ckpt is None else None
    return model, init_notes


def _build_loop(cfg: ExperimentConfig, rt: Runtime, run_dir: RunDir, ckpt: dict | None,
                model: nn.Module, data: Any, t_start: float, grad_hook, epoch_hook) -> Loop:
    """The optimizer, schedule, counters and checkpointer of a run, restored
    from ``ckpt`` when resuming; a new run's old files are cleared.

    Raises:
        ValueError: the loader is too short for one optimizer step; bad
            optimizer or schedule options.
        ResumeMismatchError: ``ckpt`` has another number of steps per epoch.
    """
    steps_per_epoch = len(data.train) // rt.accum_steps
    if steps_per_epoch < 1:
        raise ValueError(
            f"the training loader gives {len(data.train)} micro-batches per epoch, fewer than the "
            f"{rt.accum_steps} accumulation steps of one optimizer step; lower batch_size"
        )
    total_steps = cfg.epochs * steps_per_epoch
    stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps > 0 else total_steps
    sched = build_schedule(cfg.schedule, cfg.optim.lr, steps_per_epoch, total_steps)
    optimizer = build_optimizer(model, cfg.optim, rt.device)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    counters = Counters.from_checkpoint(ckpt)
    if ckpt is not None:
        if ckpt.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
            raise ResumeMismatchError(
                f"{run_dir.last} was written with {ckpt['steps_per_epoch']} steps per epoch, the "
                f"data now gives {steps_per_epoch} (the training set changed); use a new --out "
                "directory, or --no-resume to start over"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
    ema = _build_ema(cfg, model, ckpt)
    if rt.is_main:
        run_dir.prepare(counters.epoch if ckpt is not None else None)
    checkpointer = Checkpointer(
        run_dir, cfg, model, optimizer, scaler, ema, counters, steps_per_epoch, data.num_classes,
        git_commit(), rt.rank, rt.world_size, t_start, wall_base=counters.wall_seconds,
        last_saved_step=counters.step if ckpt is not None else None)
    train_model, eval_model = wrap_model(model, cfg, rt.device, rt.world_size)
    reset = warmup_steps(cfg.schedule, steps_per_epoch, total_steps) if cfg.ema_warmup else 0
    tb = None
    if rt.is_main and cfg.log.tensorboard:
        tb = TensorBoardLog(run_dir.tensorboard, counters.step if ckpt is not None else None)
    return Loop(cfg, rt, data, model, train_model, eval_model, optimizer, scaler, sched, counters,
                checkpointer, Progress(enabled=rt.is_main), steps_per_epoch, stop_step,
                grad_hook, epoch_hook, ema, reset, tb)


def _build_ema(cfg: ExperimentConfig, model: nn.Module, ckpt: dict | None) -> AveragedModel | None:
    """The EMA of the weights (``cfg.ema_decay > 0``), ``torch.optim.swa_utils``'
    ``AveragedModel`` with ``get_ema_multi_avg_fn``, buffers included as
    torchvision's references do; restored from ``ckpt["ema"]`` when resuming.
    Every rank updates its own copy from identical weights, so no collective."""
    if cfg.ema_decay <= 0:
        return None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    if ckpt is not None:
        ema.load_state_dict(ckpt["ema"])
    return ema


def _start_line(loop: Loop, ckpt: dict | None, init_notes: list[str] | None) -> str:
    """The run's first log line: model, data, device, batch geometry, where it starts."""
    cfg, rt, c = loop.cfg, loop.rt, loop.counters
    n_params = sum(p.numel() for p in loop.model.parameters())
    amp = str(rt.autocast_dtype).removeprefix("torch.") if rt.autocast_dtype else "off"
    where = f"resumed at epoch {c.epoch + 1} step {c.step}" if ckpt else "new run"
    if init_notes is not None:
        where += f", init from {cfg.init}" + "".join(f"; {note}" for note in init_notes)
    return (
        f"{cfg.name or cfg.model.name}: {cfg.model.name} ({n_params / 1e6:.2f}M params) on "
        f"{getattr(loop.data, 'description', cfg.data.name)} | {device_name(rt.device)} | batch "
        f"{cfg.batch_size} = {rt.micro_batch} x {rt.world_size} x {rt.accum_steps} accum | "
        f"{loop.steps_per_epoch} steps/epoch, {loop.stop_step} steps | amp {amp} | {where} | "
        f"{loop.ckpt.run_dir.path}"
    )


def _test(loop: Loop) -> tuple[dict | None, dict | None, dict | None]:
    """Test-set results of the final weights, of ``best.pt``'s and of the final
    EMA weights (``None`` without a test split, a best.pt or an EMA)."""
    data, c, best = loop.data, loop.counters, loop.ckpt.run_dir.best
    if data.test is None or len(data.test) == 0:
        return None, None, None
    test = loop.evaluate(data.test)
    test_ema = loop.evaluate(data.test, loop.ema.module) if loop.ema is not None else None
    if c.best_step < 0 or not best.exists():
        return test, None, test_ema
    if c.best_step == c.step:
        return test, test_ema if c.best_source == "ema" else test, test_ema
    final_weights = {k: v.to("cpu", copy=True) for k, v in loop.model.state_dict().items()}
    loop.model.load_state_dict(load_checkpoint(best, "cpu")["model"])
    test_best = loop.evaluate(data.test)
    loop.model.load_state_dict(final_weights)
    return test, test_best, test_ema


def _summarise(loop: Loop, tests: tuple[dict | None, dict | None, dict | None],
               overrides: Iterable[str]) -> dict[str, Any]:
    """The run summary (:func:`train`'s return value): ``experiment``, ``model``,
    ``params`` (count), ``dataset``, ``epochs`` (float, epochs trained), ``steps``,
    ``val_top1``/``val_top5`` (%, final), ``val_loss``, ``best_val_top1`` (%),
    ``best_epoch``, ``test_top1``/``test_top5`` (%, final weights),
    ``test_top1_best`` (%, best.pt's weights), ``test_top1_ema`` (%, final EMA
    weights), ``best_weights`` (``"raw"`` or ``"ema"``: whose weights best.pt
    holds; ``None`` without EMA), ``val_ema_top1`` (%), ``wall_time_s``, ``train_time_s``
    (seconds), ``images_per_s`` (training images/s), ``device``, ``world_size``
    (ranks), ``git_commit``, ``out_dir``, ``overrides``."""
    cfg, c, (test, test_best, test_ema) = loop.cfg, loop.counters, tests
    val, has_best = c.last_val, c.best_step >= 0
    return {
        "experiment": cfg.name,
        "model": cfg.model.name,
        "params": sum(p.numel() for p in loop.model.parameters()),
        "dataset": getattr(loop.data, "description", cfg.data.name),
        "epochs": c.step / loop.steps_per_epoch,
        "steps": c.step,
        "val_top1": val and val["top1"],
        "val_top5": val and val["top5"],
        "val_loss": val and val["loss"],
        "best_val_top1": c.best_val_top1 if has_best else None,
        "best_epoch": c.best_epoch if has_best else None,
        "test_top1": test and test["top1"],
        "test_top5": test and test["top5"],
        "test_top1_best": test_best and test_best["top1"],
        "test_top1_ema": test_ema and test_ema["top1"],
        "best_weights": (c.best_source if has_best else None) if loop.ema is not None else None,
        "val_ema_top1": c.last_val_ema and c.last_val_ema["top1"],
        "wall_time_s": loop.ckpt.wall_now(),
        "train_time_s": c.train_seconds,
        "images_per_s": c.images_seen / max(c.train_seconds, 1e-9),
        "device": device_name(loop.rt.device),
        "world_size": loop.rt.world_size,
        "git_commit": loop.ckpt.commit,
        "out_dir": str(loop.ckpt.run_dir.path),
        "overrides": list(overrides),
    }


def _write_results(loop: Loop, summary: dict[str, Any], results_file) -> None:
    """The results row (kept in the run directory first), ``summary.json``, the
    row appended to ``results_file``, and the closing log line (rank 0)."""
    run_dir = loop.ckpt.run_dir
    run_dir.save_row({k: summary[k] for k in RESULT_KEYS} | {"date": utc_date()})
    run_dir.write_summary(summary)
    if results_file is not None:
        run_dir.append_row(results_file)
    loop.progress.log(
        f"done: val top-1 {_pct(summary['val_top1'])} (best {_pct(summary['best_val_top1'])}) "
        f"| test top-1 {_pct(summary['test_top1'])} (best-val ckpt "
        f"{_pct(summary['test_top1_best'])}) | {format_duration(summary['wall_time_s'])} "
        f"| {summary['images_per_s']:,.0f} img/s"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}%"
