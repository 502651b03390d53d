"""One month, as plain functions: its plan (inputs fixed once), the decision what to do with it, and
the steps before the publish (stage each table, merge each table). :mod:`pipeline.publish` gates and
publishes; its :func:`~pipeline.publish.run_month` calls every step in order for tests, benchmarks and
scripts, the Luigi tasks (:mod:`pipeline.tasks`) one step at a time.

Work in progress lives in ``<lake>/_work/as_of=…/`` under names that encode their inputs (the source
file's identity as the run started, the previous month, the merge mode), so a stale intermediate is
never mistaken for a fresh one, and a rerun picks up where a crash left.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from pipeline import drops, duck, evolve, lakefs, runs
from pipeline.concurrency import run_all
from pipeline.config import Settings
from pipeline.decide import Decision, check_as_of, decide
from pipeline.drops import Drop, FileIdentity
from pipeline.errors import (
    ConfigError,
    DropChangedError,
    DropErrors,
    LakeStateError,
    PipelineError,
)
from pipeline.failpoints import failpoint
from pipeline.merge import MergeResult, merge_table
from pipeline.pg.locks import month_lock
from pipeline.schema import Schema, load_schema
from pipeline.stage import StageResult, stage_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonthPlan:
    """Where one month's inputs come from and where its intermediate files go. The drop files' identity
    is recorded once, when the plan is made (:func:`plan_month`), and never read again from the disk."""

    lake: lakefs.Lake
    as_of: date
    source: Drop  # a local folder or an S3 prefix (pipeline.drops)
    previous: date | None
    full_dump: bool = False
    from_raw: bool = False  # recomputing a published month from its typed drop in the lake (a correction)
    configured: bool = False  # the drop folder is luigi.cfg [months]'s, not given with --source
    files: Mapping[str, FileIdentity | None] = field(default_factory=dict, compare=False, hash=False)

    def source_file(self, table: str) -> str:
        """The drop file of ``table``, as messages name it (a path, or an s3:// URI)."""
        return self.source.file(f"{table}.csv")

    def source_key(self, table: str) -> str:
        if self.from_raw:
            return "from-raw"
        name = f"{table}.csv"
        identity = self.files.get(table) if table in self.files else self.source.identity(name)
        return "missing" if identity is None else identity.key(self.source.where(name))

    def stage_dir(self, table: str) -> Path:
        return self.lake.work(self.as_of) / "stage" / table / self.source_key(table)

    def merge_dir(self, table: str) -> Path:
        mode = "full-dump" if self.full_dump else "upsert"
        after = self.previous.isoformat() if self.previous else "first"
        key = f"{self.source_key(table)}-{after}-{mode}"
        return self.lake.work(self.as_of) / "merge" / table / key


def published_months(lake: lakefs.Lake) -> dict[date, runs.RunRecord]:
    """as_of -> run record of every month the lake has published (:meth:`runs.RunStore.published`)."""
    return runs.RunStore(lake).published()


def previous_as_of(settings: Settings, as_of: date) -> date | None:
    """The month this one builds on: the latest earlier as_of configured in luigi.cfg or published in the lake."""
    known = set(settings.months) | set(published_months(lakefs.Lake(settings.lake_root)))
    earlier = [d for d in known if d < as_of]
    return max(earlier) if earlier else None


def resolve_source(settings: Settings, as_of: date, source: str | Path | None) -> Drop:
    """The month's drop: ``source`` (a folder, or an s3:// URI) when given, else luigi.cfg [months]'s."""
    if source:
        return drops.at(source)
    if as_of in settings.months:
        return drops.at(settings.months[as_of])
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
        configured=not source,
        files={t: folder.identity(f"{t}.csv") for t in tables},
    )


def decide_month(
    plan: MonthPlan | None,
    as_of: date,
    published: Mapping[date, runs.RunRecord],
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
        stale=stale_months(published),
        configured=plan.configured if plan else False,
        corrected_from=record.source if record is not None and record.replaced else None,
    )


