"""The quality gate: Soda Core checks on the month's staged snapshot, before anything is published.

Rules live in ``checks/`` (one SodaCL file per table, one for rules across tables). The rules every
table shares (not empty, columns and types as declared, references) are
generated here from sql/schema.sql, so no check file repeats the schema. A unique, present key is the
staged partition's primary key, a constraint rather than a check (see :func:`generated_table_checks`).

A table's rules run as soon as its partition (and the root's, which its references point at) is
committed, one Soda scan per table, while staging loads the next tables; a file whose rules are not
all for one table (``across_tables.yml``: the drop volumes) runs last, once every table is staged.
The verdict is the same as one scan of everything: the month passes only if every rule passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pipeline.errors import PostgresUnavailableError, QualityGateError
from pipeline.pg.connect import connect, describe
from pipeline.schema import PROJECT_ROOT, Schema, Table

log = logging.getLogger(__name__)

CHECKS_DIR = PROJECT_ROOT / "checks"
SODA_CONFIG = CHECKS_DIR / "soda_config.yml"
DATA_SOURCE = "staging"


VOLUME_TABLE = "drop_volume"  # built per run in the staging schema (sql/pipeline_tables.sql)


@dataclass(frozen=True)
class CheckResult:
    name: str
    table: str | None
    column: str | None
    outcome: str  # pass, warn, fail (or error: Soda could not evaluate it)
    value: float | int | str | None

    def describe(self) -> str:
        where = f"table {self.table}" + (f", column {self.column}" if self.column else "")
        value = "" if self.value is None else f": {_value_text(self)}"
        return f"{self.name} ({where}){value}"


def _value_text(check: CheckResult) -> str:
    if check.name.startswith("PSI of "):  # a drift check (pipeline.drift): the value is an index, not rows
        return f"PSI {check.value}"
    if isinstance(check.value, int | float) and float(check.value).is_integer():
        n = int(check.value)
        return f"{n} row{'s' if n != 1 else ''} broke it" if check.outcome in ("fail", "warn") else str(n)
    return str(check.value)


@dataclass
class GateReport:
    checks: list[CheckResult]
    seconds: float  # spent in Soda scans, summed

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome in ("fail", "error")]

    @property
    def warned(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome == "warn"]

    def summary(self) -> dict:
        return {
            "passed": sum(c.outcome == "pass" for c in self.checks),
            "warned": len(self.warned),
            "failed": len(self.failed),
            "checks": [asdict(c) for c in self.checks],
        }


def generated_table_checks(table: Table) -> str:
    """SodaCL for the rules every table shares, derived from sql/schema.sql, for one table.

    A present and unique key is not a Soda check: it is a constraint. Staging rejects a row without a key
    or with a repeated one (with its line), and the staged partition gets its primary key (key, as_of)
    before the checks run, so PostgreSQL itself refuses a month with a missing or repeated key. A
    ``duplicate_count`` would only scan every table a second time for what cannot be there."""
    import yaml

    checks: list[dict] = [
        {"row_count > 0": {"name": f"{table.name} is not empty"}},
        {
            "schema": {
                "name": f"{table.name} has the columns and types of sql/schema.sql",
                "fail": {
                    "when required column missing": table.column_names,
                    "when wrong column type": {c.name: c.rule.soda_type for c in table.columns},
                },
            }
        },
    ]
    checks += [
        {
            f"values in ({c.name}) must exist in {c.references} ({c.name})": {
                "name": f"every {table.name} {c.name} exists in {c.references}"
            }
        }
        for c in table.columns
        if c.references
    ]
    return yaml.safe_dump({f"checks for {table.name}": checks}, sort_keys=False)


def check_files(schema: Schema, checks_dir: Path = CHECKS_DIR) -> dict[str | None, list[Path]]:
    """The SodaCL files of ``checks_dir`` by the table they are for: a file whose every ``checks for X``
    names the same table X of the schema is X's; any other (rules across tables, or for the drop
    volumes) is None's, run once every table is staged."""
    import yaml

    files: dict[str | None, list[Path]] = {}
    for path in sorted(checks_dir.glob("*.yml")):
        if path.name == SODA_CONFIG.name:
            continue
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        targets = {str(k).removeprefix("checks for").strip() for k in content} if isinstance(content, dict) else set()
        owner = targets.pop() if len(targets) == 1 and targets <= set(schema.table_names) else None
        files.setdefault(owner, []).append(path)
    return files


