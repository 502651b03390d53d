"""Property-based tests of the month (issue #5), against a tiny model written again in plain Python.

(a) Random valid drops (1-30 users, random values of each column's type and domain, written in the
    many spellings the contract allows, random subsets of users per table, hidden columns present or
    not, columns in any order, CRLF or LF, with or without a BOM) over 1-4 months are published, and
    every month's lake snapshot, raw partition, change counts and PostgreSQL tables equal the model:
    previous snapshot upserted with the drop, ids absent from the drop carried.
(b) Random corruptions of the last month of such a history (a cell replaced by a random string, a
    bad number, date or boolean, a NUL, a byte that is not UTF-8, a field dropped or added, a key
    changed or duplicated, a blank line) are refused exactly when the model says the drop breaks the
    contract: rows rejected at staging (the rejects name exactly the broken lines) or a quality rule
    failed, with nothing of the month published; otherwise accepted with exactly the model's result.

Each example gets its own lake folder and PostgreSQL schema: function-scoped fixtures are not
reset between the examples of one test.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql

from pipeline.config import PostgresSettings, Settings
from pipeline.errors import DropErrors, QualityGateError, RejectedRowsError
from pipeline.lakefs import Lake, month_objects
from pipeline.publish import run_month
from pipeline.runs import RunRecord, RunStore
from pipeline.schema import Column, Table, load_schema
from tests.conftest import object_file

SCHEMA = load_schema()
ROOT = SCHEMA.root
MONTHS = (date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30))


def examples(default: int) -> hypothesis_settings:
    """Few examples by default (a month costs about a second: the quality gate and PostgreSQL are real);
    PROPERTY_EXAMPLES=200 for a long hunt. --hypothesis-show-statistics shows which outcomes ran."""
    return hypothesis_settings(
        max_examples=int(os.environ.get("PROPERTY_EXAMPLES", default)),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- the contract, written again: what a cell's text means, or None when it means nothing -------

INVALID = object()  # a cell the contract refuses
SPACES = " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
INVISIBLE = {"Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cs"}  # what a key may not consist of only
TRUE, FALSE = {"true", "t", "1", "yes"}, {"false", "f", "0", "no"}
INT_RANGE = {"INT": 2**31, "BIGINT": 2**63}
NUMERIC = re.compile(r"[+-]?(0*[0-9]{1,28}(\.[0-9]{0,10})?|0*\.[0-9]{1,10})")
MAX_TEXT = 500


def parse(col: Column, text: str) -> object:
    """The value a cell's text stands for under the contract (docs/bad-input.md), or INVALID."""
    if "\0" in text or any("\udc80" <= ch <= "\udcff" for ch in text):  # NUL, or a byte that is not UTF-8
        return INVALID
    if col.pg_type == "TEXT":
        if len(text) > MAX_TEXT or (col.primary_key and all(unicodedata.category(ch) in INVISIBLE for ch in text)):
            return INVALID
        return text if text != "" else None  # an empty field is NULL; a TEXT value is never trimmed
    value = text.strip(SPACES)
    if value == "":
        return None
    if col.pg_type == "BOOLEAN":
        return True if value.lower() in TRUE else False if value.lower() in FALSE else INVALID
    if col.pg_type in INT_RANGE:
        if (
            not re.fullmatch(r"[+-]?[0-9]+", value)
            or not -INT_RANGE[col.pg_type] <= int(value) < INT_RANGE[col.pg_type]
        ):
            return INVALID
        return int(value)
    if col.pg_type == "NUMERIC":
        return Decimal(value) if NUMERIC.fullmatch(value) else INVALID
    if col.pg_type == "DATE":
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return INVALID
        try:
            return date.fromisoformat(value)  # no year 0, no February 30th
        except ValueError:
            return INVALID
    raise AssertionError(col.pg_type)


# The quality rules of checks/*.yml that a random drop can break (warn-only rules left out).
NON_NEGATIVE = {
    "subscriptions": {"months_active", "monthly_fee", "total_paid"},
    "usage_agg_30d": {
        "watch_hours_30d",
        "avg_session_mins_7d",
        "unique_devices_30d",
        "skips_7d",
        "rebuffer_events_7d",
    },
    "payments_agg_90d": {"failed_payments_90d"},
    "support_agg_90d": {"support_tickets_90d", "ticket_avg_resolution_hrs_90d"},
}
VALID_VALUES = {
    ("users", "user_gender"): {"Male", "Female"},
    ("subscriptions", "contract_type"): {"Month-to-month", "One year", "Two year"},
    ("subscriptions", "net_service"): {"DSL", "Fiber optic", "No"},
}
# Columns whose missing values fail the month. checks/users.yml and checks/labels.yml only warn on a
# missing signup_date or churn_label, so none today; the model keeps the hook for a rule that fails.
REQUIRED_TODAY: set[tuple[str, str]] = set()
Rows = dict[str, tuple]  # user_id -> the value columns, in schema order


