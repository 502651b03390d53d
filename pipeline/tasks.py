"""Luigi tasks: parameters, requires, output, and one call into :mod:`pipeline.month`.

    luigi --module pipeline Month --as-of 2024-02-29 [--source DIR|s3://bucket/prefix] [--workers 2]

Month(D) requires MergeTable(D, t) for every table; MergeTable requires StageTable(D, t) and the
previous Month (the latest earlier as_of configured in luigi.cfg or published in the lake), so on a
fresh lake February ingests January first. A month already published satisfies the dependency
whatever folder it came from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import luigi

from pipeline import lakefs, objectstore
from pipeline import month as months
from pipeline.config import Settings, load_settings
from pipeline.decide import Action, Decision
from pipeline.errors import ConfigError, PipelineError, PublishedMonthError
from pipeline.lakefs import Lake
from pipeline.pg.locks import month_lock
from pipeline.schema import load_schema
from pipeline.stage import check_drop_folder

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
    """A PipelineError is a message for the person running the month: show it, not a traceback. So is a
    central scheduler that does not answer. ``--log-level DEBUG`` keeps every traceback."""

    TRACEBACK = "Traceback (most recent call last):"

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("luigi-interface").isEnabledFor(logging.DEBUG):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, PipelineError):
            head = record.getMessage()
            record.msg = str(error) if head == "Uncaught exception in luigi" else f"{head}\n{error}"
            _without_traceback(record)
        elif _scheduler_unreachable(error):
            if "while scheduling" in str(record.msg):
                return False  # the same failure is reported once, by the "Uncaught exception" record below
            record.msg = SCHEDULER_UNREACHABLE.format(url=_scheduler_url(error))
            _without_traceback(record, logging.ERROR)
        elif isinstance(record.msg, str) and record.msg.startswith("Failed connecting to remote scheduler"):
            record.msg = record.getMessage()  # luigi logs each retry with exc_info=True outside an exception
            _without_traceback(record)
        elif isinstance(record.msg, str) and self.TRACEBACK in record.getMessage():
            # Luigi logs an error raised by complete() or requires() as text with its traceback in it
            trace = record.getMessage().partition(self.TRACEBACK)[2]
            last = trace.rstrip().rpartition("\n")[2]
            name, _, message = last.partition(": ")
            if name.startswith("pipeline.errors."):
                record.msg = message  # the one line: what, where, what to do
                _without_traceback(record, logging.ERROR)
        return True


SCHEDULER_UNREACHABLE = (
    "the central scheduler at {url} does not answer (is luigid running?): start it (luigid --port 8082, or "
    "docker compose up -d luigid), or run with the local scheduler (--local-scheduler, or leave out "
    "--scheduler-host and LUIGI_CONFIG_PATH=luigi-central.cfg); nothing was run"
)


def _without_traceback(record: logging.LogRecord, level: int | None = None) -> None:
    record.args, record.exc_info, record.exc_text = (), None, None
    if level is not None:
        record.levelno, record.levelname = level, logging.getLevelName(level)


def _scheduler_unreachable(error: BaseException | None) -> bool:
    """A failure to reach luigid: luigi.rpc.RPCError, or the requests ConnectionError it wraps."""
    import requests
    from luigi.rpc import RPCError

    return isinstance(error, RPCError | requests.exceptions.ConnectionError)


def _scheduler_url(error: BaseException | None) -> str:
    import re

    found = re.search(r"remote scheduler '([^']+)'", str(error))
    if found:
        return found.group(1)
    found = re.search(r"host='([^']+)', port=(\d+)", str(error))
    return f"http://{found.group(1)}:{found.group(2)}" if found else "--scheduler-host"


logging.getLogger("luigi-interface").addFilter(_PipelineErrorsWithoutTraceback())

# Luigi exits 0 when a task fails unless its configuration says otherwise, and it reads luigi.cfg from
# the current directory: run from anywhere else, a failed month would "succeed". These are luigi.cfg's
# [retcode] values, given to Luigi when it imports this package, wherever a value is not set already.
RETCODES = {
    "already_running": 10,
    "missing_data": 20,
    "not_run": 25,
    "task_failed": 30,
    "scheduling_error": 35,
    "unhandled_exception": 40,
}


def default_retcodes() -> None:
    config = luigi.configuration.get_config()
    if not config.has_section("retcode"):
        config.add_section("retcode")
    for key, value in RETCODES.items():
        if not config.has_option("retcode", key):
            config.set("retcode", key, str(value))


default_retcodes()


class AsOfParameter(luigi.DateParameter):
    """A date parameter whose typo is one line naming it, not a traceback from strptime."""

    def parse(self, s: str):  # noqa: ANN201 - a date, as luigi.DateParameter
        try:
            return super().parse(s)
        except ValueError:
            raise ConfigError(
                f"--as-of {s!r} is not a date (YYYY-MM-DD, a day that exists, e.g. 2024-02-29); nothing was run"
            ) from None


class DropParameter(luigi.Parameter):
    """--source: a drop folder or an s3:// URI. A URI that holds credentials (s3://KEY:SECRET@bucket/…) is
    refused when the month is planned (:func:`pipeline.objectstore.parse`); Luigi, which names its tasks
    by their parameters in every log line and its summary, shows it without them."""

    def serialize(self, x: object) -> str:
        return objectstore.without_credentials(str(x))


class _PipelineTask(luigi.Task):
    """What every task of the pipeline shares: its settings, read once per task instance (luigi.cfg,
    .env) when Luigi first asks, and a PipelineError reported as its message, not a traceback. Every
    task writes the lake, so an s3:// lake is refused when the settings are first read, before anything
    is planned or written (issue #19: only reading works there yet)."""

    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            configure_logging()
            settings = load_settings()
            settings.lake_path  # noqa: B018 - refuses an s3:// lake (pipeline.lakestore.refusal)
            self._settings = settings
        return self._settings

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, PipelineError):
            return str(exception)
        return super().on_failure(exception)


