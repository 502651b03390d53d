"""Luigi tasks: parameters, requires, output, and one call into :mod:`pipeline.month`.

    luigi --module pipeline Month --as-of 2024-02-29 [--source DIR] [--workers 2]

Month(D) requires MergeTable(D, t) for every table; MergeTable requires StageTable(D, t) and the
previous Month (the latest earlier as_of configured in luigi.cfg or published in the lake), so on a
fresh lake February ingests January first. A month already published satisfies the dependency
whatever folder it came from.
"""

from __future__ import annotations

import logging

import luigi

from pipeline import month as months
from pipeline.config import Settings, load_settings
from pipeline.errors import PipelineError
from pipeline.lakefs import Lake
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

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, PipelineError):
            return str(exception)
        return super().on_failure(exception)


class StageTable(_MonthParams):
    """One CSV of the drop → typed Parquet (and its rejects)."""

    table = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.plan().stage_dir(self.table) / "result.json"))

    def run(self) -> None:
        months.stage_one(self.settings(), self.plan(), self.table)


class MergeTable(_MonthParams):
    """The previous snapshot of one table upserted with the staged drop."""

    table = luigi.Parameter()

    def requires(self) -> list[luigi.Task]:
        plan = self.plan()
        needs: list[luigi.Task] = [StageTable(as_of=self.as_of, source=self.source, table=self.table)]
        if plan.previous is not None:
            needs.append(Month(as_of=plan.previous))
        return needs

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.plan().merge_dir(self.table) / "result.json"))

    def run(self) -> None:
        months.merge_one(self.settings(), self.plan(), self.table)


class Month(_MonthParams):
    """A whole month: every table staged and merged, checked by Soda, synced into PostgreSQL, published."""

    confirm_deletions = luigi.BoolParameter(description="allow --full-dump to delete more than max_delete_ratio")

    def requires(self) -> list[luigi.Task]:
        return [
            MergeTable(as_of=self.as_of, source=self.source, full_dump=self.full_dump, table=t)
            for t in load_schema().table_names
        ]

    def complete(self) -> bool:
        return self.as_of in months.published_months(Lake(self.settings().lake_root))

    def run(self) -> None:
        months.publish_month(
            self.settings(), self.plan(), months.PublishOptions(confirm_deletions=self.confirm_deletions)
        )
