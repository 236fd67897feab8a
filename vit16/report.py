"""Error bars from the results table: the rows of several seeds of one
configuration grouped, and their top-1 summarised (n, mean, sample standard
deviation, min-max) as a markdown table.

Pure functions over the rows :func:`vit16.results.read_rows` returns
(``python -m vit16 report`` prints :func:`report` of ``results/RESULTS.md``)::

    rows -> group_rows -> Group.stats -> format_markdown [-> format_document]
                                      -> figure_series (test top-1 against --group-by)

A row's configuration is its ``experiment``, ``model`` and ``overrides`` cell
(the ``--set`` items, space-separated, as the trainer records them: a sweep
point's include e.g. ``seed=1`` or ``data.fraction=0.1``). Rows that differ
only in their ``seed=`` item are the seeds of one group.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from vit16.config import parse_override

__all__ = ["METRICS", "SEED", "Group", "Point", "Series", "Stats", "figure_series", "format_document",
           "format_markdown", "group_rows", "newest_date", "override_key", "parse_overrides", "report",
           "select_groups", "summarize"]

SEED = "seed"
"""The override key left out of a group's configuration (its rows are the seeds)."""

METRICS: tuple[tuple[str, str], ...] = (("val_top1", "val top-1 %"), ("test_top1", "test top-1 % (final)"))
"""(row key, column title) of the summarised numbers, as in :data:`vit16.results.COLUMNS`."""

Default = Callable[[str, str], object]
"""``default(experiment, key)``: the value of ``key`` for a row whose overrides do not set it."""


def parse_overrides(cell: str) -> list[str]:
    """The ``--set`` items of an ``overrides`` cell: ``"seed=1 optim.lr=3e-4"`` ->
    ``["seed=1", "optim.lr=3e-4"]`` (split at whitespace; ``""`` -> ``[]``)."""
    return cell.split()


def override_key(item: str) -> str | None:
    """The key of one ``--set`` item (``"optim.lr=3e-4"`` -> ``"optim.lr"``);
    ``None`` for text without ``=``."""
    return item.split("=", 1)[0].strip() if "=" in item else None


def _value(item: str) -> object:
    """The TOML value of an item, so that ``0.10`` and ``0.1`` group together."""
    value = parse_override(item)[1]
    return value if isinstance(value, (bool, int, float, str)) else item.split("=", 1)[1].strip()


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None  # "-", "", text: a missing number
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Stats:
    """Summary of one metric over a group's rows that have it.

    ``n`` values (rows whose cell is ``-`` or empty are not counted), their
    mean, sample standard deviation (``n - 1`` in the denominator; ``None``
    for ``n < 2``), minimum and maximum, in the table's units (top-1 %).
    """

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


