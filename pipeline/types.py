"""The declared types: one rule per type sql/schema.sql may use, and everything the pipeline knows about it.

A rule says how the type is stored (DuckDB, Arrow, PostgreSQL DDL, Soda's name for it), how staging
turns the text of a CSV cell into it (:meth:`TypeRule.typed`), when that text is not a valid value
(:meth:`TypeRule.bad`) and why, in words for the person fixing the export (:meth:`TypeRule.why_bad`).
Every rule is SQL over DuckDB text: ``value_sql`` is the SQL of the cell's raw text (a quoted column name).
NULL and blank text are valid everywhere (a missing value); only the key must be present, see :func:`key_bad`.

Adding a type means one new rule class here, listed in :data:`RULES`: its ``sqlglot_types`` are what
``sql/schema.sql`` may call it, and :mod:`pipeline.schema` reads them from here. A type with parameters
(like ``NUMERIC(p, s)``) also needs schema.py's ``_parse_column`` to read them and :func:`rule_for` to pass them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from sqlglot import exp

from pipeline.duck import literal

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline.schema import Column

BOOLEAN_TRUE = ("true", "t", "1", "yes")
BOOLEAN_FALSE = ("false", "f", "0", "no")
# Every TEXT column of the contract is an id or a short category (the longest legitimate value is
# "Month-to-month"); a longer value is a broken export, typically a stray quote that swallowed lines.
# The limit also keeps keys indexable: PostgreSQL cannot index a key over ~2,700 bytes and would fail
# inside the publish transaction; 500 characters is at most 2,000 bytes of UTF-8.
MAX_TEXT_CHARS = 500
ISO_DATE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
NUL_REASON = "contains a NUL byte (\\x00), which PostgreSQL cannot store; remove it from the export"
# PostgreSQL's bare NUMERIC has no fixed scale, DuckDB's bare DECIMAL is DECIMAL(18,3) and would
# round silently. The lake stores NUMERIC as DECIMAL(38, 10): 28 integer and 10 fractional digits.
# A value that does not fit is rejected at staging with a message, never rounded.
NUMERIC_PRECISION = 38
NUMERIC_SCALE = 10
# Numbers a query over the lake can return without any column being declared so: avg() gives a DOUBLE,
# sum() of a BIGINT a HUGEINT, arithmetic any width. The CLI right-aligns them like declared numbers.
COMPUTED_NUMBER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE"}
)


# --- SQL pieces every rule shares --------------------------------------------------------------------


def trimmed(value_sql: str) -> str:
    """The value without surrounding spaces, NULL when nothing is left: what a typed rule reads."""
    return f"NULLIF(trim({value_sql}), '')"


def blank(value_sql: str) -> str:
    """Only spaces, control and format characters (tabs, zero-width spaces, a BOM…): a key nobody can
    see is as good as none. (trim() alone strips Unicode spaces but keeps tabs and line breaks.)"""
    return f"regexp_full_match({value_sql}, '[\\pZ\\pC]*')"


def shown(value_sql: str) -> str:
    """The value as a reason quotes it: in double quotes, cut after 40 characters."""
    return f"'\"' || left({value_sql}, 40) || CASE WHEN length({value_sql}) > 40 THEN '…' ELSE '' END || '\"'"


def too_long(value_sql: str) -> str:
    return f"length({value_sql}) > {MAX_TEXT_CHARS}"


def too_long_reason(value_sql: str, name: str) -> str:
    return (
        f"{shown(value_sql)} || ' is ' || length({value_sql}) || ' characters long; a {name} has at most "
        f"{MAX_TEXT_CHARS} (a stray quote that swallowed the lines after it?)'"
    )


def has_nul(value_sql: str) -> str:
    return f"contains({value_sql}, chr(0))"


# --- the key -----------------------------------------------------------------------------------------


def key_bad(value_sql: str) -> str:
    """True when a key's text is not a usable key: missing, blank, holding a NUL byte or too long."""
    return f"({value_sql} IS NULL OR {blank(value_sql)} OR {has_nul(value_sql)} OR {too_long(value_sql)})"


