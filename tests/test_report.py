"""python -m vit16 report: rows grouped over seeds, exact mean / sample std /
min-max, --group-by, --experiment, --out (markdown file), --figure (PNG + CSV),
and their errors (one line, exit 2)."""

from __future__ import annotations

import math

import pytest

import vit16.__main__ as cli
from vit16.commands.report import main
from vit16.report import Stats, figure_series, group_rows, parse_overrides, summarize
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


FRACTIONS = [("quick", ["data.fraction=0.1", "seed=0"], 30.0, 31.0),
             ("quick", ["data.fraction=0.1", "seed=1"], 32.0, 35.0),
             ("quick", ["seed=0"], 60.0, 61.0),  # data.fraction 1.0 from experiments.toml
             ("resnet_quick_time", ["data.fraction=0.1", "seed=0"], 40.0, 45.0, "resnet20_cifar"),
             ("resnet_quick_time", ["seed=0"], 70.0, 70.0, "resnet20_cifar"),  # 1.0 through base twice
             ("resnet_quick_time", ["seed=1"], 70.0, 72.0, "resnet20_cifar")]


def test_out_writes_the_command_the_source_and_the_table(tmp_path, capsys):
    table = write_table(tmp_path / "R.md", FRACTIONS + [("proxy_scratch", [], 1.0, 2.0)])
    with open(table, "a") as f:  # a newer row of another experiment: not the date summarised
        f.write(f"| 2027-05-06 07:08 |{' proxy_scratch |' * 16} 1 |\n")
    out = tmp_path / "sub" / "fraction.md"
    argv = [table, "--group-by", "data.fraction", "--metrics", "test_top1", "--experiment", "quick",
            "resnet_quick_time", "--out", str(out)]
    assert main(argv) == 0
    body = ("| experiment | model | data.fraction | overrides | n | seeds | test top-1 % (final) mean | "
            "test top-1 % (final) std | test top-1 % (final) min-max |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
            "| quick | vit_quick | 0.1 | - | 2 | 0,1 | 33.00 | 2.83 | 31.00-35.00 |\n"
            "| quick | vit_quick | 1.0 | - | 1 | 0 | 61.00 | - | 61.00 |\n"
            "| resnet_quick_time | resnet20_cifar | 0.1 | - | 1 | 0 | 45.00 | - | 45.00 |\n"
            "| resnet_quick_time | resnet20_cifar | 1.0 | - | 2 | 0,1 | 71.00 | 1.41 | 70.00-72.00 |\n")
    assert out.read_text() == (
        f"<!-- generated by: python -m vit16 report {table} --group-by data.fraction --metrics test_top1 "
        f"--experiment quick resnet_quick_time --out {out} -->\n"
        f"Summary of `{table}`: 6 of its 8 rows, the newest dated 2026-01-02 03:04 (UTC).\n\n" + body)
    assert capsys.readouterr().out == body + f"wrote {out}\n"
    first = out.read_text()
    assert main(argv) == 0 and out.read_text() == first  # deterministic: the same table, the same file


