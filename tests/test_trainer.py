"""Trainer, optimizer groups and end-to-end runs on a fake in-memory data bundle.

The fake bundle implements the ``vit16.data`` contract (TrainLoader with
``set_epoch(epoch, start_batch)``, EvalLoaders, ``num_classes``...). Runs build
a tiny ``vit_tiny`` (8x8 images, 2 blocks of width 16, dropout and drop-path,
so the global RNG matters) through ``vit16.MODELS``; ``TinyViT`` below is a
ViT-shaped stand-in for optimizer-group and ``model=`` tests. This module
doubles as a helper for the kill-and-resume child process (it imports
``make_cfg`` and ``make_bundle`` from here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from vit16 import MODELS
from vit16.checkpoint import CheckpointError, load_checkpoint
from vit16.config import ExperimentConfig, ModelConfig, OptimConfig, ScheduleConfig
from vit16.optim import build_optimizer, param_groups, set_lr
from vit16.results import read_rows
from vit16.config import batch_geometry
from vit16.engine import evaluate
from vit16.runstate import config_diff
from vit16.runtime import amp_settings, load_init
from vit16.trainer import ResumeMismatchError, TrainingDivergedError, train

NUM_CLASSES = 4


class Block(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x)))))


class TinyViT(nn.Module):
    """ViT-shaped (patch_embed, cls_token, pos_embed, blocks, norm, head), 8x8 input."""

    def __init__(self, num_classes: int = NUM_CLASSES, img_size: int = 8, patch_size: int = 4,
                 embed_dim: int = 16, depth: int = 2, dropout: float = 0.1, **_: object):
        super().__init__()
        n = (img_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, embed_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x.mean(dim=1)))  # no attention: pool all tokens


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(NUM_CLASSES, 3, 8, 8, generator=torch.Generator().manual_seed(123))
    y = torch.arange(n) % NUM_CLASSES
    x = protos[y] + 0.8 * torch.randn(n, 3, 8, 8, generator=g)
    return x, y


class FakeTrainLoader:
    """Shuffles and flips with a generator seeded by (seed, epoch) only."""

    def __init__(self, n=128, micro=8, seed=0, soft=False, on_batch=None, device="cpu"):
        self.x, self.y = _images(n, seed=1)
        self.micro, self.seed, self.soft, self.on_batch = micro, seed, soft, on_batch
        self.device = device
        self.epoch, self.start = None, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        return len(self.x) // self.micro

    def __iter__(self):
        assert self.epoch is not None, "set_epoch() must be called before iterating"
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        perm = torch.randperm(len(self.x), generator=g)
        flip = torch.rand(len(self.x), generator=g) < 0.5
        lam = torch.rand(len(self), generator=g)
        for b in range(len(self)):
            if b < self.start:
                continue
            if self.on_batch is not None:
                self.on_batch(self.epoch, b)
            idx = perm[b * self.micro:(b + 1) * self.micro]
            x = torch.where(flip[idx, None, None, None], self.x[idx].flip(-1), self.x[idx])
            y = self.y[idx]
            if self.soft:  # MixUp with the batch reversed
                one_hot = nn.functional.one_hot(y, NUM_CLASSES).float()
                x = lam[b] * x + (1 - lam[b]) * x.flip(0)
                y = lam[b] * one_hot + (1 - lam[b]) * one_hot.flip(0)
            yield x.to(self.device), y.to(self.device)


class FakeEvalLoader:
    def __init__(self, n: int, seed: int, batch: int = 16):
        self.x, self.y = _images(n, seed)
        self.batch = batch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch)

    def __iter__(self):
        for i in range(0, len(self.x), self.batch):
            yield self.x[i:i + self.batch], self.y[i:i + self.batch]


class FakeBundle:
    def __init__(self, **train_kwargs):
        self.train = FakeTrainLoader(**train_kwargs)
        self.val = FakeEvalLoader(64, seed=2)
        self.test = FakeEvalLoader(64, seed=3)
        self.num_classes = NUM_CLASSES
        self.class_names = [f"c{i}" for i in range(NUM_CLASSES)]
        self.description = "fake 8x8 (128 train / 64 val / 64 test)"


def make_bundle(**kw) -> FakeBundle:
    return FakeBundle(**kw)


def make_cfg(**top) -> ExperimentConfig:
    """3 epochs x 8 steps (batch 16 = micro 8 x accum 2 over 128 images)."""
    cfg = ExperimentConfig(
        name="tiny",
        epochs=3,
        batch_size=16,
        micro_batch_size=8,
        amp="off",
        checkpoint_minutes=0.0,
        model=ModelConfig(name="vit_tiny", img_size=8, patch_size=4, embed_dim=16, depth=2,
                          num_heads=2, dropout=0.1, drop_path=0.1),
        optim=OptimConfig(lr=3e-3, weight_decay=0.05, clip_grad_norm=1.0),
        schedule=ScheduleConfig(name="warmup_cosine", warmup_epochs=0.5),
    )
    for k, v in top.items():
        setattr(cfg, k, v)
    return cfg


def run(tmp_path: Path, name: str = "run", cfg: ExperimentConfig | None = None, **kw) -> dict:
    kw.setdefault("results_file", None)
    kw.setdefault("data", make_bundle())
    return train(cfg or make_cfg(), tmp_path / name, device="cpu", **kw)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# ----------------------------------------------------------------------------- optim


def test_param_groups_no_decay_set():
    model = TinyViT()
    groups = param_groups(model, OptimConfig(weight_decay=0.1))
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["param_names"]}
    decay = {n for g in groups if g["weight_decay"] == 0.1 for n in g["param_names"]}
    assert {"pos_embed", "cls_token", "patch_embed.bias", "norm.weight", "norm.bias",
            "blocks.0.norm.weight", "blocks.1.fc1.bias", "head.bias"} <= no_decay
    assert decay == {"patch_embed.weight", "head.weight"} | {
        f"blocks.{i}.{fc}.weight" for i in range(2) for fc in ("fc1", "fc2")}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_head_lr_mult_after_a_step():
    model = TinyViT()
    cfg = OptimConfig(lr=1e-3, head_lr_mult=10.0)
    opt = build_optimizer(model, cfg)
    set_lr(opt, 2e-4)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    for g in opt.param_groups:
        is_head = g["name"].startswith("head")
        assert g["lr"] == pytest.approx(2e-3 if is_head else 2e-4)
        assert all((p is model.head.weight or p is model.head.bias) == is_head for p in g["params"])


def test_head_found_via_get_classifier_and_fc():
    class WithGetter(TinyViT):
        def get_classifier(self):
            return self.blocks[1].fc2

    g = param_groups(WithGetter(), OptimConfig(head_lr_mult=3.0))
    head_names = {n for grp in g if grp["lr_scale"] == 3.0 for n in grp["param_names"]}
    assert head_names == {"blocks.1.fc2.weight", "blocks.1.fc2.bias"}
    resnet_like = nn.Sequential()
    resnet_like.add_module("body", nn.Linear(4, 4))
    resnet_like.add_module("fc", nn.Linear(4, 2))
    g = param_groups(resnet_like, OptimConfig(head_lr_mult=5.0))
    assert {n for grp in g if grp["lr_scale"] == 5.0 for n in grp["param_names"]} == {
        "fc.weight", "fc.bias"}


def test_layer_decay_scales():
    d = 0.5
    model = TinyViT(depth=2)
    groups = param_groups(model, OptimConfig(layer_decay=d, head_lr_mult=2.0))
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["patch_embed.weight"] == scale["pos_embed"] == scale["cls_token"] == d**3
    assert scale["blocks.0.fc1.weight"] == d**2  # block i of L: d^(L - i)
    assert scale["blocks.1.fc1.weight"] == d**1
    assert scale["norm.weight"] == 1.0
    assert scale["head.weight"] == 2.0  # head: 1.0 x head_lr_mult
    with pytest.raises(ValueError, match="blocks"):
        param_groups(nn.Linear(2, 2), OptimConfig(layer_decay=0.7))


def test_build_optimizer_kinds_and_errors():
    model = TinyViT()
    assert isinstance(build_optimizer(model, OptimConfig(name="adamw")), torch.optim.AdamW)
    sgd = build_optimizer(model, OptimConfig(name="sgd", nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    with pytest.raises(ValueError, match="adamw, sgd"):
        build_optimizer(model, OptimConfig(name="lamb"))


# ----------------------------------------------------------------------------- helpers


def test_batch_geometry():
    assert batch_geometry(128, 0, 1) == (128, 1)
    assert batch_geometry(128, 32, 1) == (32, 4)
    assert batch_geometry(128, 16, 2) == (16, 4)
    with pytest.raises(ValueError, match="micro_batch_size"):
        batch_geometry(128, 48, 1)
    with pytest.raises(ValueError, match="world size"):
        batch_geometry(10, 0, 4)


def test_amp_settings():
    cpu = torch.device("cpu")
    assert amp_settings("auto", cpu) == (None, False)
    assert amp_settings("bf16", cpu) == (torch.bfloat16, False)
    assert amp_settings("fp16", cpu) == (torch.float16, True)
    with pytest.raises(ValueError, match="auto, bf16, fp16, off"):
        amp_settings("fp8", cpu)


def test_evaluate_counts():
    class Fixed(nn.Module):
        def forward(self, x):  # predicts class 0 always, class 1 second
            return torch.tensor([[3.0, 2.0, 1.0, 0.0]]).expand(x.shape[0], -1)

    loader = [(torch.zeros(3, 1), torch.tensor([0, 1, 2])), (torch.zeros(1, 1), torch.tensor([0]))]
    r = evaluate(Fixed(), loader)
    assert r["count"] == 4
    assert r["top1"] == pytest.approx(50.0)
    assert r["top5"] == pytest.approx(100.0)  # top-4 with 4 classes


def test_config_diff():
    a = make_cfg().to_dict()
    b = make_cfg(seed=1, max_steps=5).to_dict()
    assert config_diff(a, b) == ["seed: 0 -> 1"]


# ----------------------------------------------------------------------------- training


def test_training_decreases_loss_and_writes_files(tmp_path):
    summary = run(tmp_path, results_file=tmp_path / "RESULTS.md", overrides=["optim.lr=3e-3"])
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["step"] for r in rows] == [8, 16, 24]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["val_top1"] > 50.0  # chance is 25 %
    assert summary["steps"] == 24 and summary["epochs"] == 3
    assert summary["test_top1"] is not None and summary["test_top1_best"] is not None
    assert summary["images_per_s"] > 0 and summary["wall_time_s"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    best = load_checkpoint(out / "best.pt")
    assert best["val_top1"] == summary["best_val_top1"]
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["batch_in_epoch"], last["step"]) == (3, 0, 24)
    assert set(last["rng"]) >= {"python", "torch", "numpy"}
    assert last["config"] == make_cfg().to_dict()
    (row,) = read_rows(tmp_path / "RESULTS.md")
    assert row["experiment"] == "tiny" and row["overrides"] == "optim.lr=3e-3"

    # a finished run is not trained or recorded twice
    again = run(tmp_path, results_file=tmp_path / "RESULTS.md")
    assert again == summary
    assert len(read_rows(tmp_path / "RESULTS.md")) == 1


def test_same_seed_same_weights(tmp_path):
    cfg = make_cfg(epochs=1)
    run(tmp_path, "a", cfg)
    run(tmp_path, "b", cfg)
    run(tmp_path, "c", make_cfg(epochs=1, seed=1))
    assert_same_tensors(weights(tmp_path / "a/last.pt"), weights(tmp_path / "b/last.pt"))
    a, c = weights(tmp_path / "a/last.pt"), weights(tmp_path / "c/last.pt")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_max_steps_then_resume_matches_full_run(tmp_path):
    """Stopping at max_steps mid-epoch and resuming without it equals one full run."""
    s = run(tmp_path, "split", make_cfg(epochs=2, max_steps=5))
    assert s["steps"] == 5 and s["val_top1"] is not None and s["test_top1"] is not None
    ck = load_checkpoint(tmp_path / "split/last.pt")
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (0, 10, 5)
    run(tmp_path, "split", make_cfg(epochs=2))
    run(tmp_path, "full", make_cfg(epochs=2))
    assert_same_tensors(weights(tmp_path / "split/last.pt"), weights(tmp_path / "full/last.pt"))
    metrics = (tmp_path / "split/metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(x)["epoch"] for x in metrics]
    assert epochs == [1, 2]


def test_soft_targets_and_no_accumulation(tmp_path):
    cfg = make_cfg(epochs=1, micro_batch_size=0)  # micro = batch = 16
    cfg.optim.label_smoothing = 0.1
    s = run(tmp_path, cfg=cfg, data=make_bundle(micro=16, soft=True))
    assert s["steps"] == 8


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    class NaNAfter(nn.Module):
        def __init__(self, calls: int):
            super().__init__()
            self.inner, self.calls, self.left = TinyViT(), calls, calls

        def forward(self, x):
            if self.training:
                self.left -= 1
            out = self.inner(x)
            return out * float("nan") if self.left < 0 else out

    cfg = make_cfg(checkpoint_minutes=1e-9)  # a checkpoint after every step
    with pytest.raises(TrainingDivergedError, match=r"optimizer step 3 .*last good checkpoint"):
        run(tmp_path, cfg=cfg, model=NaNAfter(calls=7))  # 2 micro-batches per step
    ck = load_checkpoint(tmp_path / "run/last.pt")
    assert ck["step"] == 3
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_resume_refuses_a_different_config(tmp_path):
    run(tmp_path, cfg=make_cfg(max_steps=2))
    other = make_cfg()
    other.optim.lr = 1e-4
    with pytest.raises(ResumeMismatchError, match=r"optim\.lr: 0\.003 -> 0\.0001.*--no-resume"):
        run(tmp_path, cfg=other)
    s = run(tmp_path, cfg=make_cfg(epochs=1, max_steps=1), resume=False)  # starts over
    assert s["steps"] == 1
    assert load_checkpoint(tmp_path / "run/last.pt")["config"]["epochs"] == 1


def test_truncated_last_checkpoint_is_an_error(tmp_path):
    run(tmp_path, cfg=make_cfg(max_steps=1))
    last = tmp_path / "run/last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt.*--no-resume"):
        run(tmp_path, cfg=make_cfg(max_steps=1))
    (tmp_path / "run/best.pt").replace(last)  # a vit16 checkpoint, but not a last.pt
    with pytest.raises(CheckpointError, match="not a resumable last.pt.*optimizer"):
        run(tmp_path, cfg=make_cfg(max_steps=1))


def test_load_init_swaps_head(tmp_path):
    cfg = make_cfg(max_steps=1)
    run(tmp_path, cfg=cfg)
    model = MODELS.build("vit_tiny", num_classes=7, **cfg.model.overrides())
    notes = load_init(model, tmp_path / "run/last.pt")
    src = weights(tmp_path / "run/last.pt")
    assert "head not loaded" in " ".join(notes) and model.head.out_features == 7
    assert torch.equal(model.blocks[0].mlp.fc1.weight, src["blocks.0.mlp.fc1.weight"])
    with pytest.raises(CheckpointError, match="do not fit"):
        load_init(TinyViT(), tmp_path / "run/last.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_init(TinyViT(), tmp_path / "nope.pt")

    s = run(tmp_path, "finetune", make_cfg(max_steps=1, init=str(tmp_path / "run/best.pt")))
    assert s["steps"] == 1


CHILD = """
import sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})
import test_trainer as T
from vit16.trainer import train

def pause(epoch, batch):  # stand still mid-epoch 2 so the parent can kill us
    if (epoch, batch) == (1, 5):
        open({marker!r}, "w").close()
        time.sleep(600)

train(T.make_cfg(checkpoint_minutes=1e-9), {out!r}, device="cpu", results_file=None,
      data=T.make_bundle(on_batch=pause))
raise SystemExit("child was not killed")
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    out, marker = tmp_path / "killed", tmp_path / "paused"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent), marker=str(marker),
                                   threads=torch.get_num_threads(), out=str(out)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    child = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "child never reached the pause point"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (1, 4, 10)  # mid-epoch checkpoint
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    resumed = run(tmp_path, "killed", make_cfg())
    reference = run(tmp_path, "reference", make_cfg())
    last_k = load_checkpoint(out / "last.pt")
    last_r = load_checkpoint(tmp_path / "reference/last.pt")
    assert_same_tensors(last_k["model"], last_r["model"])
    for a, b in zip(last_k["optimizer"]["state"].values(), last_r["optimizer"]["state"].values()):
        assert_same_tensors(a, b)
    assert resumed["val_top1"] == reference["val_top1"]
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
