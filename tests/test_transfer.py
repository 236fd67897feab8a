"""Pre-train, then fine-tune: the transfer tables of experiments.toml carry the
seeds' and the paper's hyper-parameters, and a pre-trained run's ``best.pt``
fine-tunes through the trainer on another class count (pre-logits dropped, a
zero head at its own learning rate)."""

from __future__ import annotations

import tomllib

import pytest
import torch

from vit16.checkpoint import load_checkpoint
from vit16.commands.train import main
from vit16.config import SECTIONS, ExperimentConfig, ModelConfig, OptimConfig, ScheduleConfig, load_tables, resolve
from vit16.experiment import DEFAULT_EXPERIMENTS
from vit16.trainer import train

TABLES = load_tables(DEFAULT_EXPERIMENTS)


def dry_run(name: str, capsys) -> dict:
    assert main(["--dry-run", name]) == 0
    return tomllib.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------- tables


def test_dry_run_vitb16_pretrain_prints_the_seeds_values(capsys):
    cfg = dry_run("vitb16_pretrain", capsys)
    assert (cfg["epochs"], cfg["batch_size"], cfg["amp"], cfg["init"]) == (300, 1600, "bf16", "")
    assert 1600 % cfg["micro_batch_size"] == 0 and 1600 // cfg["micro_batch_size"] % 32 == 0
    assert cfg["model"] == {"name": "vit_b16", "representation_size": 768, "dropout": 0.0}
    data = cfg["data"]
    assert (data["name"], data["img_size"], data["fraction"]) == ("imagenet", 224, 0.67)
    assert data["auto_augment"] == "randaugment"
    optim = cfg["optim"]
    assert (optim["name"], optim["lr"], optim["weight_decay"], optim["clip_grad_norm"]) == ("adamw", 1.6e-3, 0.05, 1.0)
    assert optim["head_lr_mult"] == 1.0 and optim["label_smoothing"] == 0.0
    assert cfg["schedule"] == {**cfg["schedule"], "name": "warmup_cosine", "warmup_epochs": 6,
                               "warmup_start_lr": 1e-6, "min_lr": 1e-5}
    if "slurm" in SECTIONS:  # the multi-node table: 4 nodes x 8 GPUs = 32 ranks of 50 images
        assert (cfg["slurm"]["nodes"], cfg["slurm"]["gpus_per_node"]) == (4, 8)


def test_dry_run_vitb16_finetune_cifar_prints_the_seeds_values(capsys):
    cfg = dry_run("vitb16_finetune_cifar", capsys)
    assert cfg["init"] == "runs/vitb16_pretrain/best.pt"
    assert (cfg["epochs"], cfg["batch_size"], cfg["amp"]) == (60, 512, "bf16")
    assert cfg["model"] == {"name": "vit_b16", "dropout": 0.1, "zero_head": True}  # no pre-logits
    data = cfg["data"]
    assert (data["name"], data["img_size"], data["crop_padding"]) == ("cifar10", 224, 28)
    optim = cfg["optim"]
    assert (optim["name"], optim["lr"], optim["head_lr_mult"]) == ("adamw", 2e-4, 10)
    assert (optim["weight_decay"], optim["label_smoothing"], optim["clip_grad_norm"]) == (0.05, 0.1, 1.0)
    sched = cfg["schedule"]
    assert (sched["name"], sched["warmup_epochs"], sched["warmup_start_lr"], sched["min_lr"]) == (
        "warmup_cosine", 3, 1e-6, 1e-6)


@pytest.mark.parametrize("name, dataset", [("vitb16_finetune_cifar_paper", "cifar10"),
                                           ("vitb16_finetune_cifar100_paper", "cifar100")])
def test_paper_finetune_recipe(name, dataset):
    """Appendix B.1.1: SGD 0.9, no weight decay, clip 1, batch 512, 10k steps,
    cosine after a 500-step warmup, 384 px, lr 0.003 of the swept four."""
    cfg = resolve(name, TABLES)
    assert cfg.init == "runs/vitb16_pretrain/best.pt" and cfg.data.name == dataset
    optim = cfg.optim
    assert (optim.name, optim.momentum, optim.weight_decay, optim.clip_grad_norm) == ("sgd", 0.9, 0.0, 1.0)
    assert cfg.optim.lr in (0.001, 0.003, 0.01, 0.03) and cfg.optim.lr == 0.003
    assert cfg.batch_size == 512 and cfg.max_steps == 10_000
    assert cfg.model.img_size == cfg.data.img_size == 384 and cfg.model.representation_size is None
    steps_per_epoch = (50_000 - cfg.data.val_size) // cfg.batch_size
    assert cfg.epochs * steps_per_epoch >= 10_000 > (cfg.epochs - 1) * steps_per_epoch
    assert round(cfg.schedule.warmup_epochs * steps_per_epoch) == 500
    assert cfg.schedule.name == "warmup_cosine"


def test_cifar100_finetunes_differ_from_cifar10_only_in_the_data_set():
    for c10, c100 in [("vitb16_finetune_cifar", "vitb16_finetune_cifar100"),
                      ("vitb16_finetune_cifar_paper", "vitb16_finetune_cifar100_paper")]:
        a, b = resolve(c10, TABLES).to_dict(), resolve(c100, TABLES).to_dict()
        assert b["data"].pop("name") == "cifar100" and a["data"].pop("name") == "cifar10"
        for d in (a, b):
            for key in ("name", "description", "base"):
                d.pop(key)
        assert a == b


