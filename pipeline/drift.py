"""Drift of a month against the previous published month, computed in DuckDB over snapshot files.

Every feature column of the contract is compared: every value column of every table of
``sql/schema.sql`` but the label table's (:data:`pipeline.training.LABEL_TABLE`, whose columns are the
labels). Nothing here lists a column: kinds come from the declared types (:mod:`pipeline.types`).

* **numeric** (INT, BIGINT, NUMERIC; DATE as days since 1970-01-01): the bins are the deciles of the
  *previous* month's non-NULL values, ``quantile_disc`` at 0.1 … 0.9 (actual values; repeated edges are
  merged, so a column with few distinct values has fewer bins). The bins are right-closed:
  ``(-inf, e1], (e1, e2], …, (e9, +inf)``. Mean, median, p95 (``quantile_cont``) before and after.
* **category** (BOOLEAN, TEXT): one bin per value; for TEXT the 20 values most frequent over both months
  together (ties by value) and ``other`` for the rest.
* **NULL** is a bin of its own in both kinds whenever either month has a NULL, so that a column going
  empty (or filling) shows as drift; shares are over all rows of the table. One exception: a column
  with no value at all in the previous month (hidden at start and not delivered yet) has nothing to be
  compared with; its PSI is 0 and :attr:`FeatureDrift.note` says why (its arrival is a contract matter).

The population stability index over those bins, with ``a`` the month's share and ``b`` the previous
month's share of a bin, is ``PSI = Σ (a − b) · ln(a / b)``. An empty bin (a share of 0 on one side)
would make the logarithm infinite, so every share is floored at :data:`EMPTY_BIN_SHARE` (0.0001) before
the sum (the shares are not renormalised). A bin empty in both months adds nothing and is left out.
Identical months give exactly 0.

Cost: one scan of each table per month for the counts (bins counted as integer codes) and means, plus
one per numeric column and month for its exact quantiles (the deciles, median and p95: an exact
quantile holds one column's values in memory, 8 bytes a row, which DuckDB cannot spill), plus one over
both months per TEXT column (its most frequent values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from pipeline import lakefs
from pipeline.duck import literal, quote
from pipeline.evolve import conformed, empty_select
from pipeline.quality import CheckResult
from pipeline.schema import Column, Schema, Table, load_schema
from pipeline.types import BigintRule, BooleanRule, DateRule, IntRule, NumericRule

EMPTY_BIN_SHARE = 0.0001  # the share an empty bin counts with, so that ln(a / b) stays finite
TOP_VALUES = 20  # text columns: the most frequent values kept, the rest are "other"
OTHER = "other"
NULL_BIN = "NULL"
DECILES = [i / 10 for i in range(1, 10)]
NUMERIC_RULES = (IntRule, BigintRule, NumericRule, DateRule)
CATEGORY_RULES = (BooleanRule,)  # and TEXT: everything that is not numeric is a category


@dataclass(frozen=True)
class Bin:
    label: str
    before: float  # share of the previous month's rows (not floored)
    after: float  # share of this month's rows


@dataclass(frozen=True)
class FeatureDrift:
    table: str
    column: str
    kind: str  # "numeric" or "category"
    psi: float
    rows_before: int
    rows_after: int
    null_before: float | None  # share of rows that are NULL; None when the month has no rows
    null_after: float | None
    bins: list[Bin]
    before: dict[str, float | None] = field(default_factory=dict)  # numeric: mean, median, p95
    after: dict[str, float | None] = field(default_factory=dict)
    note: str = ""  # why the PSI is 0 without being compared, when it is

    @property
    def feature(self) -> str:
        return f"{self.table}.{self.column}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureDrift:
        return cls(**{**data, "bins": [Bin(**b) for b in data["bins"]]})


@dataclass(frozen=True)
class Population:
    users_before: int
    users_after: int
    churn_before: float | None  # share of labelled users with a true label
    churn_after: float | None


@dataclass(frozen=True)
class MonthDrift:
    as_of: date
    previous: date
    features: list[FeatureDrift]
    population: Population

    def sorted(self) -> list[FeatureDrift]:
        """Features by PSI, largest first (ties by name)."""
        return sorted(self.features, key=lambda f: (-f.psi, f.feature))


def psi(before: Sequence[float], after: Sequence[float], floor: float = EMPTY_BIN_SHARE) -> float:
    """PSI of two share vectors over the same bins, each share floored at ``floor`` (see the module)."""
    total = 0.0
    for b, a in zip(before, after, strict=True):
        b, a = max(b, floor), max(a, floor)
        total += (a - b) * math.log(a / b)
    return total


def feature_columns(schema: Schema) -> list[tuple[Table, Column]]:
    """Every feature column of the contract: value columns of every table but the label table."""
    from pipeline.training import LABEL_TABLE

    return [(t, c) for t in schema.tables if t.name != LABEL_TABLE for c in t.value_columns]


def is_numeric(column: Column) -> bool:
    return isinstance(column.rule, NUMERIC_RULES)


def _source(table: Table, path: Path | None) -> str:
    """A relation for FROM: the file read as the current contract, or no rows when there is none."""
    if path is None or not path.is_file():
        return f"({empty_select(table)})"
    return conformed(table, path)


def _value(column: Column) -> str:
    """The column as a DOUBLE (numeric kinds; a DATE as days since 1970-01-01)."""
    if isinstance(column.rule, DateRule):
        return f"CAST(date_diff('day', DATE '1970-01-01', {quote(column.name)}) AS DOUBLE)"
    return f"CAST({quote(column.name)} AS DOUBLE)"


NULL_CODE = -1  # the bin code of NULL; every other bin's code is its index in the labels


def _numeric_code(value: str, edges: list[float]) -> tuple[str, list[str]]:
    """SQL giving each value its bin's code, and the bin labels in order (the NULL bin apart)."""
    labels = []
    whens = []
    low = "-inf"
    for i, e in enumerate(edges):
        labels.append(f"({low}, {e:g}]")
        whens.append(f"WHEN {value} <= {e!r} THEN {i}")
        low = f"{e:g}"
    labels.append(f"({low}, +inf)")
    return f"CASE WHEN {value} IS NULL THEN {NULL_CODE} {' '.join(whens)} ELSE {len(edges)} END", labels


