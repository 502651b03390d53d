"""Connections to PostgreSQL, and its errors said as one line a person can act on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pipeline.config import PostgresSettings
from pipeline.errors import PostgresUnavailableError, PublishError
from pipeline.lakestore import LakeRoot, local_root

APPLICATION_NAME = "streamflow-lake"
# SQLSTATEs of a server that went away: connection exceptions, and the shutdowns an administrator or a
# crash causes. Other "operational" errors (a full disk, out of memory) come from a server that is up.
_GONE_STATES = ("57P01", "57P02", "57P03")
LOCK_NOT_AVAILABLE = "55P03"


def describe(dsn: str) -> str:
    """host:port/dbname of a DSN, never its password."""
    params = conninfo_to_dict(dsn)
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def resolve_dsn(settings: PostgresSettings, lake_root: LakeRoot) -> str:
    """The configured server, else the embedded one (started on first use, in a local lake only)."""
    if settings.dsn:
        return settings.dsn
    from pipeline.embedded import embedded_dsn

    return embedded_dsn(local_root(lake_root))


@contextmanager
def connect(
    dsn: str,
    autocommit: bool = False,
    lock_timeout: str | None = None,
    server_settings: Mapping[str, str] | None = None,
) -> Iterator[psycopg.Connection]:
    """A connection, or one clear line saying which server refused and why (never the password).
    ``lock_timeout``: how long a statement waits for a lock another session holds (a consumer's open
    transaction) before it fails with :data:`LOCK_NOT_AVAILABLE`; None: the server's default (for ever).
    ``server_settings``: more settings of the session, name -> value."""
    wanted = {**(server_settings or {}), **({"lock_timeout": lock_timeout} if lock_timeout else {})}
    options = " ".join(f"-c {name}={value}" for name, value in wanted.items()) or None
    try:
        conn = psycopg.connect(
            dsn, autocommit=autocommit, connect_timeout=10, application_name=APPLICATION_NAME, options=options
        )
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


def server_version(conn: psycopg.Connection) -> str:
    return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]


def connection_lost(error: BaseException) -> bool:
    """Whether the connection itself failed (no SQLSTATE: the client lost it), not just a statement."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in _GONE_STATES


@contextmanager
def errors_are_clear(dsn: str, as_of: date, pg_schema: str) -> Iterator[None]:
    """PostgreSQL errors while publishing become one clear line. A server that goes away (restart,
    network) takes the open transaction with it; any other error rolls it back: either way nothing of
    the month is visible, and the message says where it happened."""
    try:
        yield
    except psycopg.Error as e:
        if connection_lost(e):
            reason = " ".join(str(e).split()) or type(e).__name__
            raise PostgresUnavailableError(
                f"lost the connection to PostgreSQL at {describe(dsn)} while publishing {as_of}: {reason}. "
                f"Nothing of the month was published; run it again once the server is back."
            ) from None
        if e.sqlstate == LOCK_NOT_AVAILABLE:
            raise PublishError(
                f"PostgreSQL at {describe(dsn)}: month {as_of} waited longer than [pipeline] lock_timeout for a "
                f"lock that another session holds{lock_holders(dsn, pg_schema)}. The transaction was rolled "
                f"back: nothing of the month was published. End that session's transaction (or raise "
                f"lock_timeout), then run the month again; find holders with: SELECT pid, usename, state, "
                f"xact_start, query FROM pg_stat_activity WHERE state = 'idle in transaction'"
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


def lock_holders(dsn: str, pg_schema: str) -> str:
    """``: on <relation> by pid N (user, application, state); …`` for the other sessions that hold locks on
    the consumers' tables, or "" when none can be found (asked on a fresh connection, best effort)."""
    query = (
        "SELECT DISTINCT c.relname, a.pid, a.usename, a.application_name, a.state FROM pg_locks l "
        "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.granted AND n.nspname = %s AND a.pid <> pg_backend_pid() AND a.application_name <> %s "
        "ORDER BY 1, 2 LIMIT 10"
    )
    rows: list[tuple] = []
    with contextlib.suppress(psycopg.Error, PostgresUnavailableError), connect(dsn, autocommit=True) as conn:
        rows = conn.execute(query, [pg_schema, APPLICATION_NAME]).fetchall()
    if not rows:
        return ""
    held = "; ".join(
        f"{pg_schema}.{relation} by pid {pid} (user {user}, application {app or '-'}, {state})"
        for relation, pid, user, app, state in rows
    )
    return f": {held}"
