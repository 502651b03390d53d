"""One month, as plain functions: plan, stage each table, merge each table, then gate and publish.

The Luigi tasks (:mod:`pipeline.tasks`) call these one step at a time; :func:`run_month` calls them in
order for tests, benchmarks and scripts. Work in progress lives in ``<lake>/_work/as_of=…/`` under
names that encode their inputs (the source file's fingerprint, the previous month, the merge mode),
so a stale intermediate is never mistaken for a fresh one, and a rerun picks up where a crash left.

Publication order, chosen so a crash anywhere leaves a state a rerun completes:
ONE PostgreSQL transaction opened, the live upsert running in it while, on other connections, staging
is loaded (the month's partitions, keyed) and the Soda checks run on each table as it is staged →
checks pass (else rollback, the upsert stopped) → snapshots attached, pipeline_runs row → commit →
lake partitions renamed into place → staging dropped → manifest written (the month is now published)
→ work folder removed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from pipeline import duck, lakefs, manifest, pgsql, quality
from pipeline.concurrency import run_all
from pipeline.config import Settings
from pipeline.decide import Action, Decision, check_as_of, decide
from pipeline.errors import (
    ConfigError,
    DeletionLimitError,
    DropChangedError,
    LakeStateError,
    PipelineError,
    PublishedMonthError,
)
from pipeline.failpoints import failpoint
from pipeline.merge import MergeResult, merge_table
from pipeline.schema import Schema, load_schema
from pipeline.stage import SourceFile, StageResult, drop_file, sha256_of, stage_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileIdentity:
    """A drop file as it was when the run started: every work path of the month derives from this, so a
    file touched or rewritten mid-run never sends a later step to another folder (issue #20 case 1)."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns)

    def key(self, path: Path) -> str:
        """The work folder name of this file: its path, size and modification time, hashed."""
        return hashlib.sha1(f"{path.resolve()}|{self.size}|{self.mtime_ns}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MonthPlan:
    """Where one month's inputs come from and where its intermediate files go. The drop files' identity
    is recorded once, when the plan is made (:func:`plan_month`), and never read again from the disk."""

    lake: lakefs.Lake
    as_of: date
    source: Path
    previous: date | None
    full_dump: bool = False
    from_raw: bool = False  # recomputing a published month from its typed drop in the lake (a correction)
    files: Mapping[str, FileIdentity | None] = field(default_factory=dict, compare=False, hash=False)

    def source_file(self, table: str) -> Path:
        return self.source / f"{table}.csv"

    def source_key(self, table: str) -> str:
        if self.from_raw:
            return "from-raw"
        identity = self.files.get(table) if table in self.files else FileIdentity.of(self.source_file(table))
        return "missing" if identity is None else identity.key(self.source_file(table))

    def stage_dir(self, table: str) -> Path:
        return self.lake.work(self.as_of) / "stage" / table / self.source_key(table)

    def merge_dir(self, table: str) -> Path:
        mode = "full-dump" if self.full_dump else "upsert"
        after = self.previous.isoformat() if self.previous else "first"
        key = f"{self.source_key(table)}-{after}-{mode}"
        return self.lake.work(self.as_of) / "merge" / table / key


def published_months(lake: lakefs.Lake) -> dict[date, dict]:
    """as_of -> manifest of every month the lake has published."""
    months = {}
    for path in lake.manifests():
        record = manifest.read(path)
        if record.get("status") == manifest.PUBLISHED:
            months[date.fromisoformat(record["as_of"])] = record
    return months


def previous_as_of(settings: Settings, as_of: date) -> date | None:
    """The month this one builds on: the latest earlier as_of configured in luigi.cfg or published in the lake."""
    known = set(settings.months) | set(published_months(lakefs.Lake(settings.lake_root)))
    earlier = [d for d in known if d < as_of]
    return max(earlier) if earlier else None


def resolve_source(settings: Settings, as_of: date, source: str | Path | None) -> Path:
    if source:
        return Path(source)
    if as_of in settings.months:
        return settings.months[as_of]
    configured = ", ".join(d.isoformat() for d in settings.months) or "none"
    raise ConfigError(
        f"no drop folder for as_of {as_of}: pass --source DIR, or add '{as_of} = DIR' to the [months] "
        f"section of luigi.cfg (configured: {configured})"
    )


def plan_month(
    settings: Settings,
    as_of: date,
    source: str | Path | None = None,
    full_dump: bool = False,
    schema: Schema | None = None,
) -> MonthPlan:
    """The month's inputs, fixed once: its drop folder, the month it builds on, and the identity (size,
    modification time) of each drop file now. Refuses an as_of that is not a month's (see check_as_of)."""
    check_as_of(as_of, date.today(), settings.as_of_calendar)
    folder = resolve_source(settings, as_of, source)
    tables = (schema or load_schema()).table_names
    return MonthPlan(
        lake=lakefs.Lake(settings.lake_root),
        as_of=as_of,
        source=folder,
        previous=previous_as_of(settings, as_of),
        full_dump=full_dump,
        files={t: FileIdentity.of(folder / f"{t}.csv") for t in tables},
    )


def decide_month(
    plan: MonthPlan | None,
    as_of: date,
    published: Mapping[date, dict],
    *,
    replace: bool = False,
    as_dependency: bool = False,
    schema: Schema | None = None,
) -> Decision:
    """:func:`pipeline.decide.decide` with what the lake says now: the month's record, the later
    published months, and (a published month with a drop folder) which drop files differ from it."""
    record = published.get(as_of)
    changed = None
    if record is not None and plan is not None and not as_dependency:
        changed = changed_sources(plan, record, schema)
    return decide(
        as_of,
        record,
        changed,
        replace=replace,
        as_dependency=as_dependency,
        later=list(published),
        source=plan.source if plan else None,
    )


def verify_inputs(plan: MonthPlan, schema: Schema | None = None) -> None:
    """Before publishing: every drop file is still the one the run started with (same size and modification
    time, or else the same bytes as staging read), and was staged where the plan says. A file touched only
    passes; a file rewritten or removed mid-run refuses the month before anything is published."""
    if plan.from_raw:
        return
    for table in (schema or load_schema()).table_names:
        path, recorded = plan.source_file(table), plan.files.get(table)
        now = FileIdentity.of(path)
        if now is not None and now == recorded:
            continue
        result = plan.stage_dir(table) / "result.json"
        staged = StageResult.from_json(result.read_text()).source if result.is_file() else None
        if now is not None and staged is not None and now.size == staged.size and sha256_of(path) == staged.sha256:
            continue  # touched, same bytes
        was = f"{recorded.size} bytes, modified {_mtime(recorded.mtime_ns)}" if recorded else "missing"
        is_ = f"{now.size} bytes, modified {_mtime(now.mtime_ns)}" if now else "missing"
        raise DropChangedError(
            f"month {plan.as_of}: {path} changed while the month was running (at the start: {was}; now: {is_}); "
            f"nothing was published. Run the month again once the drop is complete and no longer written to."
        )


def _mtime(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def published_leftovers(lake: lakefs.Lake, as_of: date, record: Mapping) -> list[Path]:
    """The work folders a published run left behind (a crash after its manifest): those keyed by the
    identity of the files it published. Another run of the month with other files (a --replace under way)
    has other keys, and its folders are not listed."""
    work = lake.work(as_of)
    if not work.is_dir():
        return []
    found = []
    for table, f in record.get("files", {}).items():
        key = FileIdentity(f["size"], f.get("mtime_ns", 0)).key(Path(record["source"]) / f["name"])
        found += [p for p in [work / "stage" / table / key] if p.exists()]
        found += sorted((work / "merge" / table).glob(f"{key}-*"))
    return found


def clean_published_work(lake: lakefs.Lake, as_of: date, record: Mapping) -> None:
    """Remove a published run's leftovers and the publish scratch (``copy/``). Only the holder of the
    month's exclusive lock may call this: nobody else touches a month's work folder (issue #20 case 2)."""
    work = lake.work(as_of)
    for path in [*published_leftovers(lake, as_of, record), work / "copy"]:
        shutil.rmtree(path, ignore_errors=True)
    if work.is_dir():
        for folder in sorted((p for p in work.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(work.iterdir()):
            work.rmdir()


# --- steps ------------------------------------------------------------------------------------


def stage_one(settings: Settings, plan: MonthPlan, table_name: str, schema: Schema | None = None) -> StageResult:
    table = (schema or load_schema()).table(table_name)
    out = plan.stage_dir(table_name)
    with duck.connect(settings) as con:
        result = stage_table(
            con,
            table,
            plan.source,
            plan.as_of,
            out / "data.parquet",
            plan.lake.rejects(table_name, plan.as_of),
            settings.max_reject_ratio,
            sort_by_key=plan.previous is None,  # the first month's snapshot is the typed drop itself
        )
    lakefs.write_text_atomic(out / "result.json", result.to_json())
    failpoint("staged")
    _log_stage("stage", table_name, result.rows, result.seconds)
    return result


def merge_one(settings: Settings, plan: MonthPlan, table_name: str, schema: Schema | None = None) -> MergeResult:
    table = (schema or load_schema()).table(table_name)
    previous = None
    if plan.previous is not None:
        previous = plan.lake.snapshot_file(table_name, plan.previous)
        if not previous.exists():
            raise LakeStateError(
                f"{table_name}: the previous month {plan.previous} is not in the lake ({previous} is missing); "
                f"run that month first (luigi --module pipeline Month --as-of {plan.previous})"
            )
    out = plan.merge_dir(table_name)
    staged = StageResult.from_json((plan.stage_dir(table_name) / "result.json").read_text())
    with duck.connect(settings) as con:
        result = merge_table(
            con,
            table,
            plan.stage_dir(table_name) / "data.parquet",
            previous,
            out / "data.parquet",
            out / "changes.parquet",
            full_dump=plan.full_dump,
            drop_sorted=staged.sorted_by_key,
        )
    lakefs.write_text_atomic(out / "result.json", result.to_json())
    failpoint("merged")
    _log_stage(
        "merge", table_name, result.rows, result.seconds, " ".join(f"{k}={v}" for k, v in result.counts.items() if v)
    )
    return result


# DuckDB runs each query on every core, but a table's stage and merge also have serial stretches (the
# CSV header, hashing the drop, the final Parquet write): two tables at a time keep both cores busy.
TABLE_WORKERS = 2


def stage_and_merge(settings: Settings, plan: MonthPlan, schema: Schema) -> dict[str, MergeResult]:
    """Stage and merge every table of the month, ``TABLE_WORKERS`` tables at a time when the DuckDB memory
    limit leaves each enough (each gets its share of it); the Luigi tasks get the same from ``--workers 2``."""

    jobs = duck.parallel_jobs(settings, TABLE_WORKERS)
    each = duck.share(settings, jobs)
    failed: list[str] = []

    def one(table: str) -> MergeResult:
        try:
            stage_one(each, plan, table, schema)
        except PipelineError:
            failed.append(table)
            raise
        return merge_one(each, plan, table, schema)

    try:
        return run_all({t: functools.partial(one, t) for t in schema.table_names}, jobs, name="table")
    except PipelineError:
        # Report a bad drop as the tables in order would have: the error is the first bad file's, and a
        # later file read meanwhile leaves no rejects behind (the rerun after the fix reads it again).
        first = min(schema.table_names.index(t) for t in failed) if failed else len(schema.table_names)
        for table in schema.table_names[first + 1 :]:
            shutil.rmtree(plan.lake.rejects(table, plan.as_of), ignore_errors=True)
        raise


def changed_sources(plan: MonthPlan, published: dict, schema: Schema | None = None) -> dict[str, tuple[str, str]]:
    """table -> (published sha256, sha256 now) of every drop file that differs from what was published.
    A file whose size and modification time both match what was published is taken as the same file;
    otherwise it is hashed (a copy of the same bytes is still the same drop)."""
    changed = {}
    for table in (schema or load_schema()).table_names:
        before = published["files"][table]
        path = plan.source_file(table)
        if not path.is_file():
            changed[table] = (before["sha256"], "missing")
            continue
        stat = path.stat()
        if stat.st_size != before["size"]:
            changed[table] = (before["sha256"], "size differs")
        elif stat.st_mtime_ns != before.get("mtime_ns") and (now := sha256_of(path)) != before["sha256"]:
            changed[table] = (before["sha256"], now)
    return changed


def refuse_changed_published_month(plan: MonthPlan, changed: dict[str, tuple[str, str]]) -> None:
    raise PublishedMonthError(decide(plan.as_of, {}, changed, source=plan.source).reason)


def _log_stage(stage: str, table: str, rows: int, seconds: float, extra: str = "") -> None:
    rate = rows / seconds if seconds else 0.0
    log.info("%-7s %-18s %9d rows  %6.2fs  %10.0f rows/s  %s", stage, table, rows, seconds, rate, extra)


@dataclass
class PublishOptions:
    confirm_deletions: bool = False
    republish: bool = False  # publish again even though the month is published from the same drop
    replace: bool = False  # the drop is the correction of a published month (--replace)
    extra: dict = field(default_factory=dict)


def publish_month(settings: Settings, plan: MonthPlan, options: PublishOptions | None = None) -> dict:
    """Gate and publish a staged and merged month. Returns its manifest.

    Holds the month's lock throughout: a second run of the same month waits, then finds it published
    (from the same drop) and does nothing."""
    options = options or PublishOptions()
    with lakefs.month_lock(plan.lake, plan.as_of):
        published = recheck_locked(plan, options)
        if published is not None:
            return published
        lakefs.sweep_month(plan.lake, plan.as_of)
        return _publish_locked(settings, plan, options)


def recheck_locked(plan: MonthPlan, options: PublishOptions) -> dict | None:
    """The decision again, under the month's exclusive lock, right before publishing: returns the record
    when another run published the month from this drop meanwhile (its leftovers cleaned), raises when
    it must be refused, and returns None when the month is to be published (its drop files unchanged)."""
    if not options.republish:
        months = published_months(plan.lake)
        decision = decide_month(plan, plan.as_of, months, replace=options.replace)
        if decision.action is Action.NOTHING_TO_DO:
            record = months[plan.as_of]
            log.info(
                "month %s was published by another run meanwhile (run %s): nothing to do", plan.as_of, record["run_id"]
            )
            clean_published_work(plan.lake, plan.as_of, record)
            return record
        if decision.action is Action.REFUSE:
            raise PublishedMonthError(decision.reason)
    verify_inputs(plan)
    shutil.rmtree(plan.lake.work(plan.as_of) / "copy", ignore_errors=True)  # a crashed publish's scratch
    return None


def _publish_locked(settings: Settings, plan: MonthPlan, options: PublishOptions) -> dict:
    schema = load_schema()
    started_at = datetime.now(UTC)
    run_id = f"{plan.as_of:%Y%m%d}-{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    stages = {
        t.name: StageResult.from_json((plan.stage_dir(t.name) / "result.json").read_text()) for t in schema.tables
    }
    merges = {
        t.name: MergeResult.from_json((plan.merge_dir(t.name) / "result.json").read_text()) for t in schema.tables
    }
    _check_deletions(settings, plan, schema, merges, options)
    previous_manifest = published_months(plan.lake).get(plan.previous) if plan.previous else None
    timings: dict[str, float] = {
        "stage": round(sum(s.seconds for s in stages.values()), 3),
        "merge": round(sum(m.seconds for m in merges.values()), 3),
    }
    dsn = pgsql.resolve_dsn(settings.postgres, settings.lake_root)
    pg_schema = settings.postgres.schema
    try:
        # autocommit: every transaction is an explicit conn.transaction() block, so "committed" means committed
        with (
            pgsql.connect(dsn, autocommit=True) as conn,
            duck.connect(settings) as con,
            pgsql.errors_are_clear(dsn, plan.as_of),
        ):
            pgsql.ensure_tables(conn, schema, pg_schema)
            merged = {
                t: pgsql.MergedTable(
                    plan.merge_dir(t) / "data.parquet", plan.merge_dir(t) / "changes.parquet", merges[t].counts
                )
                for t in schema.table_names
            }
            scratch = plan.lake.work(plan.as_of) / "copy"
            log.info(
                "publishing %s into PostgreSQL %s (schema %s) in one transaction; the live upsert runs in it "
                "while the month is loaded into staging schema %s and checked there, and it commits only if "
                "the checks pass",
                plan.as_of,
                pgsql.describe(dsn),
                pg_schema,
                pgsql.staging_schema(pg_schema, plan.as_of),
            )
            server_version = pgsql.server_version(conn)
            root = schema.root.name
            variables = {
                "MIN_USERS": str(merges[root].previous_rows - merges[root].deleted),
                "VOLUME_RATIO": repr(settings.volume_change_ratio),
            }
            stage = pgsql.staging_schema(pg_schema, plan.as_of)
            with (
                pgsql.publishing(conn, con, schema, pg_schema, plan.as_of, plan.previous, merged, scratch) as pub,
                quality.Gate(dsn, schema, stage, plan.as_of, variables) as gate,
            ):
                t0 = time.perf_counter()

                def loaded(table: str) -> None:
                    pub.staged(table)  # the live upsert may read it
                    gate.loaded(table)  # its checks may run

                pgsql.load_staging(
                    dsn,
                    pub.snapshots,
                    pg_schema,
                    plan.as_of,
                    _volume_rows(schema, stages, merges, previous_manifest),
                    connections=duck.parallel_jobs(settings, pgsql.staging_connections(pub.live_writes)),
                    on_loaded=loaded,
                    first=pub.live_reads,
                )
                timings["load_staging"] = round(time.perf_counter() - t0, 3)
                failpoint("staging_loaded")
                t0 = time.perf_counter()
                report = gate.report()
                timings["checks"] = report.seconds
                timings["checks_after_staging"] = round(time.perf_counter() - t0, 3)
                record = manifest.build(
                    plan=plan,
                    run_id=run_id,
                    stages=stages,
                    merges=merges,
                    checks=report.summary(),
                    timings=timings,
                    started_at=started_at,
                    postgres=pgsql.describe(dsn),
                    pg_schema=pg_schema,
                    server_version=server_version,
                    previous=previous_manifest,
                    extra=options.extra,
                )
                _record_replaced(plan, record)
                if report.failed:  # leaving the block rolls the transaction back; staging is dropped below
                    record["status"] = manifest.FAILED
                    manifest.write_attempt(plan.lake, record)
                    quality.raise_if_failed(report, plan.as_of)
                failpoint("checked")
                t0 = time.perf_counter()
                sync = pub.finish(manifest.run_row(record, finished_at=datetime.now(UTC)))
            # the part of the publish after the checks: waiting for the live upsert, snapshots, commit
            timings["sync"] = round(time.perf_counter() - t0, 3)
            timings.update({f"sync_{k}": v for k, v in sync.seconds.items()})
            failpoint("committed")
            _publish_lake(plan, schema)
            failpoint("lake_published")
            pgsql.drop_staging(conn, pg_schema, plan.as_of)
    except Exception:
        pgsql.drop_staging_quietly(dsn, pg_schema, plan.as_of)  # a failed month leaves no staging behind
        raise
    record["timings"] = timings
    record["live_updated"] = sync.live_updated
    record["status"] = manifest.PUBLISHED
    record["published_at"] = datetime.now(UTC).isoformat()
    manifest.write(plan.lake, record)
    failpoint("manifest_written")
    shutil.rmtree(plan.lake.work(plan.as_of), ignore_errors=True)
    log.info("published %s: %s", plan.as_of, ", ".join(f"{t} {m.rows}" for t, m in merges.items()))
    return record


def _record_replaced(plan: MonthPlan, record: dict) -> None:
    """A correction keeps the history of the runs it replaces in its manifest."""
    replaced = published_months(plan.lake).get(plan.as_of)
    if replaced is not None:
        record["replaced"] = [
            *replaced.get("replaced", []),
            {
                "run_id": replaced["run_id"],
                "published_at": replaced.get("published_at"),
                "sha256": {t: f["sha256"] for t, f in replaced["files"].items()},
            },
        ]


def _check_deletions(
    settings: Settings, plan: MonthPlan, schema: Schema, merges: dict[str, MergeResult], options: PublishOptions
) -> None:
    users = merges[schema.root.name]
    if not plan.full_dump or not users.previous_rows or options.confirm_deletions:
        return
    share = users.deleted / users.previous_rows
    if share > settings.max_delete_ratio:
        raise DeletionLimitError(
            f"month {plan.as_of} (--full-dump) would delete {users.deleted} of {users.previous_rows} users "
            f"({100 * share:.1f}%), more than the allowed {100 * settings.max_delete_ratio:g}%. If the drop is "
            f"right, run again with --confirm-deletions (or raise [pipeline] max_delete_ratio); nothing was published."
        )


def _volume_rows(
    schema: Schema, stages: dict[str, StageResult], merges: dict[str, MergeResult], previous: dict | None
) -> list[dict]:
    rows = []
    for table in schema.table_names:
        prev_files = (previous or {}).get("files", {})
        rows.append(
            {
                "table_name": table,
                "drop_rows": stages[table].source.rows,
                "previous_drop_rows": prev_files.get(table, {}).get("rows", 0),
                "snapshot_rows": merges[table].rows,
                "previous_snapshot_rows": merges[table].previous_rows,
                "deleted_rows": merges[table].deleted,
            }
        )
    return rows


def _publish_lake(plan: MonthPlan, schema: Schema) -> None:
    """Rename the month's typed drop and snapshot of every table into place (one rename each)."""
    for i, table in enumerate(schema.table_names):
        if i == len(schema.table_names) // 2:
            failpoint("lake_half_renamed")
        for src, dest in (
            (plan.stage_dir(table) / "data.parquet", plan.lake.raw(table, plan.as_of)),
            (plan.merge_dir(table) / "data.parquet", plan.lake.snapshot(table, plan.as_of)),
        ):
            if not src.exists():  # renamed by an earlier attempt that crashed before its manifest
                continue
            with lakefs.atomic_dir(dest) as tmp:
                src.rename(tmp / "data.parquet")


def run_month(
    settings: Settings,
    as_of: date,
    source: str | Path | None = None,
    *,
    full_dump: bool = False,
    replace: bool = False,
    options: PublishOptions | None = None,
) -> dict:
    """Stage, merge and publish one month in this process (the previous month must be published).
    A published month with the same drop is left as it is; a different drop needs ``replace``. Published
    months after it are recomputed on top of it (a correction, or a month published out of order)."""
    schema = load_schema()
    plan = plan_month(settings, as_of, source, full_dump, schema)
    months = published_months(plan.lake)
    decision = decide_month(plan, as_of, months, replace=replace, schema=schema)
    if decision.action is Action.NOTHING_TO_DO:
        log.info("%s: nothing to do", decision.reason)
        clean_published_work_locked(plan.lake, as_of)
        return months[as_of]
    if decision.action is Action.REFUSE:
        raise PublishedMonthError(decision.reason)
    log.info("%s", decision.reason)
    for table in schema.table_names:
        drop_file(plan.source, schema.table(table))  # fail fast on a missing file, before any work
    stage_and_merge(settings, plan, schema)
    options = dataclasses.replace(options or PublishOptions(), replace=decision.action is Action.REPLACE)
    record = publish_month(settings, plan, options)
    recompute_later_months(settings, as_of, options)
    return record


def clean_published_work_locked(lake: lakefs.Lake, as_of: date) -> None:
    """Take the month's exclusive lock and remove what its published run left behind (if still published)."""
    with lakefs.month_lock(lake, as_of):
        record = published_months(lake).get(as_of)
        if record is not None:
            clean_published_work(lake, as_of, record)


def recompute_later_months(settings: Settings, after: date, options: PublishOptions | None = None) -> list[date]:
    """After a correction of month ``after``: rebuild every later published month on top of it, from the
    typed drops kept in ``<lake>/raw``, gate and publish each again (PostgreSQL's snapshot rows and run
    rows are updated, live too when the latest month changes). Returns the months recomputed."""
    lake = lakefs.Lake(settings.lake_root)
    schema = load_schema()
    options = dataclasses.replace(options or PublishOptions(), republish=True, replace=False)
    later = sorted(d for d in published_months(lake) if d > after)
    for as_of in later:
        record = published_months(lake)[as_of]
        plan = MonthPlan(
            lake=lake,
            as_of=as_of,
            source=Path(record["source"]),
            previous=previous_as_of(settings, as_of),
            full_dump=record.get("mode") == "full-dump",
            from_raw=True,
        )
        log.info("recomputing %s on top of the corrected %s", as_of, after)
        for table in schema.table_names:
            stage_dir = plan.stage_dir(table)
            stage_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lake.raw(table, as_of) / "data.parquet", stage_dir / "data.parquet")
            lakefs.write_text_atomic(
                stage_dir / "result.json",
                StageResult(
                    table=table,
                    source=SourceFile(**record["files"][table]),
                    rows=record["files"][table]["rows"],
                    rejected=record["rejects"].get(table, 0),
                    missing_columns=record.get("missing_columns", {}).get(table, []),
                ).to_json(),
            )
            merge_one(settings, plan, table, schema)
        publish_month(settings, plan, options)
    return later
