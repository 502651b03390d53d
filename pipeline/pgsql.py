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
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
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

from pipeline import ddl, pipeline_tables
from pipeline.concurrency import run_all
from pipeline.config import PostgresSettings
from pipeline.duck import literal, quote, read_parquet
from pipeline.errors import PostgresUnavailableError, PublishError
from pipeline.failpoints import failpoint
from pipeline.runs import Status
from pipeline.schema import Schema, Table

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNS_TABLE = pipeline_tables.RUNS_TABLE
VOLUME_TABLE = pipeline_tables.VOLUME_TABLE
COPY_CHUNK = 1 << 20
PUBLISHED = Status.PUBLISHED.value


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
    except psycopg.Error as e:
        if _connection_lost(e):
            reason = " ".join(str(e).split()) or type(e).__name__
            raise PostgresUnavailableError(
                f"lost the connection to PostgreSQL at {describe(dsn)} while publishing {as_of}: {reason}. "
                f"Nothing of the month was published; run it again once the server is back."
            ) from None
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


# SQLSTATEs of a server that went away: connection exceptions, and the shutdowns an administrator or a
# crash causes. Other "operational" errors (a full disk, out of memory) come from a server that is up.
_GONE_STATES = ("57P01", "57P02", "57P03")


def _connection_lost(error: psycopg.Error) -> bool:
    """Whether the connection itself failed (no SQLSTATE: the client lost it), not just a statement."""
    state = error.sqlstate
    return isinstance(error, psycopg.OperationalError) and (
        state is None or state.startswith("08") or state in _GONE_STATES
    )


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


def ensure_tables(conn: psycopg.Connection, schema: Schema, pg_schema: str) -> None:
    """Create the schema, live, snapshot and run tables and the profile view when missing, and give the
    columns of existing ones the collation sql/schema.sql declares."""
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(pg_schema)))
        _migrate_collations(conn, schema, pg_schema)
        for statement in ddl.all_tables(schema, pg_schema):
            conn.execute(statement)  # type: ignore[arg-type]  # built by sqlglot from sql/schema.sql
        for statement in pipeline_tables.runs_table(pg_schema):  # from sql/pipeline_tables.sql
            conn.execute(statement)  # type: ignore[arg-type]


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
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(_ident(pg_schema, ddl.PROFILE_VIEW)))
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
                _ident(pg_schema, table), _ident(column.name), sql.SQL(column.pg_ddl_type), _ident(column.collation)
            )
        )


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


