"""DuckDB connections configured the same way everywhere: memory limit, spill folder, threads."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline.config import Settings


def spill_dir(lake_root: Path) -> Path:
    return lake_root / "_tmp" / "duckdb"


def connect(settings: Settings, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection bounded by ``duckdb_memory_limit``; beyond it DuckDB spills to
    ``<lake>/_tmp/duckdb`` instead of growing."""
    spill = spill_dir(settings.lake_root)
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(database)
    con.execute(f"SET memory_limit = '{_memory_literal(settings.duckdb_memory_limit)}'")
    con.execute("SET temp_directory = ?", [str(spill)])
    con.execute("SET preserve_insertion_order = true")
    if settings.duckdb_threads:
        con.execute(f"SET threads = {int(settings.duckdb_threads)}")
    return con


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


def read_parquet(path: str | Path) -> str:
    """SQL that reads one Parquet file as it is (no Hive columns from an ``as_of=…`` folder in its path)."""
    return f"read_parquet({literal(str(path))}, hive_partitioning = false)"
