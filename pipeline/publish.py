"""Publish a staged and merged month: gate it and make it visible everywhere at once.

The order, chosen so a crash anywhere leaves a state a rerun completes:

1. ONE PostgreSQL transaction opens (:func:`pipeline.pg.transaction.publishing`); the live write starts
   in it at once, in a thread of its own.
2. Meanwhile, on other connections, staging is loaded (:func:`pipeline.pg.staging.load_staging`): the
   month's partitions, keyed. Each table's partition resolves a future as it commits; the live write
   (for rows it reads from staging) and the quality gate (:class:`pipeline.quality.Gate`, one Soda scan
   per table) wait on the futures they need.
3. The checks pass (else the transaction rolls back and the live write is stopped); the month's data
   objects are written into the lake under this run's own names (linked from the work folder: nothing
   reads them yet, :mod:`pipeline.lakefs`); the snapshots are attached and the pipeline_runs row written;
   commit.
4. The run record is created (the one write that makes the month visible in the lake: no rename), the
   staging schema dropped, the work folder removed.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline import drift, drops, duck, lakefs, quality, runs, scratch
from pipeline.config import Settings
from pipeline.decide import Action
from pipeline.errors import DeletionLimitError, LakeStateError, PipelineError, PublishedMonthError
from pipeline.failpoints import failpoint
from pipeline.merge import MergeResult
from pipeline.month import (
    MonthPlan,
    check_contract,
    clean_published_work,
    clean_published_work_locked,
    decide_month,
    merge_one,
    plan_month,
    previous_as_of,
    published_months,
    stage_and_merge,
    verify_inputs,
)
from pipeline.pg import connect as pg
from pipeline.pg.copy import CsvExports
from pipeline.pg.locks import month_lock
from pipeline.pg.plan import MergedTable, staging_connections, staging_order
from pipeline.pg.sqltext import staging_schema
from pipeline.pg.staging import drop_staging, drop_staging_quietly, load_staging
from pipeline.pg.transaction import publishing
from pipeline.schema import Schema, load_schema
from pipeline.stage import SourceFile, StageResult, drop_file

log = logging.getLogger(__name__)


@dataclass
class PublishOptions:
    confirm_deletions: bool = False
    republish: bool = False  # publish again even though the month is published from the same drop
    replace: bool = False  # the drop is the correction of a published month (--replace)
    extra: dict[str, object] = field(default_factory=dict)


def publish_month(settings: Settings, plan: MonthPlan, options: PublishOptions | None = None) -> runs.RunRecord:
    """Gate and publish a staged and merged month. Returns its run record.

    Holds the month's lock throughout: a second run of the same month waits, then finds it published
    (from the same drop) and does nothing."""
    options = options or PublishOptions()
    try:
        with month_lock(settings, plan.as_of):
            published = _recheck_locked(plan, options)
            if published is not None:
                return published
            lakefs.sweep_month(plan.lake, plan.as_of, runs.RunStore(plan.lake).known_runs(plan.as_of))
            return _publish_locked(settings, plan, options)
    finally:
        duck.release_jobs()  # the month's DuckDB work is done


def _recheck_locked(plan: MonthPlan, options: PublishOptions) -> runs.RunRecord | None:
    """The decision again, under the month's exclusive lock, right before publishing: returns the record
    when another run published the month from this drop meanwhile (its leftovers cleaned), raises when
    it must be refused, and returns None when the month is to be published (its drop files unchanged)."""
    if not options.republish:
        months = published_months(plan.lake)
        decision = decide_month(plan, plan.as_of, months, replace=options.replace)
        if decision.action is Action.NOTHING_TO_DO:
            record = months[plan.as_of]
            log.info(
                "month %s was published by another run meanwhile (run %s): nothing to do", plan.as_of, record.run_id
            )
            clean_published_work(plan.lake, plan.as_of, record)
            return record
        if decision.action is Action.REFUSE:
            raise PublishedMonthError(decision.reason)
    verify_inputs(plan)
    return None


def _publish_locked(settings: Settings, plan: MonthPlan, options: PublishOptions) -> runs.RunRecord:
    schema = load_schema()
    started_at = datetime.now(UTC)
    run_id = f"{plan.as_of:%Y%m%d}-{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    check_contract(plan.lake, schema)
    stages, merges = _work_results(plan, schema)
    _check_deletions(settings, plan, schema, merges, options)
    previous_record = published_months(plan.lake).get(plan.previous) if plan.previous else None
    # DuckDB over the merged files while PostgreSQL works
    drift_checks = _start_drift(settings, plan, schema, previous_record)
    timings: dict[str, float] = {
        "stage": round(sum(s.seconds for s in stages.values()), 3),
        "merge": round(sum(m.seconds for m in merges.values()), 3),
    }
    dsn = pg.resolve_dsn(settings.postgres, settings.lake_root)
    pg_schema, lock_timeout = settings.postgres.schema, settings.lock_timeout
    stage = staging_schema(pg_schema, plan.as_of)
    merged = {
        t: MergedTable(plan.merge_dir(t) / "data.parquet", plan.merge_dir(t) / "changes.parquet", merges[t].counts)
        for t in schema.table_names
    }
    root = schema.root.name
    variables = {
        "MIN_USERS": str(merges[root].previous_rows - merges[root].deleted),
        "VOLUME_RATIO": repr(settings.volume_change_ratio),
    }
    # one future per table: resolved when its staging partition commits
    staged: dict[str, Future[int]] = {t: Future() for t in schema.table_names}
    try:
        # autocommit: every transaction is an explicit conn.transaction() block, so "committed" means committed
        with (
            pg.connect(dsn, autocommit=True, lock_timeout=lock_timeout) as conn,
            duck.job(settings) as con,
            pg.errors_are_clear(dsn, plan.as_of, pg_schema),
            scratch.folder(settings, "copy") as copy_dir,  # the month's CSVs for COPY
        ):
            server_version = pg.server_version(conn)
            exports = CsvExports(con, {t: m.select(schema.table(t)) for t, m in merged.items()}, copy_dir)
            log.info(
                "publishing %s into PostgreSQL %s (schema %s) in one transaction; the live upsert runs in it "
                "while the month is loaded into staging schema %s and checked there, and it commits only if "
                "the checks pass",
                plan.as_of,
                pg.describe(dsn),
                pg_schema,
                stage,
            )
            with (
                publishing(
                    conn,
                    con,
                    schema,
                    pg_schema,
                    plan.as_of,
                    plan.previous,
                    merged,
                    exports,
                    staged,
                    copy_dir,
                    lock_timeout,
                ) as pub,
                quality.Gate(
                    dsn,
                    schema,
                    stage,
                    plan.as_of,
                    variables,
                    staged,
                    together=sum(m.rows for m in merges.values()) <= quality.ONE_SCAN_MAX_ROWS,
                ) as gate,
            ):
                t0 = time.perf_counter()
                live_rows = pub.live.rows if pub.live else 0
                load_staging(
                    dsn,
                    exports,
                    schema,
                    pg_schema,
                    plan.as_of,
                    _volume_rows(schema, stages, merges, previous_record),
                    staged,
                    order=staging_order(schema, merged, first=pub.live.from_staging if pub.live else ()),
                    connections=duck.parallel_jobs(settings, staging_connections(live_rows)),
                    lock_timeout=lock_timeout,
                )
                timings["load_staging"] = round(time.perf_counter() - t0, 3)
                failpoint("staging_loaded")
                t0 = time.perf_counter()
                report = gate.report()
                checks, timings["drift"], drift_profile = drift_checks.result()
                report.checks.extend(checks)  # recorded (and refusing the month) like the Soda checks
                timings["checks"] = report.seconds
                timings["checks_after_staging"] = round(time.perf_counter() - t0, 3)
                record = runs.RunRecord.build(
                    as_of=plan.as_of,
                    source=str(plan.source),
                    full_dump=plan.full_dump,
                    previous_as_of=plan.previous,
                    run_id=run_id,
                    stages=stages,
                    merges=merges,
                    checks=report.summary(),
                    timings=timings,
                    started_at=started_at,
                    postgres=pg.describe(dsn),
                    pg_schema=pg_schema,
                    server_version=server_version,
                    previous=previous_record,
                    extra=options.extra,
                )
                record = dataclasses.replace(
                    record,
                    confirm_deletions=plan.full_dump and options.confirm_deletions,
                    drift_profile=drift_profile,
                )
                record = record.replacing(runs.RunStore(plan.lake).get(plan.as_of))  # a correction keeps history
                if report.failed:  # leaving the block rolls the transaction back; staging is dropped below
                    runs.RunStore(plan.lake).write_attempt(record.as_failed())
                    quality.raise_if_failed(report, plan.as_of)
                failpoint("checked")
                record = record.with_objects(plan.lake, schema.table_names)  # this run's own, unread until published
                t0 = time.perf_counter()
                _write_objects(plan, schema, record)  # a failure (a full disk) rolls the transaction back
                sync = pub.finish(record.pipeline_runs_row(finished_at=datetime.now(UTC)))
            # the part of the publish after the checks: waiting for the live upsert, snapshots, commit
            timings["sync"] = round(time.perf_counter() - t0, 3)
            timings.update({f"sync_{k}": v for k, v in sync.seconds.items()})
            failpoint("committed")
            drop_staging(conn, pg_schema, plan.as_of)
    except Exception:
        drop_staging_quietly(dsn, pg_schema, plan.as_of)  # a failed month leaves no staging behind
        raise
    record = record.as_published(timings=timings, live_updated=sync.live_updated)
    _after_commit(plan, lambda: runs.RunStore(plan.lake).write(record))
    failpoint("manifest_written")
    shutil.rmtree(plan.lake.work(plan.as_of), ignore_errors=True)
    log.info("published %s: %s", plan.as_of, ", ".join(f"{t} {m.rows}" for t, m in merges.items()))
    return record


def _start_drift(
    settings: Settings, plan: MonthPlan, schema: Schema, previous: runs.RunRecord | None
) -> Future[tuple[list[quality.CheckResult], float, dict[str, Any]]]:
    """The drift of every feature vs the previous published month, as checks (:mod:`pipeline.drift`; none
    for a first month), the seconds it took and the month's drift profile for its record, computed in a
    thread of its own from the merged files, while staging loads and Soda checks: the gate waits for it
    before its verdict. The previous month's numbers come from its record (``previous``) when it kept them."""
    result: Future[tuple[list[quality.CheckResult], float, dict[str, Any]]] = Future()
    stored = drift.profiles_from_json(previous.drift_profile) if previous else None

    def compute() -> None:
        t0 = time.perf_counter()
        try:
            merged = {t: plan.merge_dir(t) / "data.parquet" for t in schema.table_names}
            with duck.job(settings) as con:
                month, profiles = drift.work_drift(con, plan.lake, plan.as_of, plan.previous, merged, schema, stored)
            checks = [] if month is None else drift.gate_checks(month, settings.drift_warn_psi, settings.drift_fail_psi)
            result.set_result((checks, round(time.perf_counter() - t0, 3), drift.profiles_to_json(profiles)))
        except BaseException as error:  # raised where the gate asks for the result
            result.set_exception(error)

    threading.Thread(target=compute, name=f"drift-{plan.as_of}", daemon=True).start()
    return result


