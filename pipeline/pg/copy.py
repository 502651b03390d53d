"""The month's rows as the CSV that PostgreSQL's COPY reads: written by DuckDB, streamed by psycopg."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from pipeline.duck import literal, quote
from pipeline.pg.sqltext import column_list
from pipeline.schema import Table

COPY_CHUNK = 1 << 20


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
    (rows,) = duck.execute(f"COPY ({select_sql}) TO {literal(str(path))} (FORMAT csv, HEADER false)").fetchone()  # type: ignore[misc]
    return int(rows)


def copy_csv(
    conn: psycopg.Connection, path: Path, target: sql.Composable, columns: list[str], freeze: bool = False
) -> int:
    """Stream a CSV file from :func:`export_csv` into a PostgreSQL table through COPY; returns rows.
    ``freeze`` needs the table created in the same transaction (rows are written frozen)."""
    options = sql.SQL("FORMAT csv, FREEZE" if freeze else "FORMAT csv")
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(target, column_list(columns), options)
    with conn.cursor() as cur:
        with cur.copy(copy_sql) as copy, path.open("rb") as f:
            while chunk := f.read(COPY_CHUNK):
                copy.write(chunk)
        return cur.rowcount


class CsvExports:
    """Each table's snapshot for the month as a CSV in ``folder``, exported by DuckDB once: the first
    caller of :meth:`path` writes it, later callers (another connection that loads the same rows) wait
    for that one export. The files live as long as the folder (the publish's scratch folder)."""

    def __init__(self, duck: duckdb.DuckDBPyConnection, selects: dict[str, str], folder: Path) -> None:
        self._duck, self._selects, self._folder = duck, selects, folder
        self._exports: dict[str, Future[Path]] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        with self._lock:
            export = self._exports.get(name)
            mine = export is None
            if export is None:
                export = self._exports[name] = Future()
        if mine:
            try:
                path = self._folder / f"{name}.csv"
                with contextlib.closing(self._duck.cursor()) as cursor:  # a cursor per thread
                    export_csv(cursor, self._selects[name], path)
                export.set_result(path)
            except BaseException as error:
                export.set_exception(error)
                raise
        return export.result()