def key_why_bad(value_sql: str, name: str) -> str:
    """Why a bad key is bad, in words (only evaluated where :func:`key_bad` holds)."""
    return (
        f"CASE WHEN {value_sql} IS NULL OR {blank(value_sql)} THEN 'empty {name} (blank, or only invisible "
        f"characters)' WHEN {has_nul(value_sql)} THEN {literal(NUL_REASON)} ELSE {too_long_reason(value_sql, name)} END"
    )


# --- one rule per declared type ----------------------------------------------------------------------


@dataclass(frozen=True)
class TypeRule:
    """What the pipeline knows about one declared type. Subclasses set the class attributes and
    ``_bad_text``/``_why_not`` (the type's own checks); a NUL byte is bad in every type: PostgreSQL
    cannot store one in TEXT, and no number, date or boolean contains one."""

    declared: ClassVar[str]  # the name Column.pg_type holds, and sql/schema.sql's spelling
    sqlglot_types: ClassVar[tuple[Enum, ...]]  # the sqlglot DataType.Type(s) the declaration parses as
    duckdb_name: ClassVar[str]  # DuckDB's type name, without parameters
    arrow: ClassVar[str]  # the name of pyarrow's type factory (pyarrow is imported when the type is asked for)
    soda_type: ClassVar[str]  # the type name a SodaCL schema check expects
    is_number: ClassVar[bool] = False  # the CLI right-aligns numbers

    @property
    def duckdb_type(self) -> str:
        """The exact DuckDB type the lake stores the type as."""
        return self.duckdb_name

    @property
    def arrow_type(self) -> pa.DataType:
        import pyarrow as pa  # a month's run never asks: 0.15 s of imports it does not pay

        return getattr(pa, self.arrow)()

    @property
    def pg_ddl_type(self) -> str:
        """The type exactly as sql/schema.sql declares it, for PostgreSQL DDL."""
        return self.declared

    def typed(self, value_sql: str) -> str:
        """The SQL that turns the text of a valid value into the lake's type."""
        return f"TRY_CAST({trimmed(value_sql)} AS {self.duckdb_type})"

    def bad(self, value_sql: str) -> str:
        """True when the text is not a valid value of the type (NULL and blank are valid: missing)."""
        t = trimmed(value_sql)
        return f"({t} IS NOT NULL AND ({self._bad_text(t)}))"

    def why_bad(self, value_sql: str, name: str) -> str:
        """Why a bad value of column ``name`` is bad, in words (only evaluated where :meth:`bad` holds)."""
        return f"CASE WHEN {has_nul(value_sql)} THEN {literal(NUL_REASON)} ELSE {self._why_not(value_sql, name)} END"

    def _bad_text(self, t: str) -> str:
        """True when the trimmed, non-blank text ``t`` is not a value of the type."""
        raise NotImplementedError

    def _why_not(self, value_sql: str, name: str) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class TextRule(TypeRule):
    """Kept as written (untrimmed): any text without a NUL byte, at most MAX_TEXT_CHARS long."""

    declared = "TEXT"
    sqlglot_types = (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR)
    duckdb_name = "VARCHAR"
    arrow = "string"
    soda_type = "text"

    def typed(self, value_sql: str) -> str:
        return value_sql

    def bad(self, value_sql: str) -> str:
        return f"coalesce({has_nul(value_sql)} OR {too_long(value_sql)}, false)"

    def _why_not(self, value_sql: str, name: str) -> str:
        return too_long_reason(value_sql, name)