def gate_passes(snapshots: dict[str, Rows], as_of: date) -> bool:
    users = snapshots[ROOT.name]
    for table in SCHEMA.tables:
        rows = snapshots[table.name]
        if not rows or (table is not ROOT and not set(rows) <= set(users)):
            return False
        for i, col in enumerate(table.value_columns):
            values = [r[i] for r in rows.values() if r[i] is not None]
            if col.name in NON_NEGATIVE.get(table.name, ()) and any(v < 0 for v in values):
                return False
            if (table.name, col.name) in VALID_VALUES and not set(values) <= VALID_VALUES[table.name, col.name]:
                return False
            if col.name == "signup_date" and any(v > as_of for v in values):
                return False
            if (table.name, col.name) in REQUIRED_TODAY and len(values) < len(rows):
                return False
    return True


def merge(previous: Rows, drop: Rows) -> tuple[Rows, dict[str, int]]:
    """The model of the upsert: the drop wins, ids absent from it are carried as they were."""
    counts = {"inserted": 0, "updated": 0, "unchanged": 0, "carried": 0, "deleted": 0}
    for key, row in drop.items():
        kind = "inserted" if key not in previous else "unchanged" if previous[key] == row else "updated"
        counts[kind] += 1
    counts["carried"] = len(set(previous) - set(drop))
    return {**previous, **drop}, counts


# --- drops as the tests hold them: cells as text, written as CSV ---------------------------------


@dataclass
class CsvFile:
    header: list[str]
    records: list[list[str] | None]  # None: a blank line
    newline: str = "\n"
    bom: bool = False

    def render(self) -> tuple[bytes, list[int]]:
        """The file's bytes and the physical line each record starts on."""
        out, lines, line = [], [], 2
        for record in [self.header, *self.records]:
            if record is None:
                text = ""
            else:
                buffer = io.StringIO()
                csv.writer(buffer, lineterminator="\r\n").writerow(record)  # quotes any CR or LF in a value
                text = buffer.getvalue()[:-2]
            if record is not self.header:
                lines.append(line)
                line += 1 + len(re.findall(r"\r\n|\r|\n", text))
            out.append(text + self.newline)
        data = "".join(out).encode("utf-8", errors="surrogateescape")
        return (b"\xef\xbb\xbf" if self.bom else b"") + data, lines

    def write(self, path: Path) -> list[int]:
        data, lines = self.render()
        path.write_bytes(data)
        return lines


Drop = dict[str, CsvFile]


@dataclass
class Typed:
    """What staging makes of one CSV file under the contract."""

    rows: Rows = field(default_factory=dict)
    rejected_lines: set[int] = field(default_factory=set)


def typed(table: Table, csv_file: CsvFile) -> Typed:
    result, lines = Typed(), csv_file.render()[1]
    columns = [table.column(name) for name in csv_file.header]
    by_key: dict[str, list[tuple[int, tuple]]] = {}
    for record, line in zip(csv_file.records, lines, strict=True):
        if not record:  # a blank line (csv writes an empty record as one) is skipped, not a row
            continue
        named = {c.name: parse(c, text) for c, text in zip(columns, record, strict=False)}
        if len(record) != len(columns) or INVALID in named.values():  # a field too many or few, a bad cell
            result.rejected_lines.add(line)
            continue
        row = tuple(named.get(c.name) for c in table.value_columns)
        by_key.setdefault(named[table.key], []).append((line, row))
    for key, found in by_key.items():
        if len(found) > 1:  # a drop holds one row per key: every copy is rejected
            result.rejected_lines.update(line for line, _ in found)
        else:
            result.rows[key] = found[0][1]
    return result


# --- generating valid drops --------------------------------------------------------------------

KEY_CHARS = "abcXYZ019-_ ,;'\"\n\té€😀\u00a0\u200b"
KEYS = st.text(KEY_CHARS, min_size=1, max_size=8).filter(lambda k: parse(ROOT.column(ROOT.key), k) is not INVALID)
SPACED = st.sampled_from(["{}", "{}", "{}", " {}", "{} ", " {} ", "\u00a0{}", "{}\u3000"])


