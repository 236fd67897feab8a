"""``python -m vit16 plot``: reading metrics.jsonl, the figure and its CSV,
and the one-line errors (missing runs, bad lines, matplotlib not installed)."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from vit16.analysis.curves import read_metrics
from vit16.analysis.figures import PlotsUnavailableError, require_matplotlib
from vit16.commands.plot import main

HAS_MPL = True
try:
    import matplotlib  # noqa: F401
except ImportError:
    HAS_MPL = False


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def row(epoch, top1, loss):
    return {"epoch": epoch, "step": 10 * epoch, "train_loss": loss, "val_top1": top1, "val_top5": 90.0,
            "val_loss": loss + 0.1}


def test_read_metrics_sorts_and_keeps_the_last_row_of_a_repeated_epoch(tmp_path):
    run = write_run(tmp_path / "a", [row(2, 20.0, 2.0), row(1, 10.0, 3.0), row(2, 25.0, 1.9)])
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_top1"] == 25.0
    assert read_metrics(run / "metrics.jsonl") == rows


def test_read_metrics_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2: not JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no rows yet"):
        read_metrics(tmp_path)


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib (the plots extra) is not installed")
def test_plot_writes_png_and_csv(tmp_path, capsys):
    a = write_run(tmp_path / "runs" / "cls", [row(1, 30.0, 2.0), row(2, 40.0, 1.7)])
    b = write_run(tmp_path / "runs" / "gap", [row(1, 25.0, 2.1), {"epoch": 2, "train_loss": 1.8, "val_top1": None}])
    out = tmp_path / "fig" / "curves.png"
    assert main([str(a), str(b), "--out", str(out), "--labels", "class token, GAP"]) == 0, capsys.readouterr().err
    assert out.read_bytes()[:4] == b"\x89PNG"
    with open(out.with_suffix(".csv")) as f:
        table = list(csv.DictReader(f))
    assert [(r["run"], r["epoch"], r["val_top1"]) for r in table] == [
        ("class token", "1", "30"), ("class token", "2", "40"), ("GAP", "1", "25"), ("GAP", "2", "")]


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib (the plots extra) is not installed")
def test_plot_one_line_errors(tmp_path, capsys):
    a = write_run(tmp_path / "a", [row(1, 30.0, 2.0)])
    assert main([str(a), "--out", str(tmp_path / "x.png"), "--labels", "one,two"]) == 2
    assert "2 labels for 1 runs" in capsys.readouterr().err
    assert main([str(a), str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "nope" in err
    assert main([str(a), "--out", str(tmp_path / "x.pdf")]) == 2
    assert "expected a .png" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib (the plots extra) is not installed")
def test_pruning_plot_reads_the_rounds_in_order(tmp_path, capsys):
    run = tmp_path / "refill"
    for r, (sparsity, top1) in enumerate([(0.0, 50.0), (30.0, 49.0), (51.0, 47.5)]):
        (run / f"round_{r:02d}").mkdir(parents=True)
        (run / f"round_{r:02d}" / "round.json").write_text(json.dumps(
            {"round": r, "sparsity": sparsity, "params": 100 - r, "val_top1": top1, "test_top1": top1}))
    out = tmp_path / "pruning.png"
    assert main(["--pruning", str(run), "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.read_bytes()[:4] == b"\x89PNG"
    with open(out.with_suffix(".csv")) as f:
        table = list(csv.DictReader(f))
    assert [(r["run"], r["round"], r["sparsity"], r["test_top1"]) for r in table] == [
        ("refill", "0", "0", "50"), ("refill", "1", "30", "49"), ("refill", "2", "51", "47.5")]
    assert main(["--pruning", str(tmp_path / "refill" / "round_00"), "--out", str(out)]) == 2
    assert "no round_*/round.json" in capsys.readouterr().err


def test_missing_matplotlib_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(PlotsUnavailableError, match=r'pip install -e "\.\[plots\]"'):
        require_matplotlib()
    a = write_run(tmp_path / "a", [row(1, 30.0, 2.0)])
    assert main([str(a), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and 'pip install -e ".[plots]"' in err
    assert not (tmp_path / "x.png").exists()


def test_core_modules_do_not_import_matplotlib():
    import subprocess

    code = ("import sys, vit16, vit16.analysis, vit16.commands.inspect, vit16.commands.plot, "
            "vit16.commands.fewshot, vit16.__main__, "
            "vit16.analysis.figures, vit16.analysis.inspection; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at module level'")
    subprocess.run([sys.executable, "-c", code], check=True)
