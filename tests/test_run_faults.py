"""Nothing lost, nothing silent: results rows that could not be written,
filesystem faults, non-finite checkpoints, two processes on one run
directory, Ctrl-C, checkpoint permissions (issue 13)."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

import vit16.checkpoint
import vit16.files
import vit16.rundir
from test_trainer import TinyViT, assert_same_tensors, make_cfg, run, weights
from vit16.checkpoint import load_checkpoint, save_checkpoint
from vit16.config import OptimConfig
from vit16.commands.common import reports_user_errors
from vit16.files import PathNotWritableError, RunDirBusyError, RunLock, check_writable_dir
from vit16.results import read_rows
from vit16.trainer import RunInterrupted, TrainingDivergedError, train


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(args[0]) if args else None)


# ----------------------------------------------------------------------------- the results row


def test_a_row_that_could_not_be_appended_is_appended_by_the_next_invocation(tmp_path, monkeypatch):
    table = tmp_path / "RESULTS.md"
    cfg = make_cfg(epochs=1)
    with monkeypatch.context() as m:
        m.setattr(vit16.rundir, "append_result", enospc)
        with pytest.raises(PathNotWritableError, match=r"results row could not be appended .*"
                           r"No space left on device \(ENOSPC\).* kept in .*results_row.json"):
            run(tmp_path, cfg=cfg, results_file=table)
    assert not table.exists() and (tmp_path / "run" / "results_row.json").exists()
    summary = run(tmp_path, cfg=cfg, results_file=table)  # "already finished": appends the row
    rows = read_rows(table)
    assert len(rows) == 1 and rows[0]["out_dir"] == str(tmp_path / "run")
    assert rows[0]["test_top1"] == f"{summary['test_top1']:.2f}" and rows[0]["world_size"] == "1"
    run(tmp_path, cfg=cfg, results_file=table)  # once is enough
    assert len(read_rows(table)) == 1
    other = tmp_path / "OTHER.md"  # a finished run named with another --results
    run(tmp_path, cfg=cfg, results_file=other)
    assert read_rows(other) == rows


def test_the_results_file_is_checked_before_any_data_is_built(tmp_path):
    calls = []

    class Loudbundle:
        def __getattr__(self, name):
            calls.append(name)
            raise AssertionError("data touched")

    (tmp_path / "table_dir").mkdir()
    with pytest.raises(PathNotWritableError, match="--results .*table_dir is a directory"):
        train(make_cfg(), tmp_path / "run", device="cpu", data=Loudbundle(),
              results_file=tmp_path / "table_dir")
    assert calls == []


# ----------------------------------------------------------------------------- filesystem faults


def test_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(PathNotWritableError, match=r"--out .*run is a file, not a directory"):
        run(tmp_path)


def test_read_only_or_denied_out_is_found_before_training(tmp_path, monkeypatch):
    for code, text in ((errno.EROFS, "Read-only file system \\(EROFS\\)"),
                       (errno.EACCES, "Permission denied \\(EACCES\\)")):
        def refuse(*args, code=code, **kwargs):
            raise OSError(code, os.strerror(code), kwargs.get("dir"))

        with monkeypatch.context() as m:
            m.setattr(vit16.files.tempfile, "TemporaryFile", refuse)
            with pytest.raises(PathNotWritableError, match=f"--out .*cannot be written \\({text}"):
                run(tmp_path, data=None)  # data=None: building it would fail differently


def test_full_disk_keeps_the_previous_last_pt_and_is_one_line(tmp_path, monkeypatch, capsys):
    cfg = make_cfg(epochs=2)
    cfg.max_steps = 8  # one epoch, then stop: last.pt at step 8
    run(tmp_path, cfg=cfg)
    before = weights(tmp_path / "run" / "last.pt")
    cfg.max_steps = 0
    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step", 0) > 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(vit16.checkpoint.torch, "save", full)
    main = reports_user_errors(lambda argv: run(tmp_path, cfg=cfg) and 0)
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device (ENOSPC)" in err[0]
    assert_same_tensors(weights(tmp_path / "run" / "last.pt"), before)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 8
    assert not list((tmp_path / "run").glob(".last.pt.*.tmp"))


# ----------------------------------------------------------------------------- non-finite weights


def test_a_checkpoint_is_never_written_from_non_finite_weights(tmp_path):
    """The loss of the last step of epoch 2 is finite, but its update makes the
    weights NaN: neither best.pt nor last.pt of epoch 2 is written, and the
    message's "last good checkpoint kept" is true."""
    model = TinyViT()

    def poison(step: int, total: int) -> None:
        if step == 15:  # the 16th optimizer step, the last of epoch 2
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))

    cfg = make_cfg(optim=OptimConfig(lr=3e-3, weight_decay=0.05, clip_grad_norm=0.0))
    with pytest.raises(TrainingDivergedError, match=r"non-finite after optimizer step 16 .*"
                       r"last good checkpoint kept: .*last.pt \(step 8\)"):
        run(tmp_path, model=model, grad_hook=poison, cfg=cfg)
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(tmp_path / "run" / name)
        assert ckpt["step"] == 8
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- one owner


