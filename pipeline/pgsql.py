"""PostgreSQL: connections, the consumers' tables, staging loads and the one-transaction publish.

SQL text is composed with :mod:`psycopg.sql` (every identifier quoted) from the names in
sql/schema.sql; the DDL comes from :mod:`pipeline.ddl`. Nothing read from a CSV reaches SQL text:
data only ever travels through COPY.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pipeline import ddl
from pipeline.config import PostgresSettings
from pipeline.duck import literal, quote, read_parquet
from pipeline.errors import PostgresUnavailableError, PublishError
from pipeline.failpoints import failpoint
from pipeline.schema import Schema, Table

log = logging.getLogger(__name__)

RUNS_TABLE = "pipeline_runs"
CHANGES_SUFFIX = "__changes"
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
) -> int:
    """Stream the rows of a DuckDB query into a PostgreSQL table through COPY (CSV); returns rows."""
    scratch.parent.mkdir(parents=True, exist_ok=True)
    (rows,) = duck.execute(f"COPY ({select_sql}) TO {literal(str(scratch))} (FORMAT csv, HEADER false)").fetchone()
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, _columns(columns))
    try:
        with conn.cursor() as cur, cur.copy(copy_sql) as copy, scratch.open("rb") as f:
            while chunk := f.read(COPY_CHUNK):
                copy.write(chunk)
        return int(rows)
    finally:
        scratch.unlink(missing_ok=True)


@dataclass
class StagedMonth:
    schema_name: str
    rows: dict[str, int] = field(default_factory=dict)


def load_staging(
    conn: psycopg.Connection,
    duck: duckdb.DuckDBPyConnection,
    schema: Schema,
    pg_schema: str,
    as_of: date,
    snapshot_files: dict[str, Path],
    changes_files: dict[str, Path],
    volume: list[dict],
    scratch_dir: Path,
) -> StagedMonth:
    """(Re)build the month's staging schema: the merged snapshot of every table, the keys that changed,
    and the drop volume figures the quality checks compare. Committed, so Soda can read it."""
    staged = StagedMonth(staging_schema(pg_schema, as_of))
    stage = staged.schema_name
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(stage)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(stage)))
        for table in schema.tables:
            staged.rows[table.name] = _load_table(
                conn, duck, table, stage, snapshot_files[table.name], changes_files[table.name], scratch_dir
            )
        _load_volume(conn, stage, volume)
    return staged


def _load_table(
    conn: psycopg.Connection,
    duck: duckdb.DuckDBPyConnection,
    table: Table,
    stage: str,
    snapshot_file: Path,
    changes_file: Path,
    scratch_dir: Path,
) -> int:
    """One table's merged snapshot and changed keys into staging; returns the snapshot's rows."""
    started = time.perf_counter()
    conn.execute(ddl.staging_table(table, stage))  # type: ignore[arg-type]
    select = f"SELECT {export_expr(table)} FROM {read_parquet(snapshot_file)}"
    rows = copy_parquet(
        conn, duck, select, _ident(stage, table.name), table.column_names, scratch_dir / f"{table.name}.csv"
    )
    changes = _ident(stage, table.name + CHANGES_SUFFIX)
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({} TEXT, change TEXT)").format(changes, _ident(table.key)))
    copy_parquet(
        conn,
        duck,
        f"SELECT * FROM {read_parquet(changes_file)}",
        changes,
        [table.key, "change"],
        scratch_dir / f"{table.name}{CHANGES_SUFFIX}.csv",
    )
    # statistics now, so the checks' and the publish's joins are planned for the real row counts
    conn.execute(sql.SQL("ANALYZE {}, {}").format(_ident(stage, table.name), changes))
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


def publish(
    conn: psycopg.Connection,
    schema: Schema,
    pg_schema: str,
    as_of: date,
    previous_as_of: date | None,
    run_row: dict,
) -> SyncResult:
    """In ONE transaction (``conn`` must be in autocommit mode, so this block is a real BEGIN … COMMIT,
    not a savepoint inside some open transaction): live upserts (only when this month is the newest),
    the month's snapshot rows, and its pipeline_runs row. Readers see the month all at once or not at all."""
    stage = staging_schema(pg_schema, as_of)
    if not conn.autocommit:
        raise ValueError("publish() needs an autocommit connection: its transaction must be the outermost")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [advisory_key(pg_schema)])
        failpoint("in_sync")
        runs = _ident(pg_schema, RUNS_TABLE)
        live_as_of = conn.execute(
            sql.SQL("SELECT max(as_of) FROM {} WHERE status = %s").format(runs), [PUBLISHED]
        ).fetchone()[0]
        result = SyncResult(live_updated=live_as_of is None or as_of >= live_as_of)
        if result.live_updated:
            incremental = live_as_of == previous_as_of or (live_as_of == as_of and previous_as_of is None)
            started = time.perf_counter()
            result.live_rows = _sync_live(conn, schema, pg_schema, stage, incremental, run_row["changes"])
            result.seconds["live"] = round(time.perf_counter() - started, 3)
        else:
            log.info("live tables hold %s, newer than %s: only the snapshots are published", live_as_of, as_of)
        started = time.perf_counter()
        for table in schema.tables:
            result.snapshot_rows[table.name] = _sync_snapshot(conn, table, pg_schema, stage, as_of)
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


