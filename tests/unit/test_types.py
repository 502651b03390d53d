"""Every declared type's rule (pipeline.types), run in an in-memory DuckDB: the cast, the check, the reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from sqlglot import exp

from pipeline.schema import Column
from pipeline.types import (
    RULES,
    BigintRule,
    BooleanRule,
    DateRule,
    IntRule,
    NumericRule,
    TextRule,
    TypeRule,
    declared_name,
    is_number_type,
    key_bad,
    key_why_bad,
    rule_for,
)

V = '"v"'  # the SQL of the cell's text in every query below
BOOLEANS = "is not a boolean; accepted: True/False, true/false, t/f, 1/0, Yes/No"
NUL = "contains a NUL byte (\\x00), which PostgreSQL cannot store; remove it from the export"
NOT_FINITE, EXPONENT = "is not a finite number", "uses exponent notation; write the plain number"
THOUSANDS = "has a thousands separator; write the plain number"
NOT_ROUNDED = "decimal places; the lake keeps NUMERIC exactly and will not round it"
TOO_LONG = "characters long; a {} has at most 500 (a stray quote that swallowed the lines after it?)"


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as c:
        yield c


def one(con: duckdb.DuckDBPyConnection, query: str, text: str | None) -> tuple[Any, ...]:
    """The one row of ``query`` with the cell's text bound to its parameter."""
    row = con.execute(query, [text]).fetchone()
    assert row is not None
    return row


def typed(con: duckdb.DuckDBPyConnection, rule: TypeRule, text: str | None) -> tuple[object, str]:
    """The value the rule casts ``text`` to, and DuckDB's name of its type."""
    value, kind = one(con, f"SELECT {rule.typed(V)} AS t, typeof(t) FROM (SELECT ?::VARCHAR AS v)", text)
    return value, kind


def verdict(con: duckdb.DuckDBPyConnection, rule: TypeRule, text: str | None) -> str | None:
    """None when ``text`` is a valid value of the rule's type, else the reason it is not."""
    bad, why = one(con, f"SELECT {rule.bad(V)}, {rule.why_bad(V, 'note')} FROM (SELECT ?::VARCHAR AS v)", text)
    assert bad in (True, False)  # never NULL: a NULL would let the row through unexplained
    return why if bad else None


# --- valid values are cast exactly ----------------------------------------------------------------------

VALID = [
    (TextRule(), "  Month-to-month ", "  Month-to-month "),  # text is kept as written
    (TextRule(), "x" * 500, "x" * 500),
    (DateRule(), "2024-02-29", date(2024, 2, 29)),
    (DateRule(), " 0001-01-01 ", date(1, 1, 1)),
    (BooleanRule(), "Yes", True),
    (BooleanRule(), " t", True),
    (BooleanRule(), "1", True),
    (BooleanRule(), "FALSE", False),
    (BooleanRule(), "no", False),
    (BooleanRule(), "0", False),
    (IntRule(), "+7", 7),
    (IntRule(), " 007 ", 7),
    (IntRule(), "-2147483648", -2147483648),
    (BigintRule(), "9223372036854775807", 9223372036854775807),
    (NumericRule(), "0.1234567891", Decimal("0.1234567891")),
    (NumericRule(), "-9999999999999999999999999999.9999999999", Decimal("-9999999999999999999999999999.9999999999")),
    (NumericRule(), "000000000000000000000000000000001.5", Decimal("1.5")),  # leading zeros are not digits
    (NumericRule(), ".5", Decimal("0.5")),
    (NumericRule(), "5.", Decimal(5)),
    (NumericRule(), "-0", Decimal(0)),
    (NumericRule(5, 2), "123.45", Decimal("123.45")),
    (NumericRule(4), "1234", Decimal(1234)),
]


@pytest.mark.parametrize(("rule", "text", "value"), VALID, ids=lambda x: repr(x)[:40])
def test_a_valid_value_is_cast_exactly_and_not_flagged(
    con: duckdb.DuckDBPyConnection, rule: TypeRule, text: str, value: object
) -> None:
    got, kind = typed(con, rule, text)
    assert got == value and type(got) is type(value)
    assert kind == rule.duckdb_type.replace(", ", ",")
    assert verdict(con, rule, text) is None


@pytest.mark.parametrize("rule", [r() for r in RULES if r is not TextRule], ids=lambda r: r.declared)
@pytest.mark.parametrize("text", [None, "", "   "])
def test_a_missing_or_blank_value_of_a_typed_column_is_null_and_valid(
    con: duckdb.DuckDBPyConnection, rule: TypeRule, text: str | None
) -> None:
    assert typed(con, rule, text)[0] is None
    assert verdict(con, rule, text) is None


# --- bad values are flagged with their reason ---------------------------------------------------------------

