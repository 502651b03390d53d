"""Hostile input (issue #5): one test per row of the table in docs/bad-input.md, generated from CASES.

Every case copies the seed month_000 (7,000 users), breaks it one way, and runs January. A refused
case must say which file, line, column and why, and what to do; write its rejects where rows were
rejected; and publish nothing (no lake partition, no manifest, no PostgreSQL rows). An accepted case
must publish, with the value as expected in the lake (and in PostgreSQL where the case is about it).

Most cases run the month in this process (``run_month``) and assert the PipelineError's message; the
cases marked ``luigi=True`` also run the real command, to prove the exit code and that the person
running it reads the message, not a traceback.

    python -m tests.test_bad_input          # rewrite docs/bad-input.md from CASES
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from pipeline.errors import DropError, DropErrors, PipelineError, RejectedRowsError
from pipeline.lakefs import Lake
from pipeline.publish import run_month
from pipeline.schema import PROJECT_ROOT, load_schema
from tests.conftest import JAN, SEEDS, object_file, record_file, snapshot_file
from tests.drops import (
    add_column,
    drop_column,
    edit_rows,
    lines_of,
    read_rows,
    rename_user,
    reorder_columns,
    replace_bytes,
    replace_line,
    seed_copy,
    set_value,
    user_id_at,
    write_lines,
)

TABLES = load_schema().table_names
DOC = PROJECT_ROOT / "docs" / "bad-input.md"
EXIT_FAILED = 30  # luigi.cfg [retcode] task_failed
FIX_ROWS = "Fix the export and run the month again"
FIX_FILE = "fix the export (or the file) and run the month again"
SQL_ID = "x'\"); DROP TABLE users; --"
MB = 1 << 20
DUPLICATED = user_id_at(SEEDS / "month_000", 3, "labels")  # the seed is checked in: its ids are fixed

ACCEPTED, REFUSED_FILE, REJECTED_ROWS = "accepted", "refused: the file", "refused: rows rejected"


@dataclass(frozen=True)
class Row:
    """A rejected row as the message lists it and rejects.parquet stores it."""

    file: str
    line: int
    column: str | None
    reason: str
    raw_has: str = ""  # a piece of the raw text the reject must keep (the bad value)

    def listed(self) -> str:
        column = f", column {self.column}" if self.column else ""
        return f"{self.file}, line {self.line}{column}: {self.reason}"


@dataclass(frozen=True)
class Published:
    """What an accepted case can look at: the lake and PostgreSQL after the month."""

    lake_root: Path
    pg: psycopg.Connection
    pg_schema: str
    drop: Path

    def lake(self, table: str, user_id: str, column: str, kind: str = "snapshots") -> object:
        rows = duckdb.execute(
            f"SELECT {column} FROM read_parquet(?, hive_partitioning = false) WHERE user_id = ?",
            [str(object_file(self.lake_root, kind, table, JAN)), user_id],
        ).fetchall()
        assert len(rows) == 1, (table, user_id, rows)
        return rows[0][0]

    def postgres(self, table: str, user_id: str, column: str) -> object:
        rows = self.pg.execute(
            sql.SQL("SELECT {} FROM {} WHERE user_id = %s").format(
                sql.Identifier(column), sql.Identifier(self.pg_schema, table)
            ),
            [user_id],
        ).fetchall()
        assert len(rows) == 1, (table, user_id, rows)
        return rows[0][0]


@dataclass(frozen=True)
class Case:
    name: str  # the row's name: pytest id and first column of the table
    given: str  # the input, in words
    make: Callable[[Path], object]  # breaks a copy of the seed month in place
    outcome: str
    says: tuple[str, ...] = ()  # refused: words the message must contain (file, reason, what to do)
    rows: tuple[Row, ...] = ()  # refused, rows rejected: each listed in the message and in rejects.parquet
    lands: Callable[[Published], None] | None = None  # accepted: the value as expected in the lake
    why: str = ""  # the decision, for the table
    luigi: bool = False  # also run through the real luigi command
    tags: tuple[str, ...] = field(default=())

    def shown(self) -> str:
        if self.outcome == ACCEPTED:
            return self.why
        said = [f"`{r.listed()}`" for r in self.rows] or [f"`{w}`" for w in self.says]
        return " … ".join(said) + (f" — {self.why}" if self.why else "")


# --- how each case breaks the drop -------------------------------------------------------------


def _value(table: str, row: int, column: str, value: str) -> Callable[[Path], object]:
    return lambda d: set_value(d, table, row, column, value)


def _missing_folder(drop: Path) -> None:
    for path in drop.iterdir():
        path.unlink()
    drop.rmdir()


def _symlink_outside(drop: Path) -> None:
    outside = drop.parent / "elsewhere"
    outside.mkdir()
    (drop / "labels.csv").rename(outside / "labels.csv")
    (drop / "labels.csv").symlink_to(outside / "labels.csv")


def _symlink_inside(drop: Path) -> None:
    (drop / "exports").mkdir()
    (drop / "labels.csv").rename(drop / "exports" / "labels.csv")
    (drop / "labels.csv").symlink_to(Path("exports") / "labels.csv")


def _directory(drop: Path) -> None:
    (drop / "labels.csv").unlink()
    (drop / "labels.csv").mkdir()


def _header_only(drop: Path) -> None:
    write_lines(drop / "payments_agg_90d.csv", lines_of(drop / "payments_agg_90d.csv")[:1])


def _duplicated_column(drop: Path) -> None:
    path = drop / "labels.csv"
    write_lines(path, [f"{line},{line.split(',')[1]}" for line in lines_of(path)])


def _delimited(delimiter: str) -> Callable[[Path], None]:
    def make(drop: Path) -> None:
        path = drop / "labels.csv"
        write_lines(path, [line.replace(",", delimiter) for line in lines_of(path)])

    return make


def _trailing_comma(drop: Path) -> None:
    write_lines(drop / "labels.csv", [f"{line}," for line in lines_of(drop / "labels.csv")])


def _bom_crlf(drop: Path) -> None:
    write_lines(drop / "users.csv", lines_of(drop / "users.csv"), newline="\r\n", bom=True)


def _cr_only(drop: Path) -> None:
    write_lines(drop / "users.csv", lines_of(drop / "users.csv"), newline="\r")


def _utf16(drop: Path) -> None:
    path = drop / "labels.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))


def _blank_lines(drop: Path) -> None:
    lines = lines_of(drop / "users.csv")
    write_lines(drop / "users.csv", [*lines[:4], "", "", *lines[4:], "", ""])


def _blank_lines_then_bad(drop: Path) -> None:
    lines = lines_of(drop / "labels.csv")
    write_lines(drop / "labels.csv", [*lines[:4], "", "", *lines[4:]])
    replace_line(drop / "labels.csv", 12, lines[10].split(",")[0] + ",maybe")  # data row 9, two lines down


def _multiline_then_bad(drop: Path) -> None:
    rename_user(drop, user_id_at(drop, 0, "labels"), "first line\nsecond line")
    set_value(drop, "labels", 9, "churn_label", "maybe")


def _stray_quote(drop: Path) -> None:
    lines = lines_of(drop / "labels.csv")
    replace_line(drop / "labels.csv", 3, '"' + lines[3])


def _extra_field(drop: Path) -> None:
    replace_line(drop / "usage_agg_30d.csv", 7, lines_of(drop / "usage_agg_30d.csv")[7] + ",7")


def _missing_field(drop: Path) -> None:
    line = lines_of(drop / "support_agg_90d.csv")[4]
    replace_line(drop / "support_agg_90d.csv", 4, line.rsplit(",", 1)[0])


def _huge_line(drop: Path) -> None:
    set_value(drop, "users", 2, "user_gender", "F" * (5 << 20))


def _latin1(drop: Path) -> None:
    set_value(drop, "users", 4, "user_gender", "Fémale")
    replace_bytes(drop / "users.csv", "Fémale".encode(), "Fémale".encode("latin-1"))


def _latin1_header(drop: Path) -> None:
    replace_line(drop / "labels.csv", 0, "user_id,churn_label,étiquette")
    replace_bytes(drop / "labels.csv", "étiquette".encode(), "étiquette".encode("latin-1"))


def _duplicate_conflicting(drop: Path) -> None:
    def change(rows: list[dict[str, str]]) -> None:
        rows[7]["user_id"] = rows[3]["user_id"]
        rows[7]["churn_label"] = "True" if rows[3]["churn_label"] == "False" else "False"

    edit_rows(drop / "labels.csv", change)


def _duplicate_identical(drop: Path) -> None:
    edit_rows(drop / "labels.csv", lambda rows: [*rows, dict(rows[3])])


def _renamed(new_id: str) -> Callable[[Path], None]:
    return lambda d: rename_user(d, user_id_at(d, 0), new_id)


def _spaced_numbers(drop: Path) -> None:
    set_value(drop, "usage_agg_30d", 0, "skips_7d", " 12 ")
    set_value(drop, "usage_agg_30d", 0, "watch_hours_30d", " 3.5 ")


def _add_on(drop: Path) -> None:
    add_column(drop / "subscriptions.csv", "add_on_security", "Yes")


# --- what an accepted case must find -----------------------------------------------------------


def _typed(pg_type: str, text: str) -> object:
    """The lake value of a seed cell (the seed holds only plain, valid values)."""
    if text == "":
        return None
    return {"BOOLEAN": lambda t: t == "True", "INT": int, "NUMERIC": Decimal, "DATE": date.fromisoformat}.get(
        pg_type, str
    )(text)


def _same_as_seed(table: str, row: int) -> Callable[[Published], None]:
    def check(p: Published) -> None:
        expected = read_rows(p.drop / f"{table}.csv")[1][row]
        for column in load_schema().table(table).value_columns:
            got = p.lake(table, expected["user_id"], column.name)
            assert got == _typed(column.pg_type, expected[column.name]), (column.name, got, expected)

    return check


def _both(*checks: Callable[[Published], None]) -> Callable[[Published], None]:
    return lambda p: [check(p) for check in checks] and None


def _lands(table: str, row: int, column: str, value: object) -> Callable[[Published], None]:
    def check(p: Published) -> None:
        user = user_id_at(p.drop, row, table)
        assert p.lake(table, user, column) == value
        assert p.lake(table, user, column, kind="raw") == value
        assert p.postgres(table, user, column) == value

    return check


def _id_round_trips(new_id: str) -> Callable[[Published], None]:
    def check(p: Published) -> None:
        for table in TABLES:
            assert p.lake(table, new_id, "user_id") == new_id
            assert p.postgres(table, new_id, "user_id") == new_id
        for table in TABLES:  # every table is still there, whole: the id was data, never SQL
            live = sql.Identifier(p.pg_schema, table)
            assert p.pg.execute(sql.SQL("SELECT count(*) FROM {}").format(live)).fetchone()[0] == 7000, table
            snapshots = sql.Identifier(p.pg_schema, f"{table}_snapshots")
            assert (
                p.pg.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(snapshots), [new_id]
                ).fetchone()[0]
                == 1
            )

    return check


def _user_count(n: int) -> Callable[[Published], None]:
    def check(p: Published) -> None:
        assert (
            duckdb.execute(
                "SELECT count(*) FROM read_parquet(?, hive_partitioning = false)",
                [str(snapshot_file(p.lake_root, "users", JAN))],
            ).fetchone()[0]
            == n
        )
        assert p.lake("users", user_id_at(p.drop, 6999), "user_is_senior") in (True, False)

    return check


# --- the table's rows, built by outcome -------------------------------------------------------------


def accepted(
    name: str,
    given: str,
    make: Callable[[Path], object],
    lands: Callable[[Published], None],
    why: str,
    luigi: bool = False,
) -> Case:
    return Case(name, given, make, ACCEPTED, lands=lands, why=why, luigi=luigi)


def refused(
    name: str, given: str, make: Callable[[Path], object], *says: str, why: str = "", luigi: bool = False
) -> Case:
    return Case(name, given, make, REFUSED_FILE, says=says, why=why, luigi=luigi)


def rejected(
    name: str, given: str, make: Callable[[Path], object], *rows: Row, why: str = "", luigi: bool = False
) -> Case:
    return Case(name, given, make, REJECTED_ROWS, rows=rows, why=why, luigi=luigi)


def row(table: str, line: int, column: str | None, reason: str, raw_has: str = "") -> Row:
    return Row(f"{table}.csv", line, column, reason, raw_has)


def bad_value(name: str, table: str, data_row: int, column: str, value: str, reason: str, why: str = "") -> Case:
    """One cell set to ``value``; its reject is on line data_row + 2 (the header is line 1)."""
    given = f"`{column}` is `{value}`" if "," not in value else f'`{column}` is `"{value}"`'
    return rejected(
        name,
        given,
        _value(table, data_row, column, value),
        row(table, data_row + 2, column, f'"{value}" {reason}', value),
        why=why,
    )


USAGE = "usage_agg_30d"
EMPTY_ID = "empty user_id (blank, or only invisible characters)"
BOOLEANS = "is not a boolean; accepted: True/False, true/false, t/f, 1/0, Yes/No"
NUL = "contains a NUL byte (\\x00), which PostgreSQL cannot store; remove it from the export"
NOT_UTF8 = "bytes that are not UTF-8 (Latin-1?); re-export the file as UTF-8"
NOT_FINITE, EXPONENT = "is not a finite number", "uses exponent notation; write the plain number"
THOUSANDS = "has a thousands separator; write the plain number"
TOO_LONG = "characters long; a {} has at most 500 (a stray quote that swallowed the lines after it?)"
DUPLICATE = f"user_id '{DUPLICATED}' appears 2 times (lines {{}}); a drop holds one row per user_id"
DELIMITER = "re-export with ',' as the delimiter"
STRAY_QUOTE = (
    "a stray quote: a quote inside an unquoted value, or a quoted field that is never closed (it "
    "swallows the lines after it); quote the field and double inner quotes"
)
USERS_REVERSED = list(reversed(load_schema().table("users").column_names))

CASES: list[Case] = [
    # --- the drop folder and its files
    refused(
        "drop folder does not exist",
        "`--source` names a folder that is not there",
        _missing_folder,
        "drop folder does not exist",
        "pass --source DIR",
        luigi=True,
    ),
    refused(
        "missing file",
        "`labels.csv` absent from the drop",
        lambda d: (d / "labels.csv").unlink(),
        "labels.csv: missing file",
        "a drop needs labels.csv (found: payments_agg_90d.csv",
        luigi=True,
    ),
    refused("file is a directory", "`labels.csv` is a folder", _directory, "labels.csv: not a regular file"),
    refused(
        "symlink outside the drop folder",
        "`labels.csv` links to a file in another folder",
        _symlink_outside,
        "labels.csv: is a link to",
        "outside the drop folder",
        "copy the file into the drop instead",
        why="a link must not let a drop read files the export never wrote",
        luigi=True,
    ),
    accepted(
        "symlink inside the drop folder",
        "`labels.csv` links to `exports/labels.csv` in the same drop",
        _symlink_inside,
        _lands("labels", 0, "churn_label", False),
        why="the link stays inside the drop: read as the file it points to",
    ),
    refused(
        "zero-byte file",
        "`users.csv` is empty",
        lambda d: (d / "users.csv").write_bytes(b""),
        "users.csv: file is empty (0 bytes), not even a header line",
        FIX_FILE,
    ),
    refused(
        "header only",
        "`payments_agg_90d.csv` has its header and no rows",
        _header_only,
        "payments_agg_90d.csv: the file has a header but no data rows",
        FIX_FILE,
        why="an export that produced nothing is broken, not a month without news",
    ),
    # --- the header
    refused(
        "missing column",
        "`users.csv` without `user_gender`",
        lambda d: drop_column(d / "users.csv", "user_gender"),
        "users.csv: line 1: missing column(s): user_gender",
        "declared in sql/schema.sql",
        FIX_FILE,
    ),
    refused(
        "unknown column",
        "`labels.csv` with an extra `favourite_colour` column",
        lambda d: add_column(d / "labels.csv", "favourite_colour", "blue"),
        "labels.csv: line 1: unknown column(s): favourite_colour",
        FIX_FILE,
        why="a new column is a contract change: add it to sql/schema.sql first",
    ),
    refused(
        "duplicated column name",
        "`labels.csv` header `user_id,churn_label,churn_label`",
        _duplicated_column,
        "labels.csv: line 1: column(s) named more than once: churn_label",
        FIX_FILE,
    ),
    refused(
        "trailing comma on every line",
        "`labels.csv` lines end with `,`",
        _trailing_comma,
        "labels.csv: line 1: unknown column(s): '' (an empty name: a trailing comma?)",
    ),
    accepted(
        "columns in another order",
        "`users.csv` columns reversed",
        lambda d: reorder_columns(d / "users.csv", USERS_REVERSED),
        _same_as_seed("users", 5),
        why="columns are bound by name from the header, never by position",
    ),
    accepted(
        "hidden column present",
        "`subscriptions.csv` gains `add_on_security` (hidden at start)",
        _add_on,
        _lands("subscriptions", 0, "add_on_security", True),
        why="columns marked hidden at start may be absent (NULL) or present",
    ),
    refused(
        "semicolon-delimited file",
        "`labels.csv` split by `;`",
        _delimited(";"),
        "labels.csv: line 1: the header is one column split by ';'",
        DELIMITER,
        why="one delimiter, no sniffing: a guess that is wrong once corrupts a month silently",
    ),
    refused(
        "tab-delimited file",
        "`labels.csv` split by tabs",
        _delimited("\t"),
        "labels.csv: line 1: the header is one column split by '\\t'",
        DELIMITER,
    ),
    # --- bytes and line endings
    accepted(
        "UTF-8 BOM and CRLF",
        "`users.csv` starts with a BOM, lines end with CRLF",
        _bom_crlf,
        _same_as_seed("users", 0),
        why="what spreadsheet exports write; the last column keeps no `\\r`",
    ),
    accepted(
        "CR-only line endings",
        "`users.csv` lines end with a lone CR (old Mac)",
        _cr_only,
        _same_as_seed("users", 6999),
        why="DuckDB and the line finder both split on a lone CR",
    ),
    accepted(
        "blank lines",
        "`users.csv` with blank lines between rows and at the end",
        _blank_lines,
        _user_count(7000),
        why="blank lines are skipped, not rows",
    ),
    rejected(
        "a reject after blank lines names its own line",
        "two blank lines, then `maybe` in a later row",
        _blank_lines_then_bad,
        row("labels", 13, "churn_label", f'"maybe" {BOOLEANS}'),
        why="line numbers are physical lines, blank ones included",
    ),
    rejected(
        "Latin-1 bytes",
        "`users.csv` has `Fémale` encoded as Latin-1 in row 5",
        _latin1,
        row("users", 6, "user_gender", NOT_UTF8, "F"),
        luigi=True,
    ),
    refused(
        "Latin-1 header",
        "`labels.csv` header has a Latin-1 byte",
        _latin1_header,
        "labels.csv: line 1: header is not UTF-8 (byte 21); re-export the file as UTF-8",
    ),
    refused(
        "UTF-16 file",
        "`labels.csv` saved as UTF-16 (with BOM)",
        _utf16,
        "labels.csv: line 1: header is not UTF-8 (byte 1); re-export the file as UTF-8",
    ),
    rejected(
        "NUL byte in a text value",
        "`user_gender` is `Fe<NUL>male`",
        _value("users", 2, "user_gender", "Fe\0male"),
        row("users", 4, "user_gender", NUL, "Fe\0male"),
    ),
    rejected(
        "NUL byte in a number",
        "`skips_7d` is `1<NUL>2`",
        _value(USAGE, 2, "skips_7d", "1\x002"),
        row(USAGE, 4, "skips_7d", NUL, "1\x002"),
    ),
    rejected(
        "NUL byte in user_id",
        "`user_id` is `ab<NUL>c` in `labels.csv`",
        _value("labels", 2, "user_id", "ab\0c"),
        row("labels", 4, "user_id", NUL, "ab\0c"),
    ),
    # --- fields and quoting
    accepted(
        "quoted field with an embedded comma",
        'a user_id `"Doe, Jane"` in every file',
        _renamed("Doe, Jane"),
        _id_round_trips("Doe, Jane"),
        why="RFC 4180 quoting; the value round-trips to PostgreSQL",
    ),
    accepted(
        "quoted field with an embedded newline",
        "a user_id with a quoted line break, in every file",
        _renamed("first line\nsecond line"),
        _id_round_trips("first line\nsecond line"),
        why="the line break is part of the value, in the lake and in PostgreSQL",
    ),
    rejected(
        "a reject after a multi-line field names its physical line",
        "a quoted line break in row 1, then `maybe` in row 10",
        _multiline_then_bad,
        row("labels", 12, "churn_label", f'"maybe" {BOOLEANS}'),
    ),
    rejected(
        "stray quote",
        "a field of `labels.csv` opens a quote that never closes",
        _stray_quote,
        row("labels", 4, None, STRAY_QUOTE, '"'),
    ),
    rejected(
        "too many fields",
        "row 7 of `usage_agg_30d.csv` has one value more",
        _extra_field,
        row(
            USAGE,
            8,
            None,
            "too many fields: the row has more values than the header has columns (an "
            "unquoted comma or a different delimiter?)",
            ",7",
        ),
    ),
    rejected(
        "too few fields",
        "row 4 of `support_agg_90d.csv` lacks its last value",
        _missing_field,
        row("support_agg_90d", 5, None, "too few fields: the row has fewer values than the header has columns"),
    ),
    rejected(
        "1 MB text field",
        "`user_gender` is 1,048,576 characters",
        _value("users", 2, "user_gender", "F" * MB),
        row("users", 4, "user_gender", f'"{"F" * 40}…" is {MB} {TOO_LONG.format("user_gender")}'),
        why="every TEXT column is an id or a short code; a value that long is a broken export (a stray "
        "quote, typically), refused at staging with its line rather than by a rule later",
    ),
    rejected(
        "3,000-character user_id",
        "a user_id of 3,000 characters in every file",
        _renamed("u" * 3000),
        *(row(t, 2, "user_id", f'"{"u" * 40}…" is 3000 {TOO_LONG.format("user_id")}') for t in TABLES),
        why="PostgreSQL cannot index a key over ~2,700 bytes: the publish transaction would fail; every bad "
        "file of a drop is named in one message",
    ),
    rejected(
        "row over 4 MB",
        "a 5 MB `user_gender`",
        _huge_line,
        row("users", 4, None, "the row is longer than 4 MB", "FFFF"),
    ),
    # --- numbers
    accepted(
        "spaces around numbers",
        "`skips_7d` is ` 12 `, `watch_hours_30d` is ` 3.5 `",
        _spaced_numbers,
        _both(_lands(USAGE, 0, "skips_7d", 12), _lands(USAGE, 0, "watch_hours_30d", Decimal("3.5"))),
        why="spaces around a number, date or boolean are trimmed (never inside TEXT: ids stay as written)",
    ),
    bad_value("NaN in NUMERIC", USAGE, 4, "watch_hours_30d", "NaN", NOT_FINITE),
    bad_value("NaN in INT", USAGE, 4, "skips_7d", "nan", NOT_FINITE),
    bad_value("Infinity in NUMERIC", USAGE, 4, "watch_hours_30d", "Infinity", NOT_FINITE),
    bad_value("Infinity in INT", USAGE, 4, "skips_7d", "-inf", NOT_FINITE),
    bad_value("1e308 in NUMERIC", USAGE, 4, "watch_hours_30d", "1e308", EXPONENT),
    bad_value("1e308 in INT", USAGE, 4, "skips_7d", "1e308", EXPONENT),
    accepted(
        "-0 in NUMERIC",
        "`watch_hours_30d` is `-0`",
        _value(USAGE, 4, "watch_hours_30d", "-0"),
        _lands(USAGE, 4, "watch_hours_30d", Decimal(0)),
        why="stored as 0",
    ),
    accepted(
        "-0 in INT",
        "`skips_7d` is `-0`",
        _value(USAGE, 4, "skips_7d", "-0"),
        _lands(USAGE, 4, "skips_7d", 0),
        why="stored as 0",
    ),
    bad_value(
        "thousands separator in NUMERIC",
        USAGE,
        4,
        "watch_hours_30d",
        "1,234.5",
        THOUSANDS,
        why="`1,234` is one thousand or 1.234 depending on the locale: never guessed",
    ),
    bad_value("thousands separator in INT", USAGE, 4, "skips_7d", "1,234", THOUSANDS),
    bad_value(
        "exponent notation in NUMERIC",
        USAGE,
        4,
        "watch_hours_30d",
        "1.5e2",
        EXPONENT,
        why="exponent notation is how a float leaks into an export: its digits may already be rounded",
    ),
    bad_value("exponent notation in INT", USAGE, 4, "skips_7d", "1E3", EXPONENT),
    bad_value("INT overflow", USAGE, 4, "skips_7d", "2147483648", "is out of range for INT"),
    bad_value(
        "NUMERIC with 11 decimals",
        "subscriptions",
        1,
        "monthly_fee",
        "1.12345678901",
        "has more than 10 decimal places; the lake keeps NUMERIC exactly and will not round it",
    ),
    bad_value(
        "NUMERIC with 29 integer digits",
        "subscriptions",
        1,
        "total_paid",
        "1" * 29,
        "has more than 28 digits before the decimal point",
    ),
    bad_value("word in a number", USAGE, 4, "skips_7d", "twelve", "is not a whole number"),
    # --- dates and booleans
    bad_value("date 2024-02-30", "users", 0, "signup_date", "2024-02-30", "is not a calendar date"),
    bad_value(
        "date not ISO",
        "users",
        0,
        "signup_date",
        "31/01/2024",
        "is not an ISO date (YYYY-MM-DD)",
        why="day/month order is never guessed",
    ),
    bad_value("year 0000", "users", 0, "signup_date", "0000-01-01", "is not a calendar date (there is no year 0)"),
    bad_value("boolean outside the accepted set", "labels", 9, "churn_label", "maybe", BOOLEANS),
    bad_value(
        "boolean Y/N",
        "users",
        9,
        "has_family",
        "Y",
        BOOLEANS,
        why="the accepted set is explicit; add a spelling to stage.py if an export needs it",
    ),
    # --- keys
    rejected(
        "empty user_id",
        "`user_id` is empty in `payments_agg_90d.csv`",
        _value("payments_agg_90d", 2, "user_id", ""),
        row("payments_agg_90d", 4, "user_id", EMPTY_ID),
    ),
    rejected(
        "blank user_id",
        "`user_id` is three spaces",
        _value("payments_agg_90d", 2, "user_id", "   "),
        row("payments_agg_90d", 4, "user_id", EMPTY_ID),
    ),
    rejected(
        "invisible user_id",
        "`user_id` is a tab and a zero-width space",
        _value("payments_agg_90d", 2, "user_id", "\t\u200b"),
        row("payments_agg_90d", 4, "user_id", EMPTY_ID),
        why="a key nobody can see is as good as none",
    ),
    rejected(
        "duplicate user_id with conflicting rows",
        "rows 4 and 8 of `labels.csv` share a user_id, their labels differ",
        _duplicate_conflicting,
        row("labels", 5, "user_id", DUPLICATE.format("5, 9")),
        row("labels", 9, "user_id", DUPLICATE.format("5, 9")),
        luigi=True,
        why="both rows are rejected: which one is right is not the pipeline's guess",
    ),
    rejected(
        "duplicate identical rows",
        "row 4 of `labels.csv` repeated at the end",
        _duplicate_identical,
        row("labels", 5, "user_id", DUPLICATE.format("5, 7002")),
        row("labels", 7002, "user_id", DUPLICATE.format("5, 7002")),
        why="an exact repeat means the export ran twice or joined wrong: not silently deduplicated",
    ),
    accepted(
        "user_id with quotes, semicolons and SQL",
        f"a user_id `{SQL_ID}` in every file",
        _renamed(SQL_ID),
        _id_round_trips(SQL_ID),
        luigi=True,
        why="stored as data, never executed: the value is in the lake and PostgreSQL, every table still whole",
    ),
]
CASES_BY_NAME = {c.name: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"


# --- the table ---------------------------------------------------------------------------------

DOC_HEAD = """\
# Bad input: what a drop can do wrong, and what the month does about it

