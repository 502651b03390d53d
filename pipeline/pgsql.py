"""PostgreSQL: connections, the consumers' tables, staging loads and the one-transaction publish.

SQL text is composed with :mod:`psycopg.sql` (every identifier quoted) from the names in
sql/schema.sql; the DDL comes from :mod:`pipeline.ddl`. Nothing read from a CSV reaches SQL text:
data only ever travels through COPY.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

import duckdb
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pipeline import ddl
from pipeline.concurrency import run_all
from pipeline.config import PostgresSettings
from pipeline.duck import literal, quote, read_parquet
from pipeline.errors import PostgresUnavailableError, PublishError
from pipeline.failpoints import failpoint
from pipeline.schema import Schema, Table

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNS_TABLE = "pipeline_runs"
CHANGED_SUFFIX = "__changed"
DELETED_SUFFIX = "__deleted"
VOLUME_TABLE = "drop_volume"
COPY_CHUNK = 1 << 20
PUBLISHED = "published"


# --- connections ------------------------------------------------------------------------------


def describe(dsn: str) -> str:
    """host:port/dbname of a DSN, never its password."""
    params = conninfo_to_dict(dsn)
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


@contextmanager
def connect(dsn: str, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A connection, or one clear line saying which server refused and why (never the password)."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, application_name="streamflow-lake")
    except psycopg.OperationalError as e:
        reason = " ".join(str(e).split())
        password = conninfo_to_dict(dsn).get("password")
        if password:
            reason = reason.replace(str(password), "***")
        raise PostgresUnavailableError(
            f"PostgreSQL at {describe(dsn)} is not available: {reason}. Check that the server runs and the "
            f"POSTGRES_* settings (or POSTGRES_DSN) are right, then run the month again; nothing was published."
        ) from None
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def errors_are_clear(dsn: str, as_of: date) -> Iterator[None]:
    """PostgreSQL errors while publishing become one clear line. A server that goes away (restart,
    network) takes the open transaction with it; any other error rolls it back: either way nothing of
    the month is visible, and the message says where it happened."""
    try:
        yield
    except psycopg.OperationalError as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise PostgresUnavailableError(
            f"lost the connection to PostgreSQL at {describe(dsn)} while publishing {as_of}: {reason}. "
            f"Nothing of the month was published; run it again once the server is back."
        ) from None
    except psycopg.Error as e:
        where = ", ".join(
            f"{label} {value}"
            for label, value in (("table", e.diag.table_name), ("column", e.diag.column_name))
            if value
        )
        reason = " ".join((e.diag.message_primary or str(e)).split())
        raise PublishError(
            f"PostgreSQL at {describe(dsn)} refused month {as_of}{f' ({where})' if where else ''}: {reason} "
            f"[SQLSTATE {e.sqlstate}]. The transaction was rolled back: nothing of the month was published."
        ) from None


def server_version(conn: psycopg.Connection) -> str:
    return str(conn.execute("SHOW server_version").fetchone()[0])


def resolve_dsn(settings: PostgresSettings, lake_root: Path) -> str:
    if settings.dsn:
        return settings.dsn
    from pipeline.embedded import embedded_dsn

    return embedded_dsn(lake_root)


# --- the consumers' tables --------------------------------------------------------------------


def _ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def _columns(names: list[str], prefix: str | None = None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(_ident(n) for n in names)
    return sql.SQL(", ").join(_ident(prefix, n) for n in names)


def runs_table_ddl(pg_schema: str) -> sql.Composed:
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
            as_of        DATE PRIMARY KEY,
            status       TEXT NOT NULL,
            run_id       TEXT NOT NULL,
            row_counts   JSONB NOT NULL,
            changes      JSONB NOT NULL,
            checks       JSONB NOT NULL,
            sources      JSONB NOT NULL,
            started_at   TIMESTAMPTZ NOT NULL,
            finished_at  TIMESTAMPTZ NOT NULL
        )"""
    ).format(_ident(pg_schema, RUNS_TABLE))