@dataclass(frozen=True)
class _Binning:
    """How one column's values fall into bins: the SQL of a row's bin code (an integer: the index of its
    label, or NULL_CODE), and the labels in order."""

    column: Column
    code_sql: str
    labels: list[str]
    value: str | None  # numeric columns: the value as a DOUBLE (for mean, median, p95)


def _as_dict(value: object) -> dict[int, int]:
    """A DuckDB MAP as Python gives it (a dict; {'key': [...], 'value': [...]} on older DuckDB)."""
    if not value:
        return {}
    assert isinstance(value, dict)
    if set(value) == {"key", "value"} and isinstance(value["key"], list):
        return {int(k): int(v) for k, v in zip(value["key"], value["value"], strict=True)}
    return {int(k): int(v) for k, v in value.items()}


def _binnings(
    con: duckdb.DuckDBPyConnection, columns: Sequence[Column], src_before: str, src_after: str
) -> list[_Binning]:
    numeric = [c for c in columns if is_numeric(c)]
    edges: dict[str, list[float]] = {}
    listed = ", ".join(repr(q) for q in DECILES)
    for c in numeric:  # the previous month's deciles, one column at a time (a quantile holds all its values)
        row = con.execute(f"SELECT quantile_disc({_value(c)}, [{listed}]) FROM {src_before}").fetchone()
        edges[c.name] = sorted({float(e) for e in (row[0] if row else None) or [] if e is not None})
    binnings = []
    for column in columns:
        name = quote(column.name)
        if is_numeric(column):
            value = _value(column)
            code_sql, labels = _numeric_code(value, edges[column.name])
            binnings.append(_Binning(column, code_sql, labels, value))
        elif isinstance(column.rule, BooleanRule):
            code = f"CASE WHEN {name} IS NULL THEN {NULL_CODE} WHEN {name} THEN 1 ELSE 0 END"
            binnings.append(_Binning(column, code, ["false", "true"], None))
        else:
            text = f"CAST({name} AS VARCHAR)"
            top = con.execute(
                f"SELECT v FROM (SELECT {text} AS v FROM {src_before} UNION ALL SELECT {text} FROM {src_after}) "
                f"WHERE v IS NOT NULL GROUP BY v ORDER BY count(*) DESC, v LIMIT {TOP_VALUES + 1}"
            ).fetchall()
            values = [str(v) for (v,) in top]
            labels = values[:TOP_VALUES] + ([OTHER] if len(values) > TOP_VALUES else [])
            kept = "[" + ", ".join(literal(v) for v in values[:TOP_VALUES]) + "]::VARCHAR[]"
            # list_position is 1-based, NULL when absent: absent values are "other", the last bin
            position = f"coalesce(list_position({kept}, {text}) - 1, {TOP_VALUES})"
            code = f"CASE WHEN {name} IS NULL THEN {NULL_CODE} ELSE {position} END"
            binnings.append(_Binning(column, code, labels, None))
    return binnings


