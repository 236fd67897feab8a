"""Linear few-shot evaluation (paper section 4.1): the closed-form ridge
solution against a direct solve, the ridge choice on held-out training
images, the shot sampling, mean and spread over seeds, and
``python -m vit16 fewshot`` end to end on fake CIFAR-10."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fakedata import C10_NAMES, write_image_folder

from vit16.analysis.fewshot import (
    FewShotResult,
    fewshot_indices,
    fit_fewshot,
    holdout_indices,
    needed_indices,
    run_fewshot,
)
from vit16.analysis.ridge import L2_GRID, add_bias, ridge_solve, signed_targets
from vit16.checkpoint import save_checkpoint
from vit16.config import from_dict
from vit16.commands.fewshot import main

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def direct(x, y, lam):
    x, y = x.double(), y.double()
    return torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)


@pytest.mark.parametrize("n, f", [(40, 6), (5, 12)])  # primal (N >= F) and dual (N < F) forms
def test_ridge_matches_direct_solve(n, f):
    g = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, f, generator=g), signed_targets(torch.randint(0, 3, (n,), generator=g), 3)
    lams = [1e-3, 0.5, 10.0, 1e4]
    w = ridge_solve(x, y, lams)
    assert w.shape == (4, f, 3) and w.dtype == torch.float64
    for i, lam in enumerate(lams):
        assert torch.allclose(w[i], direct(x, y, lam), atol=1e-8, rtol=1e-6)


def test_ridge_rejects_bad_strengths():
    with pytest.raises(ValueError, match="> 0"):
        ridge_solve(torch.ones(3, 2), torch.ones(3, 1), [0.0])


def test_targets_and_bias():
    t = signed_targets(torch.tensor([2, 0]), 3)
    assert torch.equal(t, torch.tensor([[-1.0, -1, 1], [1, -1, -1]], dtype=torch.float64))
    assert torch.equal(add_bias(torch.zeros(2, 1), 100.0), torch.tensor([[0.0, 100.0], [0.0, 100.0]]))


def blobs(n_per_class, classes=4, dim=8, noise=1.0, seed=0):
    """Gaussian clusters around fixed class centres; ``seed`` draws the noise."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) * 3
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[y] + noise * torch.randn(len(y), dim, generator=g), y


def test_fit_chooses_the_strength_with_best_held_out_top1_and_reports_its_test_top1():
    tx, ty = blobs(3, noise=2.0, seed=1)
    hx, hy = blobs(10, noise=2.0, seed=2)
    sx, sy = blobs(25, noise=2.0, seed=3)
    grid = [1e-3, 1.0, 1e2, 1e5, 1e8]
    got = fit_fewshot(tx, ty, hx, hy, sx, sy, 4, grid)
    # the same thing with a direct solve per strength
    mean, std = tx.double().mean(0), tx.double().std(0, unbiased=False) + 1e-5
    prep = lambda x: add_bias((x.double() - mean) / std)
    held, test = [], []
    for lam in grid:
        w = direct(prep(tx), signed_targets(ty, 4), lam)
        held.append(((prep(hx) @ w).argmax(1) == hy).double().mean().item() * 100)
        test.append(((prep(sx) @ w).argmax(1) == sy).double().mean().item() * 100)
    best = max(i for i, h in enumerate(held) if h == max(held))  # the strongest among ties
    assert got["l2"] == grid[best]
    assert got["holdout_top1"] == pytest.approx(held[best])
    assert got["test_top1"] == pytest.approx(test[best])


def test_separable_problem_is_solved():
    tx, ty = blobs(5, noise=0.1)
    sx, sy = blobs(20, noise=0.1, seed=5)
    assert fit_fewshot(tx, ty, sx, sy, sx, sy, 4)["test_top1"] == 100.0