def test_a_second_process_on_the_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(RunDirBusyError, match=f"in use by another run \\(PID {os.getpid()}\\)"):
            run(tmp_path)
    run(tmp_path, cfg=make_cfg(epochs=1))  # released: the next run goes ahead


def test_a_killed_owner_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    code = (f"import time; from vit16.files import RunLock\n"
            f"with RunLock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirBusyError, match=f"PID {proc.pid}"):
        with RunLock(out):
            pass
    proc.kill()
    proc.wait()
    with RunLock(out):  # the kernel dropped the kill -9'd owner's lock
        assert (out / ".lock").read_text().strip() == str(os.getpid())


# ----------------------------------------------------------------------------- Ctrl-C, permissions


def test_ctrl_c_saves_last_pt_and_the_resumed_run_is_bit_identical(tmp_path):
    reference = run(tmp_path, "full")

    def press_ctrl_c(step: int, total: int) -> None:
        if step == 10:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunInterrupted, match=r"interrupted at optimizer step 11 .*run the same "
                       r"command again to resume"):
        run(tmp_path, "cut", grad_hook=press_ctrl_c)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 11
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = run(tmp_path, "cut")
    assert resumed["test_top1"] == reference["test_top1"]
    assert_same_tensors(weights(tmp_path / "cut" / "last.pt"), weights(tmp_path / "full" / "last.pt"))


def test_ctrl_c_is_one_line_and_exit_code_130(capsys):
    def interrupted(argv):
        raise RunInterrupted("interrupted at optimizer step 3 (epoch 1); resume it")

    assert reports_user_errors(interrupted)([]) == 130
    assert capsys.readouterr().err == "interrupted: interrupted at optimizer step 3 (epoch 1); resume it\n"


