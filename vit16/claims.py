"""The reproduction verdicts: each claim of the course project (and the paper)
checked against the results table, with a rule instead of a judgement.

A claims file (``results/claims.toml``) lists the claims: the words, the
course project's and the paper's numbers (with table / figure), the scale
run here, and which experiments measure it. :func:`judge` computes, from the
rows grouped by :func:`vit16.report.group_rows`, our number (n seeds, mean +-
sample std of test top-1 %) and a verdict:

- ``kind = "greater"``: ``a`` beats ``b``; the effect is d = mean(a) - mean(b).
- ``kind = "gap_shrinks"``: the lead of ``a`` over ``b`` falls as ``group_by``
  grows (the paper's data-size effect, Fig. 3 and 4); the effect is
  d = lead at the smallest value - lead at the largest.
- ``kind = "close"``: ``a`` and ``b`` within ``within`` points: d = |mean(a) - mean(b)|.
- ``kind = "gain_greater"``: the gain of ``a`` over ``b`` exceeds the gain of
  ``than_a`` over ``than_b`` (e.g. pre-training helps the ViT more than the
  ResNet): d = (mean(a) - mean(b)) - (mean(than_a) - mean(than_b)).

With se the standard error of d (from the groups' sample stds and n), a
claim is **confirmed** when d > 2 se (for ``close``: d + 2 se <= within),
**not confirmed** otherwise (saying whether the opposite holds beyond 2 se
or the difference is within the seeds' noise), and **not measured at this
scale** when a side has no rows or fewer than :data:`MIN_SEEDS` seeds.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vit16.report import Default, Group, Stats, group_rows

__all__ = ["KINDS", "MIN_SEEDS", "Claim", "ClaimsFileError", "Side", "Verdict", "format_claims", "judge",
           "judge_rows", "load_claims"]

MIN_SEEDS = 3
"""Seeds each side needs before a verdict is given."""
KINDS = ("greater", "gap_shrinks", "close", "gain_greater")
METRIC = "test_top1"


class ClaimsFileError(ValueError):
    """A claims file that cannot be read or has a bad entry (one line)."""


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the rows of ``experiment`` (of ``model``, when
    given) whose overrides, seed and group-by key left out, are ``overrides``."""

    experiment: str
    model: str = ""
    overrides: tuple[str, ...] = ()

    def text(self) -> str:
        return " ".join([f"`{self.experiment}`", *(f"`{o}`" for o in self.overrides)])


@dataclass(frozen=True)
class Claim:
    """One entry of a claims file (module docstring)."""

    name: str
    claim: str
    course: str
    paper: str
    scale: str
    kind: str
    a: Side
    b: Side
    group_by: str = ""
    within: float = 0.0
    needs: str = ""  # why it may not be measurable here ("a GPU: vitb16_cifar_scratch")
    than_a: Side | None = None  # gain_greater: the gain a - b is compared with than_a - than_b
    than_b: Side | None = None


@dataclass
class Verdict:
    """What the rows say about one claim: ``ours`` (the measured numbers, in
    words), ``verdict`` (confirmed / not confirmed / not measured at this
    scale, and why) and the git ``commits`` of the rows used."""

    claim: Claim
    ours: str
    verdict: str
    commits: list[str] = field(default_factory=list)


def _side(where: str, value) -> Side:
    if isinstance(value, str):
        return Side(value)
    if not isinstance(value, dict) or not isinstance(value.get("experiment"), str):
        raise ClaimsFileError(f"{where}: expected an experiment name or a table with 'experiment'")
    return Side(value["experiment"], value.get("model", ""), tuple(value.get("overrides", "").split()))