@dataclass(frozen=True)
class DateRule(TypeRule):
    """An ISO calendar date, YYYY-MM-DD. There is no year 0: DuckDB would read 0000 as 1 BC and publish
    a date the export never said."""

    declared = "DATE"
    sqlglot_types = (exp.DataType.Type.DATE,)
    duckdb_name = "DATE"
    arrow = "date32"
    soda_type = "date"

    def _bad_text(self, t: str) -> str:
        return f"NOT regexp_full_match({t}, '{ISO_DATE}') OR TRY_CAST({t} AS DATE) IS NULL OR starts_with({t}, '0000')"

    def _why_not(self, value_sql: str, name: str) -> str:
        t, s = trimmed(value_sql), shown(value_sql)
        return (
            f"CASE WHEN starts_with({t}, '0000') "
            f"THEN {s} || ' is not a calendar date (there is no year 0)' "
            f"WHEN regexp_full_match({t}, '{ISO_DATE}') "
            f"THEN {s} || ' is not a calendar date' "
            f"ELSE {s} || ' is not an ISO date (YYYY-MM-DD)' END"
        )


@dataclass(frozen=True)
class BooleanRule(TypeRule):
    """One of BOOLEAN_TRUE or BOOLEAN_FALSE, in any case."""

    declared = "BOOLEAN"
    sqlglot_types = (exp.DataType.Type.BOOLEAN,)
    duckdb_name = "BOOLEAN"
    arrow = "bool_"
    soda_type = "boolean"

    def typed(self, value_sql: str) -> str:
        t = trimmed(value_sql)
        trues = ", ".join(map(literal, BOOLEAN_TRUE))
        falses = ", ".join(map(literal, BOOLEAN_FALSE))
        return f"CASE WHEN lower({t}) IN ({trues}) THEN true WHEN lower({t}) IN ({falses}) THEN false END"

    def bad(self, value_sql: str) -> str:
        accepted = ", ".join(map(literal, BOOLEAN_TRUE + BOOLEAN_FALSE))
        return f"coalesce(lower({trimmed(value_sql)}) NOT IN ({accepted}), false)"

    def _why_not(self, value_sql: str, name: str) -> str:
        return f"{shown(value_sql)} || ' is not a boolean; accepted: True/False, true/false, t/f, 1/0, Yes/No'"


def _not_plain_number(value_sql: str) -> str:
    """The WHEN branches that name the usual ways a number is written for people, not for a file."""
    t, s = trimmed(value_sql), shown(value_sql)
    return (
        f"WHEN lower(trim({t}, '+-')) IN ('nan', 'inf', 'infinity') "
        f"THEN {s} || ' is not a finite number' "
        f"WHEN regexp_matches({t}, '[0-9.][eE][+-]?[0-9]') "
        f"THEN {s} || ' uses exponent notation; write the plain number' "
        f"WHEN regexp_matches({t}, '[0-9],[0-9]') "
        f"THEN {s} || ' has a thousands separator; write the plain number' "
    )


@dataclass(frozen=True)
class _IntegerRule(TypeRule):
    """Plain digits with an optional sign, within the type's range."""

    is_number = True

    def _bad_text(self, t: str) -> str:
        return f"NOT regexp_full_match({t}, '[+-]?[0-9]+') OR TRY_CAST({t} AS {self.duckdb_type}) IS NULL"

    def _why_not(self, value_sql: str, name: str) -> str:
        t, s = trimmed(value_sql), shown(value_sql)
        return (
            f"CASE {_not_plain_number(value_sql)}"
            f"WHEN regexp_full_match({t}, '[+-]?[0-9]+') "
            f"THEN {s} || ' is out of range for {self.declared}' "
            f"ELSE {s} || ' is not a whole number' END"
        )


@dataclass(frozen=True)
class IntRule(_IntegerRule):
    declared = "INT"
    sqlglot_types = (exp.DataType.Type.INT,)
    duckdb_name = "INTEGER"
    arrow = "int32"
    soda_type = "integer"


@dataclass(frozen=True)
class BigintRule(_IntegerRule):
    declared = "BIGINT"
    sqlglot_types = (exp.DataType.Type.BIGINT,)
    duckdb_name = "BIGINT"
    arrow = "int64"
    soda_type = "bigint"


