"""python -m vit16 report: rows grouped over seeds, exact mean / sample std /
min-max, --group-by, --experiment, and its errors (one line, exit 2)."""

from __future__ import annotations

import math

import pytest

import vit16.__main__ as cli
from vit16.commands.report import main
from vit16.report import Stats, group_rows, parse_overrides, summarize
from vit16.results import COLUMNS, append_result, read_rows

HEAD = ("| experiment | model | overrides | n | seeds | val top-1 % mean | val top-1 % std | "
        "val top-1 % min-max | test top-1 % (final) mean | test top-1 % (final) std | "
        "test top-1 % (final) min-max |")


def make_row(experiment: str, overrides: list[str], val: float | None, test: float | None,
             model: str = "vit_quick") -> dict:
    """A complete results row (every key of COLUMNS) with the given numbers."""
    known = {"date": "2026-01-02 03:04", "experiment": experiment, "model": model, "params": 558_474,
             "dataset": "CIFAR-10", "epochs": 10, "val_top1": val, "test_top1": test,
             "test_top1_best": test, "wall_time_s": 300.0, "images_per_s": 1500.0,
             "device": "CPU (2 threads)", "git_commit": "abc1234", "overrides": overrides,
             "out_dir": f"runs/{experiment}", "world_size": 1}
    return {key: known.get(key, "") for key, _ in COLUMNS}


def write_table(path, rows) -> str:
    for row in rows:
        append_result(path, make_row(*row))
    return str(path)


SEEDS = [("quick", ["seed=0"], 50.0, 60.0), ("quick", ["seed=1"], 52.0, 61.0),
         ("quick", ["seed=2"], 54.0, 65.0)]


def test_summarize_is_mean_and_sample_std():
    s = summarize([60.0, 61.0, 65.0])
    assert s.n == 3 and s.mean == 62.0 and s.min == 60.0 and s.max == 65.0
    assert s.std == pytest.approx(math.sqrt(((60 - 62) ** 2 + (61 - 62) ** 2 + (65 - 62) ** 2) / 2))
    assert summarize([61.5]) == Stats(1, 61.5, None, 61.5, 61.5)
    assert summarize([]) == Stats(0, None, None, None, None)


def test_three_seeds_exact_markdown(tmp_path, capsys):
    table = write_table(tmp_path / "RESULTS.md", SEEDS)
    assert main([table]) == 0
    assert capsys.readouterr().out == (
        HEAD + "\n|" + "|".join(["---"] * 11) + "|\n"
        "| quick | vit_quick | - | 3 | 0,1,2 | 52.00 | 2.00 | 50.00-54.00 | 62.00 | 2.65 | 60.00-65.00 |\n"
    )


def test_seed_is_left_out_of_the_configuration_and_order_of_rows_kept(tmp_path):
    rows = [("quick", ["optim.lr=1e-3", "seed=0"], 50.0, 60.0),
            ("resnet_quick", [], 70.0, 71.0),
            ("quick", ["seed=1", "optim.lr=1e-3"], 52.0, 62.0),
            ("quick", ["optim.lr=3e-4", "seed=0"], 40.0, 41.0),
            ("quick", ["optim.lr=1e-3", "seed=1"], 50.0, 60.0, "vit_tiny")]  # another model
    groups = group_rows(read_rows(write_table(tmp_path / "R.md", rows)))
    assert [(g.experiment, g.model, g.overrides, len(g.rows)) for g in groups] == [
        ("quick", "vit_quick", ("optim.lr=1e-3",), 2), ("resnet_quick", "vit_quick", (), 1),
        ("quick", "vit_quick", ("optim.lr=3e-4",), 1), ("quick", "vit_tiny", ("optim.lr=1e-3",), 1)]
    assert groups[0].stats("test_top1") == Stats(2, 61.0, math.sqrt(2), 60.0, 62.0)
    assert groups[0].seeds() == ["0", "1"]
    assert groups[1].seeds() == ["?"] and groups[1].seeds(lambda e, k: 7) == ["7"]
    assert parse_overrides("seed=1  optim.lr=3e-4") == ["seed=1", "optim.lr=3e-4"]


def test_group_by_makes_a_column_and_uses_the_table_default(tmp_path, capsys):
    rows = [("quick", ["data.fraction=0.5", "seed=0"], 40.0, 41.0),
            ("quick", ["data.fraction=0.1", "seed=0"], 30.0, 31.0),
            ("quick", ["data.fraction=0.10", "seed=1"], 32.0, 35.0),  # the same number as 0.1
            ("quick", ["seed=1"], 60.0, 61.0)]  # data.fraction from experiments.toml: 1.0
    assert main([write_table(tmp_path / "R.md", rows), "--group-by", "data.fraction",
                 "--metrics", "test_top1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| experiment | model | data.fraction | overrides | n | seeds | test top-1 % (final) mean | "
        "test top-1 % (final) std | test top-1 % (final) min-max |",
        "|---|---|---|---|---|---|---|---|---|",
        "| quick | vit_quick | 0.1 | - | 2 | 0,1 | 33.00 | 2.83 | 31.00-35.00 |",
        "| quick | vit_quick | 0.5 | - | 1 | 0 | 41.00 | - | 41.00 |",
        "| quick | vit_quick | 1.0 | - | 1 | 1 | 61.00 | - | 61.00 |",
    ]


def test_missing_cells_are_skipped_per_stat(tmp_path, capsys):
    rows = SEEDS[:2] + [("quick", ["seed=2"], None, 65.0)]  # no validation split: "-"
    assert main([write_table(tmp_path / "R.md", rows), "--metrics", "val_top1,test_top1"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == "| quick | vit_quick | - | 3 | 0,1,2 | 51.00 (n=2) | 1.41 | 50.00-52.00 | 62.00 | 2.65 | 60.00-65.00 |"


def test_experiment_filter_and_seeds_from_the_table(tmp_path, capsys):
    rows = SEEDS + [("resnet_quick", [], 80.0, 81.0), ("proxy_scratch", [], 1.0, 2.0)]
    table = write_table(tmp_path / "R.md", rows)
    assert cli.main(["report", table, "--experiment", "resnet_quick", "--experiment", "quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in out[2:]] == ["| quick", "| resnet_quick"]
    assert out[3].startswith("| resnet_quick | vit_quick | - | 1 | 0 | 80.00 | - | 80.00 | 81.00 |")


@pytest.mark.parametrize("args, message", [
    (["missing.md"], "error: no results table {tmp}/missing.md: run an experiment first "
                     "(python train.py quick) or pass the table's path"),
    (["R.md", "--experiment", "vit_quik"], "error: no rows of experiment 'vit_quik'; "
                                           "experiments in the table: quick"),
    (["R.md", "--metrics", "top1"], "error: --metrics 'top1': unknown column 'top1'; choose from "
                                    + ", ".join(k for k, _ in COLUMNS if "top1" in k)),
    (["empty.md"], "error: {tmp}/empty.md has no results rows; run an experiment first (python train.py quick)"),
])
def test_bad_input_is_one_error_line_exit_2(tmp_path, capsys, args, message):
    write_table(tmp_path / "R.md", SEEDS)
    (tmp_path / "empty.md").write_text("no table here\n")
    argv = [str(tmp_path / a) if a.endswith(".md") else a for a in args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == message.format(tmp=tmp_path) + "\n"
