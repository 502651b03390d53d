"""The live tables' part of the publish: the upsert, run on the publish connection in the open
transaction, in a thread of its own, while staging loads and the checks run on other connections.

What it writes, table by table, was decided by :func:`pipeline.pg.plan.plan_live`; this module runs it:
rows from the month's CSV (COPY into an empty table), from the table's staging partition once its load
has committed (a future per table, see :mod:`pipeline.pg.staging`), or from the merge's changed rows
COPYed into a temporary table. Keys of an empty table are built after its rows; the references of a
big write are dropped and added back, validated, right after the table is written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, wait
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from pipeline import ddl
from pipeline.pg.copy import CsvExports, copy_csv, export_csv
from pipeline.pg.plan import KEY_BUILD_MEMORY, LivePlan, MergedTable, Removal, Source, TableWrite
from pipeline.pg.sqltext import column_list, ident, regclass
from pipeline.schema import Schema, Table

log = logging.getLogger(__name__)

# The rows an upsert reads sit in temporary tables, which live in the session's own buffers (8 MB by
# default, the rest goes through files). A month's changed rows of one table are a few hundred MB at most.
TEMP_BUFFERS = "256MB"
ROWS_SUFFIX = "__rows"
DELETED_SUFFIX = "__deleted"

Constraint = tuple[str, str, str]  # (table, name, definition as PostgreSQL prints it)


class Stopped(Exception):
    """The publish is being rolled back: the live write stops before its next statement."""


def upsert_sql(
    target: sql.Identifier, columns: list[str], keys: list[str], source: sql.Composable, alias: str = "t"
) -> sql.Composed:
    """INSERT … ON CONFLICT (keys) DO UPDATE, skipping rows whose values did not change: an update that
    changes nothing would still write a new row version (a dead tuple) for nothing. DO NOTHING when
    every column is in the key. The source never holds a NULL key: staging rejects such rows first."""
    values = [c for c in columns if c not in keys]
    action: sql.Composable
    if not values:  # every column is in the key: nothing to update
        action = sql.SQL("DO NOTHING")
    else:
        action = sql.SQL("DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c)) for c in values),
            column_list(values, alias),
            column_list(values, "excluded"),
        )
    return sql.SQL("INSERT INTO {} AS {} ({}) {} ON CONFLICT ({}) {}").format(
        target, ident(alias), column_list(columns), source, column_list(keys), action
    )


@dataclass
class LiveWriter:
    """Runs a :class:`LivePlan` on ``conn`` (the publish connection, inside its transaction)."""

    conn: psycopg.Connection
    duck: duckdb.DuckDBPyConnection
    schema: Schema
    pg_schema: str
    stage: str
    merged: dict[str, MergedTable]
    exports: CsvExports
    staged: dict[str, Future[int]]  # table -> its staging partition's rows, once committed
    scratch_dir: Path
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """Roll back: no next statement, nor the rest of the running one, nor a wait for a staging
        partition that will not come (any thread)."""
        self._stop.set()
        for future in self.staged.values():
            with contextlib.suppress(InvalidStateError):  # resolved meanwhile
                future.set_exception(Stopped())
        self.conn.cancel_safe()

    def run(self, plan: LivePlan) -> dict[str, dict[str, int]]:
        """Write the plan; returns table -> {"written": n, "deleted": n}."""
        self._execute(sql.SQL("SET LOCAL temp_buffers = {}").format(sql.Literal(TEMP_BUFFERS)))
        self._execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(KEY_BUILD_MEMORY)))
        log.info(
            "live tables: %d rows to write%s",
            plan.rows,
            f" (keys of {', '.join(plan.bulk)} dropped and rebuilt)" if plan.bulk else "",
        )
        # An empty table is filled without its key, built in one sorted pass afterwards; a big write goes
        # without its foreign keys. References first (they depend on the keys they point at).
        dropped = self._drop_constraints("f", on=plan.bulk, referencing=plan.empty)
        dropped += self._drop_constraints("p", on=plan.empty)
        counts = {name: {"written": 0, "deleted": 0} for name in self.schema.table_names}
        for write in self._in_order(plan):
            counts[write.table]["written"] = self._write(write)
            # its key and references back now, while staging still loads the next tables (the root is
            # written first, so what a reference points at is keyed already)
            dropped = self._restore(dropped, {write.table})
        for table in reversed(self.schema.tables):  # delete children before the users they reference
            if table.name in plan.removals:
                counts[table.name]["deleted"] = self._remove(table, plan.removals[table.name])
        self._restore(dropped, set(self.schema.table_names))  # of tables that got no rows
        return counts

    def _in_order(self, plan: LivePlan) -> Iterator[TableWrite]:
        """The plan's writes in its order, but those read from staging as their partitions commit
        (schema order among those ready at once). The root is never taken out of turn."""
        root = self.schema.root.name
        waiting: dict[str, TableWrite] = {}
        for write in plan.writes:
            if write.source is Source.STAGED and write.table != root:
                waiting[write.table] = write
            else:
                yield write
        while waiting:
            done, _ = wait([self.staged[name] for name in waiting], return_when=FIRST_COMPLETED)
            ready = [name for name in self.schema.table_names if name in waiting and self.staged[name] in done]
            for name in ready:
                yield waiting.pop(name)

    def _write(self, write: TableWrite) -> int:
        table, live = self.schema.table(write.table), self._live(write.table)
        if write.source is Source.CSV:
            return copy_csv(self._checked(), self.exports.path(table.name), live, table.column_names)
        if write.source is Source.STAGED:
            self._staged(table.name)
            source = ident(self.stage, table.name)
        else:
            select = self.merged[table.name].select(table, changed_only=True)
            source = self._temp_table(table, ROWS_SUFFIX, table.column_names, select, analyze=False)
        rows = sql.SQL("SELECT {} FROM {}").format(column_list(table.column_names), source)
        if write.empty:
            statement = sql.SQL("INSERT INTO {} ({}) {}").format(live, column_list(table.column_names), rows)
        else:
            statement = upsert_sql(live, table.column_names, [table.key], rows)
        return self._execute(statement).rowcount

    def _remove(self, table: Table, removal: Removal) -> int:
        key, live = ident(table.key), self._live(table.name)
        if removal is Removal.ABSENT:
            self._staged(table.name)
            gone = sql.SQL("SELECT {} FROM {} EXCEPT SELECT {} FROM {}").format(
                key, live, key, ident(self.stage, table.name)
            )
        else:
            select = self.merged[table.name].select_deleted(table)
            deleted = self._temp_table(table, DELETED_SUFFIX, [table.key], select, analyze=True)
            gone = sql.SQL("SELECT {} FROM {}").format(key, deleted)
        return self._execute(sql.SQL("DELETE FROM {} WHERE {} IN ({})").format(live, key, gone)).rowcount

    def _staged(self, name: str) -> None:
        """Wait until table ``name``'s staging partition is committed (raises if its load failed)."""
        try:
            self.staged[name].result()
        except BaseException:
            if self._stop.is_set():
                raise Stopped from None
            raise

    def _restore(self, dropped: list[Constraint], tables: set[str]) -> list[Constraint]:
        """Add back, validated, the dropped constraints of ``tables`` (keys first, then references);
        returns the others."""
        for table, name, definition in reversed(dropped):  # dropped: references first, then keys
            if table in tables:
                self._execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                        self._live(table),
                        ident(name),
                        sql.SQL(definition),  # from the catalog, not from data
                    )
                )
        return [d for d in dropped if d[0] not in tables]

    def _drop_constraints(self, kind: str, on: list[str], referencing: list[str] | None = None) -> list[Constraint]:
        """Drop the constraints of one kind ('f' foreign key, 'p' primary key) of the live tables ``on``, and
        (foreign keys) those of any live table that reference a table in ``referencing``. Returns them, to
        add them back. SQL text comes from the catalog only."""
        if not on and not referencing:
            return []
        names = {name: regclass(self.pg_schema, name) for name in self.schema.table_names}
        rows = (
            self._checked()
            .execute(
                "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
                "JOIN pg_class c ON c.oid = k.conrelid WHERE k.contype = %s AND k.conrelid = ANY(%s::regclass[]) "
                "AND (k.conrelid = ANY(%s::regclass[]) OR k.confrelid = ANY(%s::regclass[])) "
                "ORDER BY c.relname, k.conname",
                [kind, list(names.values()), [names[n] for n in on], [names[n] for n in referencing or []]],
            )
            .fetchall()
        )
        for table, constraint, _ in rows:
            self._execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(self._live(table), ident(constraint)))
        return [(table, constraint, definition) for table, constraint, definition in rows]

    def _live(self, name: str) -> sql.Identifier:
        return ident(self.pg_schema, name)

    def _checked(self) -> psycopg.Connection:
        """The connection, unless the publish is being rolled back."""
        if self._stop.is_set():
            raise Stopped
        return self.conn

    def _execute(self, statement: sql.SQL | sql.Composed) -> psycopg.Cursor:
        return self._checked().execute(statement)

    def _temp_table(self, table: Table, suffix: str, columns: list[str], select: str, analyze: bool) -> sql.Identifier:
        """A temporary table ``<table><suffix>`` of some of the table's columns, filled by COPY from a
        DuckDB query; ``analyze`` when a join will read it (autovacuum never sees temporary tables)."""
        name = table.name + suffix
        self._execute(sql.SQL(ddl.temp_table(table, name, columns)))
        scratch = self.scratch_dir / f"live-{name}.csv"
        try:
            with contextlib.closing(self.duck.cursor()) as cursor:
                export_csv(cursor, select, scratch)
            copy_csv(self._checked(), scratch, ident(name), columns)
        finally:
            scratch.unlink(missing_ok=True)
        if analyze:
            self._execute(sql.SQL("ANALYZE {}").format(ident(name)))
        return ident(name)