Generated from `CASES` in `tests/test_bad_input.py` (`python -m tests.test_bad_input`); one test per
row, and a test fails when this file and the cases differ. Each row was run as
`luigi --module pipeline Month --as-of 2024-01-31 --source DIR` on a copy of the seed month
`data/seeds/month_000` (7,000 users), broken as the row says.

- **accepted**: exit code 0, the month is published, the value lands as the row says.
- **refused: the file**: exit code 30; the message names the file and what to do; nothing is written.
- **refused: rows rejected**: exit code 30; the message lists the first rejects (file, line, column,
  reason, raw text) and every reject is in `<lake>/rejects/<table>/as_of=2024-01-31/rejects.parquet`
  (columns `line`, `column`, `reason`, `raw`). `[pipeline] max_reject_ratio` may allow a share of
  bad rows; by default (0) any reject fails the month.

A refused month publishes nothing: no `snapshots/` or `raw/` partition, no manifest, no rows in
PostgreSQL (live, snapshot and `pipeline_runs` tables). Line numbers are physical lines of the file
(the header is line 1; blank lines and quoted line breaks count).

| Case | Input | Outcome | Message (excerpt) / result |
|---|---|---|---|
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


README = PROJECT_ROOT / "README.md"
README_START = (
    "<!-- bad-input table: generated from tests/test_bad_input.py CASES (python -m tests.test_bad_input) -->\n"
)
README_END = "<!-- end of bad-input table -->"