def _work_results(plan: MonthPlan, schema: Schema) -> tuple[dict[str, StageResult], dict[str, MergeResult]]:
    """Every table's stage and merge results, and the files they describe, all present: a month is
    never published without one of its tables."""
    stages, merges = {}, {}
    for name in schema.table_names:
        stage_dir, merge_dir = plan.stage_dir(name), plan.merge_dir(name)
        needed = [stage_dir / "result.json", stage_dir / "data.parquet", merge_dir / "result.json"]
        needed += [merge_dir / "data.parquet", merge_dir / "changes.parquet"]
        missing = [str(path) for path in needed if not path.is_file()]
        if missing:
            raise LakeStateError(
                f"month {plan.as_of}, table {name}: the staged or merged files are missing ({', '.join(missing)}), "
                f"so the month cannot be published whole; nothing was published. Run the month again: its "
                f"tables are staged and merged anew."
            )
        stages[name] = StageResult.from_json((stage_dir / "result.json").read_text())
        merges[name] = MergeResult.from_json((merge_dir / "result.json").read_text())
    return stages, merges


def _after_commit(plan: MonthPlan, step: Callable[[], object]) -> None:
    """A lake write after PostgreSQL committed the month: if it fails (a full disk), say what state the
    month is in and that running the same command again completes it."""
    try:
        step()
    except OSError as error:
        raise LakeStateError(
            f"month {plan.as_of} is committed in PostgreSQL, but writing it to the lake at {plan.lake.root} "
            f"failed: {error.strerror or error}. Until it is completed the lake does not show the month "
            f"(streamflow status reports the difference). Free the space (or fix the folder), then run the "
            f"same command again: it completes the month."
        ) from None


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
    schema: Schema, stages: dict[str, StageResult], merges: dict[str, MergeResult], previous: runs.RunRecord | None
) -> list[dict[str, object]]:
    rows = []
    for table in schema.table_names:
        prev_file = previous.files.get(table) if previous else None
        rows.append(
            {
                "table_name": table,
                "drop_rows": stages[table].source.rows,
                "previous_drop_rows": prev_file.rows if prev_file else 0,
                "snapshot_rows": merges[table].rows,
                "previous_snapshot_rows": merges[table].previous_rows,
                "deleted_rows": merges[table].deleted,
            }
        )
    return rows