def ensure_tables(conn: psycopg.Connection, schema: Schema, pg_schema: str) -> None:
    """Create the schema, live, snapshot and run tables and the profile view when missing."""
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(pg_schema)))
        for statement in ddl.all_tables(schema, pg_schema):
            conn.execute(statement)  # type: ignore[arg-type]  # built by sqlglot from sql/schema.sql
        conn.execute(runs_table_ddl(pg_schema))


def published_runs(conn: psycopg.Connection, pg_schema: str) -> dict[date, dict]:
    """as_of -> pipeline_runs row (as a dict) of every published month, or {} when none exist yet."""
    exists = conn.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."{RUNS_TABLE}"']).fetchone()[0]
    if exists is None:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT as_of, run_id, status, row_counts, changes, finished_at FROM {} WHERE status = %s").format(
            _ident(pg_schema, RUNS_TABLE)
        ),
        [PUBLISHED],
    ).fetchall()
    return {
        r[0]: {"run_id": r[1], "status": r[2], "row_counts": r[3], "changes": r[4], "finished_at": r[5]} for r in rows
    }


# --- staging ----------------------------------------------------------------------------------


def staging_schema(pg_schema: str, as_of: date) -> str:
    return f"{pg_schema}__staging_{as_of:%Y%m%d}"


def export_expr(table: Table) -> str:
    """DuckDB select list that writes each column as PostgreSQL reads it back exactly: NUMERIC without the
    lake's padding zeros (1.5000000000 -> 1.5), everything else as DuckDB prints it."""
    parts = []
    for c in table.columns:
        if c.pg_type == "NUMERIC" and c.numeric_scale > 0:
            parts.append(f"rtrim(rtrim(CAST({quote(c.name)} AS VARCHAR), '0'), '.') AS {quote(c.name)}")
        else:
            parts.append(quote(c.name))
    return ", ".join(parts)


def copy_parquet(
    conn: psycopg.Connection,
    duck: duckdb.DuckDBPyConnection,
    select_sql: str,
    target: sql.Composable,
    columns: list[str],
    scratch: Path,
    freeze: bool = False,
) -> int:
    """Stream the rows of a DuckDB query into a PostgreSQL table through COPY (CSV); returns rows.
    ``freeze`` needs the table created in the same transaction (rows are written frozen)."""
    scratch.parent.mkdir(parents=True, exist_ok=True)
    (rows,) = duck.execute(f"COPY ({select_sql}) TO {literal(str(scratch))} (FORMAT csv, HEADER false)").fetchone()
    options = sql.SQL("FORMAT csv, FREEZE" if freeze else "FORMAT csv")
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(target, _columns(columns), options)
    try:
        with conn.cursor() as cur, cur.copy(copy_sql) as copy, scratch.open("rb") as f:
            while chunk := f.read(COPY_CHUNK):
                copy.write(chunk)
        return int(rows)
    finally:
        scratch.unlink(missing_ok=True)


def snapshot_rows(counts: dict[str, int]) -> int:
    """Rows of a month's snapshot, from the merge's change counts (everything but the deleted keys)."""
    return sum(counts[k] for k in ("inserted", "updated", "unchanged", "carried"))


# Staging loads two tables at a time, each on its own connection: while PostgreSQL parses one table's
# COPY, DuckDB writes out the next, and on two cores both are busy.
STAGING_CONNECTIONS = 2


@dataclass(frozen=True)
class MergedTable:
    """What the merge left for one table: the snapshot, its changed keys, and the change counts."""

    snapshot_file: Path
    changes_file: Path
    counts: dict[str, int]

    @property
    def written(self) -> int:
        return self.counts["inserted"] + self.counts["updated"]


@dataclass
class StagedMonth:
    schema_name: str
    rows: dict[str, int] = field(default_factory=dict)


