"""The embedded PostgreSQL used when no server is configured: pgserver's PostgreSQL 16 from a wheel,
its data under ``<lake>/_postgres``. It keeps running after the month so that psql or any client can
read the tables at the URI that is logged; ``streamflow stop-embedded`` stops it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
_announced: set[str] = set()  # the servers whose URI this process has logged


def data_dir(lake_root: Path) -> Path:
    return Path(lake_root).resolve() / "_postgres"


def embedded_dsn(lake_root: Path) -> str:
    import pgserver

    pgdata = data_dir(lake_root)
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    uri = server.get_uri()
    if uri not in _announced:  # once per process: every task of a month connects (its month lock)
        _announced.add(uri)
        log.info("No PostgreSQL configured (POSTGRES_DSN / POSTGRES_HOST): using the embedded server at %s", uri)
    return uri


def embedded_running(lake_root: Path) -> bool:
    """Whether the lake's embedded server runs (its postmaster.pid names a live process)."""
    pid_file = data_dir(lake_root) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, another user's
    except (OSError, ValueError, IndexError):
        return False
    return True


def stop_embedded(lake_root: Path) -> bool:
    """Stop the embedded server of a lake if one runs; True when one was stopped."""
    pgdata = data_dir(lake_root)
    if not (pgdata / "postmaster.pid").exists():
        return False
    import pgserver
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made when the module is imported

    server = pgserver.get_server(pgdata, cleanup_mode=None)
    pg_ctl(["-w", "stop"], pgdata=pgdata, user=server.system_user)
    return True
