"""PostgreSQL DDL for every derived table, built with sqlglot from the statements of sql/schema.sql.

- live tables: the declared statement as it is, in the target schema (keys and references kept);
- ``<table>_snapshots``: the declared columns plus ``as_of DATE`` and ``as_of_ts`` (as_of 00:00 UTC),
  primary key (key, as_of), partitioned by list of as_of: one partition per month, so a month loads
  into a fresh table;
- the month's partition is loaded in the staging schema (``staged_partition``, then
  ``partition_as_of_ts`` once its rows are in), checked there, and moved and attached by the publish;
- the rows the live upsert reads are COPYed into temporary tables of the publish transaction;
- ``subscriptions_profile_snapshots``: the view the old consumers read.
"""

from __future__ import annotations

from datetime import date

import sqlglot
from sqlglot import exp

from pipeline.schema import Schema, Table

PG = "postgres"
SNAPSHOT_SUFFIX = "_snapshots"
AS_OF = "as_of"
# as_of as a point in time (issue #16): 00:00 UTC of the as_of day, a timestamptz, so that a point-in-time
# join (Feast compares its event timestamps with it) means the same instant in every session's TimeZone;
# a DATE compared with a timestamptz becomes midnight of the *session's* zone. A CHECK on the snapshot
# table (and so on every partition: ATTACH requires it) keeps it equal to as_of whoever writes.
AS_OF_TS = "as_of_ts"
AS_OF_TS_CHECK = "as_of_ts_is_as_of_utc"
_AS_OF_TS_RULE = (
    f"""CONSTRAINT "{AS_OF_TS_CHECK}" CHECK ("{AS_OF_TS}" = CAST("{AS_OF}" AS TIMESTAMP) AT TIME ZONE 'UTC')"""
)
# Columns of the snapshot table the old hand-run script kept for its consumers; the view keeps them readable.
PROFILE_VIEW = "subscriptions_profile_snapshots"
PROFILE_SOURCE = "subscriptions"
PROFILE_COLUMNS = (
    "user_id",
    AS_OF,
    "months_active",
    "monthly_fee",
    "paperless_billing",
    "plan_stream_tv",
    "plan_stream_movies",
    "net_service",
)


def _table(name: str, schema: str) -> exp.Table:
    return exp.table_(exp.to_identifier(name, quoted=True), db=exp.to_identifier(schema, quoted=True))


def _bare_columns(table: Table) -> list[exp.ColumnDef]:
    """The declared column definitions without constraints (a declared collation stays: it is part of the
    column's type, and a partition must match its table's), identifiers quoted."""
    columns = []
    for definition in table.definition.this.expressions:
        column = definition.copy()
        column.set("constraints", [c for c in column.constraints if isinstance(c.kind, exp.CollateColumnConstraint)])
        column.set("this", exp.to_identifier(column.name, quoted=True))
        columns.append(column)
    return columns


def _not_null(column: exp.ColumnDef) -> exp.ColumnDef:
    column.append("constraints", exp.ColumnConstraint(kind=exp.NotNullColumnConstraint()))
    return column


# Live tables leave half of each page free: a month rewrites many rows (usage, every row), and with room
# on the page PostgreSQL updates in place ("HOT": no new index entry). bench/RESULTS.md, "Tuning constants".
LIVE_FILLFACTOR = 50


def live_table(table: Table, schema: str) -> str:
    create = table.definition.copy()
    create.comments = None
    create.set("exists", True)
    create.set(
        "properties",
        exp.Properties(
            expressions=[exp.Property(this=exp.var("fillfactor"), value=exp.Literal.number(LIVE_FILLFACTOR))]
        ),
    )
    create.this.set("this", _table(table.name, schema))
    for column in create.this.expressions:
        column.set("this", exp.to_identifier(column.name, quoted=True))
        for constraint in column.constraints:
            if isinstance(constraint.kind, exp.Reference):
                target = constraint.kind.this  # Schema(this=Table, expressions=[cols])
                target.set("this", _table(target.this.name, schema))
                target.set("expressions", [exp.to_identifier(c.name, quoted=True) for c in target.expressions])
    return create.sql(PG)


def snapshot_table(table: Table, schema: str) -> str:
    create = sqlglot.parse_one(f'CREATE TABLE IF NOT EXISTS t (x INT) PARTITION BY LIST ("{AS_OF}")', read=PG)
    create.this.set("this", _table(table.name + SNAPSHOT_SUFFIX, schema))
    columns = _key_not_null(table)
    as_of = _not_null(exp.ColumnDef(this=exp.to_identifier(AS_OF, quoted=True), kind=exp.DataType.build("DATE")))
    key = exp.PrimaryKey(expressions=[exp.to_identifier(table.key, quoted=True), exp.to_identifier(AS_OF, quoted=True)])
    as_of_ts, rule = sqlglot.parse_one(
        f'CREATE TABLE t ("{AS_OF_TS}" TIMESTAMPTZ NOT NULL, {_AS_OF_TS_RULE})', read=PG
    ).this.expressions
    create.this.set("expressions", [*columns, as_of, as_of_ts, key, rule])
    return create.sql(PG)