def load_staging(
    conn: psycopg.Connection,
    dsn: str,
    duck: duckdb.DuckDBPyConnection,
    schema: Schema,
    pg_schema: str,
    as_of: date,
    merged: dict[str, MergedTable],
    volume: list[dict],
    scratch_dir: Path,
    connections: int = STAGING_CONNECTIONS,
) -> StagedMonth:
    """(Re)build the month's staging schema: for every table the month's snapshot partition (loaded once,
    keyed, checked in place and attached by the publish), a view named like the table over it for the
    checks, the rows and keys the live upsert needs, and the drop volume figures. Committed, so Soda can
    read it; nothing in it is visible to the consumers."""
    staged = StagedMonth(staging_schema(pg_schema, as_of))
    stage = staged.schema_name
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(stage)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(stage)))
        _load_volume(conn, stage, volume)
    biggest_first = sorted(schema.tables, key=lambda t: -merged[t.name].snapshot_file.stat().st_size)
    loads = {
        t.name: functools.partial(_load_table, dsn, duck, t, stage, as_of, merged[t.name], scratch_dir)
        for t in biggest_first
    }
    staged.rows = run_all(loads, connections, name="staging")
    return staged


def _load_table(
    dsn: str,
    duck: duckdb.DuckDBPyConnection,
    table: Table,
    stage: str,
    as_of: date,
    merged: MergedTable,
    scratch_dir: Path,
) -> int:
    """One table into staging, on its own connections; returns the snapshot's rows.

    - ``<table>_snapshots_<yyyymmdd>``: the month's partition, COPYed (FREEZE: the rows are born frozen,
      so no later pass rewrites pages to set hint bits), then keyed on (key, as_of): the key build is also
      where a repeated key would be refused;
    - ``<table>``: a view of the declared columns over it, which the checks read;
    - ``<table>__changed``: the rows the merge marked inserted or updated, when only some rows changed
      (the live upsert then reads them instead of joining the whole month with the changed keys);
    - ``<table>__deleted``: the keys a full dump removed."""
    started = time.perf_counter()
    partition = _ident(stage, ddl.partition_name(table, as_of))
    snapshot = read_parquet(merged.snapshot_file)
    changes = read_parquet(merged.changes_file)
    key = quote(table.key)
    with contextlib.closing(duck.cursor()) as cursor, connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(ddl.staged_partition(table, stage, as_of))  # type: ignore[arg-type]
            rows = copy_parquet(
                conn,
                cursor,
                f"SELECT {export_expr(table)} FROM {snapshot}",
                partition,
                table.column_names,
                scratch_dir / f"{table.name}.csv",
                freeze=True,
            )
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}, {})").format(partition, _ident(table.key), _ident(ddl.AS_OF))
        )
        conn.execute(
            sql.SQL("CREATE VIEW {} AS SELECT {} FROM {}").format(
                _ident(stage, table.name), _columns(table.column_names), partition
            )
        )
        analyze = [partition]
        if 0 < merged.written < rows:
            changed = _ident(stage, table.name + CHANGED_SUFFIX)
            conn.execute(ddl.staging_table(table, stage, table.name + CHANGED_SUFFIX))  # type: ignore[arg-type]
            copy_parquet(
                conn,
                cursor,
                f"SELECT {export_expr(table)} FROM {snapshot} WHERE {key} IN "
                f"(SELECT {key} FROM {changes} WHERE change <> 'deleted')",
                changed,
                table.column_names,
                scratch_dir / f"{table.name}{CHANGED_SUFFIX}.csv",
            )
            analyze.append(changed)
        if merged.counts["deleted"]:
            deleted = _ident(stage, table.name + DELETED_SUFFIX)
            conn.execute(ddl.staging_table(table, stage, table.name + DELETED_SUFFIX, [table.key]))  # type: ignore[arg-type]
            copy_parquet(
                conn,
                cursor,
                f"SELECT {key} FROM {changes} WHERE change = 'deleted'",
                deleted,
                [table.key],
                scratch_dir / f"{table.name}{DELETED_SUFFIX}.csv",
            )
            analyze.append(deleted)
        # statistics now, so the checks' and the publish's joins are planned for the real row counts
        conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(analyze)))
    elapsed = time.perf_counter() - started
    log.info(
        "load staging  %-18s %9d rows  %6.2fs  %10.0f rows/s",
        table.name,
        rows,
        elapsed,
        rows / elapsed if elapsed else 0,
    )
    return rows