def render_table() -> str:
    head = "| Case | Input | Outcome | Message (excerpt) / result |\n|---|---|---|---|\n"
    rows = [f"| {_cell(c.name)} | {_cell(c.given)} | {c.outcome} | {_cell(c.shown())} |" for c in CASES]
    return head + "\n".join(rows) + "\n"


def render_doc() -> str:
    return DOC_HEAD + render_table().split("\n", 2)[2]


def render_readme(text: str) -> str:
    before, _, rest = text.partition(README_START)
    _, _, after = rest.partition(README_END)
    return before + README_START + render_table() + README_END + after


def test_docs_bad_input_md_is_the_case_table():
    stale = "docs/bad-input.md differs from CASES: run python -m tests.test_bad_input"
    assert DOC.read_text(encoding="utf-8") == render_doc(), stale


def test_the_readme_shows_the_case_table():
    text = README.read_text(encoding="utf-8")
    assert README_START in text, "README.md has no bad-input table"
    assert text == render_readme(text), (
        "README.md's bad-input table differs from CASES: run python -m tests.test_bad_input"
    )


# --- the assertions every case shares ----------------------------------------------------------


def assert_nothing_published(lake_root: Path, pg: psycopg.Connection, pg_schema: str, as_of: date = JAN) -> None:
    assert not list(lake_root.glob(f"snapshots/*/as_of={as_of}")), "no snapshot partition for a refused month"
    assert not list(lake_root.glob(f"raw/*/as_of={as_of}")), "no raw partition for a refused month"
    assert not record_file(lake_root, as_of).exists(), "no manifest for a refused month"

    def exists(name: str) -> bool:
        return pg.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."{name}"']).fetchone()[0] is not None

    if exists("pipeline_runs"):
        runs = pg.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "pipeline_runs")),
            [as_of],
        ).fetchone()[0]
        assert runs == 0, "pipeline_runs must not record a refused month"
    for table in TABLES:
        for name in (table, f"{table}_snapshots"):
            if exists(name):
                count = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, name)))
                assert count.fetchone()[0] == 0, f"{name} must stay empty"
    staging = pg.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", [f"{pg_schema}\\_\\_staging%"])
    assert staging.fetchone()[0] == 0, "no staging schema left behind"