def stale_months(published: Mapping[date, runs.RunRecord]) -> list[date]:
    """The published months built on a run of their previous month that is no longer the published one:
    a correction whose recompute of the later months stopped halfway (issue #15.1)."""
    return [
        as_of
        for as_of, record in published.items()
        if record.previous_as_of is not None
        and record.previous_as_of in published
        and record.previous_run_id != published[record.previous_as_of].run_id
    ]


def verify_inputs(plan: MonthPlan, schema: Schema | None = None) -> None:
    """Before publishing: every drop file is still the one the run started with (same size and modification
    time, or else the same bytes as staging read), and was staged where the plan says. A file touched only
    passes; a file rewritten or removed mid-run refuses the month before anything is published."""
    if plan.from_raw:
        return
    for table in (schema or load_schema()).table_names:
        name, path, recorded = f"{table}.csv", plan.source_file(table), plan.files.get(table)
        now = plan.source.identity(name)
        if now is not None and now == recorded:
            continue
        result = plan.stage_dir(table) / "result.json"
        staged = StageResult.from_json(result.read_text()).source if result.is_file() else None
        same_size = now is not None and staged is not None and now.size == staged.size
        if staged is not None and same_size and plan.source.sha256(name) == staged.sha256:
            continue  # touched, same bytes
        was = f"{recorded.size} bytes, modified {_mtime(recorded.mtime_ns)}" if recorded else "missing"
        is_ = f"{now.size} bytes, modified {_mtime(now.mtime_ns)}" if now else "missing"
        raise DropChangedError(
            f"month {plan.as_of}: {path} changed while the month was running (at the start: {was}; now: {is_}); "
            f"nothing was published. Run the month again once the drop is complete and no longer written to."
        )