def _number(text: str) -> st.SearchStrategy[str]:
    return SPACED.map(lambda s: s.format(text))


def cells(table: Table, col: Column) -> st.SearchStrategy[str]:
    """Valid text for a cell: a value in the column's domain, in any spelling the contract accepts."""
    blank = st.nothing() if (table.name, col.name) in REQUIRED_TODAY else st.just("")
    if (table.name, col.name) in VALID_VALUES:
        return st.sampled_from(sorted(VALID_VALUES[table.name, col.name])) | blank
    if col.pg_type == "BOOLEAN":
        return st.sampled_from(["True", "False", "true", "FALSE", "t", "f", "1", "0", "yes", "No", " True "]) | blank
    if col.pg_type in INT_RANGE:
        small = st.integers(0, 50).flatmap(
            lambda n: st.sampled_from([str(n), f"+{n}", f"00{n}", "-0" if n == 0 else str(n)])
        )
        return st.one_of(small, st.integers(0, 2**31 - 1).map(str)).flatmap(_number) | blank
    if col.pg_type == "NUMERIC":
        whole = st.one_of(st.integers(0, 999), st.integers(0, 10**28 - 1))
        fraction = st.text("0123456789", max_size=10)
        text = st.tuples(whole, fraction, st.booleans()).map(lambda t: f"{t[0]}.{t[1]}" if t[1] or t[2] else str(t[0]))
        return text.flatmap(_number) | blank
    if col.pg_type == "DATE":
        return st.dates(date(1990, 1, 1), MONTHS[0]).map(date.isoformat).flatmap(_number) | blank
    raise AssertionError(col.pg_type)


@st.composite
def subsets(draw, pool: list[str]) -> list[str]:
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))


@st.composite
def table_file(draw, table: Table, ids: list[str]) -> CsvFile:
    hidden = [c.name for c in table.columns if c.hidden_at_start]
    present = table.required_columns + draw(st.lists(st.sampled_from(hidden), unique=True) if hidden else st.just([]))
    header = draw(st.permutations(present))
    records = []
    for user_id in ids:
        records.append([user_id if name == table.key else draw(cells(table, table.column(name))) for name in header])
    return CsvFile(header, records, newline=draw(st.sampled_from(["\n", "\r\n"])), bom=draw(st.booleans()))


@st.composite
def histories(draw, max_months: int = len(MONTHS)) -> list[Drop]:
    """1 to max_months valid drops: every id of another table is a user of this or an earlier month."""
    universe = draw(st.lists(KEYS, min_size=1, max_size=30, unique=True))
    months, known = [], []
    for _ in range(draw(st.integers(1, max_months))):
        users = draw(subsets(universe))
        known = known + [u for u in users if u not in known]
        drop = {ROOT.name: draw(table_file(ROOT, users))}
        for table in SCHEMA.tables:
            if table is not ROOT:
                drop[table.name] = draw(table_file(table, draw(subsets(known))))
        months.append(drop)
    return months


# --- running months and reading what they published --------------------------------------------


def fresh(settings: Settings, tmp_path: Path) -> Settings:
    """A lake and a PostgreSQL schema for one hypothesis example."""
    name = uuid.uuid4().hex[:10]
    return settings.with_(
        lake_root=tmp_path / f"lake-{name}",
        months={},
        volume_change_ratio=1e9,  # random drops grow and shrink at will
        postgres=PostgresSettings(dsn=settings.postgres.dsn, schema=f"p_{name}"),
    )


def write_drop(drop: Drop, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, csv_file in drop.items():
        csv_file.write(folder / f"{name}.csv")
    return folder


def lake_rows(lake_root: Path, kind: str, table: Table, as_of: date) -> Rows:
    path = object_file(lake_root, kind, table.name, as_of)
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    rows = duckdb.execute(f"SELECT {columns} FROM read_parquet(?, hive_partitioning = false)", [str(path)]).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def pg_rows(pg: psycopg.Connection, pg_schema: str, table: Table, as_of: date | None = None) -> Rows:
    name = table.name if as_of is None else f"{table.name}_snapshots"
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns), sql.Identifier(pg_schema, name)
    )
    if as_of is not None:
        query = sql.SQL("{} WHERE as_of = {}").format(query, sql.Literal(as_of))
    exists = pg.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."{name}"']).fetchone()[0]
    return {r[0]: tuple(r[1:]) for r in pg.execute(query).fetchall()} if exists else {}


