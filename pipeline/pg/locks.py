"""The per-month lock, held in PostgreSQL so that every machine publishing into the same server sees it.

A month's stage and merge steps share the lock; its publish (and unpublish) holds it exclusively, so a
second run of the same month waits for the first one's publish and then finds the month published. Each
step also holds a lock of its own, exclusively: two runs of the month never write the same step's files
at once (they are written in place, not renamed: :mod:`pipeline.lakefs`), and the second finds the
step done. It
is a session-level advisory lock on a connection of its own, opened for the lock and closed on release:
the server releases it when that connection ends, so a crashed process (or machine: the server's TCP
keepalives notice a client gone silent) never leaves it held.

The key is one bigint: the first 8 bytes of the sha256 of ``streamflow:<schema>:<as_of>``. The schema
(the consumers' tables the lake publishes into) stands for the lake, because the lake's path differs
from machine to machine; advisory locks belong to one database, so the server and the database are part
of the identity too. Two lakes publishing into the same schema would wait for each other's month,
which is what they should do. The key equals that of the schema's publish-order lock (a hashtext,
:mod:`pipeline.pg.transaction`) only by a chance of 1 in 2**64.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import psycopg

from pipeline.config import Settings
from pipeline.errors import LockBusyError, PostgresUnavailableError
from pipeline.pg.connect import connect, describe, resolve_dsn

log = logging.getLogger(__name__)
# A client machine that dies without closing its connection (power cut, network gone) is noticed by the
# server within about a minute and a half, which ends its session and releases its locks.
KEEPALIVES = {"tcp_keepalives_idle": "60", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


def month_lock_key(pg_schema: str, as_of: date, step: str | None = None) -> int:
    """The advisory lock key of one month published into ``pg_schema`` (a signed bigint, stable), or of
    one of its steps (``step``, e.g. ``StageTable:users``)."""
    name = f"streamflow:{pg_schema}:{as_of.isoformat()}" + (f":{step}" if step else "")
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def month_lock(
    settings: Settings, as_of: date, exclusive: bool = True, step: str | None = None, wait: bool = True
) -> Iterator[None]:
    """Hold the month's lock (exclusive, or shared with the month's other stage and merge steps) for
    the block, and with ``step`` that step's own lock, exclusively. Waits as long as another run holds
    one, saying once who that is; with ``wait=False`` raises :class:`LockBusyError` instead."""
    dsn = resolve_dsn(settings.postgres, settings.lake_root)
    schema = settings.postgres.schema
    locks = [(month_lock_key(schema, as_of), "" if exclusive else "_shared", f"month {as_of}")]
    if step:
        locks.append((month_lock_key(schema, as_of, step), "", f"month {as_of}'s step {step}"))
    # lock_timeout 0: wait for the other run as long as it takes, like the file lock this replaces
    with connect(dsn, autocommit=True, lock_timeout="0", server_settings=KEEPALIVES) as conn:
        try:
            for key, mode, what in locks:
                (taken,) = conn.execute(f"SELECT pg_try_advisory_lock{mode}(%s)", [key]).fetchone()  # type: ignore[misc]
                if not taken and not wait:
                    raise LockBusyError(f"{what} is locked by another run{_holders(conn, key)}")
                if not taken:
                    log.info("%s is locked by another run%s; waiting until it is done", what, _holders(conn, key))
                    conn.execute(f"SELECT pg_advisory_lock{mode}(%s)", [key])
        except psycopg.OperationalError as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise PostgresUnavailableError(
                f"lost the connection to PostgreSQL at {describe(dsn)} while taking month {as_of}'s lock: "
                f"{reason}. Nothing of the month was published; run it again once the server is back."
            ) from None
        yield  # closing the connection releases the lock, even when it was lost meanwhile


def _holders(conn: psycopg.Connection, key: int) -> str:
    """`` (PostgreSQL backend pid N, client host, connected since T; …)`` of the sessions holding ``key``."""
    rows = conn.execute(
        "SELECT a.pid, coalesce(a.client_hostname, host(a.client_addr), 'local'), "
        "date_trunc('second', a.backend_start) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) AND l.objsubid = 1 "
        "AND l.classid = ((%s::bigint >> 32) & 4294967295)::oid AND l.objid = (%s::bigint & 4294967295)::oid "
        "ORDER BY 1 LIMIT 5",
        [key, key],
    ).fetchall()
    held = "; ".join(
        f"PostgreSQL backend pid {pid}, client {client}, connected since {since}" for pid, client, since in rows
    )
    return f" ({held})" if held else ""
