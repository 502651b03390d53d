"""The quality gate: Soda Core checks on the month's staged snapshot, before anything is published.

Rules live in ``checks/`` (one SodaCL file per table, one for rules across tables). The rules every
table shares (not empty, columns and types as declared, references) are
generated here from sql/schema.sql, so no check file repeats the schema. A unique, present key is the
staged partition's primary key, a constraint rather than a check (see :func:`generated_checks`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from pipeline.errors import QualityGateError
from pipeline.schema import PROJECT_ROOT, Schema, Table

log = logging.getLogger(__name__)

CHECKS_DIR = PROJECT_ROOT / "checks"
SODA_CONFIG = CHECKS_DIR / "soda_config.yml"
DATA_SOURCE = "staging"
_SODA_TYPES = {
    "TEXT": "text",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "INT": "integer",
    "BIGINT": "bigint",
    "NUMERIC": "numeric",
}


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
    seconds: float

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


def generated_checks(schema: Schema) -> str:
    """SodaCL for the rules every table shares, derived from sql/schema.sql.

    A present and unique key is not a Soda check: it is a constraint. Staging rejects a row without a key
    or with a repeated one (with its line), and the staged partition gets its primary key (key, as_of)
    before the checks run, so PostgreSQL itself refuses a month with a missing or repeated key. A
    ``duplicate_count`` would only scan every table a second time for what cannot be there."""
    blocks = []
    for table in schema.tables:
        types = "\n".join(f"            {c.name}: {_SODA_TYPES[c.pg_type]}" for c in table.columns)
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
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


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


def _close_connections(scan: object) -> None:
    """Soda Core 3 leaves its connections open, idle in a transaction that holds locks on the staging
    tables (its close_all_connections looks in a dict it never fills): close them ourselves."""
    manager = getattr(scan, "_data_source_manager", None)
    for data_source in getattr(manager, "data_sources", {}).values():
        connection = getattr(data_source, "connection", None)
        if connection is not None:
            connection.close()
            data_source.connection = None


def run_checks(
    dsn: str,
    schema: Schema,
    staging_schema: str,
    as_of: date,
    variables: dict[str, str],
    checks_dir: Path = CHECKS_DIR,
) -> GateReport:
    """Run every check against the staged month. Returns the report; does not raise on failures."""
    import os

    started = time.perf_counter()
    _disable_soda_telemetry()
    logging.getLogger("soda").setLevel(logging.WARNING)
    from soda.scan import Scan

    password = conninfo_to_dict(dsn).get("password")
    if password:  # Soda resolves ${VAR} in the configuration from the environment: the password stays out of text
        os.environ["STREAMFLOW_PG_PASSWORD"] = str(password)
    scan = Scan()
    scan.set_scan_definition_name(f"streamflow-{as_of.isoformat()}")
    scan.set_data_source_name(DATA_SOURCE)
    scan.add_configuration_yaml_str(_data_source_yaml(dsn, staging_schema))
    scan.add_variables({"AS_OF": as_of.isoformat(), **variables})
    scan.add_sodacl_yaml_str(generated_checks(schema), file_name="generated from sql/schema.sql")
    for path in sorted(checks_dir.glob("*.yml")):
        if path.name != SODA_CONFIG.name:
            scan.add_sodacl_yaml_file(str(path))
    try:
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
    report = GateReport(results, round(time.perf_counter() - started, 3))
    for check in report.warned:
        log.warning("check warned: %s", check.describe())
    log.info(
        "quality gate: %d checks, %d failed, %d warned, %.2fs",
        len(results),
        len(report.failed),
        len(report.warned),
        report.seconds,
    )
    return report


def raise_if_failed(report: GateReport, as_of: date) -> None:
    if not report.failed:
        return
    lines = "\n".join(f"  FAILED {c.describe()}" for c in report.failed)
    raise QualityGateError(
        f"month {as_of}: {len(report.failed)} quality check(s) failed; nothing was published:\n{lines}\n"
        f"Fix the drop (or the rule in checks/, if the rule is wrong) and run the month again."
    )
