"""TensorBoard logging (``log.tensorboard = true``): the tags and steps of a run,
a resumed run continuing the same log with no step twice, a new run starting
a fresh log, and the missing-package error."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_trainer import make_cfg, run

from vit16.config import ConfigError, LogConfig
from vit16.experiment import check_experiment

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

STEPS = 24  # make_cfg: 3 epochs x 8 optimizer steps


def logged(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's event files as [(step, value)], as
    TensorBoard shows them (purged events left out)."""
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tb_cfg(**top):
    cfg = make_cfg(**top)
    cfg.log = LogConfig(tensorboard=True)
    return cfg


class Crash(Exception):
    pass


def crash_at_epoch(n: int):
    def hook(epoch: int) -> None:
        if epoch == n:
            raise Crash
    return hook


def test_a_run_logs_every_step_epoch_and_test_result(tmp_path):
    summary = run(tmp_path, "full", tb_cfg())
    tags = logged(tmp_path / "full")
    assert [s for s, _ in tags["train/loss"]] == list(range(1, STEPS + 1))
    assert [s for s, _ in tags["train/lr"]] == list(range(1, STEPS + 1))
    metrics = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("val/top1", "val_top1"), ("val/loss", "val_loss"), ("train/epoch_loss", "train_loss")):
        assert [s for s, _ in tags[tag]] == [8, 16, 24]
        assert [v for _, v in tags[tag]] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    assert tags["test/top1"] == [(STEPS, pytest.approx(summary["test_top1"], rel=1e-6))]
    assert "val/ema_top1" not in tags  # no EMA in this run
    epoch_losses = [v for _, v in tags["train/loss"]]
    assert sum(epoch_losses[:8]) / 8 == pytest.approx(metrics[0]["train_loss"], rel=1e-5)


def test_a_resumed_run_continues_the_log_without_a_step_twice(tmp_path):
    """Crash in epoch 2 after its steps were logged (last.pt holds epoch 1), then
    resume: steps 9-16 are logged again, and TensorBoard shows each once, with
    the values of an uninterrupted run (images/s aside)."""
    run(tmp_path, "full", tb_cfg())
    with pytest.raises(Crash):
        run(tmp_path, "split", tb_cfg(), epoch_hook=crash_at_epoch(2))
    assert [s for s, _ in logged(tmp_path / "split")["train/loss"]] == list(range(1, 17))
    run(tmp_path, "split", tb_cfg())
    full, split = logged(tmp_path / "full"), logged(tmp_path / "split")
    assert len(list((tmp_path / "split" / "tensorboard").glob("events.*"))) == 2
    assert split.keys() == full.keys()
    for tag in full:
        assert [s for s, _ in split[tag]] == [s for s, _ in full[tag]], tag
        if tag == "train/images_per_s":
            continue  # a clock
        assert [v for _, v in split[tag]] == pytest.approx([v for _, v in full[tag]], rel=1e-6), tag


def test_a_new_run_in_the_same_directory_starts_a_fresh_log(tmp_path):
    run(tmp_path, "r", tb_cfg())
    run(tmp_path, "r", tb_cfg(epochs=1), resume=False)
    assert [s for s, _ in logged(tmp_path / "r")["train/loss"]] == list(range(1, 9))


def test_without_log_tensorboard_no_events_are_written(tmp_path):
    run(tmp_path, "r", make_cfg(epochs=1))
    assert not (tmp_path / "r" / "tensorboard").exists()


def test_missing_tensorboard_package_is_one_line_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    cfg = tb_cfg()
    with pytest.raises(ConfigError, match=r"^log.tensorboard = true needs the tensorboard package: "
                       r"pip install 'vit16\[tensorboard\]'"):
        check_experiment(cfg)
    with pytest.raises(ConfigError, match="needs the tensorboard package"):
        run(tmp_path, "r", cfg)
    assert not (tmp_path / "r" / "last.pt").exists()
