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

import functools
import logging
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict

from pipeline.errors import QualityGateError
from pipeline.schema import PROJECT_ROOT, Schema, Table

log = logging.getLogger(__name__)

CHECKS_DIR = PROJECT_ROOT / "checks"
SODA_CONFIG = CHECKS_DIR / "soda_config.yml"
DATA_SOURCE = "staging"


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
    types = "\n".join(f"            {c.name}: {c.rule.soda_type}" for c in table.columns)
    required = ", ".join(table.column_names)
    lines = [
        f"checks for {table.name}:",
        "  - row_count > 0:",
        f"      name: {table.name} is not empty",
        "  - schema:",
        f"      name: {table.name} has the columns and types of sql/schema.sql",
        "      fail:",
        f"        when required column missing: [{required}]",
        "        when wrong column type:",
        types,
    ]
    lines += _reference_checks(table)
    return "\n".join(lines) + "\n"


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


def _reference_checks(table: Table) -> list[str]:
    lines = []
    for column in table.columns:
        if column.references:
            lines += [
                f"  - values in ({column.name}) must exist in {column.references} ({column.name}):",
                f"      name: every {table.name} {column.name} exists in {column.references}",
            ]
    return lines


def _disable_soda_telemetry() -> None:
    """Soda reads its settings once, from the first config file it finds; point it at ours before
    anything imports soda.scan, so it never tries to send usage statistics."""
    from soda.common.config_helper import ConfigHelper

    ConfigHelper.get_instance(str(SODA_CONFIG))


def _data_source_yaml(dsn: str, schema_name: str) -> str:
    params = conninfo_to_dict(dsn)
    lines = [
        f"data_source {DATA_SOURCE}:",
        "  type: postgres",
        f"  host: '{params.get('host') or 'localhost'}'",
        f"  port: '{params.get('port') or 5432}'",
        f"  username: '{params.get('user') or 'postgres'}'",
        f"  database: '{params.get('dbname') or params.get('user') or 'postgres'}'",
        f"  schema: '{schema_name}'",
    ]
    if params.get("password"):
        lines.append("  password: ${STREAMFLOW_PG_PASSWORD}")
    return "\n".join(lines) + "\n"


# How the gate's own PostgreSQL session plans. Its only joins are the reference checks: a table's staged
# partition against the users partition, both keyed on user_id and written frozen, so their keys can be
# read in order from the two indexes without touching the heap and merged in one pass. Without statistics
# (staging is not analysed) the planner picks a parallel hash join instead, which at 1,000,000 users keeps
# three processes busy for 0.65 s (about 1.9 CPU-seconds) where the merge takes 0.4-0.6 s on one, while
# the staging load and the live upsert want the same cores. Single-table scans are unaffected, but for
# not running in parallel: the gate runs beside the load, where parallel workers only add overhead.
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


def _scan(
    dsn: str, staging_schema: str, as_of: date, variables: dict[str, str], sodacl: list[tuple[str, str]]
) -> list[CheckResult]:
    """One Soda scan of the staged month: ``sodacl`` is (text, name it is reported under) pairs."""
    from soda.scan import Scan

    scan = Scan()
    scan.set_scan_definition_name(f"streamflow-{as_of.isoformat()}")
    scan.set_data_source_name(DATA_SOURCE)
    scan.add_configuration_yaml_str(_data_source_yaml(dsn, staging_schema))
    scan.add_variables({"AS_OF": as_of.isoformat(), **variables})
    for text, file_name in sodacl:
        scan.add_sodacl_yaml_str(text, file_name=file_name)
    try:
        _configure_session(scan)
        scan.execute()
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
        errors = "; ".join(str(e.message) for e in scan.get_error_logs())
        results.append(
            CheckResult(
                name=f"Soda could not run every check: {errors}", table=None, column=None, outcome="error", value=None
            )
        )
    return results


class Gate:
    """The checks of one staged month, run as its tables arrive: call :meth:`loaded` as each table's
    partition commits (any thread), then :meth:`report` once staging is done. Use it as a context
    manager: leaving the block waits for the scan in progress (its connection holds locks on staging)
    and skips the rest."""

    def __init__(
        self,
        dsn: str,
        schema: Schema,
        staging_schema: str,
        as_of: date,
        variables: dict[str, str],
        checks_dir: Path = CHECKS_DIR,
    ) -> None:
        _disable_soda_telemetry()
        logging.getLogger("soda").setLevel(logging.WARNING)
        password = conninfo_to_dict(dsn).get("password")
        if password:  # Soda resolves ${VAR} in the configuration from the environment: the password stays out of text
            os.environ["STREAMFLOW_PG_PASSWORD"] = str(password)
        self._scan = functools.partial(_scan, dsn, staging_schema, as_of, variables)
        self._schema = schema
        self._files = check_files(schema, checks_dir)
        self._started = time.perf_counter()
        self._scanned = 0.0  # seconds spent in scans, summed
        self._lock = threading.Lock()
        self._results: list[CheckResult] = []
        self._arrived: list[str] = []
        self._tables: queue.SimpleQueue = queue.SimpleQueue()  # tables ready to scan; None: no more
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._scan_tables, name="quality-gate", daemon=True)
        self._worker.start()

    def __enter__(self) -> Gate:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None:
            self._stop.set()
        self._tables.put(None)
        self._worker.join()

    def loaded(self, name: str) -> None:
        """Table ``name``'s staging partition is committed. Its rules run once the root's is too."""
        root = self._schema.root.name
        ready = []
        with self._lock:
            self._arrived.append(name)
            if name == root:
                ready = list(self._arrived)
            elif root in self._arrived:
                ready = [name]
        for table in ready:
            self._tables.put(table)

    def report(self) -> GateReport:
        """Wait for the tables' scans, run the rules across tables, and return every result."""
        self._tables.put(None)
        self._worker.join()
        sodacl = [(path.read_text(encoding="utf-8"), str(path)) for path in self._files.get(None, [])]
        if sodacl:
            self._timed(sodacl)
        report = GateReport(self._results, round(self._scanned, 3))
        for check in report.warned:
            log.warning("check warned: %s", check.describe())
        log.info(
            "quality gate: %d checks, %d failed, %d warned, %.2fs of scans in %.2fs, most of them while staging loaded",
            len(report.checks),
            len(report.failed),
            len(report.warned),
            report.seconds,
            time.perf_counter() - self._started,
        )
        return report

    def _scan_tables(self) -> None:
        while (name := self._tables.get()) is not None:
            if self._stop.is_set():
                continue
            table = self._schema.table(name)
            sodacl = [(generated_table_checks(table), "generated from sql/schema.sql")]
            sodacl += [(path.read_text(encoding="utf-8"), str(path)) for path in self._files.get(name, [])]
            self._timed(sodacl)

    def _timed(self, sodacl: list[tuple[str, str]]) -> None:
        started = time.perf_counter()
        try:
            results = self._scan(sodacl)
        except Exception as error:  # noqa: BLE001 - a scan that cannot run fails the gate, with its reason
            results = [CheckResult(f"Soda could not run: {error}", None, None, outcome="error", value=None)]
        self._scanned += time.perf_counter() - started
        self._results.extend(results)


def raise_if_failed(report: GateReport, as_of: date) -> None:
    if not report.failed:
        return
    lines = "\n".join(f"  FAILED {c.describe()}" for c in report.failed)
    raise QualityGateError(
        f"month {as_of}: {len(report.failed)} quality check(s) failed; nothing was published:\n{lines}\n"
        f"Fix the drop (or the rule in checks/, if the rule is wrong) and run the month again."
    )