def _write_objects(plan: MonthPlan, schema: Schema, record: runs.RunRecord) -> None:
    """The month's typed drop and snapshot of every table, at the names ``record`` gives them (this run's
    own): linked from the work folder, no byte copied where the file system can link. No reader sees
    them until the record exists. Every file was checked before the transaction (:func:`_work_results`);
    one missing now is an error, never skipped."""
    for i, table in enumerate(schema.table_names):
        if i == len(schema.table_names) // 2:
            failpoint("lake_half_written")
        for src, dest in (
            (plan.stage_dir(table) / "data.parquet", record.raw_file(plan.lake.root, table)),
            (plan.merge_dir(table) / "data.parquet", record.snapshot_file(plan.lake.root, table)),
        ):
            assert dest is not None, "the record names every table's objects"
            if not src.is_file():
                raise LakeStateError(
                    f"month {plan.as_of}, table {table}: {src} vanished while the month was being published, so "
                    f"nothing was published. Run the same command again: it stages the table anew."
                )
            lakefs.link_or_copy(src, dest)


def run_month(
    settings: Settings,
    as_of: date,
    source: str | Path | None = None,
    *,
    full_dump: bool = False,
    replace: bool = False,
    options: PublishOptions | None = None,
) -> runs.RunRecord:
    """Stage, merge and publish one month in this process (the previous month must be published).
    A published month with the same drop is left as it is; a different drop needs ``replace``. Published
    months after it are recomputed on top of it (a correction, or a month published out of order)."""
    schema = load_schema()
    plan = plan_month(settings, as_of, source, full_dump, schema)
    months = published_months(plan.lake)
    decision = decide_month(plan, as_of, months, replace=replace, schema=schema)
    if decision.action is Action.NOTHING_TO_DO:
        log.info("%s: nothing to do", decision.reason)
        clean_published_work_locked(settings, as_of)
        return months[as_of]
    if decision.action is Action.REFUSE:
        raise PublishedMonthError(decision.reason)
    log.info("%s", decision.reason)
    if decision.action is Action.RECOMPUTE:
        recompute_later_months(settings, as_of, options, months=decision.recompute)
        return published_months(plan.lake)[as_of]
    for table in schema.table_names:
        drop_file(plan.source, schema.table(table))  # fail fast on a missing file, before any work
    stage_and_merge(settings, plan, schema)
    options = dataclasses.replace(options or PublishOptions(), replace=decision.action is Action.REPLACE)
    record = publish_month(settings, plan, options)
    recompute_later_months(settings, as_of, options)
    return record


