"""The consumers' tables made to exist (live, ``<table>_snapshots``, ``pipeline_runs``, the profile
view), and what ``pipeline_runs`` says is published."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import date

import psycopg
from psycopg import sql

from pipeline import ddl, evolve, pipeline_tables
from pipeline.errors import ContractError
from pipeline.pg.sqltext import PUBLISHED, RUNS_TABLE, ident, regclass
from pipeline.schema import Column, Schema

log = logging.getLogger(__name__)
VIEW_COMMENT_PREFIX = "streamflow-lake definition "


def ensure_tables(conn: psycopg.Connection, schema: Schema, pg_schema: str) -> None:
    """Create the schema, live, snapshot and run tables and the profile view when missing, and give the
    columns of existing ones the collation sql/schema.sql declares. Takes no lock a reader holds: the
    existing tables are left alone, and the view is replaced only when its definition changed (a
    consumer's open transaction that read it would block the replacement, and every reader after it)."""
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(pg_schema)))
        _migrate_collations(conn, schema, pg_schema)
        for statement in ddl.all_tables(schema, pg_schema):
            conn.execute(statement)  # built by sqlglot from sql/schema.sql
        _migrate_as_of_ts(conn, schema, pg_schema)
        for statement in pipeline_tables.runs_table(pg_schema):  # from sql/pipeline_tables.sql
            conn.execute(statement)
        _ensure_view(conn, ddl.PROFILE_VIEW, ddl.profile_view(schema, pg_schema), pg_schema)


def _ensure_view(conn: psycopg.Connection, name: str, definition: str, pg_schema: str) -> None:
    """Create or replace the view ``name`` unless it exists with this very definition (told by the
    definition's hash, kept in the view's comment)."""
    marker = VIEW_COMMENT_PREFIX + hashlib.sha256(definition.encode()).hexdigest()[:16]
    current = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", [regclass(pg_schema, name)])
    if current.fetchone()[0] == marker:  # type: ignore[index]
        return
    conn.execute(definition)  # built by sqlglot from sql/schema.sql
    conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(ident(pg_schema, name), sql.Literal(marker)))


def _migrate_collations(conn: psycopg.Connection, schema: Schema, pg_schema: str) -> None:
    """Tables created before their columns declared a collation (the keys' COLLATE "C") get it: a month's
    partition can only be attached to a table whose columns collate like its own. PostgreSQL rebuilds
    the indexes on the column, not the table; the profile view, which reads the column, is dropped
    first and made again by :func:`ensure_tables`."""
    declared = {
        (name, c.name): c
        for table in schema.tables
        for c in table.columns
        if c.collation
        for name in (table.name, table.name + ddl.SNAPSHOT_SUFFIX)
    }
    if not declared:
        return
    rows = conn.execute(
        "SELECT c.relname, a.attname, coalesce(k.collname, '') FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_collation k ON k.oid = a.attcollation "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped",
        [pg_schema],
    ).fetchall()
    stale = [
        (table, declared[(table, column)])
        for table, column, collation in rows
        if (table, column) in declared and declared[(table, column)].collation != collation
    ]
    if not stale:
        return
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(ident(pg_schema, ddl.PROFILE_VIEW)))
    for table, column in stale:
        log.warning(
            "%s.%s.%s: now COLLATE %r, as sql/schema.sql declares (its indexes are rebuilt)",
            pg_schema,
            table,
            column.name,
            column.collation,
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} COLLATE {}").format(
                ident(pg_schema, table),
                ident(column.name),
                sql.SQL(column.pg_ddl_type),  # a declared type, not data
                ident(column.collation or ""),
            )
        )


