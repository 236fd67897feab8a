"""The reproduction verdicts (vit16.claims): the rule on constructed rows, the
claims file's errors, and ``python -m vit16 report --claims``."""

from __future__ import annotations

from pathlib import Path

import pytest

from vit16.claims import ClaimsFileError, judge_rows, load_claims
from vit16.commands.report import main
from vit16.results import COLUMNS, append_result

ROOT = Path(__file__).resolve().parents[1]

CLAIMS = '''
[[claim]]
name = "cnn"
claim = "the CNN wins"
course = "93 vs 85"
paper = "Fig. 3"
scale = "tiny"
kind = "greater"
a = "cnn"
b = "vit"

[[claim]]
name = "gap"
claim = "the lead shrinks with data"
course = "-"
paper = "Fig. 4"
scale = "tiny"
kind = "gap_shrinks"
group_by = "data.fraction"
a = "cnn"
b = "vit"

[[claim]]
name = "close"
claim = "two ViTs end close"
course = "82-85 vs 85-88"
paper = "-"
scale = "tiny"
kind = "close"
within = 2.0
a = "vit"
b = { experiment = "vit_big", model = "big" }
needs = "a GPU"
'''


def rows(experiment: str, model: str, tops: list[float], extra: str = "") -> list[dict]:
    return [{"experiment": experiment, "model": model, "test_top1": f"{t:.2f}", "git_commit": "abc1234",
             "overrides": " ".join(filter(None, [extra, f"seed={i}"]))} for i, t in enumerate(tops)]


def verdicts(tmp_path, table: list[dict]) -> dict[str, object]:
    path = tmp_path / "claims.toml"
    path.write_text(CLAIMS)
    default = lambda experiment, key: 1.0 if key == "data.fraction" else None  # the tables' value
    return {v.claim.name: v for v in judge_rows(load_claims(path), table, default)}


def test_greater_is_confirmed_beyond_two_standard_errors(tmp_path):
    table = rows("cnn", "r20", [80, 81, 82]) + rows("vit", "vq", [60, 61, 62])
    v = verdicts(tmp_path, table)["cnn"]
    assert v.verdict.startswith("confirmed: d = +20.00 points > 2 se = 1.63")  # se = sqrt(1/3 + 1/3)
    assert "`cnn` 81.00 +- 1.00 % (n=3)" in v.ours and v.commits == ["abc1234"]


def test_within_noise_and_the_opposite_are_not_confirmed(tmp_path):
    noisy = rows("cnn", "r20", [60, 62, 64]) + rows("vit", "vq", [61, 62, 63])
    assert "within the seeds' noise" in verdicts(tmp_path, noisy)["cnn"].verdict
    opposite = rows("cnn", "r20", [50, 51, 52]) + rows("vit", "vq", [60, 61, 62])
    assert verdicts(tmp_path, opposite)["cnn"].verdict.startswith("not confirmed, the opposite holds: d = -10.00")


def test_fewer_than_three_seeds_is_not_measured(tmp_path):
    v = verdicts(tmp_path, rows("cnn", "r20", [80]) + rows("vit", "vq", [60, 61, 62]))
    assert v["cnn"].verdict == "not measured at this scale: fewer than 3 seeds (cnn: n=1)"
    assert v["close"].verdict == ("not measured at this scale: fewer than 3 seeds (vit_big: n=0); "
                                  "needs a GPU")


def test_gap_shrinks_compares_the_smallest_and_largest_shared_value(tmp_path):
    table = (rows("cnn", "r20", [40, 41, 42], "data.fraction=0.1") + rows("vit", "vq", [30, 31, 32], "data.fraction=0.1")
             + rows("cnn", "r20", [80, 81, 82]) + rows("vit", "vq", [79, 80, 81])
             + rows("cnn", "r20", [70, 71, 72], "data.fraction=0.5"))  # no ViT at 0.5: left out
    v = verdicts(tmp_path, table)["gap"]
    assert v.ours == "lead of `cnn` over `vit`: 0.1: +10.00, 1: +1.00"  # rows without the key: 1.0 by default
    assert v.verdict.startswith("confirmed: d = +9.00 points > 2 se = 2.31")


