"""Contract evolution (issue #14): what changed in sql/schema.sql since the latest published month,
whether the published months can follow it, and how data written under an older contract is read
under the current one.

Allowed, and applied on the next month:

- a new nullable column: earlier months read it as NULL (their Parquet files are never rewritten; the
  PostgreSQL tables get the column in the month's publish transaction);
- a new table: empty before the month that first carries it;
- a widening: INT → BIGINT, INT/BIGINT → NUMERIC wide enough, NUMERIC(p, s) → NUMERIC(p', s') with no
  fewer integer or fractional digits: older months are read back exactly, cast to the wider type.

Refused before anything changes, with what to do instead: a column or table removed (or renamed), the
key changed, a type narrowed or changed to another kind. See the README, "Changing the contract".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.duck import quote, read_parquet
from pipeline.errors import ContractError
from pipeline.schema import Column, Schema, Table

HOW_TO = (
    "A published month is never rewritten: the contract may only gain nullable columns and tables and widen "
    "types. To stop receiving a column, keep it declared and mark it '-- hidden at start' (drops may leave it "
    "out; it reads NULL); to rename one, add the new name as a new column. Put sql/schema.sql back or change "
    "it that way (README: 'Changing the contract'); nothing was published."
)
_INTEGER_DIGITS = {"INT": 10, "BIGINT": 19}


def widens(old: Column, new: Column) -> bool:
    """Whether every value of ``old``'s type is a value of ``new``'s, exactly (same type included)."""
    if old.pg_ddl_type == new.pg_ddl_type:
        return True
    if old.pg_type in _INTEGER_DIGITS:
        if new.pg_type == "BIGINT":
            return old.pg_type == "INT"
        if new.pg_type == "NUMERIC":
            return new.numeric_precision - new.numeric_scale >= _INTEGER_DIGITS[old.pg_type]
        return False
    if old.pg_type == "NUMERIC" and new.pg_type == "NUMERIC":
        return (
            new.numeric_scale >= old.numeric_scale
            and new.numeric_precision - new.numeric_scale >= old.numeric_precision - old.numeric_scale
        )
    return False


@dataclass(frozen=True)
class ContractChange:
    """How the current contract differs from an earlier one."""

    new_tables: list[str] = field(default_factory=list)
    new_columns: list[tuple[str, Column]] = field(default_factory=list)
    widened: list[tuple[str, Column, Column]] = field(default_factory=list)  # table, old, new
    refused: list[str] = field(default_factory=list)  # what cannot be followed, in words

    @property
    def empty(self) -> bool:
        return not (self.new_tables or self.new_columns or self.widened or self.refused)

    def describe(self) -> str:
        parts = [f"new table {t}" for t in self.new_tables]
        parts += [f"new column {t}.{c.name} {c.pg_ddl_type}" for t, c in self.new_columns]
        parts += [f"{t}.{new.name} widened {old.pg_ddl_type} -> {new.pg_ddl_type}" for t, old, new in self.widened]
        return "; ".join(parts) or "no change to tables, columns or types"


def compare(before: Schema, now: Schema) -> ContractChange:
    """The change from contract ``before`` to contract ``now``."""
    change = ContractChange()
    for old_table in before.tables:
        if old_table.name not in now.table_names:
            change.refused.append(f"table {old_table.name} was removed (or renamed)")
    for table in now.tables:
        if table.name not in before.table_names:
            change.new_tables.append(table.name)
            continue
        old_table = before.table(table.name)
        if old_table.key != table.key:
            change.refused.append(f"{table.name}: the key changed from {old_table.key} to {table.key}")
            continue
        for old in old_table.columns:
            if old.name not in table.column_names:
                change.refused.append(f"column {table.name}.{old.name} was removed (or renamed)")
        for column in table.columns:
            if column.name not in old_table.column_names:
                change.new_columns.append((table.name, column))
                continue
            old = old_table.column(column.name)
            if old.pg_ddl_type == column.pg_ddl_type:
                continue
            if widens(old, column):
                change.widened.append((table.name, old, column))
            else:
                change.refused.append(
                    f"column {table.name}.{column.name}: {old.pg_ddl_type} -> {column.pg_ddl_type} is not a widening"
                )
    return change


def refuse(change: ContractChange, against: str) -> None:
    """Raise :class:`ContractError` naming every change the published months cannot follow."""
    if change.refused:
        raise ContractError(
            f"sql/schema.sql changed in a way {against} cannot follow: {'; '.join(change.refused)}. {HOW_TO}"
        )


# --- reading data written under an older contract ------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _file_schema(path: str, size: int, mtime_ns: int) -> dict[str, str]:
    """column -> DuckDB type of a Parquet file, as :func:`storage_type` spells it, from its footer
    (cached per file version)."""
    with duckdb.cursor() as con:
        return relation_columns(con, read_parquet(path))


def relation_columns(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    """column -> DuckDB type, as :func:`storage_type` spells it, of anything DuckDB reads in a FROM."""
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return {name: storage_type(kind) for name, kind, *_ in described}


def storage_type(duckdb_type: str) -> str:
    """A DuckDB type name, spelt one way ('DECIMAL(38, 10)' and 'DECIMAL(38,10)' are one type)."""
    return duckdb_type.replace(" ", "").upper()


def file_columns(path: Path) -> dict[str, str]:
    st = path.stat()
    return _file_schema(str(path), st.st_size, st.st_mtime_ns)


def conforms(table: Table, path: Path) -> bool:
    """Whether the file holds exactly the table's columns, in order, with its storage types."""
    columns = file_columns(path)
    return list(columns) == table.column_names and all(
        columns[c.name] == storage_type(c.duckdb_type) for c in table.columns
    )