def _disable_soda_telemetry() -> None:
    """Soda reads its settings once, from the first config file it finds; point it at ours before
    anything imports soda.scan, so it never tries to send usage statistics."""
    from soda.common.config_helper import ConfigHelper

    ConfigHelper.get_instance(str(SODA_CONFIG))


def _data_source_yaml(dsn: str, schema_name: str) -> str:
    """Soda's data source for the staging schema, as YAML dumped from a mapping (so any name reads back
    as itself). The password is not in it: see :func:`_set_password`."""
    import yaml

    params = conninfo_to_dict(dsn)
    source = {
        "type": "postgres",
        "host": str(params.get("host") or "localhost"),
        "port": str(params.get("port") or 5432),
        "username": str(params.get("user") or "postgres"),
        "database": str(params.get("dbname") or params.get("user") or "postgres"),
        "schema": schema_name,
    }
    return yaml.safe_dump({f"data_source {DATA_SOURCE}": source}, sort_keys=False)


def _set_password(scan: object, dsn: str) -> None:
    """Give Soda's data source the password as a value, after its configuration text was parsed: Soda
    resolves templates in that text and parses it as YAML, so a password written into it could be cut
    short, misread, or printed in an error about the text."""
    password = conninfo_to_dict(dsn).get("password")
    if password:
        properties = scan._configuration.data_source_properties_by_name[DATA_SOURCE]  # type: ignore[attr-defined]
        properties["password"] = str(password)


# How the gate's own PostgreSQL session plans. Its only joins are the reference checks: a table's staged
# partition against the users partition, both keyed on user_id and written frozen, so their keys can be
# read in order from the two indexes without touching the heap and merged in one pass. Without statistics
# (staging is not analysed) the planner picks a parallel hash join instead, which keeps three processes
# busy where the merge needs one, while the staging load and the live upsert want the same cores
# (bench/RESULTS.md, "Tuning constants"). Single-table scans are unaffected, but for not running in
# parallel: the gate runs beside the load, where parallel workers only add overhead.
GATE_SESSION = {
    "enable_hashjoin": "off",
    "enable_nestloop": "off",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",  # the merge of keys looks expensive to a planner without statistics; compiling it is not worth it
}


def _configure_session(scan: object) -> None:
    """Connect the scan's data source now and apply :data:`GATE_SESSION` to its session. A source that
    cannot connect is left to the scan, which reports why."""
    data_source = scan._data_source_manager.get_data_source(DATA_SOURCE)  # type: ignore[attr-defined]
    if data_source is None or data_source.connection is None:
        return
    with data_source.connection.cursor() as cursor:
        for name, value in GATE_SESSION.items():
            cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
    data_source.connection.commit()  # session settings outlive the transaction that set them


def _close_connections(scan: object) -> None:
    """Soda Core 3 leaves its connections open, idle in a transaction that holds locks on the staging
    tables (its close_all_connections looks in a dict it never fills): close them ourselves."""
    manager = getattr(scan, "_data_source_manager", None)
    for data_source in getattr(manager, "data_sources", {}).values():
        connection = getattr(data_source, "connection", None)
        if connection is not None:
            connection.close()
            data_source.connection = None


class GateConnectionLost(Exception):
    """The gate's own PostgreSQL session failed: an infrastructure failure, not a failed check."""


# SQLSTATEs of a server that went away (see pipeline.pg.connect); Soda connects with psycopg2
_GONE_STATES = ("57P01", "57P02", "57P03")


def _connection_failure(error: BaseException | None) -> bool:
    """Whether an error Soda caught is its connection failing (the server went away, the backend was
    terminated), rather than a query failing on a connection that works."""
    import psycopg2

    if isinstance(error, psycopg2.InterfaceError):  # the connection was already closed
        return True
    if isinstance(error, psycopg2.OperationalError):
        code = error.pgcode
        return code is None or code.startswith("08") or code in _GONE_STATES
    return False