class _MonthParams(_PipelineTask):
    as_of = AsOfParameter(description="the month's as_of date (its last day), e.g. 2024-01-31")
    source = DropParameter(
        default="", description="the drop folder, or s3://bucket/prefix; default: luigi.cfg [months]"
    )
    full_dump = luigi.BoolParameter(description="the drop is complete: ids absent from it are deleted")

    # The plan is read once per task instance (the manifests, each drop file's identity), when Luigi
    # first asks; the decision is taken again whenever it is asked for.
    _plan: months.MonthPlan | None = None

    def plan(self) -> months.MonthPlan:
        if self._plan is None:
            self._plan = months.plan_month(self.settings(), self.as_of, self.source or None, self.full_dump)
        return self._plan

    def lake(self) -> Lake:
        return Lake(self.settings().lake_root)

    def decision(self, replace: bool = True, as_dependency: bool = False) -> Decision:
        """The month's decision now. A step (stage, merge) runs whenever its month is to be built, so it
        asks as a --replace would: only a month published from this very drop leaves it nothing to do."""
        published = months.published_months(self.lake())
        plan = None
        if not (as_dependency and self.as_of in published):
            try:
                plan = self.plan()
            except ConfigError:
                if self.as_of not in published:
                    raise
                # published from a folder neither configured nor given: nothing to compare it with
        return months.decide_month(plan, self.as_of, published, replace=replace, as_dependency=as_dependency)

    def run_step(self, step: Callable[[Settings, months.MonthPlan, str], object], table: str) -> None:
        plan = self.plan()
        with month_lock(self.settings(), self.as_of, exclusive=False, step=f"{self.task_family}:{table}"):
            decision = self.decision()
            if decision.action is Action.NOTHING_TO_DO:
                log.info("%s: month %s was published by another run meanwhile: nothing to do", self, self.as_of)
                return
            if self.done():
                log.info("%s: done by another run of month %s meanwhile", self, self.as_of)
                return
            step(self.settings(), plan, table)

    def done(self) -> bool:
        """Whether the step's files are all there (its result.json is written last, and whole)."""
        raise NotImplementedError


