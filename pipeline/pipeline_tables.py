"""The pipeline's own tables (``pipeline_runs``, ``drop_volume``), read once from ``sql/pipeline_tables.sql``
with sqlglot, and the PostgreSQL statements built from them.

Like :mod:`pipeline.ddl` for the drop's tables: the file is the only place their columns are named.
The run row (:meth:`pipeline.runs.RunRecord.pipeline_runs_row`) and the drop volume rows are written
with the column lists given here.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlglot
from sqlglot import exp

from pipeline.schema import PROJECT_ROOT

PIPELINE_TABLES_FILE = PROJECT_ROOT / "sql" / "pipeline_tables.sql"
PG = "postgres"
RUNS_TABLE = "pipeline_runs"
VOLUME_TABLE = "drop_volume"


class PipelineTablesError(Exception):
    """sql/pipeline_tables.sql declares something other than the CREATE TABLE statements expected."""


@functools.cache
def load(path: Path = PIPELINE_TABLES_FILE) -> dict[str, exp.Create]:
    """table name -> its CREATE TABLE as parsed."""
    tables: dict[str, exp.Create] = {}
    for statement in sqlglot.parse(path.read_text(encoding="utf-8"), read=PG):
        if statement is None:
            continue
        if not isinstance(statement, exp.Create) or statement.kind != "TABLE":
            raise PipelineTablesError(f"{path.name}: only CREATE TABLE statements are allowed: {statement.sql()[:80]}")
        tables[statement.this.this.name] = statement
    for name in (RUNS_TABLE, VOLUME_TABLE):
        if name not in tables:
            raise PipelineTablesError(f"{path.name}: no CREATE TABLE {name}")
    return tables


def _definitions(name: str) -> list[exp.ColumnDef]:
    return [c for c in load()[name].this.expressions if isinstance(c, exp.ColumnDef)]


def column_names(name: str) -> list[str]:
    """The columns of ``pipeline_runs`` or ``drop_volume``, in declared order."""
    return [c.name for c in _definitions(name)]


def _nullable(column: exp.ColumnDef) -> bool:
    kinds = (exp.NotNullColumnConstraint, exp.PrimaryKeyColumnConstraint)
    return not any(isinstance(c.kind, kinds) for c in column.constraints)


def _quoted_table(name: str, schema: str) -> exp.Table:
    return exp.table_(exp.to_identifier(name, quoted=True), db=exp.to_identifier(schema, quoted=True))


def create_table(name: str, pg_schema: str, if_not_exists: bool = True) -> str:
    """The declared CREATE TABLE, in ``pg_schema``, identifiers quoted, comments dropped."""
    create = load()[name].copy()
    create.comments = None
    create.set("exists", if_not_exists)
    create.this.set("this", _quoted_table(name, pg_schema))
    for column in create.this.expressions:
        column.comments = None
        column.set("this", exp.to_identifier(column.name, quoted=True))
    return create.sql(PG)


def add_missing_columns(name: str, pg_schema: str) -> list[str]:
    """``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` for every nullable column: a table made before a column
    was declared gains it (its older rows hold NULL). A NOT NULL column cannot be added that way."""
    statements = []
    for column in _definitions(name):
        if not _nullable(column):
            continue
        definition = column.copy()
        definition.comments = None
        definition.set("this", exp.to_identifier(column.name, quoted=True))
        statements.append(
            f"ALTER TABLE {_quoted_table(name, pg_schema).sql(PG)} ADD COLUMN IF NOT EXISTS {definition.sql(PG)}"
        )
    return statements


def runs_table(pg_schema: str) -> list[str]:
    """The statements that make ``pipeline_runs`` exist with every declared column."""
    return [create_table(RUNS_TABLE, pg_schema), *add_missing_columns(RUNS_TABLE, pg_schema)]


def volume_table(stage_schema: str) -> str:
    """The CREATE of the month's ``drop_volume`` in its staging schema (made fresh with the schema)."""
    return create_table(VOLUME_TABLE, stage_schema, if_not_exists=False)