def test_proxy_tables_compare_like_with_like():
    pre, fine, scratch = (resolve(n, TABLES) for n in ("proxy_pretrain", "proxy_finetune", "proxy_scratch"))
    assert (pre.data.name, pre.data.label, pre.init) == ("cifar100", "fine", "")
    assert pre.model.representation_size  # pre-trained with pre-logits, as the paper
    assert fine.init == "runs/proxy_pretrain/best.pt" and scratch.init == ""
    assert fine.data.name == scratch.data.name == "cifar10"
    assert fine.model.zero_head and fine.optim.head_lr_mult == 10 and fine.optim.label_smoothing > 0
    assert fine.schedule.warmup_epochs > 0
    arch = lambda c: {k: v for k, v in c.model.overrides().items() if k not in ("zero_head", "representation_size")}
    assert arch(pre) == arch(fine) == arch(scratch) and fine.model.name == scratch.model.name == pre.model.name
    assert scratch.model.representation_size is None and fine.model.representation_size is None
    assert (fine.epochs, fine.batch_size) == (scratch.epochs, scratch.batch_size)  # the same budget
    assert pre.model.patch_size in (4, 8) and pre.data.img_size == 32


def test_init_from_the_command_line():
    cfg = resolve("vitb16_finetune_cifar", TABLES, ["init=torchvision:ViT_B_16_Weights.IMAGENET1K_V1"])
    assert cfg.init == "torchvision:ViT_B_16_Weights.IMAGENET1K_V1"
    cfg = resolve("proxy_finetune", TABLES, ["init=timm:vit_base_patch16_224.augreg_in21k_ft_in1k"])
    assert cfg.init == "timm:vit_base_patch16_224.augreg_in21k_ft_in1k"


# ----------------------------------------------------------------------------- through the trainer


class Loader:
    """A tiny in-memory loader: class c is a fixed random 8x8 pattern plus noise."""

    def __init__(self, num_classes: int, n: int, seed: int, batch: int = 8):
        g = torch.Generator().manual_seed(seed)
        protos = torch.randn(num_classes, 3, 8, 8, generator=torch.Generator().manual_seed(7))
        self.y = torch.arange(n) % num_classes
        self.x = protos[self.y] + 0.5 * torch.randn(n, 3, 8, 8, generator=g)
        self.batch = batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __len__(self) -> int:
        return len(self.x) // self.batch

    def __iter__(self):
        for b in range(getattr(self, "start", 0), len(self)):
            yield self.x[b * self.batch:(b + 1) * self.batch], self.y[b * self.batch:(b + 1) * self.batch]


class Bundle:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.train = Loader(num_classes, 64, seed=1)
        self.val = Loader(num_classes, 16, seed=2)
        self.test = Loader(num_classes, 16, seed=3)
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.description = f"fake 8x8, {num_classes} classes"


def tiny_cfg(**top) -> ExperimentConfig:
    return ExperimentConfig(
        name="tiny", epochs=2, batch_size=8, amp="off", checkpoint_minutes=0.0,
        model=ModelConfig(name="vit_tiny", img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2,
                          mlp_dim=32, **top.pop("model", {})),
        optim=OptimConfig(lr=1e-3, clip_grad_norm=1.0, **top.pop("optim", {})),
        schedule=ScheduleConfig(warmup_epochs=0.5),
        **top,
    )


def test_pretrain_then_finetune_through_the_trainer(tmp_path, capsys):
    pre = train(tiny_cfg(model={"representation_size": 16}), tmp_path / "pre", device="cpu",
                results_file=None, data=Bundle(6))
    assert pre["steps"] == 16
    source = load_checkpoint(tmp_path / "pre/best.pt")["model"]
    assert source["head.weight"].shape == (6, 16) and "pre_logits.weight" in source

    cfg = tiny_cfg(init=str(tmp_path / "pre/best.pt"), max_steps=4,
                   model={"zero_head": True}, optim={"head_lr_mult": 10.0, "label_smoothing": 0.1})
    fine = train(cfg, tmp_path / "fine", device="cpu", results_file=None, data=Bundle(4))
    assert fine["steps"] == 4
    log = capsys.readouterr().out
    assert f"init from {tmp_path / 'pre/best.pt'}" in log and "head not loaded" in log
    state = load_checkpoint(tmp_path / "fine/last.pt")
    weights = state["model"]
    assert weights["head.weight"].shape == (4, 16) and not any(k.startswith("pre_logits") for k in weights)
    # the backbone started from the pre-trained weights (4 steps of lr <= 1e-3 move it little;
    # the zero head passes no gradient back on the first step, so they do move it from the second)
    drift = (weights["blocks.0.attn.qkv.weight"] - source["blocks.0.attn.qkv.weight"]).abs().max()
    assert 0 < drift < 0.05
    groups = {g["name"]: g for g in state["optimizer"]["param_groups"] if "name" in g}
    head = [g for name, g in groups.items() if name.startswith("head")]
    assert head and all(g["lr_scale"] == 10.0 for g in head)


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
def test_bad_init_is_one_error_line_from_train_py(tmp_path, capsys, monkeypatch):
    from fakedata import C10_NAMES, write_image_folder

    monkeypatch.setenv("VIT16_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "data/cifar10", C10_NAMES, {"train": 3, "test": 1})
    argv = ["proxy_finetune", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--results", str(tmp_path / "results.md"), "--device", "cpu", "--set", "data.val_size=10", "--set", "batch_size=4",
            "--set", "init=hf:google/vit-base-patch16-224"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: init 'hf:google/vit-base-patch16-224': unknown prefix")