def test_checkpoints_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "a.pt", {"x": torch.zeros(1)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        path = save_checkpoint(tmp_path / "b.pt", {"x": torch.zeros(1)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_check_writable_dir_creates_and_probes(tmp_path):
    assert check_writable_dir(tmp_path / "a" / "b", "--out").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe leaves nothing behind


# ----------------------------------------------------------------------------- the train command


def test_list_shows_the_good_tables_and_names_the_broken_one(tmp_path, capsys):
    from vit16.commands.train import main
    from vit16.experiment import DEFAULT_EXPERIMENTS

    path = tmp_path / "experiments.toml"
    path.write_text(DEFAULT_EXPERIMENTS.read_text() + '\n[broken]\nbase = "nosuch"\n')
    assert main(["--list", "--experiments", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "quick" in out and "vit_quick" in out and "broken" not in out
    assert err == "error: table 'broken' does not resolve: [broken]: base 'nosuch' is not a table in the file\n"


def test_a_model_option_the_builder_lacks_is_one_line_in_dry_run(capsys):
    from vit16.commands.train import main

    assert main(["--dry-run", "resnet50_cifar", "--set", "model.depth=3"]) == 2
    assert capsys.readouterr().err == (
        "error: [resnet50_cifar.model]: model 'resnet50_cifar' has no option 'depth'; "
        "valid options: num_classes\n")


def test_a_slurm_notice_saves_at_the_next_step_then_requeues(tmp_path):
    """USR2 (preemption / time limit) through vit16.stop.request_stop, as
    TrainJob wires it: last.pt holds the step after the notice before the
    requeue callback runs, and the requeued run resumes bit-identically."""
    from vit16.stop import request_stop

    reference = run(tmp_path, "full")
    requeued = []

    def requeue() -> None:
        requeued.append(load_checkpoint(tmp_path / "cut" / "last.pt")["step"])
        raise SystemExit(-1)  # what submitit's handler does after requeueing

    def notice(step: int, total: int) -> None:
        if step == 5:
            assert request_stop(then=requeue)

    with pytest.raises(SystemExit):
        run(tmp_path, "cut", grad_hook=notice)
    assert requeued == [6]
    assert not request_stop()  # no run listens once train() has returned
    resumed = run(tmp_path, "cut")
    assert resumed["test_top1"] == reference["test_top1"]
    assert_same_tensors(weights(tmp_path / "cut" / "last.pt"), weights(tmp_path / "full" / "last.pt"))


# ----------------------------------------------------------------------------- GPU-path settings


@pytest.mark.parametrize("minutes, written", [(0.0, True), (60.0, False)])
def test_last_pt_at_an_epoch_end_only_when_due(tmp_path, minutes, written):
    """checkpoint_minutes = 0: last.pt at every epoch end; 60: not after epoch 1
    of a seconds-long run, but always at the end."""
    seen = []

    def look(step: int, total: int) -> None:
        if step == 9:  # in epoch 2
            seen.append((tmp_path / "run" / "last.pt").exists())

    run(tmp_path, cfg=make_cfg(epochs=2, checkpoint_minutes=minutes), grad_hook=look)
    assert seen == [written]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 16


@pytest.mark.slow
def test_compiled_training_and_eager_evaluation_match_eager(tmp_path):
    """compile = true compiles the training step only (inductor on the CPU):
    the same weights and top-1 as eager within float tolerance."""
    def cfg(**kw):
        c = make_cfg(epochs=1, max_steps=4, **kw)
        c.model.dropout = c.model.drop_path = 0.0  # inductor draws dropout masks from its own RNG
        return c

    eager = run(tmp_path, "eager", cfg())
    compiled = run(tmp_path, "compiled", cfg(compile=True))
    a, b = weights(tmp_path / "eager" / "last.pt"), weights(tmp_path / "compiled" / "last.pt")
    assert a.keys() == b.keys()
    # no "_orig_mod." prefixes (the raw module is checkpointed); AdamW turns float noise
    # in near-zero gradients (biases) into steps of up to lr, so single weights may move
    # by up to 4 steps x lr: bound those, and the mean difference tightly
    diff = torch.cat([(b[k] - a[k]).abs().flatten() for k in a])
    assert diff.max() <= 4 * 3e-3 and diff.mean() < 1e-4
    assert compiled["val_top1"] == eager["val_top1"] and compiled["test_top1"] == eager["test_top1"]


def test_a_checkpoint_of_a_renamed_model_still_resumes(tmp_path):
    """Before vit_quick was registered, quick trained vit_tiny with size
    overrides: such a last.pt resumes under the new name; a real change of
    the model (another depth, another drop_path) is still refused."""
    from vit16.config import ModelConfig
    from vit16.rundir import RunDir
    from vit16.trainer import ResumeMismatchError

    old = make_cfg(epochs=1)
    old.model = ModelConfig(name="vit_tiny", patch_size=8, depth=4, embed_dim=128, num_heads=4, mlp_dim=256)
    run(tmp_path, cfg=old, data=make_bundle_32())
    new = make_cfg(epochs=1)
    new.model = ModelConfig(name="vit_quick")
    assert RunDir(tmp_path / "run").read_resumable(new)["step"] == 8
    for change in ({"depth": 3}, {"drop_path": 0.1}):
        bad = make_cfg(epochs=1)
        bad.model = ModelConfig(name="vit_quick", **change)
        with pytest.raises(ResumeMismatchError, match=f"model.{next(iter(change))}"):
            RunDir(tmp_path / "run").read_resumable(bad)


def make_bundle_32():
    """test_trainer's fake bundle with 32x32 images (the registered CIFAR ViTs' size)."""
    from test_trainer import make_bundle

    bundle = make_bundle()
    for part in (bundle.train, bundle.val, bundle.test):
        part.x = torch.nn.functional.interpolate(part.x, size=32)
    bundle.num_classes = 4
    return bundle