def test_close_needs_the_difference_and_its_noise_within_bound(tmp_path):
    table = rows("vit", "vq", [80, 80.5, 81]) + rows("vit_big", "big", [80.2, 80.7, 81.2])
    assert verdicts(tmp_path, table)["close"].verdict.startswith("confirmed: within 2 points")
    table = rows("vit", "vq", [80, 80.5, 81]) + rows("vit_big", "big", [83, 83.5, 84])
    assert verdicts(tmp_path, table)["close"].verdict.startswith("not confirmed: |d| + 2 se = 3.82")


GAIN = '''
[[claim]]
name = "gain"
claim = "pre-training helps the ViT more than the CNN"
course = "-"
paper = "Sec. 4.2"
scale = "tiny"
kind = "gain_greater"
a = "vit_ft"
b = "vit"
than_a = "cnn_ft"
than_b = "cnn"
'''


def test_gain_greater_compares_two_differences(tmp_path):
    (tmp_path / "gain.toml").write_text(GAIN)
    claims = load_claims(tmp_path / "gain.toml")
    table = (rows("vit_ft", "vq", [70, 71, 72]) + rows("vit", "vq", [60, 61, 62])
             + rows("cnn_ft", "r20", [82, 83, 84]) + rows("cnn", "r20", [80, 81, 82]))
    (v,) = judge_rows(claims, table)
    assert v.ours.endswith("; gains +10.00 vs +2.00")
    assert v.verdict.startswith("confirmed: d = +8.00 points > 2 se = 2.31")  # se = sqrt(4 / 3)
    (v,) = judge_rows(claims, table[:9])  # cnn: no rows
    assert v.verdict == "not measured at this scale: fewer than 3 seeds (cnn: n=0)"


def test_gain_greater_needs_the_other_gain(tmp_path):
    (tmp_path / "gain.toml").write_text(GAIN.replace('than_b = "cnn"\n', ""))
    with pytest.raises(ClaimsFileError, match=r"claim 1 \(gain\): kind = 'gain_greater' needs than_a and than_b"):
        load_claims(tmp_path / "gain.toml")


def test_a_side_with_rows_of_two_models_must_name_one(tmp_path):
    table = rows("cnn", "r20", [80, 81, 82]) + rows("cnn", "old_name", [79]) + rows("vit", "vq", [60, 61, 62])
    with pytest.raises(ClaimsFileError, match=r"rows of cnn are of several models \(old_name, r20\); "
                       r"write \{ experiment = 'cnn', model = 'r20' \}"):
        verdicts(tmp_path, table)


@pytest.mark.parametrize("text, message", [
    ("[[claim]]\nname = 'x'\n", r"claim 1 \(x\): missing claim, course, paper, scale, kind, a, b"),
    (CLAIMS.replace('kind = "close"', 'kind = "similar"'), r"kind = 'similar'; expected one of greater"),
    (CLAIMS.replace('group_by = "data.fraction"\n', ""), r"kind = 'gap_shrinks' needs group_by"),
    ("[[claim", r"not valid TOML"),
])
def test_bad_claims_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "claims.toml"
    path.write_text(text)
    with pytest.raises(ClaimsFileError, match=message):
        load_claims(path)


def test_a_missing_claims_file_names_the_fix(tmp_path):
    with pytest.raises(ClaimsFileError, match=r"no such file; pass a claims file such as results/claims.toml"):
        load_claims(tmp_path / "nope.toml")


def test_report_claims_writes_the_verdicts_before_the_summary(tmp_path, capsys):
    table = tmp_path / "results.md"
    for r in rows("cnn", "r20", [80, 81, 82]) + rows("vit", "vq", [60, 61, 62]):
        append_result(table, {k: r.get(k, "-") for k, _ in COLUMNS})
    (tmp_path / "claims.toml").write_text(CLAIMS)
    out = tmp_path / "REPRODUCTION.md"
    assert main([str(table), "--claims", str(tmp_path / "claims.toml"), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<!-- generated by: python -m vit16 report ")
    assert text.index("## Claims") < text.index("| **cnn**: the CNN wins |") < text.index("## Every group")
    assert "confirmed: d = +20.00" in text and "Verdict rule" in text
    bad = tmp_path / "bad.toml"
    bad.write_text("[[claim]]\nname = 'x'\n")
    assert main([str(table), "--claims", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing claim" in err[0]


def test_the_repository_claims_file_loads():
    claims = load_claims(ROOT / "results" / "claims.toml")
    assert [c.name for c in claims][:2] == ["Q1", "Q2"] and all(c.a.model and c.b.model for c in claims)