def conformed_select(table: Table, path: Path, extra: str = "", reader: str | None = None) -> str:
    """``SELECT <the table's columns> FROM <the file>``: a column the file lacks (added later) reads as
    NULL, a column stored narrower (widened later) is cast to the current type. ``extra``: more select
    items (e.g. ``, as_of``); ``reader``: how to read the file (default ``read_parquet(path)``)."""
    return f"SELECT {conformed_items(table, file_columns(path))}{extra} FROM {reader or read_parquet(path)}"


def conformed_items(table: Table, columns: dict[str, str]) -> str:
    """The select list that reads data stored with ``columns`` (column -> :func:`storage_type`) as the
    table's current contract: a column it lacks as NULL, a narrower one cast; the others as they are."""
    items = []
    for c in table.columns:
        if c.name not in columns:
            items.append(f"CAST(NULL AS {c.duckdb_type}) AS {quote(c.name)}")
        elif columns[c.name] != storage_type(c.duckdb_type):
            items.append(f"CAST({quote(c.name)} AS {c.duckdb_type}) AS {quote(c.name)}")
        else:
            items.append(quote(c.name))
    return ", ".join(items)


def conformed_dataset(con: duckdb.DuckDBPyConnection, name: str, dataset: object, table: Table, extra: str) -> str:
    """:func:`conformed_select` of a pyarrow dataset (an object of a lake on S3), registered on ``con`` as
    ``name``: DuckDB scans it where it is (measured faster than the alternatives, bench/RESULTS.md)."""
    con.register(name, dataset)
    return f"SELECT {conformed_items(table, relation_columns(con, quote(name)))}{extra} FROM {quote(name)}"


def conformed(table: Table, path: Path) -> str:
    """A relation for FROM: the file itself when it conforms (no cost), else its conformed select."""
    if conforms(table, path):
        return read_parquet(path)
    return f"({conformed_select(table, path)})"


def empty_select(table: Table, extra: str = "") -> str:
    typed = ", ".join(f"CAST(NULL AS {c.duckdb_type}) AS {quote(c.name)}" for c in table.columns)
    return f"SELECT {typed}{extra} WHERE false"
