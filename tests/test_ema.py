"""EMA of the weights (``ema_decay``, ``ema_warmup``): the closed-form average,
bit-identical resume, best.pt from the better weights, the results row."""

from __future__ import annotations

import json

import pytest
import torch

from test_trainer import TinyViT, assert_same_tensors, make_cfg, run
from vit16.checkpoint import load_checkpoint
from vit16.results import read_rows


def record_weights(model: TinyViT, seen: list) -> callable:
    """A grad_hook that records the weights before every optimizer step."""
    def hook(step: int, total: int) -> None:
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return hook


def test_ema_equals_the_closed_form_average(tmp_path):
    """e_1 = w_1, e_t = d e_(t-1) + (1 - d) w_t over the weights after each step."""
    decay, model, seen = 0.8, TinyViT(), []
    cfg = make_cfg(epochs=1, ema_decay=decay)
    run(tmp_path, cfg=cfg, model=model, grad_hook=record_weights(model, seen))
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    after = seen[1:] + [last["model"]]  # the weights after steps 1..8
    expected = {k: v.clone() for k, v in after[0].items()}
    for w in after[1:]:
        for k in expected:
            if expected[k].is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * w[k]
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert ema.keys() == expected.keys() and int(last["ema"]["n_averaged"]) == 8
    for k in ema:
        torch.testing.assert_close(ema[k], expected[k], rtol=1e-5, atol=1e-6, msg=k)


def test_ema_steps_updates_every_nth_step(tmp_path):
    """ema_steps = 3 over 8 steps: updates after steps 3 and 6 only (e = w_3,
    then d e + (1 - d) w_6), as torchvision's --model-ema-steps."""
    decay, model, seen = 0.8, TinyViT(), []
    cfg = make_cfg(epochs=1, ema_decay=decay, ema_steps=3)
    run(tmp_path, cfg=cfg, model=model, grad_hook=record_weights(model, seen))
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    w3, w6 = seen[3], seen[6]  # the weights after steps 3 and 6
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert int(last["ema"]["n_averaged"]) == 2
    for k in ema:
        expected = decay * w3[k] + (1 - decay) * w6[k] if w3[k].is_floating_point() else w6[k]
        torch.testing.assert_close(ema[k], expected, rtol=1e-5, atol=1e-6, msg=k)


def test_ema_warmup_copies_the_weights_until_warmup_ends(tmp_path):
    model, seen = TinyViT(), []
    cfg = make_cfg(epochs=1, ema_decay=0.99, ema_warmup=True)
    cfg.schedule.warmup_epochs = 1.0  # the whole run: the EMA is the last weights
    run(tmp_path, cfg=cfg, model=model, grad_hook=record_weights(model, seen))
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert_same_tensors(ema, last["model"])


def test_resume_with_ema_is_bit_identical(tmp_path):
    cfg = make_cfg(epochs=2, ema_decay=0.9)
    run(tmp_path, "full", make_cfg(epochs=2, ema_decay=0.9))
    cfg.max_steps = 5  # stop mid-epoch 1, then go on
    run(tmp_path, "split", cfg)
    run(tmp_path, "split", make_cfg(epochs=2, ema_decay=0.9))
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("split", "full"))
    assert_same_tensors(a["ema"], b["ema"])
    assert_same_tensors(a["model"], b["model"])


def test_best_pt_holds_the_better_weights_and_the_row_says_which(tmp_path):
    table = tmp_path / "R.md"
    summary = run(tmp_path, cfg=make_cfg(ema_decay=0.5), results_file=table)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("val_ema_top1" in m for m in metrics)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    scores = [max(m["val_top1"], m["val_ema_top1"]) for m in metrics]
    assert best["val_top1"] == max(scores) == summary["best_val_top1"]
    epoch = scores.index(max(scores))
    m = metrics[epoch]
    source = "ema" if m["val_ema_top1"] > m["val_top1"] else "raw"
    assert best["weights"] == summary["best_weights"] == source
    row = read_rows(table)[0]
    assert row["best_weights"] == source
    assert row["test_top1_ema"] == f"{summary['test_top1_ema']:.2f}"
    assert summary["test_top1_ema"] is not None and summary["val_ema_top1"] == metrics[-1]["val_ema_top1"]


def test_without_ema_nothing_changes(tmp_path):
    summary = run(tmp_path, cfg=make_cfg(epochs=1))
    assert summary["test_top1_ema"] is None and summary["best_weights"] is None
    assert "ema" not in load_checkpoint(tmp_path / "run" / "last.pt")
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "val_ema_top1" not in metrics


def test_ema_decay_range_is_checked():
    from vit16.config import ConfigError, load_tables, resolve
    from vit16.experiment import DEFAULT_EXPERIMENTS

    with pytest.raises(ConfigError, match=r"ema_decay = 1.0 must be in \[0, 1\)"):
        resolve("quick", load_tables(DEFAULT_EXPERIMENTS), ["ema_decay=1.0"])
