"""``python -m vit16 evaluate`` and vit16.analysis.evaluation: exact confusion
counts on constructed predictions, the trainer's own test top-1 for the same
checkpoint, the val split, image size and crop options, one-line errors, and
2 gloo ranks equal to 1 process."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fakedata import C10_NAMES, write_cifar100_npz, write_image_folder
from torch import nn

from vit16.analysis.evaluation import Evaluation, confusion_counts, plot_confusion, write_evaluation
from vit16.checkpoint import save_checkpoint
from vit16.commands.evaluate import main
from vit16.config import from_dict, load_tables, resolve
from vit16.engine import evaluate

ROOT = Path(__file__).resolve().parents[1]

# (true class, predicted class) of 11 images of 4 classes; class 3 has no image
PAIRS = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (1, 1), (1, 2), (2, 0), (2, 2), (0, 2), (2, 2)]
EXPECTED = [[2, 1, 1, 0],
            [0, 3, 1, 0],
            [1, 0, 2, 0],
            [0, 0, 0, 0]]


class Oracle(nn.Module):
    """Predicts the class written in pixel (0, 0, 0) of each image: logits
    ``-|k - p| - 0.01 k``, so the ranking of the other classes is known too."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        p = x[:, 0, 0, 0].round()[:, None]
        k = torch.arange(self.k, dtype=x.dtype)[None]
        return self.scale * (-(k - p).abs() - 0.01 * k)


def oracle_batches(pairs, batch: int = 4):
    images = torch.zeros(len(pairs), 3, 2, 2)
    images[:, 0, 0, 0] = torch.tensor([float(p) for _, p in pairs])
    labels = torch.tensor([t for t, _ in pairs])
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(pairs), batch)]


def test_confusion_counts_are_exact_on_known_predictions():
    loader = oracle_batches(PAIRS)  # batches of 4, 4, 3
    ev = confusion_counts(Oracle(4), loader, 4)
    assert ev.confusion.dtype == torch.int64 and ev.confusion.tolist() == EXPECTED
    assert ev.count == 11 and ev.top1 == 100.0 * 7 / 11
    acc = ev.per_class_accuracy()
    assert acc[:3].tolist() == [50.0, 75.0, 100.0 * 2 / 3] and math.isnan(acc[3])
    # top-1, top-5 (= top-4 here) and the loss are the trainer's evaluate's numbers
    ref = evaluate(Oracle(4), loader)
    assert (ev.top1, ev.top5, ev.count) == (ref["top1"], ref["top5"], ref["count"]) and ev.top5 == 100.0
    assert ev.loss == pytest.approx(ref["loss"], rel=1e-12)
    logits = torch.cat([Oracle(4)(x) for x, _ in loader])
    assert ev.loss == pytest.approx(F.cross_entropy(logits, torch.tensor([t for t, _ in PAIRS])).item(), rel=1e-6)


def test_top5_counts_the_five_largest_logits():
    # 7 classes: the 5 classes nearest the prediction are its top-5, |k - p| <= 2 (ties to the smaller k)
    pairs = [(6, 0), (4, 0), (5, 3), (0, 6), (3, 3)]
    ev = confusion_counts(Oracle(7), oracle_batches(pairs, 2), 7)
    assert ev.top5_correct == 3  # (6, 0) and (0, 6): the label is 6 classes away, outside the top-5
    assert ev.top5 == evaluate(Oracle(7), oracle_batches(pairs, 2))["top5"] == 60.0
    assert int(ev.confusion.sum()) == 5 and ev.confusion[3, 3] == 1 and ev.confusion[6, 0] == 1


def test_class_count_mismatch_and_empty_loader_are_errors():
    with pytest.raises(ValueError, match="outputs 4 classes but the data set has 10"):
        confusion_counts(Oracle(4), oracle_batches(PAIRS), 10)
    with pytest.raises(ValueError, match="labels out of range"):
        confusion_counts(Oracle(4), oracle_batches([(5, 0)]), 4)
    with pytest.raises(ValueError, match="no images"):
        confusion_counts(Oracle(4), [], 4)