class StageTable(_MonthParams):
    """One CSV of the drop → typed Parquet (and its rejects)."""

    table = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.plan().stage_dir(self.table) / "result.json"))

    def done(self) -> bool:
        folder = self.plan().stage_dir(self.table)
        return lakefs.is_complete(folder / "result.json") and (folder / "data.parquet").exists()

    def complete(self) -> bool:
        # its files leave the work folder when the month is published (their objects are in the lake)
        return self.done() or self.decision().action is Action.NOTHING_TO_DO

    def run(self) -> None:
        self.run_step(months.stage_one, self.table)


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

    def done(self) -> bool:
        folder = self.plan().merge_dir(self.table)
        complete = lakefs.is_complete(folder / "result.json")
        return complete and all((folder / name).exists() for name in ("data.parquet", "changes.parquet"))

    def complete(self) -> bool:
        return self.done() or self.decision().action is Action.NOTHING_TO_DO

    def run(self) -> None:
        self.run_step(months.merge_one, self.table)


class Month(_MonthParams):
    """A whole month: every table staged and merged, checked by Soda, synced into PostgreSQL, published.

    What a run does is :func:`pipeline.decide.decide`'s answer: a published month is complete; run again
    with a drop whose files differ it is refused with a message that says how to replace it; with
    ``--replace`` it is re-ingested. Published months after a month that is built are recomputed on top
    of it. As another month's dependency a published month is never compared with a folder.
    """

    confirm_deletions = luigi.BoolParameter(description="allow --full-dump to delete more than max_delete_ratio")
    replace = luigi.BoolParameter(description="re-ingest a published month from a corrected drop")
    as_dependency = luigi.BoolParameter(significant=False, visibility=luigi.parameter.ParameterVisibility.HIDDEN)

    def month_decision(self) -> Decision:
        return self.decision(replace=self.replace, as_dependency=self.as_dependency)

    def requires(self) -> list[luigi.Task]:
        if not self.month_decision().runs:
            return []  # published, refused, or only later months to recompute: run() does it
        if not self.plan().source.exists():
            return []  # run() says so once, rather than each table's stage step
        return [
            MergeTable(as_of=self.as_of, source=self.source, full_dump=self.full_dump, table=t)
            for t in load_schema().table_names
        ]

    def complete(self) -> bool:
        """Read-only: done when there is nothing to do and its published run left nothing behind (a
        run killed after its manifest leaves its work folder: run() removes it, under the month's lock)."""
        decision = self.month_decision()
        if decision.notice:
            log.warning("%s", decision.notice)
        if decision.action is not Action.NOTHING_TO_DO:
            return False
        record = months.published_months(self.lake())[self.as_of]
        return not months.published_leftovers(self.lake(), self.as_of, record)

    def run(self) -> None:
        decision = self.month_decision()
        if decision.action is Action.NOTHING_TO_DO:
            # complete() said no: published since (by another run), or a published run left work files
            leftovers = months.published_leftovers(
                self.lake(), self.as_of, months.published_months(self.lake())[self.as_of]
            )
            if leftovers:
                log.info("month %s is published; removing the work files its run left behind", self.as_of)
            else:
                log.info("month %s was published by another run meanwhile: nothing to do", self.as_of)
            months.clean_published_work_locked(self.settings(), self.as_of)
            return
        if decision.action is Action.REFUSE:
            raise PublishedMonthError(decision.reason)
        log.info("%s", decision.reason)
        from pipeline import publish  # the publish path (PostgreSQL, Soda, drift) only when a month is built

        options = publish.PublishOptions(
            confirm_deletions=self.confirm_deletions, replace=decision.action is Action.REPLACE
        )
        if decision.action is Action.RECOMPUTE:
            publish.recompute_later_months(self.settings(), self.as_of, options, months=decision.recompute)
            return
        check_drop_folder(self.plan().source)
        publish.publish_month(self.settings(), self.plan(), options)  # decides again, under the month's lock
        publish.recompute_later_months(self.settings(), self.as_of, options)


