"""One month, as plain functions: its plan, and the steps before the publish (stage each table, merge
each table). :mod:`pipeline.publish` gates and publishes; its :func:`~pipeline.publish.run_month` calls
every step in order for tests, benchmarks and scripts, the Luigi tasks (:mod:`pipeline.tasks`) one
step at a time.

Work in progress lives in ``<lake>/_work/as_of=…/`` under names that encode their inputs (the source
file's fingerprint, the previous month, the merge mode), so a stale intermediate is never mistaken for
a fresh one, and a rerun picks up where a crash left.
"""

from __future__ import annotations

import functools
import logging
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipeline import duck, lakefs, runs
from pipeline.concurrency import run_all
from pipeline.config import Settings
from pipeline.errors import ConfigError, LakeStateError, PipelineError, PublishedMonthError
from pipeline.failpoints import failpoint
from pipeline.merge import MergeResult, merge_table
from pipeline.schema import Schema, load_schema
from pipeline.stage import StageResult, fingerprint, sha256_of, stage_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonthPlan:
    """Where one month's inputs come from and where its intermediate files go."""

    lake: lakefs.Lake
    as_of: date
    source: Path
    previous: date | None
    full_dump: bool = False
    from_raw: bool = False  # recomputing a published month from its typed drop in the lake (a correction)

    def source_file(self, table: str) -> Path:
        return self.source / f"{table}.csv"

    def source_key(self, table: str) -> str:
        return "from-raw" if self.from_raw else fingerprint(self.source_file(table))

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


def plan_month(settings: Settings, as_of: date, source: str | Path | None = None, full_dump: bool = False) -> MonthPlan:
    return MonthPlan(
        lake=lakefs.Lake(settings.lake_root),
        as_of=as_of,
        source=resolve_source(settings, as_of, source),
        previous=previous_as_of(settings, as_of),
        full_dump=full_dump,
    )


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


def changed_sources(
    plan: MonthPlan, published: runs.RunRecord, schema: Schema | None = None
) -> dict[str, tuple[str, str]]:
    """table -> (published sha256, sha256 now) of every drop file that differs from what was published.
    A file whose size and modification time both match what was published is taken as the same file;
    otherwise it is hashed (a copy of the same bytes is still the same drop)."""
    changed = {}
    for table in (schema or load_schema()).table_names:
        before = published.files[table]
        path = plan.source_file(table)
        if not path.is_file():
            changed[table] = (before.sha256, "missing")
            continue
        stat = path.stat()
        if stat.st_size != before.size:
            changed[table] = (before.sha256, "size differs")
        elif stat.st_mtime_ns != before.mtime_ns and (now := sha256_of(path)) != before.sha256:
            changed[table] = (before.sha256, now)
    return changed


def refuse_changed_published_month(plan: MonthPlan, changed: dict[str, tuple[str, str]]) -> None:
    files = "; ".join(f"{t}.csv published {old[:12]}, now {new[:12]}" for t, (old, new) in changed.items())
    raise PublishedMonthError(
        f"month {plan.as_of} is published and immutable, but the drop in {plan.source} differs from what was "
        f"published ({files}). If this drop is the correction, replace the month (it and every later month are "
        f"recomputed): luigi --module pipeline Month --as-of {plan.as_of} --source {plan.source} --replace"
    )


def _log_stage(stage: str, table: str, rows: int, seconds: float, extra: str = "") -> None:
    rate = rows / seconds if seconds else 0.0
    log.info("%-7s %-18s %9d rows  %6.2fs  %10.0f rows/s  %s", stage, table, rows, seconds, rate, extra)
