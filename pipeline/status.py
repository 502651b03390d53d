"""Which months are in, did they pass, what changed, and do the lake and PostgreSQL agree.

The lake side comes from the run records (``<lake>/runs/as_of=D/<run_id>.json`` and its failed
``attempts/``), the PostgreSQL side from ``pipeline_runs``. They agree on a month when both hold it
as published with the same run_id, or neither does. ``streamflow status`` prints this report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date

from pipeline.config import Settings
from pipeline.embedded import data_dir, embedded_running
from pipeline.errors import PostgresUnavailableError
from pipeline.lakestore import LakeRoot, s3_uri
from pipeline.pg import connect as pg
from pipeline.pg.tables import published_runs
from pipeline.runs import Contract, Status, run_records
from pipeline.schema import load_schema


@dataclass
class MonthStatus:
    as_of: date
    status: str  # published | failed | missing (only PostgreSQL has it)
    run_id: str | None = None
    users: int | None = None
    changes: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> inserted/updated/…/deleted
    checks_failed: int | None = None
    checks_warned: int | None = None
    not_passed: list[dict] = field(default_factory=list)  # checks that failed or warned: outcome, name, table, value
    failed_attempts: int = 0
    published_at: str | None = None
    postgres_run_id: str | None = None  # pipeline_runs' run_id for this as_of (status published)
    agrees: bool | None = None  # None when PostgreSQL could not be asked
    disagreement: str | None = None  # why not, in words
    contract_sha256: str | None = None  # of the sql/schema.sql it was published under (None: not recorded)
    contract_change: str | None = None  # how the contract differs from the previous published month's
    stale: str | None = None  # built on a run of its previous month that is no longer published (issue #15.1)

    @property
    def users_changes(self) -> dict[str, int]:
        return self.changes.get(load_schema().root.name, {})


@dataclass
class StatusReport:
    lake_root: LakeRoot
    postgres: str  # host:port/db, never a password
    pg_schema: str
    months: list[MonthStatus]
    postgres_error: str | None = None

    @property
    def agree(self) -> bool:
        return self.postgres_error is None and all(m.agrees for m in self.months)

    @property
    def disagreements(self) -> list[MonthStatus]:
        return [m for m in self.months if m.agrees is False]

    def to_dict(self) -> dict:
        return {
            "lake_root": str(self.lake_root),
            "postgres": {"server": self.postgres, "schema": self.pg_schema, "error": self.postgres_error},
            "agree": self.agree,
            "months": [{**asdict(m), "as_of": m.as_of.isoformat()} for m in self.months],
        }


def lake_side(lake_root: LakeRoot) -> dict[date, MonthStatus]:
    """What the lake's run records say, one entry per month; ``contract_change`` says where the contract
    differs from the previous published month's."""
    root = load_schema().root.name
    months = {}
    previous: Contract | None = None  # the previous published month's (months come oldest first)
    for as_of, month in run_records(lake_root).months().items():
        r = month.record
        months[as_of] = MonthStatus(
            as_of=as_of,
            status=str(month.status),
            run_id=month.run_id,
            users=r.rows.get(root),
            changes=r.changes,
            checks_failed=r.checks.failed if r.checks else None,
            checks_warned=r.checks.warned if r.checks else None,
            not_passed=[
                {k: c.get(k) for k in ("outcome", "name", "table", "value")}
                for c in (r.checks.not_passed if r.checks else [])
            ],
            failed_attempts=month.failed_attempts,
            published_at=r.published_at.isoformat() if r.published_at else None,
            contract_sha256=r.contract.sha256 if r.contract and month.published else None,
        )
        if month.published:
            before = months.get(r.previous_as_of) if r.previous_as_of else None
            if before is not None and before.status == Status.PUBLISHED and before.run_id != r.previous_run_id:
                months[as_of].stale = (
                    f"the lake's month is built on run {r.previous_run_id} of {r.previous_as_of}, which was replaced "
                    f"(now run {before.run_id}): run `luigi --module pipeline Month --as-of {as_of} --source "
                    f"{r.source}` (add --confirm-deletions for a --full-dump month that needs it): it recomputes "
                    f"the month and the months after it"
                )
            if r.contract and previous and previous.sha256 != r.contract.sha256:
                months[as_of].contract_change = r.contract.changes_since(previous)
            previous = r.contract  # a month without a recorded contract is compared with nothing
    return months