# Median and p95 are shown in the report, never gated on. Above this many rows they come from DuckDB's
# approx_quantile (a t-digest, in the one streaming scan); at or below it, exactly (quantile_cont, one
# column at a time: an exact quantile holds the column's values in memory). At 1,000,000 users the exact
# ones were two of the three sorted passes per numeric column (bench/RESULTS.md, this round).
EXACT_QUANTILES_UP_TO = 100_000


def _side(
    con: duckdb.DuckDBPyConnection, source: str, binnings: Sequence[_Binning]
) -> tuple[int, list[dict[int, int]], list[dict[str, float | None]]]:
    """One month of a table: its rows, every column's count per bin, mean and approximate median and p95
    in one scan (streaming aggregates); for a table of at most :data:`EXACT_QUANTILES_UP_TO` rows the
    median and p95 again, exactly, one column at a time."""
    items = ["count(*)"]
    for b in binnings:
        items.append(f"histogram({b.code_sql})")
        if b.value is not None:
            items += [f"avg({b.value})", f"approx_quantile({b.value}, [0.5, 0.95])"]
    row = con.execute(f"SELECT {', '.join(items)} FROM {source}").fetchone()
    assert row is not None
    rows, i = int(row[0]), 1
    counts: list[dict[int, int]] = []
    stats: list[dict[str, float | None]] = []
    for b in binnings:
        counts.append(_as_dict(row[i]))
        i += 1
        if b.value is None:
            stats.append({})
            continue
        mean, approx = row[i], row[i + 1]
        i += 2
        quantiles = approx
        if rows <= EXACT_QUANTILES_UP_TO:
            exact = con.execute(f"SELECT quantile_cont({b.value}, [0.5, 0.95]) FROM {source}").fetchone()
            quantiles = exact[0] if exact else None
        median, p95 = quantiles or [None, None]
        stats.append({"mean": mean, "median": _number(median), "p95": _number(p95)})
    return rows, counts, stats


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _null_share(counts: dict[int, int], total: int) -> float | None:
    return counts.get(NULL_CODE, 0) / total if total else None


def table_drift(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    columns: Sequence[Column],
    before: Path | None,
    after: Path | None,
) -> list[FeatureDrift]:
    """The drift of ``columns`` of one table between two of its snapshot files (see the module
    docstring): one scan for the previous month's deciles, one per month for every count and statistic
    (and one per text column for its most frequent values)."""
    src_before, src_after = _source(table, before), _source(table, after)
    binnings = _binnings(con, columns, src_before, src_after)
    n_before, counts_before, stats_before = _side(con, src_before, binnings)
    n_after, counts_after, stats_after = _side(con, src_after, binnings)
    return [
        _feature(table, b, n_before, n_after, counts_before[i], counts_after[i], stats_before[i], stats_after[i])
        for i, b in enumerate(binnings)
    ]


def _feature(
    table: Table,
    binning: _Binning,
    n_before: int,
    n_after: int,
    counts_before: dict[int, int],
    counts_after: dict[int, int],
    stats_before: dict[str, float | None],
    stats_after: dict[str, float | None],
) -> FeatureDrift:
    codes = list(range(len(binning.labels))) + [NULL_CODE]
    # a bin empty in both months adds nothing to the PSI and is left out (a boolean never false, say)
    codes = [c for c in codes if counts_before.get(c) or counts_after.get(c)]
    bins = [
        Bin(
            NULL_BIN if c == NULL_CODE else binning.labels[c],
            counts_before.get(c, 0) / n_before if n_before else 0.0,
            counts_after.get(c, 0) / n_after if n_after else 0.0,
        )
        for c in codes
    ]
    note = ""
    if not n_before or not n_after:
        note = "no rows in one of the months"
    elif counts_before.get(NULL_CODE, 0) == n_before and counts_after.get(NULL_CODE, 0) < n_after:
        note = "no value in the previous month: hidden at start, delivered from this month"
    return FeatureDrift(
        table=table.name,
        column=binning.column.name,
        kind="numeric" if binning.value is not None else "category",
        psi=0.0 if note else psi([b.before for b in bins], [b.after for b in bins]),
        rows_before=n_before,
        rows_after=n_after,
        null_before=_null_share(counts_before, n_before),
        null_after=_null_share(counts_after, n_after),
        bins=bins,
        before=stats_before,
        after=stats_after,
        note=note,
    )