def _mtime(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def published_leftovers(lake: lakefs.Lake, as_of: date, record: runs.RunRecord) -> list[Path]:
    """The work folders a published run left behind (a crash after its manifest): those keyed by the
    identity of the files it published. Another run of the month with other files (a --replace under way)
    has other keys, and its folders are not listed."""
    work = lake.work(as_of)
    if not work.is_dir():
        return []
    found = []
    for table, f in record.files.items():
        key = FileIdentity(f.size, f.mtime_ns or 0).key(drops.at(record.source or "").where(f.name))
        found += [p for p in [work / "stage" / table / key] if p.exists()]
        found += sorted((work / "merge" / table).glob(f"{key}-*"))
    return found


def clean_published_work(lake: lakefs.Lake, as_of: date, record: runs.RunRecord) -> None:
    """Remove a published run's leftovers. Only the holder of the month's exclusive lock may call this:
    nobody else touches a month's work folder (issue #20 case 2)."""
    work = lake.work(as_of)
    for path in published_leftovers(lake, as_of, record):
        shutil.rmtree(path, ignore_errors=True)
    if work.is_dir():
        for folder in sorted((p for p in work.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(work.iterdir()):
            work.rmdir()


# --- steps ------------------------------------------------------------------------------------


def stage_one(settings: Settings, plan: MonthPlan, table_name: str, schema: Schema | None = None) -> StageResult:
    schema = schema or load_schema()
    table = schema.table(table_name)
    check_contract(plan.lake, schema)  # a contract the published months cannot follow: before any work
    out = plan.stage_dir(table_name)
    lakefs.fresh(out / "result.json")  # incomplete until its result is written again, last
    with duck.job(settings) as con:
        result = stage_table(
            con,
            table,
            plan.source,
            plan.as_of,
            out / "data.parquet",
            plan.lake.rejects(table_name, plan.as_of),
            settings.max_reject_ratio,
            sort_by_key=plan.previous is None,  # the first month's snapshot is the typed drop itself
            settings=settings,  # an object's copy goes to the run's scratch folder
        )
    lakefs.mark_complete(out / "result.json", result.to_json())
    failpoint("staged")
    _log_stage("stage", table_name, result.rows, result.seconds)
    return result


def check_contract(lake: lakefs.Lake, schema: Schema | None = None) -> None:
    """Refuse a sql/schema.sql that the published months cannot follow (:mod:`pipeline.evolve`), compared
    with the contract of the latest published month (when its record kept it)."""
    published = published_months(lake)
    if not published:
        return
    latest = max(published)
    contract = published[latest].contract
    before = contract.schema() if contract else None
    if before is not None:
        evolve.refuse(evolve.compare(before, schema or load_schema()), f"the months published up to {latest}")


def _in_contract_of(record: runs.RunRecord | None, table: str) -> bool:
    """Whether the month of ``record`` had ``table`` (unknown, for a record that kept no contract: yes)."""
    return record is None or record.contract is None or table in record.contract.columns


def merge_one(settings: Settings, plan: MonthPlan, table_name: str, schema: Schema | None = None) -> MergeResult:
    schema = schema or load_schema()
    table = schema.table(table_name)
    check_contract(plan.lake, schema)
    previous = None
    if plan.previous is not None:
        record = published_months(plan.lake).get(plan.previous)
        previous = record.snapshot_file(plan.lake.root, table_name) if record else None
        missing = previous is None or not previous.exists()
        if missing and record is not None and not _in_contract_of(record, table_name):
            previous = None  # a table new in the contract: its first month
        elif missing:
            where = f"{previous} is missing" if previous else "no run record publishes it"
            raise LakeStateError(
                f"{table_name}: the previous month {plan.previous} is not in the lake ({where}); "
                f"run that month first (luigi --module pipeline Month --as-of {plan.previous})"
            )
    out = plan.merge_dir(table_name)
    lakefs.fresh(out / "result.json")  # incomplete until its result is written again, last
    staged = StageResult.from_json((plan.stage_dir(table_name) / "result.json").read_text())
    with duck.job(settings) as con:
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
    lakefs.mark_complete(out / "result.json", result.to_json())
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
    limit leaves each enough (each gets its share of it); the Luigi tasks get the same from ``--workers 2``.

    Every file is staged even when an earlier one is bad, so a person fixing the export hears of every
    bad file at once (:class:`DropErrors` when there are several; the one file's own error otherwise);
    nothing is merged until every file is staged."""
    check_contract(plan.lake, schema)  # once for the month, not once per table
    jobs = duck.parallel_jobs(settings, TABLE_WORKERS)
    each = duck.share(settings, jobs)

    def stage(table: str) -> PipelineError | None:
        try:
            stage_one(each, plan, table, schema)
        except PipelineError as error:
            return error
        return None

    staged = run_all({t: functools.partial(stage, t) for t in schema.table_names}, jobs, name="stage")
    errors = [error for error in staged.values() if error is not None]  # in the schema's table order
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DropErrors(plan.as_of, errors)
    return run_all({t: functools.partial(merge_one, each, plan, t, schema) for t in schema.table_names}, jobs)


def changed_sources(
    plan: MonthPlan, published: runs.RunRecord, schema: Schema | None = None
) -> dict[str, tuple[str, str]]:
    """table -> (published sha256, sha256 now) of every drop file that differs from what was published.
    A file whose size and modification time both match what was published is taken as the same file;
    otherwise it is hashed (a copy of the same bytes is still the same drop)."""
    changed = {}
    for table in (schema or load_schema()).table_names:
        before = published.files[table]
        name = f"{table}.csv"
        identity = plan.source.identity(name)
        if identity is None:
            changed[table] = (before.sha256, "missing")
        elif identity.size != before.size:
            changed[table] = (before.sha256, "size differs")
        elif identity.mtime_ns != before.mtime_ns and (now := plan.source.sha256(name)) != before.sha256:
            changed[table] = (before.sha256, now)
    return changed


def _log_stage(stage: str, table: str, rows: int, seconds: float, extra: str = "") -> None:
    rate = rows / seconds if seconds else 0.0
    log.info("%-7s %-18s %9d rows  %6.2fs  %10.0f rows/s  %s", stage, table, rows, seconds, rate, extra)


def clean_published_work_locked(settings: Settings, as_of: date) -> None:
    """Take the month's exclusive lock and remove what its published run left behind (if still published)."""
    lake = lakefs.Lake(settings.lake_root)
    with month_lock(settings, as_of):
        record = published_months(lake).get(as_of)
        if record is not None:
            clean_published_work(lake, as_of, record)