class Backfill(luigi.WrapperTask):
    """Every month configured in luigi.cfg [months] between --start and --end (inclusive), in order:
    each Month requires the one before it, and published months are skipped."""

    start = luigi.DateParameter()
    end = luigi.DateParameter()

    def requires(self) -> list[luigi.Task]:
        settings = load_settings()
        settings.lake_path  # noqa: B018 - refuses an s3:// lake before any month is planned
        configured = sorted(d for d in settings.months if self.start <= d <= self.end)
        if not configured:
            raise PipelineError(f"no month configured in luigi.cfg [months] between {self.start} and {self.end}")
        return [Month(as_of=d) for d in configured]


class Report(_PipelineTask):
    """The month report of D (and the overview), written to <lake>/reports/ (:mod:`pipeline.report`).
    Requires no task: it reports what the lake holds about D, published or refused; complete while no run
    record is newer than it."""

    as_of = luigi.DateParameter(description="the month to report on, e.g. 2024-02-29")

    def output(self) -> luigi.LocalTarget:
        from pipeline.report import month_page

        return luigi.LocalTarget(str(month_page(self.settings().lake_path, self.as_of)))

    def complete(self) -> bool:
        from pipeline.report import is_current

        return is_current(self.settings().lake_path, self.as_of)

    def run(self) -> None:
        from pipeline.report import write_reports

        write_reports(self.settings(), self.as_of)


# Luigi's own type information for this mixin differs between releases (3.7 does not declare it, 3.8 does);
# the [feast] extra resolves Luigi 3.7, so the base is taken as a plain value here.
_OptionalParameterMixin: Any = getattr(luigi.parameter, "OptionalParameterMixin")  # noqa: B009


_NO_DATE: Any = None  # the default of an optional date (typed as Any for the same reason)


class OptionalDateParameter(_OptionalParameterMixin, luigi.DateParameter):
    """A date, or None when not given (Luigi has optional int, str, path… parameters, but no date)."""

    expected_type = date


class TrainingSet(_PipelineTask):
    """The point-in-time training set of a published month, written to <lake>/training/as_of=D/
    (:mod:`pipeline.training`).

    Requires no task: D (and L) must already be published; the task fails with a message saying which
    Month to run otherwise. It is complete when its metadata.json names the run ids that are published
    now, so a month replaced by a correction gets its training set rebuilt."""

    as_of = luigi.DateParameter(description="the month whose snapshots give the features, e.g. 2024-01-31")
    label_as_of = OptionalDateParameter(
        default=_NO_DATE, description="a later published month whose labels give churn_label (default: as_of)"
    )

    def output(self) -> luigi.LocalTarget:
        from pipeline.training import output_dir

        return luigi.LocalTarget(
            str(output_dir(self.settings().lake_path, self.as_of, self.label_as_of) / "metadata.json")
        )

    def complete(self) -> bool:
        path = Path(self.output().path)
        if not path.exists():
            return False
        recorded = json.loads(path.read_text(encoding="utf-8")).get("sources", {})
        published = {
            d.isoformat(): r.run_id for d, r in months.published_months(Lake(self.settings().lake_root)).items()
        }
        return bool(recorded) and all(published.get(s["as_of"]) == s["run_id"] for s in recorded.values())

    def run(self) -> None:
        from pipeline.training import write_training_set

        settings = self.settings()
        write_training_set(settings.lake_path, self.as_of, self.label_as_of, settings)