BAD = [
    (TextRule(), "x" * 501, f'"{"x" * 40}…" is 501 {TOO_LONG.format("note")}'),
    (TextRule(), "a\x00b", NUL),
    (DateRule(), "2024-02-30", '"2024-02-30" is not a calendar date'),
    (DateRule(), "0000-01-01", '"0000-01-01" is not a calendar date (there is no year 0)'),
    (DateRule(), "31/01/2024", '"31/01/2024" is not an ISO date (YYYY-MM-DD)'),
    (DateRule(), "2024-01-31 12:00", '"2024-01-31 12:00" is not an ISO date (YYYY-MM-DD)'),
    (BooleanRule(), "maybe", f'"maybe" {BOOLEANS}'),
    (BooleanRule(), "Y", f'"Y" {BOOLEANS}'),
    (BooleanRule(), "true\x00", NUL),
    (IntRule(), "twelve", '"twelve" is not a whole number'),
    (IntRule(), "1.0", '"1.0" is not a whole number'),
    (IntRule(), "2147483648", '"2147483648" is out of range for INT'),
    (IntRule(), "1,234", f'"1,234" {THOUSANDS}'),
    (IntRule(), "1E3", f'"1E3" {EXPONENT}'),
    (IntRule(), "-inf", f'"-inf" {NOT_FINITE}'),
    (IntRule(), "1\x00", NUL),
    (BigintRule(), "9223372036854775808", '"9223372036854775808" is out of range for BIGINT'),
    (NumericRule(), "NaN", f'"NaN" {NOT_FINITE}'),
    (NumericRule(), "Infinity", f'"Infinity" {NOT_FINITE}'),
    (NumericRule(), "1e308", f'"1e308" {EXPONENT}'),
    (NumericRule(), "1,234.5", f'"1,234.5" {THOUSANDS}'),
    (NumericRule(), "1.2.3", '"1.2.3" is not a number'),
    (NumericRule(), "1" * 29, f'"{"1" * 29}" has more than 28 digits before the decimal point'),
    (NumericRule(5, 2), "1234", '"1234" has more than 3 digits before the decimal point'),
    (NumericRule(5, 2), "1.234", f'"1.234" has more than 2 {NOT_ROUNDED}'),
]


@pytest.mark.parametrize(("rule", "text", "reason"), BAD, ids=lambda x: repr(x)[:40])
def test_a_bad_value_is_flagged_with_its_reason(
    con: duckdb.DuckDBPyConnection, rule: TypeRule, text: str, reason: str
) -> None:
    assert verdict(con, rule, text) == reason


def test_numeric_value_with_too_many_decimals_is_rejected_with_its_reason(con: duckdb.DuckDBPyConnection) -> None:
    assert verdict(con, NumericRule(), "1.00000000001") == f'"1.00000000001" has more than 10 {NOT_ROUNDED}'
    assert typed(con, NumericRule(), "1.00000000001")[0] == Decimal(1)  # why the check exists: the cast rounds


def test_a_reason_quotes_at_most_40_characters_of_the_value(con: duckdb.DuckDBPyConnection) -> None:
    text = "9" * 45 + "x"
    assert verdict(con, IntRule(), text) == f'"{"9" * 40}…" is not a whole number'


# --- the key ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "empty user_id (blank, or only invisible characters)"),
        ("", "empty user_id (blank, or only invisible characters)"),
        (" \t\u200b\ufeff", "empty user_id (blank, or only invisible characters)"),
        ("u\x001", NUL),
        (
            "u" * 501,
            f'"{"u" * 40}…" is 501 {TOO_LONG.format("user_id")}',
        ),
        (" u1 ", None),
    ],
    ids=["null", "empty", "invisible", "nul", "long", "spaces kept"],
)
def test_a_key_must_be_present_visible_and_short(
    con: duckdb.DuckDBPyConnection, text: str | None, reason: str | None
) -> None:
    bad, why = one(con, f"SELECT {key_bad(V)}, {key_why_bad(V, 'user_id')} FROM (SELECT ?::VARCHAR AS v)", text)
    assert (why if bad else None) == reason


# --- storage types and the registry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "duckdb_type", "arrow_type", "pg_ddl_type", "soda_type"),
    [
        (Column("c", "TEXT"), "VARCHAR", pa.string(), "TEXT", "text"),
        (Column("c", "DATE"), "DATE", pa.date32(), "DATE", "date"),
        (Column("c", "BOOLEAN"), "BOOLEAN", pa.bool_(), "BOOLEAN", "boolean"),
        (Column("c", "INT"), "INTEGER", pa.int32(), "INT", "integer"),
        (Column("c", "BIGINT"), "BIGINT", pa.int64(), "BIGINT", "bigint"),
        (Column("c", "NUMERIC"), "DECIMAL(38, 10)", pa.decimal128(38, 10), "NUMERIC", "numeric"),
        (Column("c", "NUMERIC", 12, 2), "DECIMAL(12, 2)", pa.decimal128(12, 2), "NUMERIC(12, 2)", "numeric"),
        (Column("c", "NUMERIC", 7), "DECIMAL(7, 0)", pa.decimal128(7, 0), "NUMERIC(7, 0)", "numeric"),
    ],
    ids=lambda x: str(x)[:40],
)
def test_a_column_is_stored_as_its_declared_types_rule_says(
    column: Column, duckdb_type: str, arrow_type: pa.DataType, pg_ddl_type: str, soda_type: str
) -> None:
    assert (column.duckdb_type, column.arrow_type, column.pg_ddl_type, column.rule.soda_type) == (
        duckdb_type,
        arrow_type,
        pg_ddl_type,
        soda_type,
    )


def test_every_rule_is_found_by_its_declared_name_and_by_what_sqlglot_parses() -> None:
    for rule in RULES:
        assert type(rule_for(Column("c", rule.declared))) is rule
        for parsed in rule.sqlglot_types:
            assert declared_name(parsed) == rule.declared
    assert declared_name(exp.DataType.Type.TIMESTAMP) is None


def test_numbers_are_told_from_other_duckdb_result_types(con: duckdb.DuckDBPyConnection) -> None:
    description = con.execute(
        "SELECT 1::INT, 1::BIGINT, 1.5::DECIMAL(38, 10), avg(1), sum(1::BIGINT), "
        "'1', DATE '2024-01-31', true, [1], INTERVAL 1 DAY"
    ).description
    assert [is_number_type(d[1]) for d in description] == [True] * 5 + [False] * 5