# Row-by-row foreign-key checks cost more than the upsert itself on a big write (measured: 400,000 rows
# into a child table take 9.9 s with the key checked per row, 3.0 s without plus 0.5 s to validate the
# whole table once). A month that writes more than this many rows drops the foreign keys of the live
# tables inside the publish transaction and adds them back validated, so readers never see them missing.
BULK_WRITE_ROWS = 50_000


def _sync_live(
    conn: psycopg.Connection,
    schema: Schema,
    pg_schema: str,
    stage: str,
    incremental: bool,
    changes: dict[str, dict[str, int]],
) -> dict[str, dict[str, int]]:
    """Upsert the live tables from staging. Incremental (live holds the previous month): only the keys the
    merge marked inserted/updated are written and the deleted ones removed. Otherwise (live holds some
    other month) every staged row is upserted (unchanged ones skipped) and live keys absent from the
    month removed. ``changes`` are the merge's counts per table: they size the write without a query."""
    sources, to_write = {}, 0
    for table in schema.tables:
        counts = changes[table.name]
        written = counts["inserted"] + counts["updated"]
        staged = _ident(stage, table.name)
        if incremental and counts["unchanged"] + counts["carried"] > 0:
            sources[table.name] = sql.SQL(
                "SELECT {} FROM {} AS s JOIN {} AS c USING ({}) WHERE c.change <> 'deleted'"
            ).format(
                _columns(table.column_names, "s"),
                staged,
                _ident(stage, table.name + CHANGES_SUFFIX),
                _ident(table.key),
            )
        else:  # every staged row is to be written (or compared): no need to join with the changed keys
            sources[table.name] = sql.SQL("SELECT {} FROM {}").format(_columns(table.column_names), staged)
            written = written if incremental else written + counts["unchanged"] + counts["carried"]
        to_write += written
    bulk = to_write > BULK_WRITE_ROWS
    log.info("live tables: %d rows to write%s", to_write, " (bulk: keys dropped and rebuilt)" if bulk else "")
    empty = {t.name for t in schema.tables if bulk and _is_empty(conn, _ident(pg_schema, t.name))}
    # Foreign keys first (they depend on the keys), then the primary keys of tables that are empty: an empty
    # table is filled by a plain INSERT and gets its key in one sorted build afterwards.
    dropped = _drop_constraints(conn, schema, pg_schema, "f", schema.table_names) if bulk else []
    dropped += _drop_constraints(conn, schema, pg_schema, "p", [t for t in schema.table_names if t in empty])
    counts: dict[str, dict[str, int]] = {}
    for table in schema.tables:  # the root (users) first: the others reference it
        live = _ident(pg_schema, table.name)
        if table.name in empty:
            statement = sql.SQL("INSERT INTO {} ({}) {}").format(
                live, _columns(table.column_names), sources[table.name]
            )
        else:
            statement = upsert_sql(live, table.column_names, [table.key], sources[table.name])
        counts[table.name] = {"written": conn.execute(statement).rowcount, "deleted": 0}
    for table in reversed(schema.tables):  # delete children before the users they reference
        key = _ident(table.key)
        live = _ident(pg_schema, table.name)
        if incremental:
            gone = sql.SQL("SELECT {} FROM {} WHERE change = 'deleted'").format(
                key, _ident(stage, table.name + CHANGES_SUFFIX)
            )
        else:
            gone = sql.SQL("SELECT {} FROM {} EXCEPT SELECT {} FROM {}").format(
                key, live, key, _ident(stage, table.name)
            )
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {} IN ({})").format(live, key, gone))
        counts[table.name]["deleted"] = cur.rowcount
    for table, name, definition in reversed(dropped):  # keys first, then references, each validated at once
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, _ident(name), sql.SQL(definition)))
    return counts


