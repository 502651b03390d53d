"""The bench's PostgreSQL database: created fresh for a run on the server of POSTGRES_DSN, dropped after."""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_dbname(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def to_url(dsn: str, driver: str = "postgresql") -> str:
    """The same connection as a URL (SQLAlchemy and dlt take URLs); ``driver`` e.g. postgresql+psycopg2."""
    p = conninfo_to_dict(dsn)
    auth = quote(p.get("user") or "postgres", safe="")
    if p.get("password"):
        auth += ":" + quote(str(p["password"]), safe="")
    host = p.get("host") or "localhost"
    port = p.get("port") or "5432"
    return f"{driver}://{auth}@{host}:{port}/{quote(p.get('dbname') or 'postgres', safe='')}"


def create_database(server_dsn: str, label: str) -> tuple[str, str]:
    """A new empty database; returns (name, dsn)."""
    name = f"streamflow_bench_{label}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, with_dbname(server_dsn, name)


def drop_database(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def settle(dsn: str) -> float:
    """Before a timed run: VACUUM (ANALYZE) the bench database, then CHECKPOINT, so no run pays for the
    autovacuum or the dirty buffers of the previous runs' writes (in real use a month runs weeks after
    the one before, long after autovacuum caught up). Returns the seconds it took (not counted)."""
    started = time.perf_counter()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")
    except psycopg.Error:  # not the owner / a superuser: measure without it
        pass
    return round(time.perf_counter() - started, 1)


def server_info(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        info = {"version": conn.execute("SELECT version()").fetchone()[0]}
        for name in (
            "shared_buffers",
            "work_mem",
            "maintenance_work_mem",
            "max_wal_size",
            "synchronous_commit",
            "wal_level",
        ):
            info[name] = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
    return info