def test_written_files_hold_the_counts(tmp_path):
    ev = Evaluation(torch.tensor(EXPECTED), top5_correct=11, loss_sum=5.5)
    names = ["a", "b", "c", "d"]
    files = write_evaluation(tmp_path, ev, names, {"split": "test"})
    assert [f.name for f in files] == ["metrics.json", "confusion.csv", "per_class.csv"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["count"] == 11 and metrics["loss"] == 0.5 and metrics["split"] == "test"
    assert metrics["per_class_top1"] == {"a": 50.0, "b": 75.0, "c": pytest.approx(200 / 3), "d": None}
    rows = list(csv.reader(open(tmp_path / "confusion.csv")))
    assert rows[0] == ["true \\ predicted", *names]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == EXPECTED and [r[0] for r in rows[1:]] == names
    per_class = list(csv.DictReader(open(tmp_path / "per_class.csv")))
    assert [(r["class"], r["images"], r["correct"]) for r in per_class] == [
        ("a", "4", "2"), ("b", "4", "3"), ("c", "3", "2"), ("d", "0", "0")]
    assert per_class[3]["top1"] == ""
    pytest.importorskip("matplotlib")
    png = plot_confusion(ev.confusion, names, tmp_path / "confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# quick, made tiny: 80 training images of 32x32 (20 held out), batch 8, a 1-block ViT, no
# augmentation: 6 epochs (0.2 s) learn the fake classes (~80 % test top-1)
TINY = ["model.depth=1", "model.embed_dim=16", "model.num_heads=2", "model.mlp_dim=32", "batch_size=8",
        "epochs=6", "data.val_size=20", "data.num_workers=0", "data.crop_padding=0", "data.hflip=false",
        "checkpoint_minutes=0", "eval_batch_size=6"]


@pytest.fixture
def learnable_root(tmp_path) -> Path:
    """CIFAR-10 as an ImageFolder of images that encode their class: 10 + 4 a class."""
    write_image_folder(tmp_path / "img" / "cifar10", C10_NAMES, {"train": 10, "test": 4})
    return tmp_path / "img"


@pytest.fixture
def trained_run(tmp_path, learnable_root):
    from vit16.trainer import train

    cfg = resolve("quick", load_tables(ROOT / "experiments.toml"), TINY)
    summary = train(cfg, tmp_path / "run", data_root=str(learnable_root), device="cpu", results_file=None)
    return tmp_path / "run", summary


def evaluate_cli(args, capsys) -> tuple[int, str, str]:
    code = main([*map(str, args), "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_equals_the_trainers_test_top1(trained_run, learnable_root, tmp_path, capsys):
    from vit16.data import build_data
    from vit16.runtime import build_model

    run, summary = trained_run
    assert summary["test_top1"] > 30  # learnt something: the counts below are not all in one column
    for weights, key in ((run, "test_top1_best"), (run / "last.pt", "test_top1")):
        out_dir = tmp_path / f"eval_{key}"
        code, out, err = evaluate_cli([weights, "--data-root", learnable_root, "--out", out_dir], capsys)
        assert code == 0, err
        metrics = json.loads((out_dir / "metrics.json").read_text())
        assert metrics["top1"] == summary[key] and metrics["count"] == 40
        if key == "test_top1":
            assert metrics["top5"] == summary["test_top5"]
        assert metrics["batch_size"] == 6  # the run's eval_batch_size
        # the trainer's evaluate on the trainer's test loader: the same three numbers, bit for bit
        ckpt = torch.load(run / ("best.pt" if key == "test_top1_best" else "last.pt"), weights_only=True)
        cfg = from_dict(ckpt["config"])
        model = build_model(cfg, 10)
        model.load_state_dict(ckpt["model"])
        ref = evaluate(model, build_data(cfg, torch.device("cpu"), data_root=str(learnable_root)).test)
        assert (metrics["top1"], metrics["top5"], metrics["loss"]) == (ref["top1"], ref["top5"], ref["loss"])
        shown = run / "best.pt" if key == "test_top1_best" else weights
        assert f"top-1 {summary[key]:.2f}%" in out
        assert f"the trainer's test top-1 of {shown}: {summary[key]:.2f}% (summary.json)" in out
        counts = [[int(v) for v in r[1:]] for r in list(csv.reader(open(out_dir / "confusion.csv")))[1:]]
        assert sum(map(sum, counts)) == 40 and [sum(r) for r in counts] == [4] * 10  # 4 test images a class
        assert sum(counts[k][k] for k in range(10)) == round(metrics["top1"] * 40 / 100)
        assert list(metrics["per_class_top1"]) == C10_NAMES
        if (out_dir / "confusion.png").exists():
            assert f"figure: {out_dir / 'confusion.png'}" in out


def test_val_split_image_size_and_crop_ratio(trained_run, learnable_root, tmp_path, capsys):
    run, _ = trained_run
    code, _, err = evaluate_cli([run, "--data-root", learnable_root, "--split", "val", "--out", tmp_path / "v",
                                 "--no-plots", "--batch-size", "7"], capsys)
    assert code == 0, err
    val = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert val["count"] == 20 and val["split"] == "val" and val["batch_size"] == 7
    assert not (tmp_path / "v" / "confusion.png").exists()
    # a crop ratio of 1 on 32x32 CIFAR: the whole image, as the default transform
    for name, extra in (("default", []), ("crop", ["--crop-ratio", "1"])):
        assert evaluate_cli([run, "--data-root", learnable_root, "--out", tmp_path / name, "--no-plots", *extra],
                            capsys)[0] == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("default", "crop"))
    assert (a["top1"], a["top5"], a["count"]) == (b["top1"], b["top5"], b["count"])
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    code, out, err = evaluate_cli([run, "--data-root", learnable_root, "--img-size", "64", "--out", tmp_path / "big",
                                   "--no-plots"], capsys)
    assert code == 0, err
    assert "position embedding resized from 4x4 to 8x8 patches" in err and "64px" in out
    assert json.loads((tmp_path / "big" / "metrics.json").read_text())["img_size"] == 64


def test_foreign_weights_with_model_jax_npz_and_state_dict_agree(tmp_path, cifar10_root, capsys):
    import numpy as np

    from vit16 import MODELS
    from vit16.models import to_jax_npz

    torch.manual_seed(0)
    model = MODELS.build("vit_tiny")  # the registered size: depth 9, D 192, 3 heads
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    np.savez(tmp_path / "ViT-tiny.npz", **to_jax_npz(model.state_dict(), num_heads=3))
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    results = {}
    for name, extra in (("npz", []), ("pth", []), ("npz64", ["--img-size", "64"])):
        spec = tmp_path / ("weights.pth" if name == "pth" else "ViT-tiny.npz")
        code, out, err = evaluate_cli([spec, "--model", "vit_tiny", "--dataset", "cifar10", "--data-root",
                                       cifar10_root, "--out", tmp_path / name, "--no-plots", "--workers", "0",
                                       *extra], capsys)
        assert code == 0, err
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert results[name]["count"] == 20 and results[name]["amp"] == "off"
    assert (results["npz"]["top1"], results["npz"]["top5"]) == (results["pth"]["top1"], results["pth"]["top5"])
    assert results["npz"]["loss"] == pytest.approx(results["pth"]["loss"], rel=1e-5)
    assert results["npz64"]["img_size"] == 64
    assert results["npz64"]["notes"] == ["position embedding resized from 8x8 to 16x16 patches"]


def test_bad_input_is_one_error_line(tmp_path, cifar10_root, capsys):
    cfg = from_dict({"name": "tiny", "model": {"name": "vit_tiny", "patch_size": 8, "depth": 1, "embed_dim": 16,
                                               "num_heads": 2, "mlp_dim": 32}, "data": {"val_size": 10}})
    from vit16.runtime import build_model

    save_checkpoint(tmp_path / "run" / "best.pt", {"model": build_model(cfg, 10).state_dict(),
                                                   "config": cfg.to_dict(), "num_classes": 10})
    write_cifar100_npz(cifar10_root / "cifar100.npz")
    cases = [
        ([tmp_path / "missing"], "missing"),
        ([tmp_path / "run", "--data-root", tmp_path / "nodata"], "cifar10"),
        ([tmp_path / "run", "--data-root", cifar10_root, "--dataset", "cifar100"], "outputs 10 classes"),
        ([tmp_path / "run", "--data-root", cifar10_root, "--crop-ratio", "1.5"], "--crop-ratio 1.5"),
        ([tmp_path / "run", "--data-root", cifar10_root, "--batch-size", "0"], "--batch-size must be >= 1"),
        ([tmp_path / "run", "--model", "vit_tiny"], "drop --model"),
    ]
    for args, needle in cases:
        code, _, err = evaluate_cli([*args, "--out", tmp_path / "o"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


@pytest.mark.slow
def test_two_gloo_ranks_count_like_one_process(trained_run, learnable_root, tmp_path, capsys):
    run, _ = trained_run
    assert evaluate_cli([run, "--data-root", learnable_root, "--out", tmp_path / "one", "--no-plots",
                         "--batch-size", "3"], capsys)[0] == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vit16", "evaluate", str(run), "--data-root", str(learnable_root), "--out", str(tmp_path / "two"),
           "--no-plots", "--batch-size", "3", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert two["world_size"] == 2 and two["count"] == 40
    assert (two["top1"], two["top5"], two["per_class_top1"]) == (one["top1"], one["top5"], one["per_class_top1"])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert (tmp_path / "two" / "confusion.csv").read_text() == (tmp_path / "one" / "confusion.csv").read_text()


def test_a_missing_weights_path_is_one_line(capsys):
    from vit16.commands.evaluate import main as evaluate_main

    assert evaluate_main(["runs/nowhere", "--dataset", "cifar10"]) == 2
    assert capsys.readouterr().err == ("error: runs/nowhere not found; give a run directory, a checkpoint, "
                                       "or torchvision:/timm:/.npz weights with --model\n")