def _load_volume(conn: psycopg.Connection, stage: str, volume: list[dict]) -> None:
    """The drop volume figures the quality checks compare (checks/across_tables.yml)."""
    volume_table = _ident(stage, VOLUME_TABLE)
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (table_name TEXT, drop_rows BIGINT, previous_drop_rows BIGINT, "
            "snapshot_rows BIGINT, previous_snapshot_rows BIGINT, deleted_rows BIGINT)"
        ).format(volume_table)
    )
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} VALUES (%(table_name)s, %(drop_rows)s, %(previous_drop_rows)s, "
                "%(snapshot_rows)s, %(previous_snapshot_rows)s, %(deleted_rows)s)"
            ).format(volume_table),
            volume,
        )


def drop_staging_quietly(dsn: str, pg_schema: str, as_of: date) -> None:
    """Best effort, on a fresh connection (the run's own may be broken): a failed run's staging schema
    goes away now, and otherwise with the next run of the month."""
    with contextlib.suppress(psycopg.Error, PostgresUnavailableError), connect(dsn, autocommit=True) as conn:
        drop_staging(conn, pg_schema, as_of)


def drop_staging(conn: psycopg.Connection, pg_schema: str, as_of: date) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(staging_schema(pg_schema, as_of))))


# --- the publish transaction ------------------------------------------------------------------


def upsert_sql(
    target: sql.Identifier, columns: list[str], keys: list[str], source: sql.Composable, alias: str = "t"
) -> sql.Composed:
    """INSERT … ON CONFLICT (keys) DO UPDATE, skipping rows whose values did not change: an update that
    changes nothing would still write a new row version (a dead tuple) for nothing."""
    values = [c for c in columns if c not in keys]
    if not values:  # every column is in the key: nothing to update
        action = sql.SQL("DO NOTHING")
    else:
        action = sql.SQL("DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(_ident(c), _ident(c)) for c in values),
            _columns(values, alias),
            _columns(values, "excluded"),
        )
    return sql.SQL("INSERT INTO {} AS {} ({}) {} ON CONFLICT ({}) {}").format(
        target, _ident(alias), _columns(columns), source, _columns(keys), action
    )


@dataclass
class SyncResult:
    live_updated: bool
    live_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> written/deleted
    snapshot_rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def advisory_key(pg_schema: str) -> str:
    return f"streamflow-lake publish {pg_schema}"


@contextmanager
def publishing(
    conn: psycopg.Connection,
    schema: Schema,
    pg_schema: str,
    as_of: date,
    previous_as_of: date | None,
    changes: dict[str, dict[str, int]],
) -> Iterator[Callable[[dict], SyncResult]]:
    """The month's ONE transaction (``conn`` must be in autocommit mode, so this block is a real BEGIN …
    COMMIT, not a savepoint inside some open transaction): live upserts (only when this month is the
    newest), the month's snapshot partitions, and its pipeline_runs row. Readers see the month all at
    once or not at all.

    The live upsert starts at once, in the open transaction, while the caller runs the quality checks on
    the staging schema (other connections): nobody can see it before the commit. The caller then calls
    the yielded ``finish(run_row)``, which waits for the upsert, attaches the snapshots, writes the run
    row and returns; the transaction commits when the block ends. If the block raises instead (a check
    failed), the upsert is cancelled and everything is rolled back. ``changes`` are the merge's counts."""
    stage = staging_schema(pg_schema, as_of)
    if not conn.autocommit:
        raise ValueError("publishing() needs an autocommit connection: its transaction must be the outermost")
    with conn.transaction(), ThreadPoolExecutor(1, thread_name_prefix="live-upsert") as pool:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [advisory_key(pg_schema)])
        failpoint("in_sync")
        runs = _ident(pg_schema, RUNS_TABLE)
        live_as_of = conn.execute(
            sql.SQL("SELECT max(as_of) FROM {} WHERE status = %s").format(runs), [PUBLISHED]
        ).fetchone()[0]
        result = SyncResult(live_updated=live_as_of is None or as_of >= live_as_of)
        live: Future | None = None
        if result.live_updated:
            incremental = live_as_of == previous_as_of or (live_as_of == as_of and previous_as_of is None)
            live = pool.submit(_timed, _sync_live, conn, schema, pg_schema, stage, incremental, changes)
        else:
            log.info("live tables hold %s, newer than %s: only the snapshots are published", live_as_of, as_of)

        def finish(run_row: dict) -> SyncResult:
            if live is not None:
                result.live_rows, result.seconds["live"] = live.result()
            started = time.perf_counter()
            for table in schema.tables:
                rows = snapshot_rows(changes[table.name])
                result.snapshot_rows[table.name] = _sync_snapshot(conn, table, pg_schema, stage, as_of, rows)
            log.info("snapshot tables: %d rows for %s", sum(result.snapshot_rows.values()), as_of)
            result.seconds["snapshots"] = round(time.perf_counter() - started, 3)
            columns = list(run_row)
            conn.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (as_of) DO UPDATE SET {}").format(
                    runs,
                    _columns(columns),
                    sql.SQL(", ").join(sql.Placeholder() for _ in columns),
                    sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(_ident(c), _ident(c)) for c in columns),
                ),
                [json.dumps(v) if isinstance(v, dict | list) else v for v in run_row.values()],
            )
            failpoint("in_transaction")
            return result

        try:
            yield finish
        except BaseException:
            if live is not None and not live.done():
                conn.cancel_safe()  # stop the upsert now: the transaction is rolled back anyway
            if live is not None:
                with contextlib.suppress(Exception):
                    live.result()
            raise