def assert_rejects(lake_root: Path, case: Case) -> None:
    tables = {r.file.removesuffix(".csv") for r in case.rows}
    for table in TABLES:
        path = Lake(lake_root).rejects(table, JAN) / "rejects.parquet"
        if table not in tables:
            assert not path.exists(), f"{table} had no rejects"
            continue
        rejects = duckdb.sql(f"SELECT * FROM read_parquet('{path}', hive_partitioning = false)")
        assert rejects.columns == ["line", "column", "reason", "raw"]
        got = rejects.order("line").fetchall()
        expected = [r for r in case.rows if r.file == f"{table}.csv"]
        assert len(got) == len(expected), got
        for (line, column, reason, raw), want in zip(got, expected, strict=True):
            assert (line, column) == (want.line, want.column)
            assert want.reason in reason
            assert want.raw_has in raw
            assert not raw.startswith("user_id,"), "the raw text is the row's, not the header's"


def assert_message(message: str, case: Case) -> None:
    for words in case.says:
        assert words in message, (words, message)
    for row in case.rows:
        assert row.listed() in message, (row.listed(), message[-3000:])
    if case.rows:
        assert FIX_ROWS in message and "rejects.parquet" in message, message


def _drop(case: Case, tmp_path: Path) -> Path:
    drop = seed_copy(tmp_path / "drop")
    case.make(drop)
    return drop