def export_csv(duck: duckdb.DuckDBPyConnection, select_sql: str, path: Path) -> int:
    """Write the rows of a DuckDB query to ``path`` as the CSV that PostgreSQL's COPY reads; returns rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (rows,) = duck.execute(f"COPY ({select_sql}) TO {literal(str(path))} (FORMAT csv, HEADER false)").fetchone()
    return int(rows)


def copy_csv(
    conn: psycopg.Connection, path: Path, target: sql.Composable, columns: list[str], freeze: bool = False
) -> int:
    """Stream a CSV file from :func:`export_csv` into a PostgreSQL table through COPY; returns rows.
    ``freeze`` needs the table created in the same transaction (rows are written frozen)."""
    options = sql.SQL("FORMAT csv, FREEZE" if freeze else "FORMAT csv")
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(target, _columns(columns), options)
    with conn.cursor() as cur:
        with cur.copy(copy_sql) as copy, path.open("rb") as f:
            while chunk := f.read(COPY_CHUNK):
                copy.write(chunk)
        return cur.rowcount


def snapshot_rows(counts: dict[str, int]) -> int:
    """Rows of a month's snapshot, from the merge's change counts (everything but the deleted keys)."""
    return sum(counts[k] for k in ("inserted", "updated", "unchanged", "carried"))


# Staging loads two tables at a time, each on its own connection: while PostgreSQL parses one table's
# COPY, DuckDB writes out the next, and on two cores both are busy. While the live upsert keeps a
# backend busy with a big write, one at a time: one busy backend per core, and the tables the upsert
# reads from staging arrive one by one from the start (measured at 1M users, February: 26.4 s with two,
# 22.1 s with one; the first month the same either way; a month without live writes is faster with two).
STAGING_CONNECTIONS = 2
# A key build sorts the table's keys: in memory when they fit (a 1,000,000-row table's key: 0.75 s against
# 1.0 s with the default 64MB, which spills the sort to disk).
KEY_BUILD_MEMORY = "256MB"


def staging_connections(live_writes: int) -> int:
    """Connections for the staging load, given the rows the live upsert writes meanwhile."""
    return 1 if live_writes > BULK_WRITE_ROWS else STAGING_CONNECTIONS


@dataclass(frozen=True)
class MergedTable:
    """What the merge left for one table: the snapshot, its changed keys, and the change counts."""

    snapshot_file: Path
    changes_file: Path
    counts: dict[str, int]

    @property
    def written(self) -> int:
        return self.counts["inserted"] + self.counts["updated"]

    @property
    def rows(self) -> int:
        return snapshot_rows(self.counts)

    def select(self, table: Table, changed_only: bool = False) -> str:
        """DuckDB query of the snapshot's rows as PostgreSQL reads them, or only those the merge marked
        inserted or updated."""
        query = f"SELECT {export_expr(table)} FROM {read_parquet(self.snapshot_file)}"
        if changed_only:
            key = quote(table.key)
            query += f" WHERE {key} IN (SELECT {key} FROM {read_parquet(self.changes_file)} WHERE change <> 'deleted')"
        return query

    def select_deleted(self, table: Table) -> str:
        """DuckDB query of the keys a full dump removed."""
        return f"SELECT {quote(table.key)} FROM {read_parquet(self.changes_file)} WHERE change = 'deleted'"


@dataclass
class StagedMonth:
    schema_name: str
    rows: dict[str, int] = field(default_factory=dict)


def staging_order(schema: Schema, merged: dict[str, MergedTable], first: Collection[str] = ()) -> list[str]:
    """The order staging loads the tables in. First those the live upsert reads from staging (``first``):
    the root among them (the upsert writes it before the tables that reference it), then the quickest to
    load, so the upsert, which writes the others meanwhile, waits as little as possible (at 1M users,
    February: 2.4 s idle while the users partition loaded before usage's). Then the root (the checks of
    a table that references it wait for it), then the slowest (with two connections, the quick ones fill
    in). A load's time follows the values PostgreSQL parses: rows times columns."""
    root = schema.root.name

    def order(name: str) -> tuple[bool, bool, int]:
        values = merged[name].rows * len(schema.table(name).columns)
        return name not in first, name != root, values if name in first else -values

    return sorted(schema.table_names, key=order)


class SnapshotCsv:
    """Each table's snapshot for the month as the CSV that COPY reads: written by DuckDB once, however many
    connections load it (its staging partition; an empty live table, in the first month, as well), and
    removed when the last of them is done. Readers beyond staging are announced with :meth:`share`
    before any load starts."""

    def __init__(
        self, duck: duckdb.DuckDBPyConnection, schema: Schema, merged: dict[str, MergedTable], scratch_dir: Path
    ) -> None:
        self.schema, self.merged = schema, merged
        self._duck, self._scratch = duck, scratch_dir
        self._readers = dict.fromkeys(schema.table_names, 1)  # staging reads every table
        self._exporting = {name: threading.Lock() for name in schema.table_names}
        self._files: dict[str, tuple[Path, int]] = {}
        self._lock = threading.Lock()

    def share(self, name: str) -> None:
        with self._lock:
            self._readers[name] += 1

    @contextmanager
    def read(self, name: str) -> Iterator[tuple[Path, int]]:
        """(path, rows) of the table's CSV, exported now unless another reader has already."""
        with self._exporting[name]:
            if name not in self._files:
                path = self._scratch / f"{name}.csv"
                with contextlib.closing(self._duck.cursor()) as cursor:
                    rows = export_csv(cursor, self.merged[name].select(self.schema.table(name)), path)
                self._files[name] = (path, rows)
            exported = self._files[name]
        try:
            yield exported
        finally:
            with self._lock:
                self._readers[name] -= 1
                if self._readers[name] <= 0:
                    self._files.pop(name, None)
                    exported[0].unlink(missing_ok=True)

    def close(self) -> None:
        """Remove what is left (the readers of a failed publish stop early)."""
        with self._lock:
            for path, _ in self._files.values():
                path.unlink(missing_ok=True)
            self._files.clear()