def assert_published(
    s: Settings,
    pg: psycopg.Connection,
    as_of: date,
    record: RunRecord,
    snapshots: dict[str, Rows],
    drops: dict[str, Rows],
    counts: dict[str, dict[str, int]],
) -> None:
    assert record.published
    for table in SCHEMA.tables:
        name = table.name
        assert lake_rows(s.lake_root, "snapshots", table, as_of) == snapshots[name], name
        assert lake_rows(s.lake_root, "raw", table, as_of) == drops[name], name
        assert {k: v for k, v in record.tables[name].items() if k != "rows"} == counts[name], name
        assert record.tables[name]["rows"] == len(snapshots[name])
        assert pg_rows(pg, s.postgres.schema, table, as_of) == snapshots[name], name
        assert pg_rows(pg, s.postgres.schema, table) == snapshots[name], name  # live: the newest month


def assert_month_not_published(s: Settings, pg: psycopg.Connection, as_of: date, live: dict[str, Rows]) -> None:
    lake = Lake(s.lake_root)
    assert RunStore(lake).get(as_of) is None
    assert not month_objects(lake, as_of), "no object of a refused month is written"
    for table in SCHEMA.tables:
        assert pg_rows(pg, s.postgres.schema, table, as_of) == {}, table.name
        assert pg_rows(pg, s.postgres.schema, table) == live.get(table.name, {}), table.name  # untouched
    runs = pg.execute("SELECT to_regclass(%s)", [f'"{s.postgres.schema}"."pipeline_runs"']).fetchone()[0]
    if runs is not None:
        assert (
            pg.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(
                    sql.Identifier(s.postgres.schema, "pipeline_runs")
                ),
                [as_of],
            ).fetchone()[0]
            == 0
        )


@dataclass
class Model:
    """The lake as the model sees it after the months run so far."""

    snapshots: dict[str, Rows] = field(default_factory=lambda: {t.name: {} for t in SCHEMA.tables})


def publish_valid_months(s: Settings, pg: psycopg.Connection, months: list[Drop], folder: Path) -> Model:
    model = Model()
    for i, drop in enumerate(months):
        as_of = MONTHS[i]
        parsed = {t.name: typed(t, drop[t.name]) for t in SCHEMA.tables}
        assert not any(p.rejected_lines for p in parsed.values()), "the generator made an invalid drop"
        merged = {t: merge(model.snapshots[t], parsed[t].rows) for t in parsed}
        snapshots = {t: m[0] for t, m in merged.items()}
        assert gate_passes(snapshots, as_of), "the generator made a drop the quality rules refuse"
        record = run_month(s, as_of, write_drop(drop, folder / f"m{i}"))
        assert_published(
            s,
            pg,
            as_of,
            record,
            snapshots,
            {t: p.rows for t, p in parsed.items()},
            {t: m[1] for t, m in merged.items()},
        )
        model.snapshots = snapshots
    return model


# --- (a) valid drops ---------------------------------------------------------------------------


@examples(15)
@given(months=histories())
def test_random_valid_months_publish_exactly_the_model(months: list[Drop], settings: Settings, pg, tmp_path: Path):
    s = fresh(settings, tmp_path)
    publish_valid_months(s, pg, months, tmp_path / s.postgres.schema)


# --- (b) corrupted drops -----------------------------------------------------------------------

BAD_NUMBERS = [
    "NaN",
    "inf",
    "1e5",
    "1,000",
    "-1",
    "-0.5",
    "12abc",
    "0x10",
    "1.12345678901",
    "99999999999",
    "1 000",
    "+",
    ".",
    "１２",
]
BAD_DATES = ["2024-02-30", "2024-13-01", "31/01/2024", "0000-01-01", "2099-01-01", "2024-1-5", "20240101"]
BAD_BOOLEANS = ["maybe", "Y", "N", "TRUE ", "2", "oui", "on"]
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cn")), max_size=12)


