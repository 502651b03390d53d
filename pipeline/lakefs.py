"""The lake's layout and its atomic file operations.

Every file or partition is written under a temporary name beside its final place and renamed into
place, so a crash at any moment leaves either the old state or the new one, never a partial file.
Temporary names start with ``.tmp-``; :func:`sweep_month` removes a crashed run's leftovers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

TMP_PREFIX = ".tmp-"


def partition(as_of: date) -> str:
    return f"as_of={as_of.isoformat()}"


class Lake:
    """Paths inside a lake root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def raw(self, table: str, as_of: date) -> Path:
        return self.root / "raw" / table / partition(as_of)

    def snapshot(self, table: str, as_of: date) -> Path:
        return self.root / "snapshots" / table / partition(as_of)

    def snapshot_file(self, table: str, as_of: date) -> Path:
        return self.snapshot(table, as_of) / "data.parquet"

    def rejects(self, table: str, as_of: date) -> Path:
        return self.root / "rejects" / table / partition(as_of)

    def run_dir(self, as_of: date) -> Path:
        return self.root / "runs" / partition(as_of)

    def manifest(self, as_of: date) -> Path:
        return self.run_dir(as_of) / "manifest.json"

    def work(self, as_of: date) -> Path:
        """The files one month's steps hand to each other (staged and merged Parquet), possibly from
        another machine; removed once the month is published. A run's own scratch is not here but
        under ``scratch_dir`` (:mod:`pipeline.scratch`)."""
        return self.root / "_work" / partition(as_of)

    def training(self, as_of: date) -> Path:
        return self.root / "training" / partition(as_of)

    def manifests(self) -> list[Path]:
        return sorted((self.root / "runs").glob("as_of=*/manifest.json"))


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed to ``path`` (replacing it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes a hard link to ``source`` (no bytes written), or a copy where the file system
    cannot link. Only for files never changed in place: the lake's Parquet files are replaced, not edited."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` as a whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        move_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(src: Path, dest: Path) -> None:
    """Rename folder ``src`` to ``dest``; an existing ``dest`` is swapped out first, then removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = _tmp_sibling(dest)
        os.rename(dest, old)
    os.rename(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sweep_month(lake: Lake, as_of: date) -> int:
    """Remove what a crashed run of this month left under temporary names (only the month's own
    partitions: other months may be running). Call with the month's lock held."""
    removed = 0
    pattern = f"{TMP_PREFIX}{partition(as_of)}-*"
    for folder in ("raw", "snapshots", "rejects"):
        for path in (lake.root / folder).glob(f"*/{pattern}"):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    for path in lake.run_dir(as_of).glob(f"{TMP_PREFIX}*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
