"""``streamflow vacuum``: remove the lake's data objects that no reader needs any more (issue #19).

A month's objects are never changed or renamed (:mod:`pipeline.lakefs`), so two kinds pile up:

* objects of runs that never published (killed after writing them, before their run record): no record
  names them, and no reader ever read them. The month's next run removes them too.
* objects of runs a correction (``--replace``, or a recompute on top of one) replaced: a DuckDB
  connection opened before the correction still reads them, so they are kept for ``retain`` (default
  seven days) after the correction was published, then removed with their run record (the record that
  replaced them keeps their history in ``replaced``).

Each month is vacuumed under its exclusive lock; a month being run is left for the next vacuum.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipeline import lakefs
from pipeline.config import Settings
from pipeline.errors import LockBusyError
from pipeline.pg.locks import month_lock
from pipeline.runs import RunRecord, RunStore

log = logging.getLogger(__name__)

DEFAULT_RETAIN = timedelta(days=7)


@dataclass(frozen=True)
class Removal:
    """The files of one run of one month that vacuum removes, and why."""

    as_of: date
    why: str
    paths: list[Path] = field(default_factory=list)
    freed: int = 0  # bytes: of files with no other link (a later run may share an object's bytes)


def _removal(as_of: date, why: str, paths: list[Path]) -> Removal:
    stats = [p.stat() for p in paths if p.exists()]
    return Removal(as_of, why, paths, sum(s.st_size for s in stats if s.st_nlink == 1))


def months_in(lake: lakefs.Lake) -> list[date]:
    """Every month the lake holds a run record or a data object of."""
    found: set[date] = set()
    for folder in [lake.root / "runs", *(lake.root / kind for kind in lakefs.OBJECT_KINDS)]:
        for path in [*folder.glob("as_of=*"), *folder.glob("*/as_of=*")]:
            as_of = lakefs.partition_date(path.name)
            if as_of is not None:  # else not a month's folder
                found.add(as_of)
    return sorted(found)


def _objects(lake: lakefs.Lake, record: RunRecord) -> Iterator[Path]:
    tables = record.objects or record.tables  # a record from before issue #19 names no objects
    for table in tables:
        for kind in lakefs.OBJECT_KINDS:
            path = record.object_file(lake.root, kind, table)
            if path is not None and path.exists():
                yield path


def plan_month(lake: lakefs.Lake, as_of: date, retain: timedelta, now: datetime) -> list[Removal]:
    """What vacuum removes of one month (nothing is removed here)."""
    records = RunStore(lake).records(as_of)
    known = {r.run_id for _, r in records if r.run_id}
    removals = []
    orphans = [o.path for o in lakefs.month_objects(lake, as_of) if o.run_id is not None and o.run_id not in known]
    if orphans:
        runs = sorted({o.stem for o in orphans})
        removals.append(_removal(as_of, f"run(s) {', '.join(runs)} never published", orphans))
    published = [(path, r) for path, r in records if r.published]
    for (path, old), (_, newer) in zip(published, published[1:], strict=False):
        if newer.published_at is not None and newer.published_at <= now - retain:
            why = f"run {old.run_id} was replaced by run {newer.run_id} on {newer.published_at:%Y-%m-%d %H:%M} UTC"
            removals.append(_removal(as_of, why, [*_objects(lake, old), path]))
    return removals


def vacuum(
    settings: Settings, retain: timedelta = DEFAULT_RETAIN, dry_run: bool = False, now: datetime | None = None
) -> tuple[list[Removal], list[date]]:
    """Remove (unless ``dry_run``) what no reader needs; returns what was (or would be) removed, and the
    months skipped because a run of theirs holds their lock."""
    lake = lakefs.Lake(settings.lake_root)
    now = now or datetime.now(UTC)
    done, busy = [], []
    for as_of in months_in(lake):
        if dry_run:
            done += plan_month(lake, as_of, retain, now)
            continue
        try:
            with month_lock(settings, as_of, wait=False):
                removals = plan_month(lake, as_of, retain, now)
                for removal in removals:
                    lakefs.remove(removal.paths)
                    log.info("vacuum %s: removed %d file(s): %s", as_of, len(removal.paths), removal.why)
                done += removals
        except LockBusyError:
            log.info("vacuum %s: a run of the month holds its lock; left for the next vacuum", as_of)
            busy.append(as_of)
    return done, busy
