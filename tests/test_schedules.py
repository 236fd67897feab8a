"""Learning-rate schedules against their closed forms at named steps."""

from __future__ import annotations

import math

import pytest

from vit16.config import ConfigError, ExperimentConfig, OptimConfig, ScheduleConfig, check_ranges
from vit16.registry import SCHEDULES, UnknownNameError
from vit16.schedules import build_schedule

SPE, EPOCHS = 10, 20  # steps per epoch, epochs
T = SPE * EPOCHS  # 200 total steps
LR, LR0, LR_MIN = 1e-3, 1e-5, 1e-6


def make(name: str, warmup_epochs: float = 2.0, **kw):
    cfg = ScheduleConfig(name=name, warmup_epochs=warmup_epochs, warmup_start_lr=LR0,
                         min_lr=LR_MIN, **kw)
    return build_schedule(cfg, LR, SPE, T)


def test_registered():
    assert {"warmup_cosine", "warmup_linear", "constant", "step"} <= set(SCHEDULES.names())
    with pytest.raises(UnknownNameError, match="warmup_cosine"):
        build_schedule(ScheduleConfig(name="warmup_cosin"), LR, SPE, T)


@pytest.mark.parametrize("name", ["warmup_cosine", "warmup_linear", "constant", "step"])
def test_warmup_is_linear_from_start_lr(name):
    kw = {"milestones": [10.0]} if name == "step" else {}
    s = make(name, **kw)
    W = 2 * SPE
    assert s(0) == pytest.approx(LR0)
    assert s(W // 2) == pytest.approx(LR0 + (LR - LR0) * 0.5)
    assert s(W - 1) == pytest.approx(LR0 + (LR - LR0) * (W - 1) / W)
    assert s(W) == pytest.approx(LR)  # end of warmup


def test_warmup_cosine_closed_form():
    s, W = make("warmup_cosine"), 20
    mid = (W + T) // 2
    assert s(mid) == pytest.approx((LR + LR_MIN) / 2)
    for step in (W, 57, mid, T - 1):
        t = (step - W) / (T - W)
        assert s(step) == pytest.approx(LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * t)))
    assert s(T) == pytest.approx(LR_MIN)
    assert s(T + 50) == pytest.approx(LR_MIN)  # clamped past the end
    assert all(s(i) >= s(i + 1) for i in range(W, T))  # monotone decay


def test_warmup_linear_closed_form():
    s, W = make("warmup_linear"), 20
    for step in (W, 110, T - 1, T):
        t = (step - W) / (T - W)
        assert s(step) == pytest.approx(LR + (LR_MIN - LR) * t)
    assert s((W + T) // 2) == pytest.approx((LR + LR_MIN) / 2)


def test_constant_with_and_without_warmup():
    assert make("constant", warmup_epochs=0)(0) == LR
    s = make("constant")
    assert [s(i) for i in (20, 100, T - 1)] == [LR, LR, LR]


def test_step_milestones_in_epochs():
    s = make("step", warmup_epochs=0, milestones=[5, 12.5], gamma=0.1)
    assert s(0) == LR
    assert s(49) == LR
    assert s(50) == pytest.approx(LR * 0.1)  # epoch 5 = step 50
    assert s(124) == pytest.approx(LR * 0.1)
    assert s(125) == pytest.approx(LR * 0.01)  # epoch 12.5 = step 125
    assert s(T - 1) == pytest.approx(LR * 0.01)


def test_no_warmup_starts_at_base_lr():
    assert make("warmup_cosine", warmup_epochs=0)(0) == pytest.approx(LR)


def test_step_without_milestones_raises():
    with pytest.raises(ValueError, match="milestones"):
        build_schedule(ScheduleConfig(name="step"), LR, SPE, T)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"name": "step", "milestones": [1.0], "gamma": 0.0}, r"gamma = 0.0 must be in \(0, 1\]"),
        ({"name": "step", "milestones": [-1.0]}, "milestones = .* must each be in"),
        ({"warmup_epochs": -1.0}, r"warmup_epochs = -1.0 must be in \[0, epochs = 20\]"),
        ({"warmup_epochs": 30.0}, r"warmup_epochs = 30.0 must be in \[0, epochs = 20\]"),
        ({"min_lr": -1.0}, "min_lr"),
    ],
)
def test_bad_options_are_config_range_errors(kw, match):
    # the option ranges are checked once, by vit16.config.check_ranges (resolve, setup_runtime)
    cfg = ExperimentConfig(name="t", epochs=EPOCHS, optim=OptimConfig(lr=LR), schedule=ScheduleConfig(**kw))
    with pytest.raises(ConfigError, match=r"^\[t.schedule\]: " + match):
        check_ranges(cfg)


def test_zero_steps_raise():
    with pytest.raises(ValueError, match="at least one step"):
        build_schedule(ScheduleConfig(), LR, 0, 0)