def test_figure_writes_the_png_and_the_plotted_numbers(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    table = write_table(tmp_path / "R.md", FRACTIONS)
    fig = tmp_path / "fraction.png"
    assert main([table, "--group-by", "data.fraction", "--figure", str(fig), "--title", "Fig. 3"]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {fig} and {tmp_path / 'fraction.csv'}"
    std = f"{math.sqrt(8):.6g}"  # sample std of 31 and 35 (and of 70 and 72: sqrt(2))
    assert (tmp_path / "fraction.csv").read_text().splitlines() == [
        "experiment,model,overrides,data.fraction,test_top1_n,test_top1_mean,test_top1_std,"
        "test_top1_min,test_top1_max",
        f"quick,vit_quick,,0.1,2,33,{std},31,35",  # write_csv: 6 significant digits
        "quick,vit_quick,,1.0,1,61,,61,61",  # n = 1: no std
        "resnet_quick_time,resnet20_cifar,,0.1,1,45,,45,45",
        f"resnet_quick_time,resnet20_cifar,,1.0,2,71,{math.sqrt(2):.6g},70,72",
    ]


def test_figure_series_are_one_line_per_configuration(tmp_path):
    rows = read_rows(write_table(tmp_path / "R.md", FRACTIONS + [
        ("quick", ["optim.lr=1e-3", "data.fraction=0.3", "seed=0"], 1.0, None)]))  # no test number
    series = figure_series(group_rows(rows, "data.fraction", default=lambda e, k: 1.0), "data.fraction")
    assert [(s.label, [(p.x, p.label, p.stats.n, p.stats.mean) for p in s.points]) for s in series] == [
        ("quick (vit_quick)", [(0.1, "0.1", 2, 33.0), (1.0, "1.0", 1, 61.0)]),
        ("resnet_quick_time (resnet20_cifar)", [(0.1, "0.1", 1, 45.0), (1.0, "1.0", 2, 71.0)])]


@pytest.mark.parametrize("args, message", [
    (["--figure", "f.png"], "error: --figure needs --group-by KEY, a key of numbers such as data.fraction "
                            "(the figure's x axis)"),
    (["--group-by", "data.fraction", "--figure", "f.pdf"], "error: --figure {tmp}/f.pdf: expected a .png file"),
    (["--out", "out.txt"], "error: --out {tmp}/out.txt: expected a .md file"),
    (["--out", "R.md"], "error: --out {tmp}/R.md is the results table itself; choose another file"),
    (["--group-by", "data.fraction", "--figure", "f.png", "--experiments", "none.toml"],
     "error: --figure: 3 row(s) of quick (vit_quick) have data.fraction '-', not a number; the x axis "
     "needs a number per group (leave those rows out with --experiment)"),
])
def test_bad_out_or_figure_is_one_error_line_and_no_file(tmp_path, capsys, args, message):
    table = write_table(tmp_path / "R.md", SEEDS)
    argv = [table] + [str(tmp_path / a) if "." in a and a != "data.fraction" else a for a in args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == message.format(tmp=tmp_path) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R.md", "R.md.lock"]


def test_figure_without_matplotlib_is_one_error_line(tmp_path, capsys, monkeypatch):
    import vit16.commands.report as command
    from vit16.analysis.figures import PLOTS_HINT, PlotsUnavailableError

    def missing():
        raise PlotsUnavailableError(PLOTS_HINT)

    monkeypatch.setattr(command, "require_matplotlib", missing)
    table = write_table(tmp_path / "R.md", SEEDS)
    assert main([table, "--group-by", "seed", "--figure", str(tmp_path / "f.png")]) == 2
    assert capsys.readouterr().err == f"error: {PLOTS_HINT}\n"


def test_since_keeps_only_the_newer_rows(tmp_path, capsys):
    from vit16.commands.report import main
    from vit16.results import append_result

    table = tmp_path / "R.md"
    for date, top1 in (("2025-01-01 10:00", 10.0), ("2025-02-01 10:00", 20.0), ("2025-02-02 10:00", 30.0)):
        append_result(table, {"date": date, "experiment": "e", "model": "m", "params": 1, "dataset": "d",
                              "epochs": 1, "val_top1": top1, "test_top1": top1, "test_top1_best": top1,
                              "test_top1_ema": None, "best_weights": None, "wall_time_s": 1.0,
                              "images_per_s": 1.0, "device": "cpu", "git_commit": "x", "overrides": [],
                              "out_dir": "r", "world_size": 1})
    assert main([str(table), "--since", "2025-02-01"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| e |")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "2" and "25.00" in cells


def test_no_overrides_leaves_out_groups_with_other_set_items(tmp_path, capsys):
    rows = [*SEEDS, ("quick", ["ema_decay=0.999"], 55.0, 66.0),
            ("quick", ["data.fraction=0.1", "seed=0"], 30.0, 31.0)]
    assert main([write_table(tmp_path / "R.md", rows), "--group-by", "data.fraction", "--no-overrides"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| quick |")]
    assert len(lines) == 2 and not any("ema_decay" in x for x in lines)  # fraction 0.1 and the default