def _timed(function: Callable[..., T], *args: object) -> tuple[T, float]:
    started = time.perf_counter()
    value = function(*args)
    return value, round(time.perf_counter() - started, 3)


# Row-by-row foreign-key checks cost more than the insert itself on a big write (measured: 400,000 rows
# into a child table take 9.9 s with the key checked per row, 3.0 s without plus 0.5 s to validate the
# whole table once). A table that gets more than this many new keys has its foreign keys dropped inside
# the publish transaction and added back validated, so readers never see them missing. Updated rows do
# not count: PostgreSQL does not check a reference again when an update leaves the referencing column
# as it was, and the upsert never changes a key.
BULK_WRITE_ROWS = 50_000


def _sync_live(
    conn: psycopg.Connection,
    schema: Schema,
    pg_schema: str,
    stage: str,
    incremental: bool,
    changes: dict[str, dict[str, int]],
) -> dict[str, dict[str, int]]:
    """Upsert the live tables from staging. Incremental (live holds the previous month): only the rows the
    merge marked inserted/updated are written and the deleted keys removed. Otherwise (live holds some
    other month) every staged row is upserted (unchanged ones skipped) and live keys absent from the
    month removed. ``changes`` are the merge's counts per table: they size each write without a query."""
    sources: dict[str, sql.Composable] = {}
    writes: dict[str, int] = {}
    new_keys: dict[str, int] = {}
    for table in schema.tables:
        counts = changes[table.name]
        rows = snapshot_rows(counts)
        written = counts["inserted"] + counts["updated"]
        source = _ident(stage, table.name)
        if incremental and written == 0:
            continue
        if incremental and written < rows:
            source = _ident(stage, table.name + CHANGED_SUFFIX)
        sources[table.name] = sql.SQL("SELECT {} FROM {}").format(_columns(table.column_names), source)
        writes[table.name] = written if incremental else rows
        # live holding another month: any of its keys may be new
        new_keys[table.name] = counts["inserted"] if incremental else rows
    bulk = [name for name in schema.table_names if new_keys.get(name, 0) > BULK_WRITE_ROWS]
    empty = [name for name in bulk if _is_empty(conn, _ident(pg_schema, name))]
    log.info(
        "live tables: %d rows to write%s",
        sum(writes.values()),
        f" (keys of {', '.join(bulk)} dropped and rebuilt)" if bulk else "",
    )
    # An empty table is filled by a plain INSERT and gets its key in one sorted build afterwards; a big
    # write goes without its foreign keys. References first (they depend on the keys they point at).
    dropped = _drop_constraints(conn, schema, pg_schema, "f", on=bulk, referencing=empty)
    dropped += _drop_constraints(conn, schema, pg_schema, "p", on=empty)
    counts: dict[str, dict[str, int]] = {name: {"written": 0, "deleted": 0} for name in schema.table_names}
    for table in schema.tables:  # the root (users) first: the others reference it
        if table.name not in sources:
            continue
        live = _ident(pg_schema, table.name)
        if table.name in empty:
            statement = sql.SQL("INSERT INTO {} ({}) {}").format(
                live, _columns(table.column_names), sources[table.name]
            )
        else:
            statement = upsert_sql(live, table.column_names, [table.key], sources[table.name])
        counts[table.name]["written"] = conn.execute(statement).rowcount
    for table in reversed(schema.tables):  # delete children before the users they reference
        key = _ident(table.key)
        live = _ident(pg_schema, table.name)
        if not incremental:
            gone = sql.SQL("SELECT {} FROM {} EXCEPT SELECT {} FROM {}").format(
                key, live, key, _ident(stage, table.name)
            )
        elif changes[table.name]["deleted"]:
            gone = sql.SQL("SELECT {} FROM {}").format(key, _ident(stage, table.name + DELETED_SUFFIX))
        else:
            continue
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {} IN ({})").format(live, key, gone))
        counts[table.name]["deleted"] = cur.rowcount
    for table, name, definition in reversed(dropped):  # keys first, then references, each validated at once
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, _ident(name), sql.SQL(definition)))
    return counts