def summarize(values: Iterable[float]) -> Stats:
    """n, mean, sample std (``None`` under 2 values), min and max of ``values``
    (all ``None`` but ``n = 0`` when there are none)."""
    values = list(values)
    if not values:
        return Stats(0, None, None, None, None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stats(len(values), statistics.fmean(values), std, min(values), max(values))


@dataclass
class Group:
    """The rows of one configuration: ``experiment``, ``model``, the
    ``overrides`` without ``seed=`` (and without the group-by key), the
    group-by ``value`` (``None`` without ``--group-by``), and its ``rows``."""

    experiment: str
    model: str
    overrides: tuple[str, ...]
    value: object = None
    label: str = ""  # the group-by value as first written ("-" when unknown)
    rows: list[dict[str, str]] = field(default_factory=list)

    def stats(self, key: str) -> Stats:
        """:func:`summarize` of the numbers in column ``key`` (e.g. ``"test_top1"``)."""
        return summarize(v for v in (_number(r.get(key, "")) for r in self.rows) if v is not None)

    def seeds(self, default: Default | None = None) -> list[str]:
        """The rows' seeds, sorted, as written (``seed=`` item, else ``default``'s, else ``"?"``)."""
        found = []
        for row in self.rows:
            items = [i for i in parse_overrides(row.get("overrides", "")) if override_key(i) == SEED]
            if items:
                found.append(items[-1].split("=", 1)[1].strip())
            else:
                value = default(row.get("experiment", ""), SEED) if default else None
                found.append("?" if value is None else str(value))
        return sorted(found, key=lambda s: (_number(s) is None, _number(s) or 0.0, s))


def _row_key(row: dict[str, str], group_by: str | None,
             default: Default | None) -> tuple[tuple, object, str]:
    """(configuration key, group-by value, its label) of one row."""
    items = parse_overrides(row.get("overrides", ""))
    dropped = {SEED, group_by} - {None}
    keep = tuple(i for i in items if override_key(i) is None or override_key(i) not in dropped)
    value, label = None, ""
    if group_by:
        mine = [i for i in items if override_key(i) == group_by]
        if mine:  # the last one wins, as in --set
            value, label = _value(mine[-1]), mine[-1].split("=", 1)[1].strip()
        elif default is not None:
            value = default(row.get("experiment", ""), group_by)
            label = "-" if value is None else str(value)
        else:
            label = "-"
    return (row.get("experiment", ""), row.get("model", ""), keep), value, label


def _order(value: object) -> tuple:
    number = _number(str(value)) if value is not None and not isinstance(value, bool) else None
    return (number is None, number or 0.0, str(value))


def group_rows(rows: Iterable[dict[str, str]], group_by: str | None = None,
               experiments: Sequence[str] = (), default: Default | None = None) -> list[Group]:
    """Group results rows by (experiment, model, overrides without ``seed=``).

    Args:
        rows: :func:`vit16.results.read_rows` dicts (cells as strings).
        group_by: an override key (``"data.fraction"``) whose value becomes a
            group of its own, left out of the overrides; ``None``: no such key.
        experiments: keep only rows of these experiments (empty: all).
        default: ``default(experiment, key)`` for rows that do not set
            ``group_by`` (the table's value); without it their value is ``None``.

    Returns:
        the groups, ordered by the first row of each configuration, then by
        the group-by value (numbers numerically).
    """
    wanted = set(experiments)
    groups: dict[tuple, Group] = {}
    first: dict[tuple, int] = {}
    for row in rows:
        if wanted and row.get("experiment") not in wanted:
            continue
        key, value, label = _row_key(row, group_by, default)
        first.setdefault(key, len(first))
        if (key, value) not in groups:
            groups[key, value] = Group(key[0], key[1], key[2], value, label)
        groups[key, value].rows.append(row)
    return sorted(groups.values(), key=lambda g: (first[g.experiment, g.model, g.overrides], _order(g.value)))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _stat_cells(stats: Stats, rows: int) -> list[str]:
    if stats.n == 0:
        return ["-", "-", "-"]
    mean = _fmt(stats.mean) + (f" (n={stats.n})" if stats.n < rows else "")
    span = _fmt(stats.min) if stats.min == stats.max else f"{_fmt(stats.min)}-{_fmt(stats.max)}"
    return [mean, _fmt(stats.std), span]


def format_markdown(groups: Sequence[Group], metrics: Sequence[tuple[str, str]] = METRICS,
                    group_by: str | None = None, default: Default | None = None) -> str:
    """The groups as a markdown table (with newline): experiment, model,
    [group-by value], overrides, n (rows), seeds, and per metric its mean (with
    ``(n=k)`` when only k rows have it), std (``-`` for n = 1) and min-max, in
    % with 2 decimals.

    Args:
        groups: :func:`group_rows` output.
        metrics: (row key, title) of the columns to summarise.
        group_by: the group-by key, the title of its column (``None``: no column).
        default: as for :func:`group_rows`, for the seeds of rows without ``seed=``.
    """
    head = ["experiment", "model", *([group_by] if group_by else []), "overrides", "n", "seeds"]
    for _, title in metrics:
        head += [f"{title} mean", f"{title} std", f"{title} min-max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for g in groups:
        cells = [g.experiment, g.model, *([g.label] if group_by else []), " ".join(g.overrides) or "-",
                 str(len(g.rows)), ",".join(g.seeds(default))]
        for key, _ in metrics:
            cells += _stat_cells(g.stats(key), len(g.rows))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def select_groups(rows: Sequence[dict[str, str]], group_by: str | None = None, experiments: Sequence[str] = (),
                  default: Default | None = None) -> list[Group]:
    """:func:`group_rows` of ``rows``, refusing an empty result.

    Raises:
        ValueError: no rows at all, or none of ``experiments`` (names those present).
    """
    if not rows:
        raise ValueError("the results table has no rows; run an experiment first (python train.py quick)")
    groups = group_rows(rows, group_by, experiments, default)
    if not groups:
        present = sorted({r.get("experiment", "") for r in rows})
        raise ValueError(f"no rows of experiment {', '.join(map(repr, experiments))}; "
                         f"experiments in the table: {', '.join(present)}")
    return groups


def report(rows: Sequence[dict[str, str]], group_by: str | None = None, experiments: Sequence[str] = (),
           metrics: Sequence[tuple[str, str]] = METRICS, default: Default | None = None) -> str:
    """:func:`select_groups` then :func:`format_markdown` of ``rows``.

    Raises:
        ValueError: no rows at all, or none of ``experiments`` (names those present).
    """
    return format_markdown(select_groups(rows, group_by, experiments, default), metrics, group_by, default)


def newest_date(rows: Iterable[dict[str, str]]) -> str | None:
    """The latest ``date`` cell of ``rows`` (``YYYY-MM-DD HH:MM``, UTC, which
    sorts as text); ``None`` when no row has one."""
    return max((d for d in (r.get("date", "").strip() for r in rows) if d), default=None)


def format_document(table: str, command: str, source: str, groups: Sequence[Group], total_rows: int) -> str:
    """A markdown file of the report: a first line ``<!-- generated by: COMMAND -->``,
    a line naming the source table, how many of its rows the groups hold and
    the newest of their dates, a blank line, then ``table``.

    Deterministic given the table: the date is that of the newest row, not
    of the generation.

    Args:
        table: :func:`format_markdown` output.
        command: the command line that generated it (``python -m vit16 report ...``).
        source: the results table's path, as given.
        groups: the groups summarised in ``table``.
        total_rows: the number of rows in the source table.
    """
    used = sum(len(g.rows) for g in groups)
    newest = newest_date(r for g in groups for r in g.rows)
    share = f"its {total_rows} rows" if used == total_rows else f"{used} of its {total_rows} rows"
    dated = f"the newest dated {newest} (UTC)" if newest else "none of them dated"
    return (f"<!-- generated by: {command.replace('-->', '-- >')} -->\n"
            f"Summary of `{source}`: {share}, {dated}.\n\n{table}")


@dataclass(frozen=True)
class Point:
    """One group of a :class:`Series`: its group-by value ``x`` (a number),
    that value as written (``label``) and the ``stats`` of the plotted metric (%)."""

    x: float
    label: str
    stats: Stats


@dataclass
class Series:
    """The groups of one configuration (experiment, model, overrides), one
    :class:`Point` per group-by value, in increasing ``x``."""

    experiment: str
    model: str
    overrides: tuple[str, ...]
    points: list[Point] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The legend text: ``"quick (vit_quick)"``, then the overrides, if any."""
        return " ".join([f"{self.experiment} ({self.model})", *self.overrides])


def figure_series(groups: Sequence[Group], group_by: str, metric: str = "test_top1") -> list[Series]:
    """One :class:`Series` per configuration of ``groups`` (the lines of a
    figure of ``metric`` against the group-by value), in the groups' order;
    groups with no number in column ``metric`` are left out.

    Args:
        groups: :func:`group_rows` output with ``group_by``.
        group_by: the key the groups were made with (named in errors).
        metric: the results column plotted (top-1 %).

    Raises:
        ValueError: a group-by value that is not a number (names the rows).
    """
    series: dict[tuple, Series] = {}
    for g in groups:
        x = None if g.value is None or isinstance(g.value, bool) else _number(str(g.value))
        if x is None:
            raise ValueError(f"--figure: {len(g.rows)} row(s) of {g.experiment} ({g.model}) have "
                             f"{group_by} {g.label!r}, not a number; the x axis needs a number per "
                             "group (leave those rows out with --experiment)")
        stats = g.stats(metric)
        if stats.n:
            key = (g.experiment, g.model, g.overrides)
            series.setdefault(key, Series(*key)).points.append(Point(x, g.label, stats))
    for s in series.values():
        s.points.sort(key=lambda p: p.x)
    return list(series.values())