def load_staging(
    dsn: str,
    snapshots: SnapshotCsv,
    pg_schema: str,
    as_of: date,
    volume: list[dict],
    connections: int = STAGING_CONNECTIONS,
    on_loaded: Callable[[str], None] | None = None,
    first: Collection[str] = (),
) -> StagedMonth:
    """(Re)build the month's staging schema, on connections of its own: for every table the month's
    snapshot partition (loaded once, keyed, checked in place and attached by the publish), a view named
    like the table over it for the checks, and the drop volume figures. Committed, so Soda can read it;
    nothing in it is visible to the consumers. ``on_loaded(table)`` is called as each table's partition
    is committed; ``first``: the tables someone waits for (see :func:`staging_order`)."""
    staged = StagedMonth(staging_schema(pg_schema, as_of))
    stage = staged.schema_name
    with connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(_ident(stage)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(stage)))
        _load_volume(conn, stage, volume)
    loads = {
        name: functools.partial(_load_table, dsn, snapshots, snapshots.schema.table(name), stage, as_of, on_loaded)
        for name in staging_order(snapshots.schema, snapshots.merged, first)
    }
    staged.rows = run_all(loads, connections, name="staging")
    return staged


def _load_table(
    dsn: str,
    snapshots: SnapshotCsv,
    table: Table,
    stage: str,
    as_of: date,
    on_loaded: Callable[[str], None] | None = None,
) -> int:
    """One table into staging, on its own connection; returns the snapshot's rows.

    - ``<table>_snapshots_<yyyymmdd>``: the month's partition, COPYed (FREEZE: the rows are born frozen,
      so no later pass rewrites pages to set hint bits), then keyed on (key, as_of): the key build is also
      where a repeated key would be refused;
    - ``<table>``: a view of the declared columns over it, which the checks read.

    No ANALYZE: the checks' joins get the same plan from the table's size alone (a hash anti-join), and
    autovacuum gathers the partition's statistics once it is published (its inserts count for that)."""
    started = time.perf_counter()
    partition = _ident(stage, ddl.partition_name(table, as_of))
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(KEY_BUILD_MEMORY)))
        with conn.transaction(), snapshots.read(table.name) as (path, _):
            conn.execute(ddl.staged_partition(table, stage, as_of))  # type: ignore[arg-type]
            rows = copy_csv(conn, path, partition, table.column_names, freeze=True)
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}, {})").format(partition, _ident(table.key), _ident(ddl.AS_OF))
        )
        conn.execute(
            sql.SQL("CREATE VIEW {} AS SELECT {} FROM {}").format(
                _ident(stage, table.name), _columns(table.column_names), partition
            )
        )
    if on_loaded is not None:
        on_loaded(table.name)
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
    conn.execute(pipeline_tables.volume_table(stage))  # type: ignore[arg-type]  # from sql/pipeline_tables.sql
    columns = pipeline_tables.column_names(VOLUME_TABLE)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                volume_table, _columns(columns), sql.SQL(", ").join(sql.Placeholder(c) for c in columns)
            ),
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


@dataclass
class Publication:
    """The open publish transaction, as its caller sees it."""

    live_writes: int  # rows the live upsert (running meanwhile) writes; 0 when live is left as it is
    live_reads: list[str]  # tables whose rows the live upsert reads from their staging partition
    snapshots: SnapshotCsv  # the month's rows as COPY reads them, for the staging load
    staged: Callable[[str], None]  # staged(table): its staging partition is committed, the upsert may read it
    finish: Callable[[dict], SyncResult]  # finish(run_row): wait for live, attach the snapshots, run row


