"""The shared markdown results table."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from vit16 import results
from vit16.results import COLUMNS, append_result, format_duration, format_row, header, read_rows


def make_row(i: int = 0, **kw) -> dict:
    row = {
        "date": "2025-01-02 03:04",
        "experiment": f"exp{i}",
        "model": "vit_small_cifar",
        "params": 21_665_290,
        "dataset": "cifar10",
        "epochs": 100,
        "val_top1": 91.234,
        "test_top1": 90.5,
        "test_top1_best": 90.61,
        "test_top1_ema": 90.7,
        "best_weights": "ema",
        "wall_time_s": 552.4,
        "images_per_s": 12345.6,
        "device": "CPU (2 threads)",
        "git_commit": "abc1234+dirty",
        "overrides": ["optim.lr=3e-4", "model.pool='a|b'"],
        "out_dir": "runs/exp",
        "world_size": 1,
    }
    row.update(kw)
    return row


def test_format_row():
    line = format_row(make_row())
    assert line == (
        "| 2025-01-02 03:04 | exp0 | vit_small_cifar | 21.67 | cifar10 | 100 | 91.23 | 90.50 | "
        "90.61 | 90.70 | ema | 9m 12s | 12346 | CPU (2 threads) | abc1234+dirty | "
        "optim.lr=3e-4 model.pool='a\\|b' | runs/exp | 1 |\n"
    )
    assert line.count(" | ") == len(COLUMNS) - 1  # the escaped | does not split a cell


def test_format_partial_and_missing_values():
    line = format_row(make_row(epochs=0.625, test_top1_best=None, overrides=[]))
    cells = line.strip().strip("|").split(" | ")
    assert cells[5] == "0.62" and cells[8] == "-" and cells[-3].strip() == ""
    assert format_row(make_row(date=None)).startswith("| 20")  # default: now (UTC)


def test_bad_row_names_the_keys():
    with pytest.raises(ValueError, match="unknown keys \\['acc'\\].*missing keys \\['model'\\]"):
        row = make_row(acc=1.0)
        del row["model"]
        format_row(row)


def test_format_duration():
    assert format_duration(45.2) == "45s"
    assert format_duration(552) == "9m 12s"
    assert format_duration(3600 + 125) == "1h 02m"


def test_header_once_and_rows_appended(tmp_path):
    path = tmp_path / "results" / "RESULTS.md"
    append_result(path, make_row(0))
    append_result(path, make_row(1))
    text = path.read_text()
    assert text.startswith(header())
    assert text.count("| date (UTC) |") == 1
    assert [r["experiment"] for r in read_rows(path)] == ["exp0", "exp1"]
    assert read_rows(path)[0]["overrides"] == "optim.lr=3e-4 model.pool='a|b'"


def test_appends_after_text_without_trailing_newline(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(header() + "| hand-written row |")
    append_result(path, make_row())
    assert path.read_text().splitlines()[-1].startswith("| 2025-01-02 03:04 | exp0")


def test_a_table_with_other_columns_gets_a_new_header(tmp_path):
    """A file written before the run dir / ranks columns existed: the next row
    starts a new table (its own header), and both tables' rows read back."""
    old = COLUMNS[:-2]
    path = tmp_path / "RESULTS.md"
    row = make_row(0)
    old_row = {k: v for k, v in row.items() if k not in ("out_dir", "world_size")}
    path.write_text("# Results\n\n" + header(old) + format_row(old_row, old))
    append_result(path, make_row(1))
    append_result(path, make_row(2))
    text = path.read_text()
    assert text.count("| date (UTC) |") == 2 and text.count("| run dir | ranks |") == 1
    assert text.endswith(format_row(make_row(1)) + format_row(make_row(2)))
    rows = read_rows(path)
    assert [(r["experiment"], r["out_dir"], r["world_size"]) for r in rows] == [
        ("exp0", "", ""), ("exp1", "runs/exp", "1"), ("exp2", "runs/exp", "1")]


def _append_many(path: str, worker: int, n: int, barrier) -> None:
    real_header = results.header

    def slow_header(*args) -> str:  # widen the check-then-write window: without the lock,
        time.sleep(0.2)  # every process would see an empty file and write a header
        return real_header(*args)

    results.header = slow_header  # only in this forked child
    barrier.wait()  # all processes start appending at the same moment
    for j in range(n):
        append_result(path, make_row(worker * 100 + j, device="x" * 2000))  # long rows


def test_concurrent_processes_never_interleave(tmp_path):
    path = tmp_path / "RESULTS.md"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 5, barrier)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert lines[:2] == header().splitlines()
    rows = read_rows(path)
    assert len(lines) == 2 + 8 * 5 and len(rows) == 8 * 5
    assert sorted(r["experiment"] for r in rows) == sorted(
        f"exp{w * 100 + j}" for w in range(8) for j in range(5))
    assert all(r["device"] == "x" * 2000 for r in rows)
