"""The run record of a month, typed, and where the lake keeps it.

``<lake>/runs/as_of=YYYY-MM-DD/<run_id>.json`` holds the record of a run that published the month,
created once (never replaced) after PostgreSQL committed it: it names the month's data objects
(``objects``), and it is the one write that makes them visible (:mod:`pipeline.lakefs`). A month is
published when a record says ``"status": "published"`` and PostgreSQL's pipeline_runs holds the same
run_id; a correction adds a newer record (which lists the runs it replaced), and the newest published
record is the month's. Lakes written before issue #19 keep one ``manifest.json`` per month instead; it is
read the same way. A failed attempt is recorded beside them, in ``attempts/<run_id>.json``.

:class:`RunRecord` reads every manifest the pipeline ever wrote: a key it does not know is kept as it
is (``extra``) and written back unchanged, and a key added later (``contract``) reads as None from an
older manifest. :class:`RunStore` is the only code that writes these files; it and :class:`S3RunRecords`
(a lake on S3, read only) are the only code that lists and reads them, what they mean decided once in
:class:`RunRecords`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import duckdb

from pipeline import lakefs, lakestore
from pipeline.errors import LakeStateError
from pipeline.schema import Schema, load_schema, parse_schema, schema_file

if TYPE_CHECKING:  # only for build()'s arguments; none of them imports this module
    from pipeline.merge import MergeResult
    from pipeline.stage import StageResult

ATTEMPTS = "attempts"
RUNS = "runs"
W = TypeVar("W", Path, str)  # where a record was read: a file, or an s3:// URI
FULL_DUMP = "full-dump"
UPSERT = "upsert"


class Status(StrEnum):
    PUBLISHED = "published"
    FAILED = "failed"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions(server_version: str | None = None) -> dict[str, str | None]:
    return {
        "streamflow-lake": _version("streamflow-lake"),
        "duckdb": duckdb.__version__,
        "soda-core": _version("soda-core"),
        "postgresql": server_version,
    }


def _date(value: object) -> date | None:
    return date.fromisoformat(str(value)) if value else None


def _datetime(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- the parts of a record ----------------------------------------------------------------------


@dataclass(frozen=True)
class DropFile:
    """A drop file as it was read: enough to tell later whether it changed."""

    name: str
    size: int
    sha256: str
    rows: int
    mtime_ns: int | None = None  # absent from the oldest manifests: the file is then hashed again

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DropFile:
        return cls(data["name"], data["size"], data["sha256"], data["rows"], data.get("mtime_ns"))

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "size": self.size, "sha256": self.sha256, "rows": self.rows}
        return out if self.mtime_ns is None else {**out, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Checks:
    """The quality gate's outcome: counts, and every check with its outcome and value."""

    passed: int = 0
    warned: int = 0
    failed: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)  # name, table, column, outcome, value

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Checks | None:
        if data is None:
            return None
        return cls(data.get("passed", 0), data.get("warned", 0), data.get("failed", 0), list(data.get("checks", [])))

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "warned": self.warned, "failed": self.failed, "checks": self.checks}

    @property
    def not_passed(self) -> list[dict[str, Any]]:
        """The checks that failed or warned."""
        return [c for c in self.checks if c.get("outcome") != "pass"]


@dataclass(frozen=True)
class ReplacedRun:
    """A run a correction replaced: its id, when it was published, the sha256 of its drop files."""

    run_id: str
    published_at: str | None
    sha256: dict[str, str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplacedRun:
        return cls(data["run_id"], data.get("published_at"), dict(data.get("sha256", {})))

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "published_at": self.published_at, "sha256": self.sha256}


