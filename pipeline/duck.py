"""DuckDB connections configured the same way everywhere: memory limit, spill folder, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from pipeline import scratch
from pipeline.config import Settings


def connect(settings: Settings, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection bounded by ``duckdb_memory_limit``; beyond it DuckDB spills to a folder of
    this connection's own under ``scratch_dir`` instead of growing. DuckDB makes that folder when it
    first spills and removes it when the connection closes."""
    spill = scratch.new_folder_path(settings, "duckdb")
    con = duckdb.connect(database)
    con.execute(f"SET memory_limit = '{_memory_literal(settings.duckdb_memory_limit)}'")
    con.execute("SET temp_directory = ?", [str(spill)])
    con.execute("SET preserve_insertion_order = true")
    if settings.duckdb_threads:
        con.execute(f"SET threads = {int(settings.duckdb_threads)}")
    return con


_thread = threading.local()


def job(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A connection for one step of a month (stage, merge, export, drift): a cursor on this thread's
    in-memory database for these settings, opened once (with its spill folder, see :func:`connect`).
    Opening a database costs about 15 ms, a cursor nothing, and a Luigi worker runs a month's twelve
    steps one after another in one thread. Each cursor has its own temporary tables and registrations
    (gone when it closes), and each thread its own database, so jobs that run at once keep their own
    share of ``duckdb_memory_limit`` (:func:`share`)."""
    key = (settings.duckdb_memory_limit, str(settings.scratch_dir), settings.duckdb_threads)
    databases: dict[tuple, duckdb.DuckDBPyConnection] = _thread.__dict__.setdefault("databases", {})
    if key not in databases:
        databases[key] = connect(settings)
    return databases[key].cursor()


def release_jobs() -> None:
    """Close this thread's databases of :func:`job` (a month is done): their memory and spill folders go
    now, not when the thread ends. A later job opens a new one."""
    for con in _thread.__dict__.pop("databases", {}).values():
        con.close()


# A DuckDB job (staging one table, merging one, exporting one to PostgreSQL) runs next to another only if
# each still gets this much of ``duckdb_memory_limit``; below it they run one at a time, as DuckDB spills
# far more, and an export (which keeps row order) can run out of memory when squeezed.
MIN_JOB_MEMORY = 256 * 2**20
_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def memory_bytes(text: str) -> int:
    """``duckdb_memory_limit`` in bytes ('1GB' -> 10**9, '512MiB' -> 2**29), as DuckDB reads it."""
    cleaned = _memory_literal(text).lower()
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = cleaned[len(number) :] or "b"
    if unit not in _UNITS or not number:
        raise ValueError(f"duckdb_memory_limit {text!r} is not a size like 1GB or 512MB")
    return int(float(number) * _UNITS[unit])


def parallel_jobs(settings: Settings, wanted: int) -> int:
    """How many DuckDB jobs may run at once within ``duckdb_memory_limit`` (at most ``wanted``)."""
    return max(1, min(wanted, memory_bytes(settings.duckdb_memory_limit) // MIN_JOB_MEMORY))


def share(settings: Settings, jobs: int) -> Settings:
    """Settings for one of ``jobs`` DuckDB connections that run at once: each gets its share of the
    memory limit, so together they stay within it."""
    if jobs <= 1:
        return settings
    return settings.with_(duckdb_memory_limit=f"{memory_bytes(settings.duckdb_memory_limit) // jobs}B")


def _memory_literal(text: str) -> str:
    cleaned = text.strip().replace(" ", "")
    if not cleaned or not all(ch.isalnum() or ch == "." for ch in cleaned):
        raise ValueError(f"duckdb_memory_limit {text!r} is not a size like 1GB or 512MB")
    return cleaned


def quote(identifier: str) -> str:
    """A DuckDB identifier, quoted. Names only ever come from sql/schema.sql, never from a CSV."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# How the lake's Parquet files are written: the typed drops, the snapshots (a first month's snapshot is
# its typed drop, linked) and the merge's change lists.
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd"


def read_parquet(path: str | Path) -> str:
    """SQL that reads one Parquet file as it is (no Hive columns from an ``as_of=…`` folder in its path)."""
    return f"read_parquet({literal(str(path))}, hive_partitioning = false)"