def feature_drift(
    con: duckdb.DuckDBPyConnection, table: Table, column: Column, before: Path | None, after: Path | None
) -> FeatureDrift:
    """The drift of one column between two snapshot files of its table."""
    (feature,) = table_drift(con, table, [column], before, after)
    return feature


def population(
    con: duckdb.DuckDBPyConnection, schema: Schema, before: dict[str, Path | None], after: dict[str, Path | None]
) -> Population:
    """Users (rows of the root table) and the churn rate (the label table's first BOOLEAN column)."""
    from pipeline.training import LABEL_TABLE

    root = schema.root

    def users(files: dict[str, Path | None]) -> int:
        row = con.execute(f"SELECT count(*) FROM {_source(root, files.get(root.name))}").fetchone()
        return int(row[0]) if row else 0

    def churn(files: dict[str, Path | None]) -> float | None:
        if LABEL_TABLE not in schema.table_names:
            return None
        labels = schema.table(LABEL_TABLE)
        flags = [c for c in labels.value_columns if isinstance(c.rule, BooleanRule)]
        if not flags:
            return None
        name = quote(flags[0].name)
        row = con.execute(
            f"SELECT avg(CASE WHEN {name} THEN 1.0 ELSE 0.0 END) FILTER (WHERE {name} IS NOT NULL) "
            f"FROM {_source(labels, files.get(LABEL_TABLE))}"
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    return Population(users(before), users(after), churn(before), churn(after))


def month_drift(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    previous: date,
    before: dict[str, Path | None],
    after: dict[str, Path | None],
    schema: Schema | None = None,
) -> MonthDrift:
    """The drift of every feature between two sets of snapshot files (table -> data.parquet)."""
    schema = schema or load_schema()
    by_table: dict[str, list[Column]] = {}
    for t, c in feature_columns(schema):
        by_table.setdefault(t.name, []).append(c)
    features = [
        f
        for name, columns in by_table.items()
        for f in table_drift(con, schema.table(name), columns, before.get(name), after.get(name))
    ]
    return MonthDrift(as_of, previous, features, population(con, schema, before, after))


def over(features: Iterable[FeatureDrift], threshold: float | None) -> list[FeatureDrift]:
    """The features whose PSI is over ``threshold`` (none when it is None), largest first."""
    if threshold is None:
        return []
    return sorted((f for f in features if f.psi > threshold), key=lambda f: (-f.psi, f.feature))


# --- the gate -----------------------------------------------------------------------------------

CHECK_PREFIX = "PSI of "  # every drift check's name starts so (quality.CheckResult.describe shows "PSI …")


def check_name(column: str, warn: float, fail: float | None) -> str:
    limits = f"warn over {warn:g}, fail over {'off' if fail is None else f'{fail:g}'}"
    return f"{CHECK_PREFIX}{column} vs the previous published month ({limits})"


def gate_checks(month: MonthDrift, warn: float, fail: float | None) -> list[CheckResult]:
    """One check per feature: pass, warn (PSI over ``warn``) or fail (PSI over ``fail``, when set).
    The value is the PSI, rounded to 4 decimals."""
    results = []
    for f in month.features:
        outcome = "fail" if fail is not None and f.psi > fail else "warn" if f.psi > warn else "pass"
        results.append(CheckResult(check_name(f.column, warn, fail), f.table, f.column, outcome, round(f.psi, 4)))
    return results


def work_drift(
    con: duckdb.DuckDBPyConnection,
    lake: lakefs.Lake,
    as_of: date,
    previous: date | None,
    merged: dict[str, Path],
    schema: Schema,
) -> MonthDrift | None:
    """The drift of a month being published: its merged files (``merged``: table -> data.parquet in the
    work folder) against the previous published month's snapshots; None for a first month."""
    if previous is None:
        return None
    before: dict[str, Path | None] = {t: lake.snapshot_file(t, previous) for t in schema.table_names}
    return month_drift(con, as_of, previous, before, dict(merged), schema)