def load_claims(path: str | Path) -> list[Claim]:
    """The claims of a TOML file (``[[claim]]`` tables, keys of :class:`Claim`).

    Raises:
        ClaimsFileError: no such file, bad TOML, a missing key or an unknown
            ``kind`` (names the claim).
    """
    try:
        entries = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("claim", [])
    except FileNotFoundError:
        raise ClaimsFileError(f"--claims {path}: no such file; pass a claims file such as "
                              "results/claims.toml") from None
    except tomllib.TOMLDecodeError as err:
        raise ClaimsFileError(f"{path}: not valid TOML ({err})") from None
    claims = []
    for i, e in enumerate(entries):
        where = f"{path}: claim {i + 1} ({e.get('name', '?')})"
        missing = [k for k in ("name", "claim", "course", "paper", "scale", "kind", "a", "b") if k not in e]
        if missing:
            raise ClaimsFileError(f"{where}: missing {', '.join(missing)}")
        if e["kind"] not in KINDS:
            raise ClaimsFileError(f"{where}: kind = {e['kind']!r}; expected one of {', '.join(KINDS)}")
        if e["kind"] == "gap_shrinks" and not e.get("group_by"):
            raise ClaimsFileError(f"{where}: kind = 'gap_shrinks' needs group_by (e.g. 'data.fraction')")
        if e["kind"] == "gain_greater" and not ("than_a" in e and "than_b" in e):
            raise ClaimsFileError(f"{where}: kind = 'gain_greater' needs than_a and than_b (the gain it beats)")
        than = {k: _side(f"{where}: {k}", e[k]) for k in ("than_a", "than_b") if k in e}
        claims.append(Claim(e["name"], e["claim"], e["course"], e["paper"], e["scale"], e["kind"],
                            _side(f"{where}: a", e["a"]), _side(f"{where}: b", e["b"]),
                            e.get("group_by", ""), float(e.get("within", 0.0)), e.get("needs", ""), **than))
    return claims


def _matches(g: Group, side: Side) -> bool:
    return (g.experiment == side.experiment and (not side.model or g.model == side.model)
            and tuple(g.overrides) == side.overrides)


def _pick(groups: Sequence[Group], side: Side) -> list[Group]:
    """The groups of ``side``.

    Raises:
        ClaimsFileError: they are of several models (rows of a renamed model):
            the side must name its ``model``.
    """
    picked = [g for g in groups if _matches(g, side)]
    models = sorted({g.model for g in picked})
    if len(models) > 1:
        raise ClaimsFileError(f"claims: rows of {side.experiment} are of several models ({', '.join(models)}); "
                              f"write {{ experiment = {side.experiment!r}, model = {models[-1]!r} }}")
    return picked


def _ms(s: Stats) -> str:
    std = "" if s.std is None else f" +- {s.std:.2f}"
    return f"{s.mean:.2f}{std} % (n={s.n})"


def _se(*stats: Stats) -> float:
    return math.sqrt(sum((s.std or 0.0) ** 2 / s.n for s in stats))


def _unmeasured(claim: Claim, stats: dict[str, Stats]) -> str | None:
    """Why there is no verdict yet (a side without rows or with too few seeds), else ``None``."""
    short = [f"{name}: n={s.n}" for name, s in stats.items() if s.n < MIN_SEEDS]
    if not short:
        return None
    need = f"; needs {claim.needs}" if claim.needs else ""
    return (f"not measured at this scale: fewer than {MIN_SEEDS} seeds ({', '.join(short)}){need}")


def _decide(d: float, se: float, claim: Claim) -> str:
    if claim.kind == "close":
        if d + 2 * se <= claim.within:
            return f"confirmed: within {claim.within:g} points (|d| + 2 se = {d + 2 * se:.2f})"
        return f"not confirmed: |d| + 2 se = {d + 2 * se:.2f} exceeds {claim.within:g} points"
    if d > 2 * se:
        return f"confirmed: d = {d:+.2f} points > 2 se = {2 * se:.2f}"
    if d < -2 * se:
        return f"not confirmed, the opposite holds: d = {d:+.2f} points, beyond 2 se = {2 * se:.2f}"
    return f"not confirmed: d = {d:+.2f} points is within the seeds' noise (2 se = {2 * se:.2f})"


def _commits(groups: Sequence[Group]) -> list[str]:
    return sorted({r.get("git_commit", "") for g in groups for r in g.rows} - {""})


