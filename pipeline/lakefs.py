"""The lake's layout and how its files are written: no file of the lake is ever renamed.

A month is committed without a rename (issue #19), so the same protocol works on a local disk and on
object storage, where there is no rename:

* Every data object is written once, under a name no other run uses
  (``snapshots/<table>/as_of=D/<run_id>.parquet``, ``raw/…`` likewise), and never changed.
* A month becomes visible through one write: its run record, ``runs/as_of=D/<run_id>.json``, created
  (never replaced) after PostgreSQL committed the month. Readers read only the objects a published
  record names (:meth:`pipeline.runs.RunRecord.snapshot_file`); a correction writes new objects and a
  newer record, and the month switches to them at once.
* A step's files in the work folder are written in place and then marked complete by its
  ``result.json``, written last; a step never reads a file whose result is absent.
* Objects no published record names (a run that crashed or was refused) are swept by the month's next
  run (:func:`sweep_month`); objects of replaced runs by ``streamflow vacuum`` (:func:`vacuum`).

Two outputs outside a month's commit, the report pages and the training sets, are replaced as a whole
with :func:`atomic_file` (a temporary name renamed into place: a PUT on object storage).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipeline.lakestore import LakeRoot, local_root

TMP_PREFIX = ".tmp-"
RAW = "raw"
SNAPSHOTS = "snapshots"
OBJECT_KINDS = (RAW, SNAPSHOTS)
OBJECT_SUFFIX = ".parquet"
LEGACY_OBJECT = "data.parquet"
LEGACY_MANIFEST = "manifest.json"


def partition(as_of: date) -> str:
    return f"as_of={as_of.isoformat()}"


def partition_date(name: str) -> date | None:
    """The month of an ``as_of=D`` folder's name; None for any other name (e.g. a temporary one)."""
    try:
        return date.fromisoformat(name.removeprefix("as_of="))
    except ValueError:
        return None


class Lake:
    """Paths inside a lake root: a local folder. Every writer of the lake goes through it, so an s3:// root
    is refused here, before anything is written (:func:`pipeline.lakestore.local_root`)."""

    def __init__(self, root: LakeRoot) -> None:
        self.root = local_root(root)

    def raw(self, table: str, as_of: date) -> Path:
        """The folder of a month's typed drops of ``table`` (one object per run)."""
        return self.root / RAW / table / partition(as_of)

    def snapshot(self, table: str, as_of: date) -> Path:
        """The folder of a month's snapshots of ``table`` (one object per run)."""
        return self.root / SNAPSHOTS / table / partition(as_of)

    def object(self, kind: str, table: str, as_of: date, run_id: str) -> str:
        """Where run ``run_id`` writes its ``kind`` (raw or snapshots) object of a month: relative to the
        root, as run records name it."""
        return f"{kind}/{table}/{partition(as_of)}/{run_id}{OBJECT_SUFFIX}"

    def legacy_object(self, kind: str, table: str, as_of: date) -> str:
        """Where lakes written before issue #19 keep a month's object (one per month, replaced by a rename)."""
        return f"{kind}/{table}/{partition(as_of)}/{LEGACY_OBJECT}"

    def rejects(self, table: str, as_of: date) -> Path:
        return self.root / "rejects" / table / partition(as_of)

    def run_dir(self, as_of: date) -> Path:
        return self.root / "runs" / partition(as_of)

    def record(self, as_of: date, run_id: str) -> Path:
        """The run record that publishes run ``run_id`` of a month (created once, never replaced)."""
        return self.run_dir(as_of) / f"{run_id}.json"

    def legacy_manifest(self, as_of: date) -> Path:
        """The run record of lakes written before issue #19 (one per month, replaced by a rename)."""
        return self.run_dir(as_of) / LEGACY_MANIFEST

    def work(self, as_of: date) -> Path:
        """The files one month's steps hand to each other (staged and merged Parquet), possibly from
        another machine; removed once the month is published. A run's own scratch is not here but
        under ``scratch_dir`` (:mod:`pipeline.scratch`)."""
        return self.root / "_work" / partition(as_of)

    def training(self, as_of: date) -> Path:
        return self.root / "training" / partition(as_of)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fresh(path: Path) -> Path:
    """``path``, ready to be written anew: its folder made, and an earlier file of that name unlinked
    rather than overwritten (it may be a hard link to a published object, which must never change)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


def write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``, durably; refuses to replace an existing file (a record is written once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def mark_complete(path: Path, text: str) -> None:
    """Write a step's ``result.json``, the last of its files: the step is complete once it exists."""
    write_new(fresh(path), text)


def is_complete(result: Path) -> bool:
    """Whether a step's ``result.json`` is there and whole: on a local disk a reader may see it while its
    writer is still writing it (it is created, not renamed into place), and then it is not yet complete."""
    try:
        json.loads(result.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return True


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes a hard link to ``source`` (no bytes written), or a copy where the file system
    cannot link. Only for files never changed in place: every writer unlinks a name before writing it
    (:func:`fresh`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path``. Only for outputs outside a month's
    commit (report pages, training sets); the month's own files are never renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# --- sweeping -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthObject:
    """A data object of a month in the lake, and the run that wrote it (None: a lake before issue #19)."""

    path: Path
    run_id: str | None


def month_objects(lake: Lake, as_of: date, tables: Iterable[str] | None = None) -> list[MonthObject]:
    """Every data object the lake holds for a month (raw and snapshots), whichever run wrote it."""
    found = []
    for kind in OBJECT_KINDS:
        folders = [lake.root / kind / t / partition(as_of) for t in tables] if tables is not None else None
        if folders is None:
            folders = sorted((lake.root / kind).glob(f"*/{partition(as_of)}"))
        for folder in folders:
            for path in sorted(folder.glob(f"*{OBJECT_SUFFIX}")) if folder.is_dir() else []:
                run_id = None if path.name == LEGACY_OBJECT else path.name.removesuffix(OBJECT_SUFFIX)
                found.append(MonthObject(path, run_id))
    return found


def remove(paths: Iterable[Path]) -> int:
    """Unlink files (gone already: fine), then the month folders they leave empty; returns how many."""
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
        with contextlib.suppress(OSError):  # not empty, or gone: fine
            path.parent.rmdir()
    return removed


def sweep_month(lake: Lake, as_of: date, known_runs: set[str]) -> int:
    """Remove what runs of this month that never published left: data objects of runs no record of the
    month names (``known_runs``: every run a record names, published or replaced), and temporary files
    of the outputs written with :func:`atomic_file`. Only the month's own folders (other months may be
    running). Call with the month's lock held."""
    stale = [o.path for o in month_objects(lake, as_of) if o.run_id is not None and o.run_id not in known_runs]
    removed = remove(stale)
    pattern = f"{TMP_PREFIX}{partition(as_of)}-*"
    for folder in ("raw", "snapshots", "rejects"):  # folders renamed into place before issue #19
        for path in (lake.root / folder).glob(f"*/{pattern}"):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    for path in lake.run_dir(as_of).glob(f"{TMP_PREFIX}*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
