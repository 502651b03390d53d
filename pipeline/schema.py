"""The table contract, read once from ``sql/schema.sql`` with sqlglot.

Everything that needs a column name or a type derives it from here: the CSV read types
(:mod:`pipeline.stage`), the Parquet/Arrow schema, the DuckDB merge, the PostgreSQL
staging, snapshot and live tables and the upserts (:mod:`pipeline.pg`).
There is no second list of columns anywhere in the package. What each declared type means (its
storage types, cast, checks and reject reasons) is in :mod:`pipeline.types`, one rule per type.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp

from pipeline.types import NumericRule, TypeRule, declared_name, rule_for

if TYPE_CHECKING:
    import pyarrow as pa

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = PROJECT_ROOT / "sql" / "schema.sql"

HIDDEN_AT_START = "hidden at start"
# The table whose value columns are the training labels; every other table's are features (drift,
# training sets). Here, not in pipeline.training, so that the drift thread of a publish imports nothing
# heavy: importing pyarrow.compute there beside the gate's Soda import deadlocked a month on the
# interpreter's import lock (setuptools' distutils hack imports from inside a finder).
LABEL_TABLE = "labels"


class SchemaError(Exception):
    """sql/schema.sql declares something the pipeline cannot derive a lake type for."""


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # TEXT, DATE, BOOLEAN, INT, BIGINT, NUMERIC (as declared): a TypeRule.declared
    precision: int | None = None  # NUMERIC(p, s) when declared with a precision
    scale: int | None = None
    primary_key: bool = False
    references: str | None = None  # table name of a REFERENCES clause
    hidden_at_start: bool = False  # a drop may leave the column out; it is then NULL
    collation: str | None = None  # COLLATE "…" as declared (PostgreSQL only: the lake compares text as bytes)

    @property
    def numeric_precision(self) -> int:
        """The precision the lake stores a NUMERIC with (the declared one, else the lake's default)."""
        return NumericRule(self.precision, self.scale).precision

    @property
    def numeric_scale(self) -> int:
        return NumericRule(self.precision, self.scale).scale

    @property
    def rule(self) -> TypeRule:
        """The rules of the declared type (:mod:`pipeline.types`): storage types, cast, checks, reasons."""
        return rule_for(self)

    @property
    def duckdb_type(self) -> str:
        """The exact DuckDB type the lake stores this column as."""
        return self.rule.duckdb_type

    @property
    def arrow_type(self) -> pa.DataType:
        return self.rule.arrow_type

    @property
    def pg_ddl_type(self) -> str:
        """The column's type exactly as sql/schema.sql declares it, for PostgreSQL DDL."""
        return self.rule.pg_ddl_type


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    definition: exp.Create = field(compare=False, repr=False)  # the CREATE TABLE as parsed, for DDL

    @property
    def key(self) -> str:
        (pk,) = (c.name for c in self.columns if c.primary_key)
        return pk

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def value_columns(self) -> list[Column]:
        """Every column but the key."""
        return [c for c in self.columns if not c.primary_key]

    @property
    def required_columns(self) -> list[str]:
        """Columns a drop must contain (all but those hidden at start)."""
        return [c.name for c in self.columns if not c.hidden_at_start]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([pa.field(c.name, c.arrow_type, nullable=not c.primary_key) for c in self.columns])


@dataclass(frozen=True)
class Schema:
    tables: tuple[Table, ...]

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"sql/schema.sql declares no table {name!r}; tables: {', '.join(self.table_names)}")

    @property
    def root(self) -> Table:
        """The table every other table references (users)."""
        referenced = {c.references for t in self.tables for c in t.columns if c.references}
        roots = [t for t in self.tables if t.name in referenced]
        if len(roots) != 1:
            raise SchemaError(f"expected exactly one referenced table, found {[t.name for t in roots]}")
        return roots[0]


@functools.lru_cache(maxsize=64)
def parse_schema(sql_text: str, source: str = "schema.sql") -> Schema:
    """The tables of a contract's text (parsed once per text: a month's steps read the published contract
    many times, and a Schema is immutable)."""
    tables = []
    for statement in sqlglot.parse(sql_text, read="postgres"):
        if statement is None:
            continue
        if not isinstance(statement, exp.Create) or statement.kind != "TABLE":
            raise SchemaError(f"{source}: only CREATE TABLE statements are allowed, found: {statement.sql()[:80]}")
        tables.append(_parse_table(statement, source))
    if not tables:
        raise SchemaError(f"{source}: no CREATE TABLE statement found")
    return Schema(tuple(tables))


def _parse_table(statement: exp.Create, source: str) -> Table:
    name = statement.this.this.name
    columns = []
    for definition in statement.this.expressions:
        if not isinstance(definition, exp.ColumnDef):
            raise SchemaError(
                f"{source}: table {name}: only column definitions are supported, found {definition.sql()}"
            )
        columns.append(_parse_column(name, definition, source))
    if sum(c.primary_key for c in columns) != 1:
        raise SchemaError(f"{source}: table {name} must declare exactly one PRIMARY KEY column")
    return Table(name, tuple(columns), statement)


def _parse_column(table: str, definition: exp.ColumnDef, source: str) -> Column:
    kind: exp.DataType = definition.args["kind"]
    pg_type = declared_name(kind.this)
    if pg_type is None:
        raise SchemaError(f"{source}: {table}.{definition.name}: type {kind.sql('postgres')} is not supported")
    precision = scale = None
    if pg_type == "NUMERIC" and kind.expressions:
        precision = int(kind.expressions[0].name)
        scale = int(kind.expressions[1].name) if len(kind.expressions) > 1 else 0
    primary_key = False
    references = None
    collation = None
    for constraint in definition.constraints:
        if isinstance(constraint.kind, exp.PrimaryKeyColumnConstraint):
            primary_key = True
        elif isinstance(constraint.kind, exp.Reference):
            references = constraint.kind.this.this.name
        elif isinstance(constraint.kind, exp.CollateColumnConstraint):
            collation = constraint.kind.name
    comments = " ".join(definition.comments or [])
    return Column(
        name=definition.name,
        pg_type=pg_type,
        precision=precision,
        scale=scale,
        primary_key=primary_key,
        collation=collation,
        references=references,
        hidden_at_start=HIDDEN_AT_START in comments.lower(),
    )


SCHEMA_ENV = "STREAMFLOW_SCHEMA"  # another contract file (a staging environment trying a contract change; tests)


def schema_file() -> Path:
    """The contract in force: ``$STREAMFLOW_SCHEMA`` when set, else the repository's sql/schema.sql."""
    return Path(os.environ.get(SCHEMA_ENV) or SCHEMA_FILE)


def load_schema(path: Path | None = None) -> Schema:
    """The contract (:func:`schema_file` unless ``path``), parsed once per file."""
    return _load_schema(path or schema_file())


@functools.cache
def _load_schema(path: Path) -> Schema:
    return parse_schema(path.read_text(encoding="utf-8"), source=str(path.name))