def _is_empty(conn: psycopg.Connection, table: sql.Identifier) -> bool:
    return conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()[0]


def _drop_constraints(
    conn: psycopg.Connection, schema: Schema, pg_schema: str, kind: str, tables: list[str]
) -> list[tuple]:
    """Drop the constraints of one kind ('f' foreign key, 'p' primary key) of some live tables; returns
    (table, name, definition as PostgreSQL prints it) to add them back. SQL text from the catalog only."""
    dropped = []
    for name in tables:
        live = _ident(pg_schema, schema.table(name).name)
        rows = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = %s ORDER BY conname",
            [f'"{pg_schema}"."{name}"', kind],
        ).fetchall()
        for constraint, definition in rows:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(live, _ident(constraint)))
            dropped.append((live, constraint, definition))
    return dropped


def _sync_snapshot(conn: psycopg.Connection, table: Table, pg_schema: str, stage: str, as_of: date) -> int:
    """The month's rows of ``<table>_snapshots``: a new month fills a fresh partition; a month published
    again (a rerun or a correction) is upserted on (key, as_of) and loses keys it no longer has."""
    partition = ddl.partition_name(table, as_of)
    exists = conn.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."{partition}"']).fetchone()[0]
    target = _ident(pg_schema, table.name + ddl.SNAPSHOT_SUFFIX)
    names = [*table.column_names, ddl.AS_OF]
    source = sql.SQL("SELECT {}, {}::date FROM {}").format(
        _columns(table.column_names), sql.Literal(as_of), _ident(stage, table.name)
    )
    if exists is None:
        # A new month: fill a plain table, build its key in one pass (5x faster than maintaining the index
        # row by row), then attach it; PostgreSQL adopts the index as the partition's primary key.
        part = _ident(pg_schema, partition)
        conn.execute(ddl.standalone_partition(table, pg_schema, as_of))  # type: ignore[arg-type]
        cur = conn.execute(sql.SQL("INSERT INTO {} ({}) {}").format(part, _columns(names), source))
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}, {})").format(part, _ident(table.key), _ident(ddl.AS_OF))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(target, part, sql.Literal(as_of))
        )
        return cur.rowcount
    cur = conn.execute(upsert_sql(target, names, [table.key, ddl.AS_OF], source))
    written = cur.rowcount
    conn.execute(
        sql.SQL("DELETE FROM {} AS t WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE s.{} = t.{})").format(
            _ident(pg_schema, partition), _ident(stage, table.name), _ident(table.key), _ident(table.key)
        )
    )
    return written
