"""Per-run scratch folders under ``[pipeline] scratch_dir`` (default: the system's temporary folder).

Scratch is what one process writes for itself and throws away: DuckDB's spill files and the CSV files a
publish writes for PostgreSQL's COPY. It never goes into the lake, which other machines may read; what
the month's steps hand to each other (the staged and merged Parquet) stays in the lake's ``_work``.

Every folder is new and unique (``streamflow-<purpose>-<host>-<pid>-<random>``) and removed when its
run ends, failed or not. A process killed outright leaves its folder behind; the next folder made on
the same host removes those whose process is gone, so a crash never leaves spill files to pile up.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.config import Settings

PREFIX = "streamflow-"


def root(settings: Settings) -> Path:
    return settings.scratch_dir or Path(tempfile.gettempdir())


def new_folder_path(settings: Settings, purpose: str) -> Path:
    """A new, unique path under the scratch root for this process (the root is made; the folder itself
    is not, for DuckDB, which makes its spill folder when it first spills). Folders that killed processes
    of this host left are removed first."""
    base = root(settings)
    base.mkdir(parents=True, exist_ok=True)
    sweep(base)
    return base / f"{PREFIX}{purpose}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def folder(settings: Settings, purpose: str) -> Iterator[Path]:
    """A new, empty scratch folder for the block, removed at its end (whether it fails or not)."""
    path = new_folder_path(settings, purpose)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep(base: Path) -> int:
    """Remove the scratch folders that processes of this host left when they were killed."""
    mine = re.compile(rf"{re.escape(PREFIX)}[a-z]+-{re.escape(_host())}-(\d+)-[0-9a-f]{{8}}")
    removed = 0
    for path in base.glob(f"{PREFIX}*"):
        match = mine.fullmatch(path.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, another user's
    except OSError:
        return False
    return True