def add_as_of_ts(table: Table, schema: str) -> str:
    """``as_of_ts`` added to a snapshot table made before it existed (it then has no partition attached:
    see :func:`pipeline.pg.tables.ensure_tables`)."""
    alter = sqlglot.parse_one(
        f'ALTER TABLE t ADD COLUMN "{AS_OF_TS}" TIMESTAMPTZ NOT NULL, ADD {_AS_OF_TS_RULE}', read=PG
    )
    alter.set("this", _table(table.name + SNAPSHOT_SUFFIX, schema))
    return alter.sql(PG)


def partition_as_of_ts(table: Table, schema: str, as_of: date) -> str:
    """``as_of_ts`` given to a month's partition once its rows are in: a constant default added after the
    COPY is stored once in the catalog, not in each row (PostgreSQL's "missing value"), so it costs the
    load nothing, where a generated column costs the COPY 13-29 % more time and every row 8
    bytes (README, "as_of as a point in time"). The CHECK, which ATTACH requires, is validated here by
    one read of the partition."""
    alter = sqlglot.parse_one(
        f'ALTER TABLE t ADD COLUMN "{AS_OF_TS}" TIMESTAMPTZ NOT NULL '
        f"DEFAULT CAST('{as_of.isoformat()} 00:00:00+00' AS TIMESTAMPTZ), ADD {_AS_OF_TS_RULE}",
        read=PG,
    )
    alter.set("this", _table(partition_name(table, as_of), schema))
    return alter.sql(PG)


def partition_name(table: Table, as_of: date) -> str:
    return f"{table.name}{SNAPSHOT_SUFFIX}_{as_of:%Y%m%d}"


STAGED_AS_OF_CHECK = "staged_as_of"


def staged_partition(table: Table, schema: str, as_of: date) -> str:
    """The month's partition as it is loaded in the staging schema: the snapshot table's columns but
    ``as_of_ts`` (:func:`partition_as_of_ts` adds it after the COPY), ``as_of`` filled in by its default,
    and a CHECK on ``as_of`` that implies the partition bound, so that ATTACH PARTITION trusts it instead
    of scanning the table. The publish drops the default and the check."""
    day = as_of.isoformat()
    template = sqlglot.parse_one(
        f"CREATE TABLE t ({AS_OF} DATE NOT NULL DEFAULT CAST('{day}' AS DATE), "
        f"CONSTRAINT {STAGED_AS_OF_CHECK} CHECK ({AS_OF} = CAST('{day}' AS DATE)))",
        read=PG,
    )
    template.this.set("this", _table(partition_name(table, as_of), schema))
    as_of_column, check = template.this.expressions
    as_of_column.set("this", exp.to_identifier(AS_OF, quoted=True))
    template.this.set("expressions", [*_key_not_null(table), as_of_column, check])
    return template.sql(PG)


def _key_not_null(table: Table) -> list[exp.ColumnDef]:
    columns = _bare_columns(table)
    for column in columns:
        if column.name == table.key:
            _not_null(column)
    return columns


def temp_table(table: Table, name: str, columns: list[str] | None = None) -> str:
    """A temporary table of the publish transaction with (some of) the declared columns, dropped when it
    ends (sqlglot does not write ON COMMIT, so the clause is appended)."""
    create = sqlglot.parse_one("CREATE TEMPORARY TABLE t (x INT)", read=PG)
    create.this.set("this", exp.to_identifier(name, quoted=True))
    create.this.set("expressions", [c for c in _bare_columns(table) if columns is None or c.name in columns])
    return create.sql(PG) + " ON COMMIT DROP"


def profile_view(schema: Schema, pg_schema: str) -> str:
    source = schema.table(PROFILE_SOURCE)
    missing = [c for c in PROFILE_COLUMNS if c != AS_OF and c not in source.column_names]
    if missing:
        raise ValueError(f"{PROFILE_VIEW} needs {PROFILE_SOURCE} columns {missing}, which sql/schema.sql lacks")
    select = exp.select(*[exp.column(c, quoted=True) for c in PROFILE_COLUMNS]).from_(
        _table(PROFILE_SOURCE + SNAPSHOT_SUFFIX, pg_schema)
    )
    view = exp.Create(this=_table(PROFILE_VIEW, pg_schema), kind="VIEW", replace=True, expression=select)
    return view.sql(PG)


def all_tables(schema: Schema, pg_schema: str) -> list[str]:
    """Every statement that makes the consumers' tables exist, in dependency order (the profile view,
    which reads them, is made by :func:`pipeline.pg.tables.ensure_tables` only when it changed)."""
    return [
        *(live_table(t, pg_schema) for t in schema.tables),
        *(snapshot_table(t, pg_schema) for t in schema.tables),
    ]