@contextmanager
def publishing(
    conn: psycopg.Connection,
    duck: duckdb.DuckDBPyConnection,
    schema: Schema,
    pg_schema: str,
    as_of: date,
    previous_as_of: date | None,
    merged: dict[str, MergedTable],
    scratch_dir: Path,
) -> Iterator[Publication]:
    """The month's ONE transaction (``conn`` must be in autocommit mode, so this block is a real BEGIN …
    COMMIT, not a savepoint inside some open transaction): live upserts (only when this month is the
    newest), the month's snapshot partitions, and its pipeline_runs row. Readers see the month all at
    once or not at all.

    The live upsert starts at once, in the open transaction and from the merge's files, while the caller
    loads the staging schema and runs the quality checks on it (other connections): nobody can see the
    upsert before the commit. The caller then calls the yielded ``finish(run_row)``, which waits for the
    upsert, attaches the staged snapshots, writes the run row and returns; the transaction commits when
    the block ends. If the block raises instead (a check failed), the upsert is stopped and everything
    is rolled back. The yielded :class:`Publication` also says how big the live write is."""
    stage = staging_schema(pg_schema, as_of)
    if not conn.autocommit:
        raise ValueError("publishing() needs an autocommit connection: its transaction must be the outermost")
    snapshots = SnapshotCsv(duck, schema, merged, scratch_dir)
    with (
        contextlib.closing(snapshots),
        conn.transaction(),
        ThreadPoolExecutor(1, thread_name_prefix="live-upsert") as pool,
    ):
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [advisory_key(pg_schema)])
        failpoint("in_sync")
        runs = _ident(pg_schema, RUNS_TABLE)
        live_as_of = conn.execute(
            sql.SQL("SELECT max(as_of) FROM {} WHERE status = %s").format(runs), [PUBLISHED]
        ).fetchone()[0]
        result = SyncResult(live_updated=live_as_of is None or as_of >= live_as_of)
        sync = _LiveSync(conn, duck, schema, pg_schema, stage, merged, scratch_dir, snapshots)
        live: Future | None = None
        live_writes, live_reads = 0, []
        if result.live_updated:
            # live holding the previous month (none: the first month) takes the merge's changes; holding
            # any other month (this one, before a correction), the whole month
            plan = sync.prepare(incremental=live_as_of == previous_as_of)
            live_writes, live_reads = sum(plan.writes.values()), sorted(plan.from_staging)
            live = pool.submit(_timed, sync.run, plan)
        else:
            log.info("live tables hold %s, newer than %s: only the snapshots are published", live_as_of, as_of)

        def finish(run_row: dict) -> SyncResult:
            for name in schema.table_names:  # staging is done by now: never wait for it again
                sync.staged(name)
            if live is not None:
                result.live_rows, result.seconds["live"] = live.result()
            started = time.perf_counter()
            for table in schema.tables:
                rows = merged[table.name].rows
                result.snapshot_rows[table.name] = _sync_snapshot(conn, table, pg_schema, stage, as_of, rows)
            log.info("snapshot tables: %d rows for %s", sum(result.snapshot_rows.values()), as_of)
            result.seconds["snapshots"] = round(time.perf_counter() - started, 3)
            columns = pipeline_tables.column_names(RUNS_TABLE)  # run_row has them all (runs.RunRecord)
            conn.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (as_of) DO UPDATE SET {}").format(
                    runs,
                    _columns(columns),
                    sql.SQL(", ").join(sql.Placeholder() for _ in columns),
                    sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(_ident(c), _ident(c)) for c in columns),
                ),
                [json.dumps(v) if isinstance(v, dict | list) else v for v in (run_row[c] for c in columns)],
            )
            failpoint("in_transaction")
            return result

        try:
            yield Publication(live_writes, live_reads, snapshots, sync.staged, finish)
        except BaseException:
            if live is not None and not live.done():
                sync.stop.set()  # no next statement
                conn.cancel_safe()  # nor the rest of this one: the transaction is rolled back anyway
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
# The rows an upsert reads sit in temporary tables, which live in the session's own buffers (8 MB by
# default, the rest goes through files). A month's changed rows of one table are a few hundred MB at most.
TEMP_BUFFERS = "256MB"
ROWS_SUFFIX = "__rows"
DELETED_SUFFIX = "__deleted"


class _Stopped(Exception):
    """The publish is being rolled back: the live upsert stops before its next statement."""


@dataclass(frozen=True)
class _LivePlan:
    """What the live upsert of a month will do, decided before it starts."""

    incremental: bool  # live holds the previous month: only the merge's changes are written
    writes: dict[str, int]  # table -> rows to write, for the tables that get any
    bulk: list[str]  # tables with so many new keys that their foreign keys are dropped and rebuilt
    empty: list[str]  # tables with no rows yet: filled without their key, which is built afterwards
    whole: set[str]  # tables that take every row of the month
    copied: set[str]  # empty tables that take every row: COPYed from the month's CSV, like staging

    @property
    def from_staging(self) -> set[str]:
        """Tables that take every row from their staging partition, once it is committed."""
        return self.whole - self.copied


