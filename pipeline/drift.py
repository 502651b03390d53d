"""Drift of a month against the previous published month, computed in DuckDB over snapshot files.

Every feature column of the contract is compared: every value column of every table of
``sql/schema.sql`` but the label table's (:data:`pipeline.schema.LABEL_TABLE`, whose columns are the
labels). Nothing here lists a column: kinds come from the declared types (:mod:`pipeline.types`).

* **numeric** (INT, BIGINT, NUMERIC; DATE as days since 1970-01-01): the bins are the deciles of the
  *previous* month's non-NULL values, ``quantile_disc`` at 0.1 … 0.9 (actual values; repeated edges are
  merged, so a column with few distinct values has fewer bins). The bins are right-closed:
  ``(-inf, e1], (e1, e2], …, (e9, +inf)``. Mean, median and p95 before and after (median and p95 exact,
  ``quantile_cont``, in a table of at most :data:`EXACT_QUANTILES_UP_TO` rows; above it the nearest
  actual values, ``quantile_disc``).
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

Each month's own numbers (:class:`TableProfile`: its rows per bin under its own deciles, the deciles,
its value counts of each TEXT column, NULLs, mean, median, p95; a few KB) are kept in its run record
(:attr:`pipeline.runs.RunRecord.drift_profile`), and the next month takes the previous side from there
instead of reading the previous month's files again; those are the same counts of the same values, so the
PSI is the same either way. A record written before the profile was kept (or a column it lacks) is
profiled from the previous month's snapshot, as part of the same computation.

Cost, per month (its own numbers only, when the previous record has its profile): one sort per numeric
column (``quantile_disc`` of the deciles, 0.95 with them; an exact quantile holds one column's values in
memory, 8 bytes a row, which DuckDB cannot spill), one grouping per TEXT column (its values, at
most :data:`TEXT_VALUES_KEPT` kept), and one scan of each table for every count (numbers binned under
both months' deciles) and mean; for a table of at most :data:`EXACT_QUANTILES_UP_TO` rows one more
query per numeric column (exact median and p95). A first month has no drift and keeps no profile (the
second month reads its files).
A TEXT column with more values than that is counted over both months' files. At 1,000,000 users on the
shared 2-core machine (``bench/drift_profile.py``): 1.2–1.7 CPU-seconds, from 3.1–4.4 when both months'
files were read and median and p95 came from ``approx_quantile``.
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
from pipeline.runs import RunStore
from pipeline.schema import LABEL_TABLE, Column, Schema, Table, load_schema
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
    profiles: dict[str, TableProfile] = field(default_factory=dict)  # this month's own, for its run record

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


def _text(column: Column) -> str:
    return f"CAST({quote(column.name)} AS VARCHAR)"


def _as_dict(value: object) -> dict[int, int]:
    """A DuckDB MAP as Python gives it (a dict; {'key': [...], 'value': [...]} on older DuckDB)."""
    if not value:
        return {}
    assert isinstance(value, dict)
    if set(value) == {"key", "value"} and isinstance(value["key"], list):
        return {int(k): int(v) for k, v in zip(value["key"], value["value"], strict=True)}
    return {int(k): int(v) for k, v in value.items()}


# Median and p95 are shown in the report, never gated on. At or below this many rows they are exact
# (quantile_cont, one query per column); above it, the nearest actual values (quantile_disc at 0.5 and
# 0.95), taken in the sort that gives the deciles: at 1,000,000 users a second exact quantile added half
# the deciles' cost again, and DuckDB's approx_quantile (a t-digest, the earlier choice) more than the
# deciles themselves (bench/drift_profile.py).
EXACT_QUANTILES_UP_TO = 100_000
# A month's value counts of a TEXT column are kept for the next month's top values when it has at most
# this many distinct values (a category); a column with more has its top values counted over both files.
TEXT_VALUES_KEPT = 100


@dataclass(frozen=True)
class ColumnProfile:
    """One month's own numbers of one column: all the next month's drift needs of it (it is kept in the
    month's run record, :attr:`pipeline.runs.RunRecord.drift_profile`).

    ``counts``: rows per bin, NULL rows apart (``nulls``); numeric: by bin code under the month's own
    deciles (``edges``), boolean: code 0 false, 1 true; text: by value, or None when the column has more
    than :data:`TEXT_VALUES_KEPT` distinct values. ``stats``: numeric: mean, median, p95."""

    type: str  # the column's DuckDB type when counted: numbers counted as another type are not reused
    nulls: int
    counts: dict[str, int] | None
    edges: list[float] = field(default_factory=list)
    stats: dict[str, float | None] = field(default_factory=dict)

    def codes(self) -> dict[int, int]:
        """Numeric and boolean: rows per bin code, NULL_CODE included."""
        return {int(k): n for k, n in (self.counts or {}).items()} | ({NULL_CODE: self.nulls} if self.nulls else {})


@dataclass(frozen=True)
class TableProfile:
    """One month's numbers of the feature columns of one table (see :class:`ColumnProfile`)."""

    rows: int
    columns: dict[str, ColumnProfile]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableProfile:
        return cls(int(data["rows"]), {n: ColumnProfile(**c) for n, c in data["columns"].items()})


def profiles_to_json(profiles: dict[str, TableProfile]) -> dict[str, Any]:
    return {t: p.to_json() for t, p in profiles.items()}


def profiles_from_json(data: dict[str, Any] | None) -> dict[str, TableProfile]:
    """A run record's ``drift_profile``: none in records written before it was kept, nor in one whose
    profile does not read (then the previous month is read from its files, as for an old record)."""
    try:
        return {t: TableProfile.from_json(p) for t, p in (data or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}


def _quantiles(
    con: duckdb.DuckDBPyConnection, source: str, column: Column
) -> tuple[list[float], float | None, float | None]:
    """A numeric column's deciles (distinct, ascending), median and p95 in one sort (see
    :data:`EXACT_QUANTILES_UP_TO`); a second, exact query for median and p95 in a small table."""
    value = _value(column)
    fractions = ", ".join(repr(q) for q in [*DECILES, 0.95])
    row = con.execute(f"SELECT quantile_disc({value}, [{fractions}]), count(*) FROM {source}").fetchone()
    found = (row[0] if row else None) or [None] * (len(DECILES) + 1)
    edges = sorted({float(e) for e in found[: len(DECILES)] if e is not None})
    median, p95 = found[DECILES.index(0.5)], found[-1]
    if row and row[1] <= EXACT_QUANTILES_UP_TO:
        exact = con.execute(f"SELECT quantile_cont({value}, [0.5, 0.95]) FROM {source}").fetchone()
        median, p95 = (exact[0] if exact else None) or [None, None]
    return edges, _number(median), _number(p95)


def _value_counts(con: duckdb.DuckDBPyConnection, source: str, column: Column) -> dict[str, int] | None:
    """A text column's rows per value, or None when it has more than :data:`TEXT_VALUES_KEPT` values."""
    text = _text(column)
    found = con.execute(
        f"SELECT {text}, count(*) FROM {source} WHERE {text} IS NOT NULL GROUP BY 1 LIMIT {TEXT_VALUES_KEPT + 1}"
    ).fetchall()
    return None if len(found) > TEXT_VALUES_KEPT else {str(v): int(n) for v, n in found}


def _profile(
    con: duckdb.DuckDBPyConnection, source: str, columns: Sequence[Column], against: dict[str, list[float]]
) -> tuple[TableProfile, dict[str, dict[int, int]]]:
    """One month of a table: its :class:`TableProfile`, and the rows per bin of the numeric columns under
    the deciles ``against`` gives (the previous month's), by column. One sort per numeric column (its
    deciles), one grouping per text column (its values), then one scan for every count and mean."""
    quantiles = {c.name: _quantiles(con, source, c) for c in columns if is_numeric(c)}
    values = {c.name: _value_counts(con, source, c) for c in columns if not is_numeric(c) and not _is_boolean(c)}
    # every numeric value cast once, in a projection below the aggregates
    cast = {c.name: quote(f"drift value {i}") for i, c in enumerate(columns) if is_numeric(c)}
    projected = ", ".join(f"{_value(c)} AS {cast[c.name]}" for c in columns if is_numeric(c))
    items = ["count(*)"]
    for c in columns:
        name = quote(c.name)
        if is_numeric(c):
            value = cast[c.name]
            items += [f"histogram({_numeric_code(value, quantiles[c.name][0])[0]})", f"avg({value})"]
            if c.name in against:
                items.append(f"histogram({_numeric_code(value, against[c.name])[0]})")
        elif _is_boolean(c):  # two counts: cheaper than a histogram
            items += [f"count(*) FILTER (WHERE {name})", f"count({name})"]
        else:
            items.append(f"count(*) - count({name})")
    relation = f"(SELECT *, {projected} FROM {source})" if projected else source
    row = con.execute(f"SELECT {', '.join(items)} FROM {relation}").fetchone()
    assert row is not None
    rows, i = int(row[0]), 1
    out: dict[str, ColumnProfile] = {}
    counted: dict[str, dict[int, int]] = {}
    for c in columns:
        if is_numeric(c):
            edges, median, p95 = quantiles[c.name]
            own, mean = _as_dict(row[i]), row[i + 1]
            i += 2
            if c.name in against:
                counted[c.name] = _as_dict(row[i])
                i += 1
            nulls = own.pop(NULL_CODE, 0)
            stats = {"mean": _number(mean), "median": median, "p95": p95}
            out[c.name] = ColumnProfile(c.duckdb_type, nulls, {str(k): n for k, n in own.items()}, edges, stats)
        elif _is_boolean(c):
            true, valued = int(row[i]), int(row[i + 1])
            i += 2
            counts = {"0": valued - true, "1": true}
            out[c.name] = ColumnProfile(c.duckdb_type, rows - valued, {k: n for k, n in counts.items() if n})
        else:
            out[c.name] = ColumnProfile(c.duckdb_type, int(row[i]), values[c.name])
            i += 1
    return TableProfile(rows, out), counted


def _is_boolean(column: Column) -> bool:
    return isinstance(column.rule, BooleanRule)


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _null_share(counts: dict[int, int], total: int) -> float | None:
    return counts.get(NULL_CODE, 0) / total if total else None


def _top_values(counts: Iterable[tuple[str, int]]) -> tuple[list[str], list[str]]:
    """The kept values (most frequent first, ties by value) and the bin labels (``other`` last if any)."""
    ranked = [v for v, _ in sorted(counts, key=lambda vn: (-vn[1], vn[0]))[: TOP_VALUES + 1]]
    return ranked[:TOP_VALUES], ranked[:TOP_VALUES] + ([OTHER] if len(ranked) > TOP_VALUES else [])


def _text_codes(profile: ColumnProfile, kept: list[str]) -> dict[int, int]:
    """A text column's rows per bin code (the index of the kept value, TOP_VALUES for other, NULL_CODE)."""
    index = {v: i for i, v in enumerate(kept)}
    codes: dict[int, int] = {NULL_CODE: profile.nulls} if profile.nulls else {}
    for v, n in (profile.counts or {}).items():
        code = index.get(v, TOP_VALUES)
        codes[code] = codes.get(code, 0) + n
    return codes


def _text_over_files(
    con: duckdb.DuckDBPyConnection, column: Column, src_before: str, src_after: str
) -> tuple[list[str], dict[int, int], dict[int, int]]:
    """A text column with too many values to keep: its top values over both files, then each file's rows
    per bin (labels, before, after)."""
    text = _text(column)
    top = con.execute(
        f"SELECT v FROM (SELECT {text} AS v FROM {src_before} UNION ALL SELECT {text} FROM {src_after}) "
        f"WHERE v IS NOT NULL GROUP BY v ORDER BY count(*) DESC, v LIMIT {TOP_VALUES + 1}"
    ).fetchall()
    values = [str(v) for (v,) in top]
    kept, labels = values[:TOP_VALUES], values[:TOP_VALUES] + ([OTHER] if len(values) > TOP_VALUES else [])
    listed = "[" + ", ".join(literal(v) for v in kept) + "]::VARCHAR[]"
    # list_position is 1-based, NULL when absent: absent values are "other", the last bin
    position = f"coalesce(list_position({listed}, {text}) - 1, {TOP_VALUES})"
    code = f"CASE WHEN {text} IS NULL THEN {NULL_CODE} ELSE {position} END"
    before, after = (con.execute(f"SELECT histogram({code}) FROM {s}").fetchone() for s in (src_before, src_after))
    return labels, _as_dict(before[0] if before else None), _as_dict(after[0] if after else None)


def _reusable(stored: TableProfile | None, column: Column) -> bool:
    kept = stored.columns.get(column.name) if stored else None
    return kept is not None and kept.type == column.duckdb_type


def table_profiled(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    columns: Sequence[Column],
    before: Path | None,
    after: Path | None,
    stored: TableProfile | None = None,
) -> tuple[list[FeatureDrift], TableProfile]:
    """The drift of ``columns`` of one table between two of its snapshot files (see the module
    docstring), and the later file's :class:`TableProfile`. ``stored``: the earlier file's profile, as its
    month's run kept it; columns it lacks (or counted as another type) are profiled from the file."""
    src_before, src_after = _source(table, before), _source(table, after)
    missing = [c for c in columns if not _reusable(stored, c)]
    if stored is None or missing:
        computed, _ = _profile(con, src_before, missing, {})
        kept = {c.name: stored.columns[c.name] for c in columns if stored and c not in missing}
        stored = TableProfile(computed.rows, {**kept, **computed.columns})
    prev = stored
    against = {c.name: prev.columns[c.name].edges for c in columns if is_numeric(c)}
    profile, counted = _profile(con, src_after, columns, against)
    features = []
    for c in columns:
        b, a = prev.columns[c.name], profile.columns[c.name]
        if is_numeric(c):
            labels = _numeric_code("v", b.edges)[1]
            codes_before, codes_after = b.codes(), counted[c.name]
        elif _is_boolean(c):
            labels, codes_before, codes_after = ["false", "true"], b.codes(), a.codes()
        elif b.counts is not None and a.counts is not None:
            merged = dict(b.counts)
            for v, n in a.counts.items():
                merged[v] = merged.get(v, 0) + n
            kept_values, labels = _top_values(merged.items())
            codes_before, codes_after = _text_codes(b, kept_values), _text_codes(a, kept_values)
        else:
            labels, codes_before, codes_after = _text_over_files(con, c, src_before, src_after)
        features.append(
            _feature(table, c, labels, prev.rows, profile.rows, codes_before, codes_after, b.stats, a.stats)
        )
    return features, profile


def table_drift(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    columns: Sequence[Column],
    before: Path | None,
    after: Path | None,
) -> list[FeatureDrift]:
    """The drift of ``columns`` of one table between two of its snapshot files (see the module docstring)."""
    return table_profiled(con, table, columns, before, after)[0]


def _feature(
    table: Table,
    column: Column,
    labels: list[str],
    n_before: int,
    n_after: int,
    counts_before: dict[int, int],
    counts_after: dict[int, int],
    stats_before: dict[str, float | None],
    stats_after: dict[str, float | None],
) -> FeatureDrift:
    codes = list(range(len(labels))) + [NULL_CODE]
    # a bin empty in both months adds nothing to the PSI and is left out (a boolean never false, say)
    codes = [c for c in codes if counts_before.get(c) or counts_after.get(c)]
    bins = [
        Bin(
            NULL_BIN if c == NULL_CODE else labels[c],
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
        column=column.name,
        kind="numeric" if is_numeric(column) else "category",
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


def _by_table(schema: Schema) -> dict[str, list[Column]]:
    by_table: dict[str, list[Column]] = {}
    for t, c in feature_columns(schema):
        by_table.setdefault(t.name, []).append(c)
    return by_table


def month_drift(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    previous: date,
    before: dict[str, Path | None],
    after: dict[str, Path | None],
    schema: Schema | None = None,
    stored: dict[str, TableProfile] | None = None,
) -> MonthDrift:
    """The drift of every feature between two sets of snapshot files (table -> data.parquet); ``stored``:
    the earlier month's profiles as its run record keeps them (what they lack is read from its files)."""
    schema = schema or load_schema()
    features: list[FeatureDrift] = []
    profiles: dict[str, TableProfile] = {}
    for name, columns in _by_table(schema).items():
        found, profiles[name] = table_profiled(
            con, schema.table(name), columns, before.get(name), after.get(name), (stored or {}).get(name)
        )
        features += found
    return MonthDrift(as_of, previous, features, population(con, schema, before, after), profiles)


def month_profiles(
    con: duckdb.DuckDBPyConnection, files: dict[str, Path | None], schema: Schema
) -> dict[str, TableProfile]:
    """A month's own profiles, without a month to compare with."""
    return {
        name: _profile(con, _source(schema.table(name), files.get(name)), columns, {})[0]
        for name, columns in _by_table(schema).items()
    }


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
    stored: dict[str, TableProfile] | None = None,
) -> tuple[MonthDrift | None, dict[str, TableProfile]]:
    """The drift of a month being published: its merged files (``merged``: table -> data.parquet in the
    work folder) against the previous published month's snapshots (None for a first month), and the
    month's own profiles for its run record. ``stored``: the previous month's, from its run record.

    A first month has no drift and keeps no profile: it is the month whose publish has the most to do
    (every row into PostgreSQL twice), and the second month reads the first one's files instead, once."""
    files: dict[str, Path | None] = dict(merged)
    if previous is None:
        return None, {}
    record = RunStore(lake).get(previous)
    before: dict[str, Path | None] = {
        t: record.snapshot_file(lake.root, t) if record else None for t in schema.table_names
    }
    month = month_drift(con, as_of, previous, before, files, schema, stored)
    return month, month.profiles