@dataclass(frozen=True)
class NumericRule(TypeRule):
    """A plain decimal number that fits exactly: at most ``scale`` decimals and ``precision - scale``
    digits before the point (leading zeros aside). It is never rounded."""

    declared = "NUMERIC"
    sqlglot_types = (exp.DataType.Type.DECIMAL,)
    duckdb_name = "DECIMAL"
    arrow = "decimal128"  # with the precision and scale: arrow_type
    soda_type = "numeric"
    is_number = True

    declared_precision: int | None = None  # NUMERIC(p, s) as written, None for a bare NUMERIC
    declared_scale: int | None = None

    @property
    def precision(self) -> int:
        return self.declared_precision if self.declared_precision is not None else NUMERIC_PRECISION

    @property
    def scale(self) -> int:
        if self.declared_precision is not None:
            return self.declared_scale or 0
        return NUMERIC_SCALE

    @property
    def duckdb_type(self) -> str:
        return f"DECIMAL({self.precision}, {self.scale})"

    @property
    def arrow_type(self) -> pa.DataType:
        import pyarrow as pa

        return pa.decimal128(self.precision, self.scale)

    @property
    def pg_ddl_type(self) -> str:
        if self.declared_precision is not None:
            return f"NUMERIC({self.declared_precision}, {self.declared_scale or 0})"
        return self.declared

    def pattern(self) -> str:
        """The regular expression of the text of a value that fits."""
        whole, frac = self.precision - self.scale, self.scale
        fraction = f"(\\.[0-9]{{0,{frac}}})?" if frac else "\\.?"
        return f"[+-]?(0*[0-9]{{1,{whole}}}{fraction}|0*\\.[0-9]{{1,{max(frac, 1)}}})"

    def _bad_text(self, t: str) -> str:
        return f"NOT regexp_full_match({t}, {literal(self.pattern())})"

    def _why_not(self, value_sql: str, name: str) -> str:
        t, s = trimmed(value_sql), shown(value_sql)
        scale, whole = self.scale, self.precision - self.scale
        return (
            f"CASE {_not_plain_number(value_sql)}"
            f"WHEN regexp_full_match({t}, '[+-]?[0-9]*\\.[0-9]{{{scale + 1},}}') THEN {s} || ' has more than "
            f"{scale} decimal places; the lake keeps NUMERIC exactly and will not round it' "
            f"WHEN regexp_full_match({t}, '[+-]?[0-9]+(\\.[0-9]*)?') "
            f"THEN {s} || ' has more than {whole} digits "
            f"before the decimal point' "
            f"ELSE {s} || ' is not a number' END"
        )


RULES: tuple[type[TypeRule], ...] = (TextRule, DateRule, BooleanRule, IntRule, BigintRule, NumericRule)
_BY_DECLARED: dict[str, type[TypeRule]] = {rule.declared: rule for rule in RULES}
_NUMBER_NAMES = frozenset(rule.duckdb_name for rule in RULES if rule.is_number) | COMPUTED_NUMBER_TYPES


def declared_name(sqlglot_type: Enum) -> str | None:
    """The declared type name for what sqlglot parsed (a DataType.Type), None when no rule takes it."""
    for rule in RULES:
        if sqlglot_type in rule.sqlglot_types:
            return rule.declared
    return None


def rule_for(column: Column) -> TypeRule:
    """The rule of a column's declared type (with its NUMERIC precision and scale, if declared)."""
    if column.pg_type == NumericRule.declared:
        return NumericRule(column.precision, column.scale)
    return _BY_DECLARED[column.pg_type]()


def is_number_type(type_code: object) -> bool:
    """Whether a DuckDB result column (a ``cursor.description`` type code) holds numbers: a numeric
    declared type, or a number computed from one. A list or struct of numbers is not a number."""
    return str(type_code).split("(", 1)[0].strip().upper() in _NUMBER_NAMES