def test_holdout_and_shots_are_class_balanced_disjoint_and_nested():
    labels = np.repeat(np.arange(5), 12)
    held = holdout_indices(labels, 2)
    assert len(held) == 10 and np.bincount(labels[held]).tolist() == [2] * 5
    shots = {k: fewshot_indices(labels, k, seed=3, exclude=held) for k in (1, 4, 10)}
    for k, idx in shots.items():
        assert np.bincount(labels[idx], minlength=5).tolist() == [k] * 5
        assert not set(idx) & set(held)
    assert set(shots[1]) <= set(shots[4]) <= set(shots[10])
    assert not np.array_equal(fewshot_indices(labels, 4, 0, held), fewshot_indices(labels, 4, 1, held))
    with pytest.raises(ValueError, match="fewer than 11 shots"):
        fewshot_indices(labels, 11, 0, held)
    assert set(needed_indices(labels, held, [1, 4], [0, 1])) == (
        set(held) | set(fewshot_indices(labels, 4, 0, held)) | set(fewshot_indices(labels, 4, 1, held)))


def test_mean_and_spread_over_seeds():
    r = FewShotResult(5, [{"seed": i, "test_top1": v} for i, v in enumerate([50.0, 60.0, 70.0])])
    assert r.mean == 60.0 and r.std == pytest.approx(10.0)  # sample standard deviation
    d = r.to_dict()
    assert (d["min_top1"], d["max_top1"], d["shots"]) == (50.0, 70.0, 5)
    assert FewShotResult(1, [{"seed": 0, "test_top1": 42.0}]).std == 0.0


def test_run_fewshot_reads_only_the_needed_rows():
    x, y = blobs(12, noise=0.3)
    labels = y.numpy()
    held = holdout_indices(labels, 3)
    need = needed_indices(labels, held, [1, 2], [0, 1, 2])
    pool = torch.full_like(x, float("nan"))
    pool[need] = x[need]  # rows never read stay NaN
    sx, sy = blobs(10, noise=0.3, seed=9)
    results = run_fewshot(pool, labels, held, sx, sy, 4, [1, 2], [0, 1, 2])
    compact = run_fewshot(x[need], labels, held, sx, sy, 4, [1, 2], [0, 1, 2], rows=need)
    assert [r.to_dict() for r in compact] == [r.to_dict() for r in results]
    with pytest.raises(ValueError, match="lack some"):
        run_fewshot(x[need[1:]], labels, held, sx, sy, 4, [1, 2], [0, 1, 2], rows=need[1:])
    assert [r.shots for r in results] == [1, 2] and all(len(r.per_seed) == 3 for r in results)
    for r in results:
        assert all(s["l2"] in L2_GRID and 0 <= s["test_top1"] <= 100 for s in r.per_seed)
        assert r.mean == pytest.approx(np.mean([s["test_top1"] for s in r.per_seed]))
    assert results[1].mean > 90


def test_fewshot_command_end_to_end(tmp_path, capsys):
    from vit16.runtime import build_model

    write_image_folder(tmp_path / "data" / "cifar10", C10_NAMES, {"train": 4, "test": 2})
    cfg = from_dict({"name": "tiny", "model": {"name": "vit_tiny", "patch_size": 8, "depth": 1,
                                               "embed_dim": 16, "num_heads": 2, "mlp_dim": 32,
                                               "representation_size": 12},
                     "data": {"name": "cifar10", "val_size": 10}})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "best.pt",
                    {"model": build_model(cfg, 10).state_dict(), "config": cfg.to_dict()})
    out = tmp_path / "fs"
    argv = [str(tmp_path / "run"), "--shots", "1,2", "--seeds", "2", "--holdout", "1",
            "--data-root", str(tmp_path / "data"), "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "fewshot.json").read_text())
    assert report["feature_dim"] == 12  # the tanh pre-logits layer's output
    assert report["test_images"] == 20 and [r["shots"] for r in report["results"]] == [1, 2]
    assert all(len(r["seeds"]) == 2 for r in report["results"])
    assert (out / "fewshot.csv").read_text().count("\n") == 1 + 4
    assert "2-shot" in capsys.readouterr().out
    # 4 training images per class: 1 held out leaves 3, so 4 shots cannot be drawn
    assert main(argv[:1] + ["--shots", "4", "--holdout", "1", "--data-root", str(tmp_path / "data"),
                            "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "fewer than 4 shots" in err


def test_bad_shots_argument_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["runs/x", "--shots", "1,zero"])
    assert exc.value.code == 2 and "comma-separated integers" in capsys.readouterr().err