def _scan(
    dsn: str, staging_schema: str, as_of: date, variables: dict[str, str], sodacl: list[tuple[str, str]]
) -> list[CheckResult]:
    """One Soda scan of the staged month: ``sodacl`` is (text, name it is reported under) pairs."""
    from soda.scan import Scan

    scan = Scan()
    scan.set_scan_definition_name(f"streamflow-{as_of.isoformat()}")
    scan.set_data_source_name(DATA_SOURCE)
    scan.add_configuration_yaml_str(_data_source_yaml(dsn, staging_schema))
    _set_password(scan, dsn)
    scan.add_variables({"AS_OF": as_of.isoformat(), **variables})
    for text, file_name in sodacl:
        scan.add_sodacl_yaml_str(text, file_name=file_name)
    try:
        _configure_session(scan)
        scan.execute()
    except Exception as error:
        if _connection_failure(error):
            raise GateConnectionLost(" ".join(str(error).split())) from error
        raise
    finally:
        _close_connections(scan)
    results = [
        CheckResult(
            name=c.get("name") or c.get("definition", "?"),
            table=c.get("table"),
            column=c.get("column"),
            outcome=c.get("outcome") or "error",
            value=(c.get("diagnostics") or {}).get("value"),
        )
        for c in scan.get_scan_results().get("checks", [])
    ]
    if scan.has_error_logs():
        lost = [e for e in scan.get_error_logs() if _connection_failure(e.exception)]
        if lost:
            raise GateConnectionLost(" ".join(str(lost[0].exception).split()))
        errors = "; ".join(str(e.message) for e in scan.get_error_logs())
        results.append(
            CheckResult(
                name=f"Soda could not run every check: {errors}", table=None, column=None, outcome="error", value=None
            )
        )
    return results


def _import_soda() -> None:
    """Soda's own imports, about 0.3 s: the gate's thread runs them first, while the staging load's
    threads wait on PostgreSQL."""
    import soda.scan  # noqa: F401


def _all_succeeded(futures: Iterable[Future[int]]) -> bool:
    return all(not f.cancelled() and f.exception() is None for f in futures)


def _when_all(futures: list[Future[int]], then: Callable[[list[Future[int]]], None]) -> None:
    """Call ``then(futures)`` once, when the last of ``futures`` is done (resolved, failed or cancelled)."""
    remaining = len(futures)
    lock = threading.Lock()

    def one_done(_: Future[int]) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            last = remaining == 0
        if last:
            then(futures)

    for future in futures:
        future.add_done_callback(one_done)


TOGETHER = "every table"  # the key of the one scan of a month checked in one go

# Up to this many rows in a month (all tables), its rules run in one scan once everything is staged:
# per-table scans overlap the load, but each costs Soda's own set-up and a connection, which is most of
# a small table's scan (bench/RESULTS.md, "Tuning constants").
ONE_SCAN_MAX_ROWS = 300_000


