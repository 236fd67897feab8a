"""Every experiment of experiments.toml runs end to end through train.py on a
tiny configuration: a small model of the same family, two optimizer steps, and
a handful of images the test writes in each data set's layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fakedata import C10_NAMES, write_cifar100_npz, write_flowers102, write_image_folder, write_oxford_pets
from vit16.commands.train import main
from vit16.config import load_tables, resolve
from vit16.experiment import DEFAULT_EXPERIMENTS

TABLES = load_tables(DEFAULT_EXPERIMENTS)
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """cifar10 (ImageFolder), cifar100.npz, imagenet (ImageFolder, 3 classes, 64px JPEG),
    Oxford-IIIT Pets and Flowers-102 in torchvision's layouts."""
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "cifar10", C10_NAMES, {"train": 5, "test": 2})
    write_cifar100_npz(root / "cifar100.npz", per_class=2, test_per_class=1)
    write_image_folder(root / "imagenet", ["n01", "n02", "n03"], {"train": 12, "val": 2}, ext="jpg", size=(64, 64))
    write_oxford_pets(root, trainval=2, test=1)
    write_flowers102(root)
    return root


def tiny_overrides(name: str, runs: Path) -> list[str]:
    """--set items that shrink experiment ``name`` to seconds on a CPU, keeping
    its model family, data set, resolution, optimizer, schedule and augmentation."""
    cfg = resolve(name, TABLES)
    classes = {"cifar10": 10, "cifar100": 100 if cfg.data.label == "fine" else 20, "imagenet": 3,
               "oxford_pets": 37, "flowers102": 102}[cfg.data.name]
    epochs = 1 + int(np.ceil(cfg.schedule.warmup_epochs))  # the schedule stays valid; max_steps stops early
    items = [f"epochs={epochs}", "max_steps=2", "batch_size=8", "micro_batch_size=4", "eval_batch_size=8",
             f"data.val_size={classes}", "data.num_workers=0", "checkpoint_minutes=0"]
    if cfg.model.name.startswith("vit"):
        items += ["model.depth=1", "model.embed_dim=16", "model.num_heads=2", "model.mlp_dim=32"]
        if cfg.model.representation_size:
            items.append("model.representation_size=16")
    if cfg.init.startswith("runs/"):
        items.append(f"init={str(runs / cfg.init.removeprefix('runs/'))!r}")
    elif cfg.init:  # published weights (timm:, torchvision:) would be downloaded
        items.append('init=""')
    if cfg.prune.method:
        items.append("prune.rounds=2")
    return items


def run_smoke(name: str, data_root: Path, runs: Path, done: dict) -> Path:
    """Run ``name`` (after the experiment its ``init`` comes from); return its results file."""
    if name in done:
        return done[name]
    init = resolve(name, TABLES).init
    parent = re.fullmatch(r"runs/([^/]+)/\w+\.pt", init)
    if parent:
        run_smoke(parent.group(1), data_root, runs, done)
    results = runs / f"{name}.md"
    argv = [name, "--data-root", str(data_root), "--out", str(runs / name), "--results", str(results),
            "--device", "cpu", *sum((["--set", item] for item in tiny_overrides(name, runs)), [])]
    assert main(argv) == 0, f"train.py {' '.join(argv)} failed"
    done[name] = results
    return results


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs"), {}


@pytest.mark.parametrize("name", list(TABLES))
def test_experiment_runs_end_to_end(name, data_root, smoke_runs):
    runs, done = smoke_runs
    results = run_smoke(name, data_root, runs, done)
    rows = [line for line in results.read_text().splitlines() if line.startswith("| 20")]
    rounds = 2 if resolve(name, TABLES).prune.method else 0  # prune.rounds=2 above
    assert len(rows) == max(rounds, 1) and all(f"| {name} |" in row for row in rows)
    out = runs / name
    for run in [out / f"round_{r:02d}" for r in range(rounds)] or [out]:
        assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
        last_epoch = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last_epoch["step"] == 2  # max_steps