@dataclass
class _LiveSync:
    """The live tables' part of the publish transaction, on its connection, in a thread of its own.

    Incremental (live holds the previous month): the rows the merge marked inserted or updated are
    upserted and the keys a full dump removed are deleted. Otherwise (live holds some other month)
    every row of the month is upserted (unchanged ones skipped) and live keys absent from the month are
    deleted. Where the rows come from:
    - every row of the month into an empty table (the first month): COPY of the same CSV the staging
      load reads (DuckDB writes it once), right away; the key is built afterwards;
    - every row of the month into a table that has rows (a table whose every row changed, live holding
      another month): the table's staging partition, as soon as its load has committed, so the month is
      not sent to PostgreSQL twice;
    - some rows: COPYed from the merge's Parquet into a temporary table, right away.
    The root (users) is written first: the others reference it."""

    conn: psycopg.Connection
    duck: duckdb.DuckDBPyConnection
    schema: Schema
    pg_schema: str
    stage: str
    merged: dict[str, MergedTable]
    scratch_dir: Path
    snapshots: SnapshotCsv
    stop: threading.Event = field(default_factory=threading.Event)
    _loaded: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # names, as staging commits them
    _ready: set[str] = field(default_factory=set)  # staged, as the upsert's thread has seen

    def staged(self, name: str) -> None:
        """Table ``name``'s staging partition is committed: the upsert may read it (any thread)."""
        self._loaded.put(name)

    def prepare(self, incremental: bool) -> _LivePlan:
        """Decide what the upsert does (on the publish connection, before :meth:`run` takes it over) and
        announce the month's CSVs it will read, so they are kept for it."""
        writes = {
            name: m.written if incremental else m.rows
            for name, m in self.merged.items()
            if not incremental or m.written
        }
        # live holding another month: any of its keys may be new
        new_keys = {name: self.merged[name].counts["inserted"] if incremental else n for name, n in writes.items()}
        bulk = [name for name in self.schema.table_names if new_keys.get(name, 0) > BULK_WRITE_ROWS]
        empty = [name for name in bulk if _is_empty(self.conn, self._live(name))]
        whole = {name for name in writes if not incremental or self.merged[name].written == self.merged[name].rows}
        copied = whole.intersection(empty)
        for name in copied:
            self.snapshots.share(name)
        return _LivePlan(incremental, writes, bulk, empty, whole, copied)

    def run(self, plan: _LivePlan) -> dict[str, dict[str, int]]:
        self._execute(sql.SQL("SET LOCAL temp_buffers = {}").format(sql.Literal(TEMP_BUFFERS)))
        self._execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(KEY_BUILD_MEMORY)))
        log.info(
            "live tables: %d rows to write%s",
            sum(plan.writes.values()),
            f" (keys of {', '.join(plan.bulk)} dropped and rebuilt)" if plan.bulk else "",
        )
        # An empty table is filled without its key, built in one sorted pass afterwards; a big write goes
        # without its foreign keys. References first (they depend on the keys they point at).
        dropped = _drop_constraints(self.conn, self.schema, self.pg_schema, "f", on=plan.bulk, referencing=plan.empty)
        dropped += _drop_constraints(self.conn, self.schema, self.pg_schema, "p", on=plan.empty)
        counts = {name: {"written": 0, "deleted": 0} for name in self.schema.table_names}
        for name in self._write_order(plan):
            table, live = self.schema.table(name), self._live(name)
            if name in plan.copied:
                with self.snapshots.read(name) as (path, _):
                    counts[name]["written"] = copy_csv(self._checked(), path, live, table.column_names)
            else:
                if name in plan.whole:
                    self._next_staged({name})  # at once, but for the root: the first to be written
                    source = _ident(self.stage, name)
                else:
                    select = self.merged[name].select(table, changed_only=True)
                    source = self._temp_table(table, ROWS_SUFFIX, table.column_names, select, analyze=False)
                rows = sql.SQL("SELECT {} FROM {}").format(_columns(table.column_names), source)
                if name in plan.empty:
                    statement = sql.SQL("INSERT INTO {} ({}) {}").format(live, _columns(table.column_names), rows)
                else:
                    statement = upsert_sql(live, table.column_names, [table.key], rows)
                counts[name]["written"] = self._execute(statement).rowcount
            # its key and references back now, while staging still loads the next tables (the root is
            # written first, so what a reference points at is keyed already)
            dropped = self._restore(dropped, {name})
        for table in reversed(self.schema.tables):  # delete children before the users they reference
            key, live = _ident(table.key), self._live(table.name)
            if not plan.incremental and table.name not in plan.empty:
                gone = sql.SQL("SELECT {} FROM {} EXCEPT SELECT {} FROM {}").format(
                    key, live, key, _ident(self.stage, table.name)
                )
            elif plan.incremental and self.merged[table.name].counts["deleted"]:
                select = self.merged[table.name].select_deleted(table)
                deleted = self._temp_table(table, DELETED_SUFFIX, [table.key], select, analyze=True)
                gone = sql.SQL("SELECT {} FROM {}").format(key, deleted)
            else:
                continue
            deletion = sql.SQL("DELETE FROM {} WHERE {} IN ({})").format(live, key, gone)
            counts[table.name]["deleted"] = self._execute(deletion).rowcount
        self._restore(dropped, set(self.schema.table_names))  # of tables that got no rows
        return counts

    def _restore(self, dropped: list[tuple[str, str, str]], tables: set[str]) -> list[tuple[str, str, str]]:
        """Add back, validated, the dropped constraints of ``tables`` (keys first, then references);
        returns the others."""
        for table, name, definition in reversed(dropped):  # dropped: references first, then keys
            if table in tables:
                self._execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                        self._live(table), _ident(name), sql.SQL(definition)
                    )
                )
        return [d for d in dropped if d[0] not in tables]

    def _write_order(self, plan: _LivePlan) -> Iterator[str]:
        """The root first (the others reference it), then the tables whose rows come from the merge's
        files, then those COPYed from the month's CSV (smallest first: staging starts with the biggest,
        so each exports different tables first and reads the other's), then those read from staging as
        their partitions commit."""
        root = self.schema.root.name
        if root in plan.writes:
            yield root
        yield from (name for name in self.schema.table_names if name in plan.writes and name not in plan.whole | {root})
        yield from (name for name in reversed(staging_order(self.schema, self.merged)) if name in plan.copied - {root})
        waiting = plan.from_staging - {root}
        while (name := self._next_staged(waiting)) is not None:
            yield name

    def _next_staged(self, wanted: set[str]) -> str | None:
        """Take from ``wanted`` a table whose staging partition is committed, waiting for one; None once
        ``wanted`` is empty."""
        while wanted:
            if ready := wanted & self._ready:
                name = min(ready, key=self.schema.table_names.index)
                wanted.discard(name)
                return name
            try:
                self._ready.add(self._loaded.get(timeout=0.1))
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped from None
        return None

    def _live(self, name: str) -> sql.Identifier:
        return _ident(self.pg_schema, name)

    def _checked(self) -> psycopg.Connection:
        """The connection, unless the publish is being rolled back."""
        if self.stop.is_set():
            raise _Stopped
        return self.conn

    def _execute(self, statement: sql.Composable) -> psycopg.Cursor:
        return self._checked().execute(statement)

    def _temp_table(self, table: Table, suffix: str, columns: list[str], select: str, analyze: bool) -> sql.Identifier:
        """A temporary table ``<table><suffix>`` of some of the table's columns, filled by COPY from a
        DuckDB query; ``analyze`` when a join will read it (autovacuum never sees temporary tables)."""
        name = table.name + suffix
        self._execute(sql.SQL(ddl.temp_table(table, name, columns)))  # type: ignore[arg-type]
        scratch = self.scratch_dir / f"live-{name}.csv"
        try:
            with contextlib.closing(self.duck.cursor()) as cursor:
                export_csv(cursor, select, scratch)
            copy_csv(self.conn, scratch, _ident(name), columns)
        finally:
            scratch.unlink(missing_ok=True)
        if analyze:
            self._execute(sql.SQL("ANALYZE {}").format(_ident(name)))
        return _ident(name)


def _is_empty(conn: psycopg.Connection, table: sql.Identifier) -> bool:
    return conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()[0]


def _drop_constraints(
    conn: psycopg.Connection,
    schema: Schema,
    pg_schema: str,
    kind: str,
    on: list[str],
    referencing: list[str] | None = None,
) -> list[tuple[str, str, str]]:
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
        dropped.append((table_name, constraint, definition))
    return dropped


def _sync_snapshot(conn: psycopg.Connection, table: Table, pg_schema: str, stage: str, as_of: date, rows: int) -> int:
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
