"""``python train.py NAME --sweep KEY=V1,V2`` without ``--submit``: the grid on
this machine, one run directory per point, resumable, a row per point."""

from __future__ import annotations

from pathlib import Path

from fakedata import set_args
from vit16.commands.train import main
from vit16.results import read_rows

TINY = ["model.depth=1", "model.embed_dim=16", "model.num_heads=2", "model.mlp_dim=32",
        "batch_size=8", "epochs=1", "data.val_size=20", "data.num_workers=0"]


def test_a_local_seed_sweep_runs_every_point_once(tmp_path, cifar10_root, capsys):
    out, table = tmp_path / "sw", tmp_path / "R.md"
    argv = ["quick", "--sweep", "seed=0,1,2", "--data-root", str(cifar10_root), "--out", str(out),
            "--results", str(table), "--device", "cpu", *set_args(TINY)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sweep point 3/3:" in printed
    rows = read_rows(table)
    assert [r["out_dir"] for r in rows] == [str(out / f"seed={s}") for s in range(3)]
    assert [r["overrides"].split()[-1] for r in rows] == ["seed=0", "seed=1", "seed=2"]
    assert len({r["test_top1"] + r["val_top1"] for r in rows}) > 1  # the seeds differ
    assert all((out / f"seed={s}" / "summary.json").exists() for s in range(3))

    assert main(argv) == 0  # a rerun: every point already finished, no new rows
    assert "already finished" in capsys.readouterr().out
    assert len(read_rows(table)) == 3


def test_a_bad_sweep_point_fails_before_any_point_runs(tmp_path, cifar10_root, capsys):
    out = tmp_path / "sw"
    argv = ["quick", "--sweep", "model.drop_path=0,1.5", "--data-root", str(cifar10_root),
            "--out", str(out), "--device", "cpu", *set_args(TINY)]
    assert main(argv) == 2
    assert "drop_path = 1.5" in capsys.readouterr().err
    assert not Path(out).exists()