@dataclass(frozen=True)
class Contract:
    """The contract a month was published under (issue #14): sql/schema.sql's sha256, every table's
    columns in declared order, and the file's text (so the contract can be read back whole: types and
    keys, for :mod:`pipeline.evolve`; None in records written before it was kept)."""

    sha256: str
    columns: dict[str, list[str]]
    sql: str | None = None

    @classmethod
    def current(cls, path: Path | None = None, schema: Schema | None = None) -> Contract:
        path = path or schema_file()
        schema = schema or load_schema(path)
        text = path.read_bytes()
        return cls(
            hashlib.sha256(text).hexdigest(),
            {t.name: list(t.column_names) for t in schema.tables},
            text.decode("utf-8"),
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Contract | None:
        if data is None:
            return None
        return cls(data["sha256"], {t: list(c) for t, c in data.get("columns", {}).items()}, data.get("sql"))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sha256": self.sha256, "columns": self.columns}
        if self.sql is not None:
            data["sql"] = self.sql
        return data

    def schema(self) -> Schema | None:
        """The contract as parsed (None when its text was not kept)."""
        if self.sql is None:
            return None
        return parse_schema(self.sql, source=f"the contract {self.sha256[:12]}")

    def changes_since(self, before: Contract) -> str:
        """How this contract differs from ``before``, in words ("users +referral_code; labels -churn_score")."""
        parts = []
        for table in [*before.columns, *(t for t in self.columns if t not in before.columns)]:
            if table not in self.columns:
                parts.append(f"-{table}")
            elif table not in before.columns:
                parts.append(f"+{table}")
            else:
                old, new = before.columns[table], self.columns[table]
                diff = [f"+{c}" for c in new if c not in old] + [f"-{c}" for c in old if c not in new]
                if diff:
                    parts.append(f"{table} {' '.join(diff)}")
        if parts:
            return "; ".join(parts)
        return "sql/schema.sql changed, same tables and columns (types, constraints or comments)"


_STATUSES = {s.value for s in Status}

# --- the record ---------------------------------------------------------------------------------

# The manifest's keys in the order they are written (the order of the manifests written so far).
_KEYS = (
    "as_of",
    "status",
    "run_id",
    "source",
    "mode",
    "previous_as_of",
    "previous_run_id",
    "files",
    "rejects",
    "missing_columns",
    "tables",
    "checks",
    "timings",
    "versions",
    "postgres",
    "started_at",
    "published_at",
    "contract",
    "replaced",
    "live_updated",
    "recorded_at",
    "confirm_deletions",
    "drift_profile",
    "objects",
)


@dataclass(frozen=True)
class RunRecord:
    """One run of one month: what it read, merged and checked, and how it ended.

    Immutable: a step of the publish makes the next state with :meth:`as_failed`, :meth:`as_published`
    or :meth:`replacing`."""

    as_of: date
    run_id: str | None = None
    status: Status | None = None  # None while the run is in progress, or in a manifest with an unknown status
    source: str | None = None  # the drop folder
    mode: str | None = None  # "upsert" or "full-dump"
    previous_as_of: date | None = None
    previous_run_id: str | None = None
    files: dict[str, DropFile] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)  # only tables that lack some
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> rows, inserted, updated, …
    checks: Checks | None = None
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    postgres: dict[str, str] = field(default_factory=dict)  # server (host:port/db), schema
    started_at: datetime | None = None
    published_at: datetime | None = None
    contract: Contract | None = None  # None in manifests written before it was recorded
    replaced: list[ReplacedRun] = field(default_factory=list)  # the runs a correction replaced, oldest first
    live_updated: bool | None = None  # whether the publish upserted the live tables (published runs)
    recorded_at: datetime | None = None  # when a failed attempt was recorded (attempts only)
    # a --full-dump month published with --confirm-deletions: a correction of an earlier month recomputes
    # it with the same confirmation (issue #15.1)
    confirm_deletions: bool = False
    # the month's own drift numbers, for the next month's drift (:func:`pipeline.drift.profiles_to_json`);
    # None in manifests written before it was kept, and then the next month reads them from the snapshots
    drift_profile: dict[str, Any] | None = None
    # table -> {"raw": path, "snapshots": path}, relative to the lake root: the month's data objects, the only
    # files a reader reads for it. Empty in records written before issue #19 (their one object per month
    # and kind: lakefs.Lake.legacy_object)
    objects: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    # --- building -----------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        as_of: date,
        run_id: str,
        source: Path | str,
        full_dump: bool,
        previous_as_of: date | None,
        previous: RunRecord | None,
        stages: Mapping[str, StageResult],
        merges: Mapping[str, MergeResult],
        checks: Mapping[str, Any],
        timings: dict[str, float],
        started_at: datetime,
        postgres: str,
        pg_schema: str,
        server_version: str,
        contract: Contract | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """The record of a run whose checks have run (status not set yet)."""
        return cls(
            as_of=as_of,
            run_id=run_id,
            source=str(source),
            mode=FULL_DUMP if full_dump else UPSERT,
            previous_as_of=previous_as_of,
            previous_run_id=previous.run_id if previous else None,
            files={t: DropFile.from_json(vars(s.source)) for t, s in stages.items()},
            rejects={t: s.rejected for t, s in stages.items()},
            missing_columns={t: list(s.missing_columns) for t, s in stages.items() if s.missing_columns},
            tables={t: {"rows": m.rows, **m.counts} for t, m in merges.items()},
            checks=Checks.from_json(checks),
            timings=timings,
            versions=versions(server_version),
            postgres={"server": postgres, "schema": pg_schema},
            started_at=started_at,
            contract=contract if contract is not None else Contract.current(),
            extra=dict(extra or {}),
        )

    def with_objects(self, lake: lakefs.Lake, tables: list[str]) -> RunRecord:
        """The record naming the objects this run writes for ``tables`` (names no other run uses)."""
        assert self.run_id, "a run writes objects under its run id"
        objects = {t: {k: lake.object(k, t, self.as_of, self.run_id) for k in lakefs.OBJECT_KINDS} for t in tables}
        return dataclasses.replace(self, objects=objects)

    def as_failed(self) -> RunRecord:
        return dataclasses.replace(self, status=Status.FAILED)

    def as_published(
        self, *, timings: dict[str, float], live_updated: bool, published_at: datetime | None = None
    ) -> RunRecord:
        return dataclasses.replace(
            self,
            status=Status.PUBLISHED,
            timings=timings,
            live_updated=live_updated,
            published_at=published_at or datetime.now(UTC),
        )

    def replacing(self, replaced: RunRecord | None) -> RunRecord:
        """A correction keeps the history of the runs it replaces (``replaced``: theirs, then this one)."""
        if replaced is None:
            return self
        this = ReplacedRun(replaced.run_id or "", _iso(replaced.published_at), replaced.sha256)
        return dataclasses.replace(self, replaced=[*replaced.replaced, this])

    # --- what readers ask ---------------------------------------------------------------------------

    @property
    def published(self) -> bool:
        return self.status == Status.PUBLISHED

    def object_file(self, root: Path, kind: str, table: str) -> Path | None:
        """The month's ``kind`` object (raw or snapshots) of ``table`` as this record names it, under lake
        ``root``; None when the record names none (the table was not in the month's contract). A record
        from before issue #19 names none: its month's one object (which may be missing) is returned."""
        relative = self.object_key(kind, table)
        return Path(root) / relative if relative else None

    def object_key(self, kind: str, table: str) -> str | None:
        """:meth:`object_file` relative to the lake's root (the key under an s3:// lake's prefix)."""
        if not self.objects:
            return lakefs.Lake(Path(".")).legacy_object(kind, table, self.as_of)
        return self.objects.get(table, {}).get(kind) or None

    def snapshot_file(self, root: Path, table: str) -> Path | None:
        return self.object_file(root, lakefs.SNAPSHOTS, table)

    def raw_file(self, root: Path, table: str) -> Path | None:
        return self.object_file(root, lakefs.RAW, table)

    @property
    def full_dump(self) -> bool:
        return self.mode == FULL_DUMP

    @property
    def rows(self) -> dict[str, int]:
        """table -> rows of the month's snapshot."""
        return {t: v["rows"] for t, v in self.tables.items() if "rows" in v}

    @property
    def changes(self) -> dict[str, dict[str, int]]:
        """table -> inserted/updated/unchanged/carried/deleted."""
        return {t: {k: n for k, n in v.items() if k != "rows"} for t, v in self.tables.items()}

    @property
    def sha256(self) -> dict[str, str]:
        """table -> sha256 of its drop file."""
        return {t: f.sha256 for t, f in self.files.items()}

    def pipeline_runs_row(self, finished_at: datetime) -> dict[str, Any]:
        """The pipeline_runs row of a published run (columns as sql/pipeline_tables.sql declares them;
        JSONB values as Python dicts)."""
        checks = self.checks or Checks()
        return {
            "as_of": self.as_of.isoformat(),
            "status": Status.PUBLISHED.value,
            "run_id": self.run_id,
            "row_counts": self.rows,
            "changes": self.changes,
            "checks": {"passed": checks.passed, "warned": checks.warned, "failed": checks.failed}
            | {"failed_or_warned": checks.not_passed},
            "sources": self.sha256,
            "started_at": _iso(self.started_at),
            "finished_at": finished_at.isoformat(),
            "contract": self.contract.to_json() if self.contract else None,
        }

    # --- JSON ---------------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """A record from a manifest or attempt as any version wrote it (only ``as_of`` is required)."""
        status = data.get("status")
        return cls(
            as_of=date.fromisoformat(data["as_of"]),
            run_id=data.get("run_id"),
            status=Status(status) if status in _STATUSES else None,
            source=data.get("source"),
            mode=data.get("mode"),
            previous_as_of=_date(data.get("previous_as_of")),
            previous_run_id=data.get("previous_run_id"),
            files={t: DropFile.from_json(f) for t, f in (data.get("files") or {}).items()},
            rejects=dict(data.get("rejects") or {}),
            missing_columns={t: list(c) for t, c in (data.get("missing_columns") or {}).items()},
            tables={t: dict(v) for t, v in (data.get("tables") or {}).items()},
            checks=Checks.from_json(data.get("checks")),
            timings=dict(data.get("timings") or {}),
            versions=dict(data.get("versions") or {}),
            postgres=dict(data.get("postgres") or {}),
            started_at=_datetime(data.get("started_at")),
            published_at=_datetime(data.get("published_at")),
            contract=Contract.from_json(data.get("contract")),
            replaced=[ReplacedRun.from_json(r) for r in data.get("replaced") or []],
            live_updated=data.get("live_updated"),
            recorded_at=_datetime(data.get("recorded_at")),
            confirm_deletions=bool(data.get("confirm_deletions", False)),
            drift_profile=data.get("drift_profile"),
            objects={t: dict(o) for t, o in (data.get("objects") or {}).items()},
            extra={k: v for k, v in data.items() if k not in _KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON object, in the shape the pipeline has always written (keys a run never set,
        such as ``replaced`` or ``recorded_at``, are left out, as before)."""
        out: dict[str, Any] = {
            "as_of": self.as_of.isoformat(),
            "status": self.status.value if self.status else None,
            "run_id": self.run_id,
            "source": self.source,
            "mode": self.mode,
            "previous_as_of": _iso(self.previous_as_of),
            "previous_run_id": self.previous_run_id,
            "files": {t: f.to_json() for t, f in self.files.items()},
            "rejects": self.rejects,
            "missing_columns": self.missing_columns,
            "tables": self.tables,
            "checks": self.checks.to_json() if self.checks else None,
            "timings": self.timings,
            "versions": self.versions,
            "postgres": self.postgres,
            "started_at": _iso(self.started_at),
            "published_at": _iso(self.published_at),
            **self.extra,
        }
        if self.contract is not None:
            out["contract"] = self.contract.to_json()
        if self.replaced:
            out["replaced"] = [r.to_json() for r in self.replaced]
        if self.live_updated is not None:
            out["live_updated"] = self.live_updated
        if self.recorded_at is not None:
            out["recorded_at"] = self.recorded_at.isoformat()
        if self.confirm_deletions:
            out["confirm_deletions"] = True
        if self.drift_profile is not None:
            out["drift_profile"] = self.drift_profile
        if self.objects:
            out["objects"] = self.objects
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str) + "\n"

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """The record in ``path``, parsed once per version of the file: a run asks for the published
        months many times (each Luigi task's decision), and a lake of years holds dozens of them. A
        record is written under a temporary name and renamed into place, so a new version is a new
        inode; the record is frozen, so the one parsed instance can be shared."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        if stat is None:
            return cls._parse(path)
        return cls._read_version(path, stat.st_ino, stat.st_mtime_ns, stat.st_size)

    @classmethod
    @functools.lru_cache(maxsize=1024)
    def _read_version(cls, path: Path, inode: int, mtime_ns: int, size: int) -> RunRecord:
        return cls._parse(path)

    @classmethod
    def _parse(cls, path: Path) -> RunRecord:
        return cls.parse(path.read_bytes(), path)

    @classmethod
    def parse(cls, data: bytes, where: Path | str) -> RunRecord:
        """The record in ``data``, read from ``where`` (a file or an s3:// URI, for the message)."""
        try:
            return cls.from_json(json.loads(data.decode("utf-8")))
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise LakeStateError(
                f"{where} is not a run record the pipeline can read ({type(error).__name__}: {error}); it was "
                f"edited or truncated by hand? Restore it from a backup (PostgreSQL's pipeline_runs "
                f"holds the same run); nothing was run"
            ) from None


# --- the lake's run records ---------------------------------------------------------------------


@dataclass(frozen=True)
class MonthRecord:
    """What the lake says about one month: its published record, or its latest failed attempt."""

    as_of: date
    status: str  # "published"; "failed" when only failed attempts exist; "unknown" for a record without one
    record: RunRecord  # the published record, or the latest attempt (failed)
    attempts: list[RunRecord] = field(default_factory=list)  # attempts, oldest first

    @property
    def published(self) -> bool:
        return self.status == Status.PUBLISHED

    @property
    def run_id(self) -> str | None:
        return self.record.run_id

    @property
    def failed_attempts(self) -> int:
        return sum(a.status == Status.FAILED for a in self.attempts)


def _newest_last(item: tuple[object, RunRecord]) -> tuple[bool, str, str]:
    """The order of a month's records: a published one after any other, then by when it was published."""
    record = item[1]
    return (record.published, _iso(record.published_at) or "", record.run_id or "")


def _oldest_first(attempts: list[RunRecord]) -> list[RunRecord]:
    return sorted(attempts, key=lambda r: (_iso(r.recorded_at or r.started_at) or "", r.run_id or ""))


class RunRecords(Generic[W]):
    """What a lake's run records say, wherever the lake is: the listing and reading of the records is
    :class:`RunStore`'s (a local folder) or :class:`S3RunRecords`'s (an s3:// lake); what they mean is
    decided here, once. ``W`` is where a record was read from: a Path, or an s3:// URI."""

    def _month_list(self) -> list[date]:
        """The months with a ``runs/as_of=D`` folder, oldest first."""
        raise NotImplementedError

    def _read_records(self, as_of: date) -> list[tuple[W, RunRecord]]:
        """Every record of the month (not its attempts), each with where it was read, in any order."""
        raise NotImplementedError

    def attempts(self, as_of: date) -> list[RunRecord]:
        """The month's recorded attempts, oldest first."""
        raise NotImplementedError

    def records(self, as_of: date) -> list[tuple[W, RunRecord]]:
        """Every record of the month (not its attempts), each with its file, the month's own one last."""
        return sorted(self._read_records(as_of), key=_newest_last)

    def current(self, as_of: date) -> tuple[W, RunRecord] | None:
        """The file and record of the run that published ``as_of``, or None when the month is not published."""
        records = self.records(as_of)
        return records[-1] if records and records[-1][1].published else None

    def get(self, as_of: date) -> RunRecord | None:
        """The record of the run that published ``as_of``, or None when the month is not published."""
        current = self.current(as_of)
        return current[1] if current else None

    def path(self, as_of: date) -> W | None:
        """The file of the record that publishes ``as_of``, or None when the month is not published."""
        current = self.current(as_of)
        return current[0] if current else None

    def published(self) -> dict[date, RunRecord]:
        """as_of -> the record of every month the lake has published, oldest first."""
        months = {}
        for as_of in self._month_list():
            record = self.get(as_of)
            if record is not None:
                months[as_of] = record
        return months

    def known_runs(self, as_of: date) -> set[str]:
        """Every run whose objects a record of the month names: the published one and those it replaced
        (kept for readers until ``streamflow vacuum``). Objects of any other run are leftovers."""
        return {r.run_id for _, r in self.records(as_of) if r.run_id}

    def months(self) -> dict[date, MonthRecord]:
        """as_of -> what the run records say about it, for every month with a record or an attempt."""
        months = {}
        for as_of in self._month_list():
            attempts = self.attempts(as_of)
            records = self.records(as_of)
            if records:
                record = records[-1][1]
                months[as_of] = MonthRecord(as_of, record.status or "unknown", record, attempts)
            elif attempts:
                latest = attempts[-1]
                months[as_of] = MonthRecord(as_of, latest.status or Status.FAILED, latest, attempts)
        return months

    def published_months(self) -> list[date]:
        """The published months, oldest first."""
        return sorted(d for d, m in self.months().items() if m.published)


class RunStore(RunRecords[Path]):
    """The run records of one lake on a local disk: ``runs/as_of=D/<run_id>.json`` (``manifest.json`` in
    lakes written before issue #19) and ``runs/as_of=D/attempts/*.json``; the only code that writes them."""

    def __init__(self, lake: lakefs.Lake | Path) -> None:
        self.lake = lake if isinstance(lake, lakefs.Lake) else lakefs.Lake(Path(lake))

    def attempts_dir(self, as_of: date) -> Path:
        return self.lake.run_dir(as_of) / ATTEMPTS

    def _run_dirs(self) -> dict[date, Path]:
        dirs = {}
        for run_dir in sorted((self.lake.root / "runs").glob("as_of=*")):
            as_of = lakefs.partition_date(run_dir.name)
            if as_of is not None:
                dirs[as_of] = run_dir
        return dirs

    def _month_list(self) -> list[date]:
        return list(self._run_dirs())

    def _read_records(self, as_of: date) -> list[tuple[Path, RunRecord]]:
        folder = self.lake.run_dir(as_of)
        files = [p for p in folder.glob("*.json") if not p.name.startswith(lakefs.TMP_PREFIX)]
        return [(p, RunRecord.read(p)) for p in files]

    def attempts(self, as_of: date) -> list[RunRecord]:
        return _oldest_first([RunRecord.read(p) for p in self.attempts_dir(as_of).glob("*.json")])

    def write(self, record: RunRecord) -> Path:
        """Create the record of a published run (the month is published once it exists). A run's record
        is written once: a correction is a new run with a record of its own."""
        assert record.run_id, "a published run has a run id"
        path = self.lake.record(record.as_of, record.run_id)
        lakefs.write_new(path, record.dumps())
        return path

    def write_attempt(self, record: RunRecord) -> Path:
        """Record a failed attempt (with ``recorded_at``) without touching the month's records."""
        record = dataclasses.replace(record, recorded_at=datetime.now(UTC))
        path = self.attempts_dir(record.as_of) / f"{record.run_id}.json"
        lakefs.write_new(path, record.dumps())
        return path


@functools.lru_cache(maxsize=1024)
def _read_s3_version(lake: lakestore.S3Lake, relative: str, size: int, mtime_ns: int) -> RunRecord:
    """A record on S3, parsed once per version (a record is created once and never replaced; size and
    mtime come with the listing, so a cached record costs no request)."""
    return RunRecord.parse(lake.read_bytes(relative), str(lake.at(relative)))


class S3RunRecords(RunRecords[str]):
    """The run records of a lake under an s3:// prefix, listed and read (never written: the month's
    write path needs a local lake, :func:`pipeline.lakestore.local_root`)."""

    def __init__(self, lake: lakestore.S3Lake) -> None:
        self.lake = lake

    def _month_list(self) -> list[date]:
        months = (lakefs.partition_date(f.name) for f in self.lake.listing(RUNS) if not f.is_file)
        return sorted(d for d in months if d is not None)

    def _json_files(self, folder: str) -> list[tuple[str, RunRecord]]:
        return [
            (
                str(self.lake.at(f"{folder}/{f.name}")),
                _read_s3_version(self.lake, f"{folder}/{f.name}", f.size, f.mtime_ns),
            )
            for f in self.lake.listing(folder)
            if f.is_file and f.name.endswith(".json") and not f.name.startswith(lakefs.TMP_PREFIX)
        ]

    def _read_records(self, as_of: date) -> list[tuple[str, RunRecord]]:
        return self._json_files(f"{RUNS}/{lakefs.partition(as_of)}")

    def attempts(self, as_of: date) -> list[RunRecord]:
        return _oldest_first([r for _, r in self._json_files(f"{RUNS}/{lakefs.partition(as_of)}/{ATTEMPTS}")])


def run_records(root: lakestore.LakeRoot) -> RunRecords[Any]:
    """The run records of the lake at ``root``: a local folder, or an s3:// URI."""
    uri = lakestore.s3_uri(root)
    return S3RunRecords(lakestore.S3Lake(uri)) if uri is not None else RunStore(Path(root))
