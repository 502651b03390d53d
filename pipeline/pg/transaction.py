"""The month's ONE PostgreSQL transaction: the live write (when this month is the newest), the month's
snapshot partitions attached, and its pipeline_runs row. Readers see the month all at once or not at
all."""

from __future__ import annotations

import contextlib
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

from pipeline import ddl, pipeline_tables
from pipeline.failpoints import failpoint
from pipeline.pg import tables
from pipeline.pg.copy import CsvExports
from pipeline.pg.live import LiveWriter, upsert_sql
from pipeline.pg.plan import LivePlan, MergedTable, plan_live
from pipeline.pg.sqltext import PUBLISHED, RUNS_TABLE, column_list, ident, regclass, staging_schema
from pipeline.schema import Schema, Table

log = logging.getLogger(__name__)
T = TypeVar("T")


def advisory_key(pg_schema: str) -> str:
    return f"streamflow-lake publish {pg_schema}"


@dataclass
class SyncResult:
    live_updated: bool
    live_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> written/deleted
    snapshot_rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Publication:
    """The open publish transaction, as its caller sees it: the live write's plan (None when live holds
    a newer month and is left as it is), and :meth:`finish`."""

    live: LivePlan | None
    _finish: Callable[[dict], SyncResult]

    def finish(self, run_row: dict) -> SyncResult:
        """Wait for the live write, attach the staged snapshots and write the run row; the transaction
        commits when the ``publishing`` block ends."""
        return self._finish(run_row)


@contextmanager
def publishing(
    conn: psycopg.Connection,
    duck: duckdb.DuckDBPyConnection,
    schema: Schema,
    pg_schema: str,
    as_of: date,
    previous_as_of: date | None,
    merged: dict[str, MergedTable],
    exports: CsvExports,
    staged: dict[str, Future[int]],
    scratch_dir: Path,
    lock_timeout: str | None = None,
) -> Iterator[Publication]:
    """The month's ONE transaction (``conn`` must be in autocommit mode, so this block is a real BEGIN …
    COMMIT, not a savepoint inside some open transaction).

    The live write starts at once, in the open transaction, while the caller loads the staging schema
    (resolving ``staged``) and runs the quality checks on it (other connections): nobody can see the
    write before the commit. The caller then calls :meth:`Publication.finish`. If the block raises
    instead (a check failed), the live write is stopped and everything is rolled back."""
    if not conn.autocommit:
        raise ValueError("publishing() needs an autocommit connection: its transaction must be the outermost")
    stage = staging_schema(pg_schema, as_of)
    with conn.transaction(), ThreadPoolExecutor(1, thread_name_prefix="live-write") as pool:
        # months publish one at a time: wait as long as another month's publish takes, then wait for
        # the consumers' locks no longer than lock_timeout
        conn.execute("SET LOCAL lock_timeout = 0")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [advisory_key(pg_schema)])
        if lock_timeout:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
        # the consumers' tables made to exist and brought to the contract in this very transaction: a
        # column the contract gained appears with the month that first carries it, or not at all
        tables.ensure_tables(conn, schema, pg_schema)
        tables.migrate(conn, schema, pg_schema)
        failpoint("in_sync")
        runs = ident(pg_schema, RUNS_TABLE)
        live_as_of = conn.execute(
            sql.SQL("SELECT max(as_of) FROM {} WHERE status = %s").format(runs), [PUBLISHED]
        ).fetchone()[0]  # type: ignore[index]
        result = SyncResult(live_updated=live_as_of is None or as_of >= live_as_of)
        writer = LiveWriter(conn, duck, schema, pg_schema, stage, merged, exports, staged, scratch_dir)
        live: Future | None = None
        plan = None
        if result.live_updated:
            # live holding the previous month (none: the first month) takes the merge's changes; holding
            # any other month (this one, before a correction), the whole month
            empty = [name for name in schema.table_names if tables.is_empty(conn, pg_schema, name)]
            plan = plan_live(schema, merged, incremental=live_as_of == previous_as_of, empty=empty)
            live = pool.submit(_timed, writer.run, plan)
        else:
            log.info("live tables hold %s, newer than %s: only the snapshots are published", live_as_of, as_of)

        def finish(run_row: dict) -> SyncResult:
            if live is not None:
                result.live_rows, result.seconds["live"] = live.result()
            started = time.perf_counter()
            for table in schema.tables:
                rows = merged[table.name].rows
                result.snapshot_rows[table.name] = _sync_snapshot(conn, table, pg_schema, stage, as_of, rows)
            log.info("snapshot tables: %d rows for %s", sum(result.snapshot_rows.values()), as_of)
            result.seconds["snapshots"] = round(time.perf_counter() - started, 3)
            _write_run_row(conn, runs, run_row)
            failpoint("in_transaction")
            return result

        try:
            yield Publication(plan, finish)
        except BaseException:
            if live is not None:
                if not live.done():
                    writer.stop()
                with contextlib.suppress(Exception):
                    live.result()
            raise


def _write_run_row(conn: psycopg.Connection, runs: sql.Identifier, run_row: dict) -> None:
    columns = pipeline_tables.column_names(RUNS_TABLE)  # run_row has them all (runs.RunRecord)
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (as_of) DO UPDATE SET {}").format(
            runs,
            column_list(columns),
            sql.SQL(", ").join(sql.Placeholder() for _ in columns),
            sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c)) for c in columns),
        ),
        [json.dumps(v) if isinstance(v, dict | list) else v for v in (run_row[c] for c in columns)],
    )


def _sync_snapshot(conn: psycopg.Connection, table: Table, pg_schema: str, stage: str, as_of: date, rows: int) -> int:
    """The month's rows of ``<table>_snapshots``. A new month's partition was loaded, keyed and checked in
    staging: it moves into the schema and is attached (its CHECK on as_of spares ATTACH a scan), so the
    snapshot is written to PostgreSQL once. A month published again (a rerun or a correction) is upserted
    on (key, as_of) from it and loses keys it no longer has: rows that did not change are not rewritten."""
    partition = ddl.partition_name(table, as_of)
    exists = conn.execute("SELECT to_regclass(%s)", [regclass(pg_schema, partition)]).fetchone()[0]  # type: ignore[index]
    target = ident(pg_schema, table.name + ddl.SNAPSHOT_SUFFIX)
    if exists is None:
        part = ident(pg_schema, partition)
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(ident(stage, partition), ident(pg_schema)))
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(target, part, sql.Literal(as_of))
        )
        conn.execute(
            # as_of_ts's rows keep their value without the default (PostgreSQL's stored "missing value")
            sql.SQL(
                "ALTER TABLE {} DROP CONSTRAINT {}, ALTER COLUMN {} DROP DEFAULT, ALTER COLUMN {} DROP DEFAULT"
            ).format(part, ident(ddl.STAGED_AS_OF_CHECK), ident(ddl.AS_OF), ident(ddl.AS_OF_TS))
        )
        return rows
    names = [*table.column_names, ddl.AS_OF, ddl.AS_OF_TS]
    staged = ident(stage, partition)
    source = sql.SQL("SELECT {} FROM {}").format(column_list(names), staged)
    written = conn.execute(upsert_sql(target, names, [table.key, ddl.AS_OF], source)).rowcount
    conn.execute(
        sql.SQL("DELETE FROM {} AS t WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE s.{} = t.{})").format(
            ident(pg_schema, partition), staged, ident(table.key), ident(table.key)
        )
    )
    return written


def _timed(function: Callable[..., T], *args: object) -> tuple[T, float]:
    started = time.perf_counter()
    value = function(*args)
    return value, round(time.perf_counter() - started, 3)
