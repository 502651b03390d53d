"""Quoted names and the fixed names of the pipeline's own PostgreSQL objects (no I/O)."""

from __future__ import annotations

from datetime import date

from psycopg import sql

from pipeline import pipeline_tables
from pipeline.runs import Status

RUNS_TABLE = pipeline_tables.RUNS_TABLE
VOLUME_TABLE = pipeline_tables.VOLUME_TABLE
PUBLISHED = Status.PUBLISHED.value


def ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def column_list(names: list[str], prefix: str | None = None) -> sql.Composed:
    """``"a", "b"`` or, with a prefix, ``"t"."a", "t"."b"``."""
    if prefix is None:
        return sql.SQL(", ").join(ident(n) for n in names)
    return sql.SQL(", ").join(ident(prefix, n) for n in names)


def staging_schema(pg_schema: str, as_of: date) -> str:
    """The schema a month is loaded and checked in before it is published."""
    return f"{pg_schema}__staging_{as_of:%Y%m%d}"


def regclass(pg_schema: str, name: str) -> str:
    """A relation's name as ``to_regclass``/``::regclass`` read it (quoted: names keep their case)."""
    return '"{}"."{}"'.format(pg_schema.replace('"', '""'), name.replace('"', '""'))