class Gate:
    """The checks of one staged month, one Soda scan at a time on a thread of the gate's own.

    Per table (a large month): a table's rules as soon as its ``staged`` future and the root's are
    resolved (their partitions committed), overlapping the load of the others, then, in :meth:`report`,
    the rules across tables. ``together`` (a small month, where that overlap buys less than a scan's own
    cost): one scan of every rule once every partition committed. Use it as a context manager: leaving the
    block waits for the scan in progress (its connection holds locks on staging) and cancels the rest."""

    def __init__(
        self,
        dsn: str,
        schema: Schema,
        staging_schema: str,
        as_of: date,
        variables: dict[str, str],
        staged: dict[str, Future[int]],
        checks_dir: Path = CHECKS_DIR,
        together: bool = False,
    ) -> None:
        _disable_soda_telemetry()
        logging.getLogger("soda").setLevel(logging.WARNING)
        self._scan = functools.partial(_scan, dsn, staging_schema, as_of, variables)
        self._dsn, self._as_of = dsn, as_of
        self._staging, self._variables = staging_schema, variables
        self._schema = schema
        self._files = check_files(schema, checks_dir)
        self._started = time.perf_counter()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="quality-gate")
        self._lock = threading.Lock()
        self._scans: dict[str, Future[tuple[list[CheckResult], float]]] = {}
        self._root = staged[schema.root.name]
        self._together = together
        self._pool.submit(_import_soda)  # while the first partitions load
        if together:
            _when_all(list(staged.values()), self._ready_together)
        else:
            for name in schema.table_names:
                staged[name].add_done_callback(functools.partial(self._when_staged, name))

    def __enter__(self) -> Gate:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _when_staged(self, name: str, table: Future[int]) -> None:
        """A table's rules read the root's partition too (references): they run once both committed."""
        self._root.add_done_callback(functools.partial(self._ready, name, table))

    def _ready(self, name: str, *staged: Future[int]) -> None:
        if not _all_succeeded(staged):
            return  # the load failed: the publish is failing, nothing to check
        self._submit(name, self._table_rules(name))

    def _ready_together(self, staged: list[Future[int]]) -> None:
        if _all_succeeded(staged):
            rules = [rule for name in self._schema.table_names for rule in self._table_rules(name)]
            self._submit(TOGETHER, rules + self._rules_across())

    def _table_rules(self, name: str) -> list[tuple[str, str]]:
        sodacl = [(generated_table_checks(self._schema.table(name)), "generated from sql/schema.sql")]
        return sodacl + [(path.read_text(encoding="utf-8"), str(path)) for path in self._files.get(name, [])]

    def _rules_across(self) -> list[tuple[str, str]]:
        return [(path.read_text(encoding="utf-8"), str(path)) for path in self._files.get(None, [])]

    def _submit(self, key: str, sodacl: list[tuple[str, str]]) -> None:
        with self._lock, contextlib.suppress(RuntimeError):  # RuntimeError: the gate is closed
            self._scans[key] = self._pool.submit(self._timed, sodacl)

    def report(self) -> GateReport:
        """Wait for the tables' scans (every table is staged by now), run the rules across tables, and
        return every result, table by table in schema order, the rules across tables last."""
        keys = [TOGETHER] if self._together else self._schema.table_names
        with self._lock:
            missing = [key for key in keys if key not in self._scans]
            if missing:
                raise RuntimeError(f"quality gate: report() before {', '.join(missing)} was staged")
            scans = [self._scans[key] for key in keys]
        across = [] if self._together else self._rules_across()
        if across:
            scans.append(self._pool.submit(self._timed, across))
        outcomes = [scan.result() for scan in scans]
        checks = [self._explained(c) for results, _ in outcomes for c in results]
        report = GateReport(checks, round(sum(s for _, s in outcomes), 3))
        for check in report.warned:
            log.warning("check warned: %s", check.describe())
        log.info(
            "quality gate: %d checks, %d failed, %d warned, %.2fs of scans in %.2fs, %s",
            len(report.checks),
            len(report.failed),
            len(report.warned),
            report.seconds,
            time.perf_counter() - self._started,
            "in one scan once the month was staged" if self._together else "most of them while staging loaded",
        )
        return report

    def _explained(self, check: CheckResult) -> CheckResult:
        """A failed volume check says which drops, their two row counts and the change, not "N rows broke
        it" (issue #15.4): drop_volume's rows are the tables."""
        if check.table != VOLUME_TABLE or check.outcome not in ("fail", "warn"):
            return check
        ratio = float(self._variables.get("VOLUME_RATIO", "0.5"))
        try:
            with connect(self._dsn) as conn:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT table_name, drop_rows, previous_drop_rows FROM {} WHERE previous_drop_rows > 0 "
                        "AND abs(drop_rows - previous_drop_rows) > %s * previous_drop_rows ORDER BY table_name"
                    ).format(sql.Identifier(self._staging, VOLUME_TABLE)),
                    [ratio],
                ).fetchall()
        except (PostgresUnavailableError, psycopg.Error):
            return check  # the count alone, then
        if not rows:
            return check
        parts = [
            f"{table}.csv has {new} rows, the previous drop {old} ({100 * (new - old) / old:+.1f}%)"
            for table, new, old in rows
        ]
        return dataclasses.replace(check, value=f"{'; '.join(parts)}; allowed: ±{100 * ratio:g}%")

    def _timed(self, sodacl: list[tuple[str, str]]) -> tuple[list[CheckResult], float]:
        started = time.perf_counter()
        try:
            results = self._scan(sodacl)
        except GateConnectionLost as lost:
            raise PostgresUnavailableError(
                f"lost the connection to PostgreSQL at {describe(self._dsn)} while checking {self._as_of}: "
                f"{lost}. This is not a failed check: nothing of the month was published; run it again once "
                f"the server is back."
            ) from None
        except Exception as error:  # noqa: BLE001 - a scan that cannot run fails the gate, with its reason
            results = [CheckResult(f"Soda could not run: {error}", None, None, outcome="error", value=None)]
        return results, time.perf_counter() - started


def raise_if_failed(report: GateReport, as_of: date) -> None:
    if not report.failed:
        return
    lines = "\n".join(f"  FAILED {c.describe()}" for c in report.failed)
    raise QualityGateError(
        f"month {as_of}: {len(report.failed)} quality check(s) failed; nothing was published:\n{lines}\n"
        f"Fix the drop (or the rule in checks/, if the rule is wrong) and run the month again."
    )