def recompute_later_months(
    settings: Settings,
    after: date,
    options: PublishOptions | None = None,
    *,
    months: tuple[date, ...] | None = None,
) -> list[date]:
    """After a correction of month ``after``: rebuild every later published month on top of it, from the
    typed drops kept in ``<lake>/raw``, gate and publish each again (PostgreSQL's snapshot rows and run
    rows are updated, live too when the latest month changes). Returns the months recomputed.

    ``months``: only these (and they must include every month after the first of them): the months a
    correction left built on a replaced run, when its recompute stopped halfway (issue #15.1). A
    ``--full-dump`` month keeps the ``--confirm-deletions`` it was published with. If one month fails, the
    message says which months were recomputed and how to complete the rest."""
    lake = lakefs.Lake(settings.lake_root)
    schema = load_schema()
    options = dataclasses.replace(options or PublishOptions(), republish=True, replace=False)
    later = sorted(d for d in published_months(lake) if d > after) if months is None else sorted(months)
    done: list[date] = []
    for as_of in later:
        record = published_months(lake)[as_of]
        plan = MonthPlan(
            lake=lake,
            as_of=as_of,
            source=drops.at(record.source or ""),  # a folder, or an s3:// URI (never a Path)
            previous=previous_as_of(settings, as_of),
            full_dump=record.full_dump,
            from_raw=True,
        )
        log.info("recomputing %s on top of the corrected %s", as_of, after)
        confirm = options.confirm_deletions or record.confirm_deletions or _confirmed_when_published(settings, record)
        try:
            _stage_from_raw(settings, plan, record, schema)
            publish_month(settings, plan, dataclasses.replace(options, confirm_deletions=confirm))
        except PipelineError as error:
            rest = ", ".join(d.isoformat() for d in later if d >= as_of)
            recomputed = ", ".join(d.isoformat() for d in done) or "none"
            flag = " --confirm-deletions" if isinstance(error, DeletionLimitError) else ""
            raise type(error)(
                f"month {after} is published, and the months after it recomputed on top of it so far: "
                f"{recomputed}; recomputing {as_of} failed: {error} Months {rest} still hold their earlier "
                f"version (built on a run that was replaced; streamflow status names them). To complete them: "
                f"luigi --module pipeline Month --as-of {as_of} --source {record.source}{flag}"
            ) from None
        done.append(as_of)
    return later