def _is_empty(conn: psycopg.Connection, table: sql.Identifier) -> bool:
    return conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()[0]


def _drop_constraints(
    conn: psycopg.Connection,
    schema: Schema,
    pg_schema: str,
    kind: str,
    on: list[str],
    referencing: list[str] | None = None,
) -> list[tuple]:
    """Drop the constraints of one kind ('f' foreign key, 'p' primary key) of the live tables ``on``, and
    (foreign keys) those of any live table that reference a table in ``referencing``. Returns (table,
    name, definition as PostgreSQL prints it) to add them back. SQL text comes from the catalog only."""
    if not on and not referencing:
        return []
    regclass = {name: f'"{pg_schema}"."{name}"' for name in schema.table_names}
    rows = conn.execute(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid WHERE k.contype = %s AND k.conrelid = ANY(%s::regclass[]) "
        "AND (k.conrelid = ANY(%s::regclass[]) OR k.confrelid = ANY(%s::regclass[])) ORDER BY c.relname, k.conname",
        [
            kind,
            list(regclass.values()),
            [regclass[n] for n in on],
            [regclass[n] for n in referencing or []],
        ],
    ).fetchall()
    dropped = []
    for table_name, constraint, definition in rows:
        live = _ident(pg_schema, table_name)
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(live, _ident(constraint)))
        dropped.append((live, constraint, definition))
    return dropped


def _sync_snapshot(
    conn: psycopg.Connection, table: Table, pg_schema: str, stage: str, as_of: date, rows: int
) -> int:
    """The month's rows of ``<table>_snapshots``. A new month's partition was loaded, keyed and checked in
    staging: it moves into the schema and is attached (its CHECK on as_of spares ATTACH a scan), so the
    snapshot is written to PostgreSQL once. A month published again (a rerun or a correction) is upserted
    on (key, as_of) from it and loses keys it no longer has: rows that did not change are not rewritten."""
    partition = ddl.partition_name(table, as_of)
    exists = conn.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."{partition}"']).fetchone()[0]
    target = _ident(pg_schema, table.name + ddl.SNAPSHOT_SUFFIX)
    if exists is None:
        part = _ident(pg_schema, partition)
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(_ident(stage, partition), _ident(pg_schema)))
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(target, part, sql.Literal(as_of))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ALTER COLUMN {} DROP DEFAULT").format(
                part, _ident(ddl.STAGED_AS_OF_CHECK), _ident(ddl.AS_OF)
            )
        )
        return rows
    names = [*table.column_names, ddl.AS_OF]
    staged = _ident(stage, partition)
    source = sql.SQL("SELECT {} FROM {}").format(_columns(names), staged)
    cur = conn.execute(upsert_sql(target, names, [table.key, ddl.AS_OF], source))
    written = cur.rowcount
    conn.execute(
        sql.SQL("DELETE FROM {} AS t WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE s.{} = t.{})").format(
            _ident(pg_schema, partition), staged, _ident(table.key), _ident(table.key)
        )
    )
    return written