# --- one test per row --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, settings, lake_root: Path, pg, pg_schema: str, tmp_path: Path):
    drop = _drop(case, tmp_path)
    if case.outcome == ACCEPTED:
        record = run_month(settings, JAN, drop)
        assert record.published
        assert case.lands is not None
        case.lands(Published(lake_root, pg, pg_schema, drop))
        return
    expected = RejectedRowsError if case.outcome == REJECTED_ROWS else DropError
    with pytest.raises(PipelineError) as raised:
        run_month(settings, JAN, drop)
    errors = raised.value.errors if isinstance(raised.value, DropErrors) else [raised.value]
    assert {type(e) for e in errors} == {expected}, raised.value
    assert_message(str(raised.value), case)
    assert_rejects(lake_root, case)
    assert_nothing_published(lake_root, pg, pg_schema)


LUIGI_CASES = [c for c in CASES if c.luigi]


@pytest.mark.parametrize("case", LUIGI_CASES, ids=[c.name for c in LUIGI_CASES])
def test_bad_input_through_luigi(case: Case, run_luigi, lake_root: Path, pg, pg_schema: str, tmp_path: Path):
    drop = _drop(case, tmp_path)
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(drop))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    if case.outcome == ACCEPTED:
        assert result.returncode == 0, output[-3000:]
        assert case.lands is not None
        case.lands(Published(lake_root, pg, pg_schema, drop))
        return
    assert result.returncode == EXIT_FAILED, output[-3000:]
    assert_message(result.stderr, case)
    assert_rejects(lake_root, case)
    assert_nothing_published(lake_root, pg, pg_schema)


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_doc(), encoding="utf-8")
    README.write_text(render_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {os.path.relpath(DOC)} ({len(CASES)} cases)", file=sys.stderr)


@pytest.mark.xfail(
    strict=True,
    reason="known gap (found by the property test): DuckDB's CSV reader, even in strict mode, drops one trailing "
    "empty field, so a row with one field too many whose last field is empty is read as a whole row, its values "
    "shifted; staging does not yet count fields itself",
)
def test_a_row_with_one_field_too_many_ending_empty_is_refused(settings, tmp_path: Path):
    """Where values shift (a field inserted, the row's last field empty), the types may still all parse:
    the property test found such a row published with its values in the wrong columns."""
    drop = seed_copy(tmp_path / "drop")
    path = drop / "users.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].rstrip("\n") + ",\n"  # one field too many, empty: a trailing comma on one row
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(RejectedRowsError):
        run_month(settings, JAN, drop)