def _judge_means(claim: Claim, groups: Sequence[Group]) -> Verdict:
    """``greater`` and ``close`` (sides a, b) and ``gain_greater`` (a, b, than_a, than_b)."""
    sides = (claim.a, claim.b) + ((claim.than_a, claim.than_b) if claim.kind == "gain_greater" else ())
    picked = [_pick(groups, side) for side in sides]
    stats = [Group("", "", (), rows=[r for g in side for r in g.rows]).stats(METRIC) for side in picked]
    used = [g for side in picked for g in side]
    ours = "; ".join(f"{side.text()} {_ms(s)}" for side, s in zip(sides, stats) if s.n)
    why = _unmeasured(claim, {side.experiment: s for side, s in zip(sides, stats)})
    if why:
        return Verdict(claim, ours or "no rows", why, _commits(used))
    d = stats[0].mean - stats[1].mean
    if claim.kind == "gain_greater":
        than = stats[2].mean - stats[3].mean
        ours, d = f"{ours}; gains {d:+.2f} vs {than:+.2f}", d - than
    else:
        ours = f"{ours}; d = {d:+.2f}"
    return Verdict(claim, ours, _decide(abs(d) if claim.kind == "close" else d, _se(*stats), claim),
                   _commits(used))


def _judge_gap(claim: Claim, groups: Sequence[Group]) -> Verdict:
    a = {g.value: g for g in _pick(groups, claim.a)}
    b = {g.value: g for g in _pick(groups, claim.b)}
    values = sorted((v for v in set(a) & set(b) if isinstance(v, (int, float))), key=float)
    used = [*a.values(), *b.values()]
    if len(values) < 2:
        return Verdict(claim, "no rows" if not used else "fewer than two shared values of " + claim.group_by,
                       f"not measured at this scale: {claim.a.experiment} and {claim.b.experiment} share "
                       f"{len(values)} value(s) of {claim.group_by}; two are needed", _commits(used))
    lo, hi = values[0], values[-1]
    stats = {f"{s.experiment} at {v:g}": grp[v].stats(METRIC)
             for v in (lo, hi) for s, grp in ((claim.a, a), (claim.b, b))}
    lead = {v: a[v].stats(METRIC).mean - b[v].stats(METRIC).mean for v in values}
    ours = "lead of " + claim.a.text() + " over " + claim.b.text() + ": " + ", ".join(
        f"{v:g}: {lead[v]:+.2f}" for v in values)
    why = _unmeasured(claim, stats)
    if why:
        return Verdict(claim, ours, why, _commits(used))
    return Verdict(claim, ours, _decide(lead[lo] - lead[hi], _se(*stats.values()), claim), _commits(used))


def judge(claim: Claim, groups: Sequence[Group], grouped_by: Sequence[Group] = ()) -> Verdict:
    """The :class:`Verdict` of ``claim`` from ``groups`` (:func:`vit16.report.group_rows`
    of the table without group-by) or, for ``gap_shrinks``, ``grouped_by`` (the
    same rows grouped by ``claim.group_by``)."""
    if claim.kind == "gap_shrinks":
        return _judge_gap(claim, grouped_by)
    return _judge_means(claim, groups)


def judge_rows(claims: Sequence[Claim], rows: Sequence[dict[str, str]],
               default: Default | None = None) -> list[Verdict]:
    """:func:`judge` of every claim over the results ``rows``, grouped by
    :func:`vit16.report.group_rows` (``default`` as there)."""
    plain = group_rows(rows, None, (), default)
    return [judge(c, plain, group_rows(rows, c.group_by, (), default) if c.group_by else ())
            for c in claims]


RULE = (f"Verdict rule ({__name__}): d is the measured effect in test top-1 points and se its "
        "standard error over seeds; confirmed when d > 2 se, not confirmed otherwise; not measured "
        f"at this scale when a side has fewer than {MIN_SEEDS} seeds.")


def format_claims(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a markdown table (with newline): claim, course project,
    paper, ours (test top-1 %, mean +- sample std, n seeds), scale, verdict, commits."""
    head = ["claim", "course project", "paper", "ours (test top-1)", "scale", "verdict", "commit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for v in verdicts:
        c = v.claim
        cells = [f"**{c.name}**: {c.claim}", c.course, c.paper, v.ours, c.scale, v.verdict,
                 ", ".join(v.commits) or "-"]
        lines.append("| " + " | ".join(x.replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
    return "\n".join(lines) + "\n\n" + RULE + "\n"
