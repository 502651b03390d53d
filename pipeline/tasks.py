"""Luigi tasks: parameters, requires, output, and one call into :mod:`pipeline.month`.

    luigi --module pipeline Month --as-of 2024-02-29 [--source DIR] [--workers 2]

Month(D) requires MergeTable(D, t) for every table; MergeTable requires StageTable(D, t) and the
previous Month (the latest earlier as_of configured in luigi.cfg or published in the lake), so on a
fresh lake February ingests January first. A month already published satisfies the dependency
whatever folder it came from.
"""

from __future__ import annotations

import logging
import shutil

import luigi

from pipeline import lakefs, publish
from pipeline import month as months
from pipeline.config import Settings, load_settings
from pipeline.errors import PipelineError
from pipeline.lakefs import Lake
from pipeline.runs import RunRecord
from pipeline.schema import load_schema

log = logging.getLogger("pipeline")


def configure_logging() -> None:
    """Our log lines beside Luigi's, at the level of Luigi's --log-level."""
    try:
        level = luigi.interface.core().log_level
    except Exception:  # noqa: BLE001 - outside a luigi command line
        level = "INFO"
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(getattr(logging, str(level).upper(), logging.INFO))


class _PipelineErrorsWithoutTraceback(logging.Filter):
    """A PipelineError is a message for the person running the month: show it, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.msg = f"{record.getMessage()}\n{record.exc_info[1]}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("luigi-interface").addFilter(_PipelineErrorsWithoutTraceback())


class _MonthParams(luigi.Task):
    as_of = luigi.DateParameter(description="the month's as_of date (its last day), e.g. 2024-01-31")
    source = luigi.Parameter(default="", description="the drop folder; default: luigi.cfg [months]")
    full_dump = luigi.BoolParameter(description="the drop is complete: ids absent from it are deleted")

    def settings(self) -> Settings:
        configure_logging()
        return load_settings()

    def plan(self) -> months.MonthPlan:
        return months.plan_month(self.settings(), self.as_of, self.source or None, self.full_dump)

    def published_by_another_run(self) -> bool:
        """True when the month is published from this very drop (by another run, while this one was
        scheduled): its intermediate steps have nothing left to do."""
        plan = self.plan()
        published = months.published_months(plan.lake).get(self.as_of)
        return published is not None and not months.changed_sources(plan, published)

    def run_step(self, step) -> None:  # noqa: ANN001 - months.stage_one or months.merge_one
        plan = self.plan()
        with lakefs.month_lock(plan.lake, self.as_of, exclusive=False):
            if self.published_by_another_run():
                log.info("%s: month %s was published by another run meanwhile: nothing to do", self, self.as_of)
                return
            step(self.settings(), plan, self.table)

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, PipelineError):
            return str(exception)
        return super().on_failure(exception)


class StageTable(_MonthParams):
    """One CSV of the drop → typed Parquet (and its rejects)."""

    table = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.plan().stage_dir(self.table) / "result.json"))

    def complete(self) -> bool:
        # its data file leaves the work folder when the month is published (renamed into the lake)
        folder = self.plan().stage_dir(self.table)
        done = all((folder / name).exists() for name in ("result.json", "data.parquet"))
        return done or self.published_by_another_run()

    def run(self) -> None:
        self.run_step(months.stage_one)


class MergeTable(_MonthParams):
    """The previous snapshot of one table upserted with the staged drop."""

    table = luigi.Parameter()

    def requires(self) -> list[luigi.Task]:
        plan = self.plan()
        needs: list[luigi.Task] = [StageTable(as_of=self.as_of, source=self.source, table=self.table)]
        if plan.previous is not None:
            needs.append(Month(as_of=plan.previous, as_dependency=True))
        return needs

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.plan().merge_dir(self.table) / "result.json"))

    def complete(self) -> bool:
        folder = self.plan().merge_dir(self.table)
        done = all((folder / name).exists() for name in ("result.json", "data.parquet", "changes.parquet"))
        return done or self.published_by_another_run()

    def run(self) -> None:
        self.run_step(months.merge_one)


class Month(_MonthParams):
    """A whole month: every table staged and merged, checked by Soda, synced into PostgreSQL, published.

    A published month is complete. Run again with a drop whose files differ from what was published, it
    is refused with a message that says how to replace it; with ``--replace`` it is re-ingested and every
    later month recomputed on top of it. As another month's dependency it is never compared with a folder.
    """

    confirm_deletions = luigi.BoolParameter(description="allow --full-dump to delete more than max_delete_ratio")
    replace = luigi.BoolParameter(description="re-ingest a published month from a corrected drop")
    as_dependency = luigi.BoolParameter(significant=False, visibility=luigi.parameter.ParameterVisibility.HIDDEN)

    def requires(self) -> list[luigi.Task]:
        if not self.replace and not self.as_dependency and self._published() is not None:
            return []  # published: run() only has to explain why it will not touch it
        return [
            MergeTable(as_of=self.as_of, source=self.source, full_dump=self.full_dump, table=t)
            for t in load_schema().table_names
        ]

    def _published(self) -> RunRecord | None:
        return months.published_months(Lake(self.settings().lake_root)).get(self.as_of)

    def _changed(self, published: RunRecord) -> dict[str, tuple[str, str]]:
        return months.changed_sources(self.plan(), published)

    def complete(self) -> bool:
        published = self._published()
        if published is None:
            return False
        # a run killed after its manifest leaves its work folder: the month is done, so is its scratch
        shutil.rmtree(Lake(self.settings().lake_root).work(self.as_of), ignore_errors=True)
        if self.as_dependency:
            return True
        try:
            return not self._changed(published)
        except PipelineError:  # no folder to compare with (not configured, no --source): nothing to re-check
            return True

    def run(self) -> None:
        settings, plan = self.settings(), self.plan()
        options = publish.PublishOptions(confirm_deletions=self.confirm_deletions)
        published = self._published()
        if published is not None:
            changed = self._changed(published)
            if not changed or self.as_dependency:
                log.info("month %s was published by another run meanwhile: nothing to do", self.as_of)
                return
            if not self.replace:
                months.refuse_changed_published_month(plan, changed)
            log.info("replacing published month %s (%s changed)", self.as_of, ", ".join(changed))
        publish.publish_month(settings, plan, options)
        if published is not None:
            publish.recompute_later_months(settings, self.as_of, options)


class Backfill(luigi.WrapperTask):
    """Every month configured in luigi.cfg [months] between --start and --end (inclusive), in order:
    each Month requires the one before it, and published months are skipped."""

    start = luigi.DateParameter()
    end = luigi.DateParameter()

    def requires(self) -> list[luigi.Task]:
        configured = sorted(d for d in load_settings().months if self.start <= d <= self.end)
        if not configured:
            raise PipelineError(f"no month configured in luigi.cfg [months] between {self.start} and {self.end}")
        return [Month(as_of=d) for d in configured]