def compare(months: dict[date, MonthStatus], runs: dict[date, dict]) -> list[MonthStatus]:
    """Set agrees/disagreement on every month and add the months only PostgreSQL has."""
    for as_of, row in runs.items():
        if as_of not in months:
            months[as_of] = MonthStatus(as_of=as_of, status="missing")
        months[as_of].postgres_run_id = row["run_id"]
    for m in months.values():
        published = m.status == Status.PUBLISHED
        repair = (
            f". Run `luigi --module pipeline Month --as-of {m.as_of}` again: it completes the month "
            f"(add --source DIR when luigi.cfg [months] does not name its drop)"
        )
        if published and m.postgres_run_id == m.run_id and m.stale:
            m.agrees, m.disagreement = False, m.stale
        elif published and m.postgres_run_id == m.run_id:
            m.agrees = True
        elif published and m.postgres_run_id is None:
            m.agrees, m.disagreement = (
                False,
                f"the lake published run {m.run_id}; PostgreSQL has no pipeline_runs row",
            )
        elif published:
            m.agrees, m.disagreement = (
                False,
                (f"the lake published run {m.run_id}; PostgreSQL's pipeline_runs holds run {m.postgres_run_id}"),
            )
        elif m.postgres_run_id is None:
            m.agrees = True  # neither side published it
        elif m.status == "missing":
            m.agrees, m.disagreement = (
                False,
                f"PostgreSQL's pipeline_runs holds run {m.postgres_run_id}; the lake has no record of this month "
                f"(a lake write that failed after PostgreSQL committed?){repair}",
            )
        else:
            m.agrees, m.disagreement = (
                False,
                f"PostgreSQL's pipeline_runs holds run {m.postgres_run_id}; the lake's month is {m.status}{repair}",
            )
    return [months[d] for d in sorted(months)]


def status(settings: Settings) -> StatusReport:
    """The report; PostgreSQL being unavailable is part of it (``postgres_error``), not an exception."""
    months = lake_side(settings.lake_root)
    pg_schema = settings.postgres.schema
    if not settings.postgres.dsn and s3_uri(settings.lake_root) is not None:
        report = StatusReport(settings.lake_root, "embedded", pg_schema, [months[d] for d in sorted(months)])
        report.postgres_error = (
            "a lake on object storage has no embedded PostgreSQL: set POSTGRES_DSN to the server its months were "
            "published to; the lake side is shown"
        )
        return report
    if not settings.postgres.dsn and not embedded_running(settings.lake_path):
        # status only reads: it never starts the embedded server (issue #15.4)
        report = StatusReport(settings.lake_path, "embedded", pg_schema, [months[d] for d in sorted(months)])
        report.postgres_error = (
            f"the lake's embedded PostgreSQL ({data_dir(settings.lake_path)}) is not running (stopped with "
            f"`streamflow stop-embedded`?); status does not start it. The next month run starts it "
            f"(luigi --module pipeline Month --as-of D), or set POSTGRES_DSN to a server; the lake side is shown"
        )
        return report
    dsn = pg.resolve_dsn(settings.postgres, settings.lake_root)
    report = StatusReport(settings.lake_root, pg.describe(dsn), pg_schema, [])
    try:
        with pg.connect(dsn) as conn:
            runs = published_runs(conn, pg_schema)
    except PostgresUnavailableError as e:
        report.postgres_error = str(e)
        report.months = [months[d] for d in sorted(months)]
        return report
    report.months = compare(months, runs)
    return report