def _confirmed_when_published(settings: Settings, record: runs.RunRecord) -> bool:
    """A --full-dump month whose manifest predates ``confirm_deletions``: it was confirmed if it deleted
    more users than max_delete_ratio allows (it could not have been published otherwise)."""
    users = record.tables.get(load_schema().root.name, {})
    before = sum(users.get(k, 0) for k in ("updated", "unchanged", "carried", "deleted"))
    return record.full_dump and before > 0 and users.get("deleted", 0) / before > settings.max_delete_ratio


def _stage_from_raw(settings: Settings, plan: MonthPlan, record: runs.RunRecord, schema: Schema) -> None:
    """A published month's staged tables from its typed drops in ``<lake>/raw``, merged on its previous month."""
    for table in schema.table_names:
        stage_dir = plan.stage_dir(table)
        stage_dir.mkdir(parents=True, exist_ok=True)
        raw = record.raw_file(plan.lake.root, table)
        if raw is None or not raw.is_file():
            raise LakeStateError(
                f"month {plan.as_of}, table {table}: its typed drop ({raw or f'not named by run {record.run_id}'}) "
                f"is missing from the lake, so the month cannot be recomputed. Run it again from its drop: "
                f"luigi --module pipeline Month --as-of {plan.as_of} --source {record.source} --replace"
            )
        lakefs.link_or_copy(raw, lakefs.fresh(stage_dir / "data.parquet"))
        lakefs.mark_complete(
            stage_dir / "result.json",
            StageResult(
                table=table,
                source=SourceFile(**record.files[table].to_json()),
                rows=record.files[table].rows,
                rejected=record.rejects.get(table, 0),
                missing_columns=record.missing_columns.get(table, []),
            ).to_json(),
        )
        merge_one(settings, plan, table, schema)
