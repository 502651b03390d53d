"""stage_table on tiny CSV files in tmp_path, with an in-memory DuckDB: typing, rejects, header errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipeline import stage
from pipeline.errors import DropError, RejectedRowsError
from pipeline.schema import Table, parse_schema
from pipeline.stage import StageResult, stage_table

AS_OF = date(2024, 1, 31)
SCHEMA = parse_schema(
    """
    CREATE TABLE things (
        user_id TEXT PRIMARY KEY,
        n       INT,
        amount  NUMERIC,
        day     DATE,
        flag    BOOLEAN,
        note    TEXT,
        extra   BIGINT -- hidden at start
    );
    CREATE TABLE others (
        user_id TEXT PRIMARY KEY,
        note    TEXT
    );
    """
)
THINGS = SCHEMA.table("things")
HEADER = "user_id,n,amount,day,flag,note"
FIX_FILE = "fix the export (or the file) and run the month again"
LONG = 200_000  # characters: above the csv module's default field limit (131,072)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as c:
        yield c


def write_drop(folder: Path, table: str, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{table}.csv"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def stage_drop(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, *lines: str, table: Table = THINGS, ratio: float = 0.0
) -> StageResult:
    write_drop(tmp_path / "drop", table.name, *lines)
    return stage_table(
        con,
        table,
        tmp_path / "drop",
        AS_OF,
        tmp_path / "out" / f"{table.name}.parquet",
        tmp_path / "rejects" / table.name,
        max_reject_ratio=ratio,
    )


def staged_rows(tmp_path: Path, table: str = "things") -> list[tuple[object, ...]]:
    return duckdb.execute(
        "SELECT * FROM read_parquet(?) ORDER BY user_id", [str(tmp_path / "out" / f"{table}.parquet")]
    ).fetchall()


def rejects(tmp_path: Path, table: str = "things") -> list[tuple[object, ...]]:
    return duckdb.execute(
        'SELECT line, "column", reason FROM read_parquet(?) ORDER BY line, "column"',
        [str(tmp_path / "rejects" / table / "rejects.parquet")],
    ).fetchall()


# --- typing -------------------------------------------------------------------------------------------


def test_valid_values_are_typed_exactly_and_a_hidden_column_absent_from_the_drop_is_null(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    result = stage_drop(
        con,
        tmp_path,
        HEADER,
        "u1, 7 ,0.1234567891,2024-01-31,Yes,  Month-to-month ",
        "u2,-2147483648,-123456789012345678901234567.5,1999-12-31,f,",
        "u3,,,,,",
    )
    assert (result.rows, result.rejected, result.missing_columns) == (3, 0, ["extra"])
    assert staged_rows(tmp_path) == [
        ("u1", 7, Decimal("0.1234567891"), date(2024, 1, 31), True, "  Month-to-month ", None),
        ("u2", -2147483648, Decimal("-123456789012345678901234567.5"), date(1999, 12, 31), False, None, None),
        ("u3", None, None, None, None, None, None),
    ]


def test_staged_parquet_has_the_declared_lake_types(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    stage_drop(con, tmp_path, HEADER, "u1,1,1.5,2024-01-31,true,x")
    described = duckdb.execute(
        "DESCRIBE SELECT * FROM read_parquet(?)", [str(tmp_path / "out" / "things.parquet")]
    ).fetchall()
    assert [(name, kind) for name, kind, *_ in described] == [
        ("user_id", "VARCHAR"),
        ("n", "INTEGER"),
        ("amount", "DECIMAL(38,10)"),
        ("day", "DATE"),
        ("flag", "BOOLEAN"),
        ("note", "VARCHAR"),
        ("extra", "BIGINT"),
    ]


def test_columns_may_come_in_any_order(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    stage_drop(con, tmp_path, "note,flag,extra,day,amount,n,user_id", "x,no,9000000000,2024-02-29,2,3,u1")
    assert staged_rows(tmp_path) == [("u1", 3, Decimal(2), date(2024, 2, 29), False, "x", 9000000000)]


# --- rejects --------------------------------------------------------------------------------------------


def test_a_bad_value_refuses_the_file_naming_its_line_column_and_reason(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    with pytest.raises(RejectedRowsError) as refused:
        stage_drop(con, tmp_path, HEADER, "u1,1,1,2024-01-01,t,", "u2,twelve,1,2024-01-01,t,")
    message = str(refused.value)
    assert message.startswith(
        f"{tmp_path / 'drop' / 'things.csv'}: 1 of 2 rows rejected (any reject fails the month):\n"
        '  things.csv, line 3, column n: "twelve" is not a whole number\n'
        "      raw: 'u2,twelve,1,2024-01-01,t,'\n"
    )
    assert rejects(tmp_path) == [(3, "n", '"twelve" is not a whole number')]
    assert not (tmp_path / "out" / "things.parquet").exists()


def test_every_bad_cell_of_a_row_is_a_reject_and_the_row_counts_once(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    result = stage_drop(
        con, tmp_path, HEADER, "u1,1,1,2024-01-01,t,", "u2,1e3,1.00000000001,2024-02-30,maybe,", ratio=0.5
    )
    assert (result.rows, result.rejected) == (1, 1)
    assert rejects(tmp_path) == [
        (
            3,
            "amount",
            '"1.00000000001" has more than 10 decimal places; the lake keeps NUMERIC exactly and will not round it',
        ),
        (3, "day", '"2024-02-30" is not a calendar date'),
        (3, "flag", '"maybe" is not a boolean; accepted: True/False, true/false, t/f, 1/0, Yes/No'),
        (3, "n", '"1e3" uses exponent notation; write the plain number'),
    ]
    assert [r[0] for r in staged_rows(tmp_path)] == ["u1"]


def test_an_empty_key_is_rejected(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    stage_drop(con, tmp_path, HEADER, "u1,1,1,2024-01-01,t,", " \t,1,1,2024-01-01,t,", ratio=0.5)
    assert rejects(tmp_path) == [(3, "user_id", "empty user_id (blank, or only invisible characters)")]


def test_a_reject_after_a_quoted_line_break_is_reported_on_its_physical_line(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    stage_drop(con, tmp_path, HEADER, 'u1,1,1,2024-01-01,t,"two', 'lines"', "u2,x,1,2024-01-01,t,", ratio=0.5)
    assert rejects(tmp_path) == [(4, "n", '"x" is not a whole number')]
    assert staged_rows(tmp_path)[0][5] == "two\nlines"


def test_a_row_with_too_many_fields_is_a_structural_reject(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    stage_drop(con, tmp_path, HEADER, "u1,1,1,2024-01-01,t,", "u2,1,1,2024-01-01,t,,surplus", ratio=0.5)
    assert rejects(tmp_path) == [(3, None, stage.STRUCTURAL_REASONS["TOO MANY COLUMNS"])]


def test_a_repeated_key_rejects_every_row_of_it_listing_its_lines(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    stage_drop(con, tmp_path, HEADER, "u1,1,,,,", "u2,2,,,,", "u1,3,,,,", "u3,4,,,,", ratio=0.6)
    reason = "user_id 'u1' appears 2 times (lines 2, 4); a drop holds one row per user_id"
    assert rejects(tmp_path) == [(2, "user_id", reason), (4, "user_id", reason)]
    assert [r[0] for r in staged_rows(tmp_path)] == ["u2", "u3"]


def test_a_key_repeated_20000_times_is_explained_in_a_bounded_message(  # issue #20
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    with pytest.raises(RejectedRowsError) as refused:
        stage_drop(con, tmp_path, HEADER, *(f"u1,{i},,,," for i in range(20_000)))
    reason = "user_id 'u1' appears 20000 times (lines 2, 3, 4, 5, 6 and 19995 more); a drop holds one row per user_id"
    assert f"things.csv, line 2, column user_id: {reason}\n" in str(refused.value)
    assert len(str(refused.value)) < 2_000
    lengths = duckdb.execute(
        "SELECT count(*), max(length(reason)), count(DISTINCT reason) FROM read_parquet(?)",
        [str(tmp_path / "rejects" / "things" / "rejects.parquet")],
    ).fetchone()
    assert lengths == (20_000, len(reason), 1)


# --- header and file errors ---------------------------------------------------------------------------


def test_a_header_with_a_missing_and_an_unknown_column_is_refused_naming_both(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    with pytest.raises(DropError) as refused:
        stage_drop(con, tmp_path, "user_id,n,amount,day,flag,notes", "u1,1,1,2024-01-01,t,x")
    assert str(refused.value) == (
        f"{tmp_path / 'drop' / 'things.csv'}: line 1: missing column(s): note; unknown column(s): notes. "
        f"things has columns user_id, n, amount, day, flag, note, extra (declared in sql/schema.sql); {FIX_FILE}"
    )


def test_a_column_named_twice_is_refused(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with pytest.raises(DropError) as refused:
        stage_drop(con, tmp_path, f"{HEADER},n", "u1,1,1,2024-01-01,t,x,1")
    assert str(refused.value) == (
        f"{tmp_path / 'drop' / 'things.csv'}: line 1: column(s) named more than once: n; {FIX_FILE}"
    )


def test_a_semicolon_delimited_file_is_refused_with_the_delimiter_named(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    with pytest.raises(DropError) as refused:
        stage_drop(con, tmp_path, HEADER.replace(",", ";"), "u1;1;1;2024-01-01;t;x")
    assert str(refused.value) == (
        f"{tmp_path / 'drop' / 'things.csv'}: line 1: the header is one column split by ';'; files must be "
        "comma-delimited; re-export with ',' as the delimiter"
    )


def test_a_header_without_rows_is_refused(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with pytest.raises(DropError) as refused:
        stage_drop(con, tmp_path, HEADER)
    assert str(refused.value) == (
        f"{tmp_path / 'drop' / 'things.csv'}: the file has a header but no data rows; {FIX_FILE}"
    )


# --- the slow path in two threads -----------------------------------------------------------------------


def test_two_interleaved_slow_path_reads_both_read_fields_longer_than_the_csv_default(tmp_path: Path) -> None:
    """Thread A starts reading, then B; A finishes while B still reads a long field. When each read set
    and restored the process-wide csv field limit, A's restore pulled the limit from under B."""
    first, second = (
        write_drop(tmp_path / name, "others", "user_id,note", "u1,x", f'u2,"{"y" * LONG}"') for name in "ab"
    )
    a_started, b_started, a_done = threading.Event(), threading.Event(), threading.Event()
    texts: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def read(name: str, path: Path, started: threading.Event, wait_for: threading.Event | None) -> None:
        try:
            if wait_for is a_started:
                a_started.wait(10)
            spans = stage._record_spans(path)
            head = next(spans)
            started.set()
            (b_started if name == "a" else a_done).wait(10)
            texts[name] = [text for _, text, _ in (head, *spans)]
        except BaseException as e:  # reported by the assertions below
            errors.append(e)
        finally:
            if name == "a":
                a_done.set()

    threads = [
        threading.Thread(target=read, args=("a", first, a_started, None)),
        threading.Thread(target=read, args=("b", second, b_started, a_started)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    cut = f"… (cut: the record is {LONG + 5} characters)"  # the raw text a reject keeps is cut, its length told
    for name in "ab":
        assert texts[name][0] == "u1,x"
        assert texts[name][1].startswith('u2,"yyy') and texts[name][1].endswith(cut)


def test_two_tables_staged_in_threads_both_explain_rejects_with_long_fields(tmp_path: Path) -> None:
    others = SCHEMA.table("others")
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(table: Table, lines: list[str]) -> None:
        try:
            with duckdb.connect() as c:
                results[table.name] = stage_drop(c, tmp_path, *lines, table=table, ratio=1.0).rejected
        except BaseException as e:  # reported by the assertions below
            errors.append(e)

    long_note = "z" * LONG
    rows = [f'u{i},"{long_note}"' for i in range(20)]
    threads = [
        threading.Thread(target=run, args=(others, ["user_id,note", *rows])),
        threading.Thread(target=run, args=(THINGS, [HEADER, *(f'u{i},x,,,,"{long_note}"' for i in range(20))])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert results == {"others": 20, "things": 20}