@st.composite
def corruption(draw, drop: Drop) -> str:
    """Break one thing of one file of ``drop`` in place; returns what was done, for the failure report."""
    name = draw(st.sampled_from(sorted(drop)))
    csv_file = drop[name]
    rows = [i for i, r in enumerate(csv_file.records) if r is not None]
    i = draw(st.sampled_from(rows))
    record = csv_file.records[i]
    column = draw(st.integers(0, len(record) - 1))
    kind = draw(
        st.sampled_from(
            [
                "text",
                "number",
                "date",
                "boolean",
                "nul",
                "not utf-8",
                "drop field",
                "add field",
                "key",
                "duplicate row",
                "blank line",
            ]
        )
    )
    if kind == "text":
        record[column] = draw(ANY_TEXT)
    elif kind == "number":
        record[column] = draw(st.sampled_from(BAD_NUMBERS))
    elif kind == "date":
        record[column] = draw(st.sampled_from(BAD_DATES))
    elif kind == "boolean":
        record[column] = draw(st.sampled_from(BAD_BOOLEANS))
    elif kind == "nul":
        at = draw(st.integers(0, len(record[column])))
        record[column] = record[column][:at] + "\0" + record[column][at:]
    elif kind == "not utf-8":
        at = draw(st.integers(0, len(record[column])))
        record[column] = record[column][:at] + "\udce9" + record[column][at:]  # the Latin-1 byte of é
    elif kind == "drop field" and len(record) > 1:
        del record[column]
    elif kind == "add field":
        record.insert(column, draw(ANY_TEXT))
        if record[-1] == "":
            # A row whose one extra field leaves it ending in an empty field is the known gap pinned by
            # tests/test_bad_input.py::test_a_row_with_one_field_too_many_ending_empty_is_refused (DuckDB's
            # reader drops a trailing empty field); the model would refuse it, the pipeline does not yet.
            record[-1] = "x"
    elif kind == "key":
        keys = [r[csv_file.header.index("user_id")] for r in csv_file.records if r is not None]
        record[csv_file.header.index("user_id")] = draw(st.sampled_from(keys) | KEYS | ANY_TEXT)
    elif kind == "duplicate row":
        csv_file.records.insert(draw(st.integers(0, len(csv_file.records))), list(record))
    elif kind == "blank line":
        csv_file.records.insert(draw(st.integers(0, len(csv_file.records))), None)
    return f"{kind} in {name}.csv record {i} column {column}"


@st.composite
def corrupted_histories(draw) -> tuple[list[Drop], list[str]]:
    months = draw(histories(max_months=2))
    done = [draw(corruption(months[-1])) for _ in range(draw(st.integers(1, 2)))]
    return months, done


@examples(20)
@given(case=corrupted_histories())
def test_random_corruptions_are_refused_with_nothing_published_or_match_the_model(
    case: tuple[list[Drop], list[str]], settings: Settings, pg, tmp_path: Path
):
    months, corruptions = case
    s = fresh(settings, tmp_path)
    folder = tmp_path / s.postgres.schema
    model = publish_valid_months(s, pg, months[:-1], folder)
    as_of, drop = MONTHS[len(months) - 1], months[-1]
    parsed = {t.name: typed(t, drop[t.name]) for t in SCHEMA.tables}
    source = write_drop(drop, folder / "last")
    refusing = [t for t in SCHEMA.tables if parsed[t.name].rejected_lines]
    event(f"corruptions: {', '.join(sorted({c.split(' in ')[0] for c in corruptions}))}")
    if refusing:
        event("outcome: rows rejected")  # every file with a bad row is named, in schema order (issue #13)
        with pytest.raises((RejectedRowsError, DropErrors)) as raised:
            run_month(s, as_of, source)
        errors = raised.value.errors if isinstance(raised.value, DropErrors) else [raised.value]
        assert [type(e) for e in errors] == [RejectedRowsError] * len(refusing)
        named = [t.name for t in refusing]
        assert [next(n for n in named if f"{n}.csv" in str(e)) for e in errors] == named
        for table in refusing:
            rejects = Lake(s.lake_root).rejects(table.name, as_of) / "rejects.parquet"
            lines = {r[0] for r in duckdb.execute("SELECT line FROM read_parquet(?)", [str(rejects)]).fetchall()}
            assert lines == parsed[table.name].rejected_lines
        assert_month_not_published(s, pg, as_of, model.snapshots if len(months) > 1 else {})
        return
    merged = {t: merge(model.snapshots[t], parsed[t].rows) for t in parsed}
    snapshots = {t: m[0] for t, m in merged.items()}
    if not gate_passes(snapshots, as_of):
        event("outcome: refused by a quality rule")
        with pytest.raises(QualityGateError):
            run_month(s, as_of, source)
        assert_month_not_published(s, pg, as_of, model.snapshots if len(months) > 1 else {})
        return
    event("outcome: accepted")
    record = run_month(s, as_of, source)
    assert_published(
        s,
        pg,
        as_of,
        record,
        snapshots,
        {t: p.rows for t, p in parsed.items()},
        {t: m[1] for t, m in merged.items()},
    )