def _migrate_as_of_ts(conn: psycopg.Connection, schema: Schema, pg_schema: str) -> None:
    """Snapshot tables made before ``as_of_ts`` existed (issue #16) get it, and every month's partition
    its value, without rewriting a row: each partition is detached, given the column as a per-partition
    constant default (kept in the catalog: :func:`pipeline.ddl.partition_as_of_ts`) and its CHECK (one
    read), attached again once the table has the column (one read, for the partition bound), and its
    default dropped (the rows keep their value, as a new month's do). All
    in the caller's transaction, under the table's exclusive lock (the publish's lock_timeout applies)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'p' AND NOT EXISTS (SELECT 1 FROM pg_attribute a "
        "WHERE a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped)",
        [pg_schema, ddl.AS_OF_TS],
    ).fetchall()
    lacking = {r[0] for r in rows}
    for table in schema.tables:
        parent = table.name + ddl.SNAPSHOT_SUFFIX
        if parent not in lacking:
            continue
        partitions = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) ORDER BY 1",
            [regclass(pg_schema, parent)],
        ).fetchall()
        log.warning(
            "%s.%s: adding %s (as_of 00:00 UTC) to its %d month(s)", pg_schema, parent, ddl.AS_OF_TS, len(partitions)
        )
        months = []
        for name, bound in partitions:
            as_of = _partition_month(name, bound)
            if ddl.partition_name(table, as_of) != name:
                raise ValueError(f"{pg_schema}.{name}: a partition of {parent} not named for its month {as_of}")
            conn.execute(
                sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(ident(pg_schema, parent), ident(pg_schema, name))
            )
            conn.execute(ddl.partition_as_of_ts(table, pg_schema, as_of))
            months.append((name, as_of))
        conn.execute(ddl.add_as_of_ts(table, pg_schema))
        for name, as_of in months:
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    ident(pg_schema, parent), ident(pg_schema, name), sql.Literal(as_of)
                )
            )
            # as a published month's partition: no default (its rows keep the value, stored in the catalog)
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(
                    ident(pg_schema, name), ident(ddl.AS_OF_TS)
                )
            )


def _partition_month(name: str, bound: str) -> date:
    """The as_of of a partition from its bound, ``FOR VALUES IN ('2024-01-31')``."""
    found = re.fullmatch(r"FOR VALUES IN \('(\d{4}-\d{2}-\d{2})'\)", bound)
    if found is None:
        raise ValueError(f"partition {name} has the bound {bound!r}, not one as_of date")
    return date.fromisoformat(found.group(1))


def published_runs(conn: psycopg.Connection, pg_schema: str) -> dict[date, dict]:
    """as_of -> pipeline_runs row (as a dict) of every published month, or {} when none exist yet."""
    if conn.execute("SELECT to_regclass(%s)", [regclass(pg_schema, RUNS_TABLE)]).fetchone()[0] is None:  # type: ignore[index]
        return {}
    rows = conn.execute(
        sql.SQL("SELECT as_of, run_id, status, row_counts, changes, finished_at FROM {} WHERE status = %s").format(
            ident(pg_schema, RUNS_TABLE)
        ),
        [PUBLISHED],
    ).fetchall()
    return {
        r[0]: {"run_id": r[1], "status": r[2], "row_counts": r[3], "changes": r[4], "finished_at": r[5]} for r in rows
    }


def is_empty(conn: psycopg.Connection, pg_schema: str, table: str) -> bool:
    return bool(
        conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(ident(pg_schema, table))).fetchone()[0]  # type: ignore[index]
    )


# PostgreSQL's names of the declared types (format_type), back to a declared type
_CATALOG_TYPES = {"integer": "INT", "bigint": "BIGINT", "text": "TEXT", "date": "DATE", "boolean": "BOOLEAN"}


def _catalog_column(name: str, formatted: str) -> Column | None:
    """A column as the catalog describes it (None: a type the contract cannot declare)."""
    if formatted in _CATALOG_TYPES:
        return Column(name, _CATALOG_TYPES[formatted])
    match = re.fullmatch(r"numeric(?:\((\d+),(\d+)\))?", formatted)
    if match is None:
        return None
    precision, scale = match.groups()
    return Column(name, "NUMERIC", int(precision) if precision else None, int(scale) if scale else None)


def migrate(conn: psycopg.Connection, schema: Schema, pg_schema: str) -> list[str]:
    """Bring the live and snapshot tables to the contract, inside the caller's transaction (the month's
    publish): a column the contract gained is added (earlier snapshot partitions read it as NULL), a
    widened type is altered (PostgreSQL rewrites the table and its partitions: on a big table this is
    the cost of the month). A column the contract no longer has, or a type it narrowed, is refused with
    :class:`ContractError` before anything is written. Returns what was done, in words."""
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY c.relname, a.attnum",
        [pg_schema],
    ).fetchall()
    existing: dict[str, dict[str, str]] = {}
    for relation, column, formatted in rows:
        existing.setdefault(relation, {})[column] = formatted
    statements: list[sql.Composed] = []
    done, refused = [], []
    for table in schema.tables:
        for relation in (table.name, table.name + ddl.SNAPSHOT_SUFFIX):
            have = existing.get(relation)
            if have is None:
                continue
            declared = [*table.column_names, *([ddl.AS_OF, ddl.AS_OF_TS] if relation != table.name else [])]
            refused += [f"column {relation}.{c} is not in sql/schema.sql" for c in have if c not in declared]
            for column in table.columns:
                target = ident(pg_schema, relation)
                if column.name not in have:
                    collate = (
                        sql.SQL(" COLLATE {}").format(ident(column.collation)) if column.collation else sql.SQL("")
                    )
                    statements.append(
                        sql.SQL("ALTER TABLE {} ADD COLUMN {} {}{}").format(
                            target,
                            ident(column.name),
                            sql.SQL(column.pg_ddl_type),
                            collate,
                        )
                    )
                    done.append(f"{relation}: added {column.name} {column.pg_ddl_type}")
                    continue
                current = _catalog_column(column.name, have[column.name])
                if current is not None and current.pg_ddl_type == column.pg_ddl_type:
                    continue
                if current is None or not evolve.widens(current, column):
                    refused.append(f"column {relation}.{column.name}: {have[column.name]} -> {column.pg_ddl_type}")
                    continue
                statements.append(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                        target,
                        ident(column.name),
                        sql.SQL(column.pg_ddl_type),
                    )
                )
                done.append(f"{relation}: {column.name} widened {have[column.name]} -> {column.pg_ddl_type}")
    if refused:
        raise ContractError(
            f"PostgreSQL schema {pg_schema} cannot follow sql/schema.sql: {'; '.join(refused)}. {evolve.HOW_TO}"
        )
    if not statements:
        return []
    view = ident(pg_schema, ddl.PROFILE_VIEW)
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))  # a column it reads may change type
    for statement in statements:
        conn.execute(statement)
    _ensure_view(conn, ddl.PROFILE_VIEW, ddl.profile_view(schema, pg_schema), pg_schema)
    for line in done:
        log.warning("contract: %s.%s", pg_schema, line)
    return done
