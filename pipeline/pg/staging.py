"""The month's staging schema: every table's snapshot partition loaded (once), keyed, and viewed for
the checks, on connections of its own. Committed, so Soda can read it; nothing in it is visible to
the consumers until the publish moves the partitions into their tables."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from concurrent.futures import Future
from datetime import date

import psycopg
from psycopg import sql

from pipeline import ddl, pipeline_tables
from pipeline.concurrency import run_all
from pipeline.errors import PostgresUnavailableError
from pipeline.pg.connect import connect
from pipeline.pg.copy import CsvExports, copy_csv
from pipeline.pg.plan import KEY_BUILD_MEMORY
from pipeline.pg.sqltext import VOLUME_TABLE, column_list, ident, staging_schema
from pipeline.schema import Schema, Table

log = logging.getLogger(__name__)


def load_staging(
    dsn: str,
    exports: CsvExports,
    schema: Schema,
    pg_schema: str,
    as_of: date,
    volume: list[dict],
    staged: dict[str, Future[int]],
    order: list[str],
    connections: int,
    lock_timeout: str | None = None,
) -> dict[str, int]:
    """(Re)build the month's staging schema: for every table, in ``order``, ``connections`` at a time, the
    month's snapshot partition (loaded once, keyed, checked in place and attached by the publish) and a
    view named like the table over it for the checks; and the drop volume figures. ``staged[table]`` is
    resolved with the partition's rows as soon as its load commits (the live write and the checks wait
    on it); when the load fails, every table's future that is not resolved yet fails with the error, so
    nobody waits for a partition that will never come. Returns table -> rows."""
    stage = staging_schema(pg_schema, as_of)
    try:
        with connect(dsn, autocommit=True, lock_timeout=lock_timeout) as conn, conn.transaction():
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(stage)))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(stage)))
            _load_volume(conn, stage, volume)
        loads = {
            name: functools.partial(_load_table, dsn, exports, schema.table(name), stage, as_of, staged[name])
            for name in order
        }
        return run_all(loads, connections, name="staging")
    except BaseException as error:
        for future in staged.values():
            if not future.done():
                future.set_exception(error)
        raise


def _load_table(dsn: str, exports: CsvExports, table: Table, stage: str, as_of: date, staged: Future[int]) -> int:
    """One table into staging, on its own connection; returns the snapshot's rows.

    - ``<table>_snapshots_<yyyymmdd>``: the month's partition, COPYed (FREEZE: the rows are born frozen,
      so no later pass rewrites pages to set hint bits), given ``as_of_ts`` (a default kept in the catalog,
      not in the rows: :func:`pipeline.ddl.partition_as_of_ts`), then keyed on (key, as_of): the key
      build is also where a repeated key would be refused;
    - ``<table>``: a view of the declared columns over it, which the checks read.

    No ANALYZE: the checks' joins get the same plan from the table's size alone, and autovacuum gathers
    the partition's statistics once it is published (its inserts count for that)."""
    started = time.perf_counter()
    partition = ident(stage, ddl.partition_name(table, as_of))
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(KEY_BUILD_MEMORY)))
        path = exports.path(table.name)
        with conn.transaction():
            conn.execute(ddl.staged_partition(table, stage, as_of))
            rows = copy_csv(conn, path, partition, table.column_names, freeze=True)
            conn.execute(ddl.partition_as_of_ts(table, stage, as_of))
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}, {})").format(partition, ident(table.key), ident(ddl.AS_OF))
        )
        conn.execute(
            sql.SQL("CREATE VIEW {} AS SELECT {} FROM {}").format(
                ident(stage, table.name), column_list(table.column_names), partition
            )
        )
    staged.set_result(rows)
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
    volume_table = ident(stage, VOLUME_TABLE)
    conn.execute(pipeline_tables.volume_table(stage))  # from sql/pipeline_tables.sql
    columns = pipeline_tables.column_names(VOLUME_TABLE)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                volume_table, column_list(columns), sql.SQL(", ").join(sql.Placeholder(c) for c in columns)
            ),
            volume,
        )


def drop_staging(conn: psycopg.Connection, pg_schema: str, as_of: date) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(staging_schema(pg_schema, as_of))))


def drop_staging_quietly(dsn: str, pg_schema: str, as_of: date) -> None:
    """Best effort, on a fresh connection (the run's own may be broken): a failed run's staging schema
    goes away now, and otherwise with the next run of the month."""
    with contextlib.suppress(psycopg.Error, PostgresUnavailableError), connect(dsn, autocommit=True) as conn:
        drop_staging(conn, pg_schema, as_of)
