"""The run record of a month: ``<lake>/runs/as_of=YYYY-MM-DD/manifest.json``, written last and atomically.

A month is published when its manifest says ``"status": "published"`` and PostgreSQL's pipeline_runs
holds the same run_id. A failed attempt is recorded beside it, in ``attempts/``, and never replaces a
published manifest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from pipeline import lakefs

if TYPE_CHECKING:
    from pipeline.merge import MergeResult
    from pipeline.month import MonthPlan
    from pipeline.stage import StageResult

PUBLISHED = "published"
FAILED = "failed"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions(server_version: str | None = None) -> dict[str, str | None]:
    return {
        "streamflow-lake": _version("streamflow-lake"),
        "duckdb": duckdb.__version__,
        "soda-core": _version("soda-core"),
        "postgresql": server_version,
    }


def build(
    *,
    plan: MonthPlan,
    run_id: str,
    stages: dict[str, StageResult],
    merges: dict[str, MergeResult],
    checks: dict,
    timings: dict[str, float],
    started_at: datetime,
    postgres: str,
    pg_schema: str,
    server_version: str,
    previous: dict | None,
    extra: dict,
) -> dict:
    return {
        "as_of": plan.as_of.isoformat(),
        "status": None,
        "run_id": run_id,
        "source": str(plan.source),
        "mode": "full-dump" if plan.full_dump else "upsert",
        "previous_as_of": plan.previous.isoformat() if plan.previous else None,
        "previous_run_id": previous.get("run_id") if previous else None,
        "files": {t: {**vars(s.source)} for t, s in stages.items()},
        "rejects": {t: s.rejected for t, s in stages.items()},
        "missing_columns": {t: s.missing_columns for t, s in stages.items() if s.missing_columns},
        "tables": {t: {"rows": m.rows, **m.counts} for t, m in merges.items()},
        "checks": checks,
        "timings": timings,
        "versions": versions(server_version),
        "postgres": {"server": postgres, "schema": pg_schema},
        "started_at": started_at.isoformat(),
        "published_at": None,
        **extra,
    }


def run_row(record: dict, finished_at: datetime) -> dict:
    """The pipeline_runs row of a manifest."""
    return {
        "as_of": record["as_of"],
        "status": PUBLISHED,
        "run_id": record["run_id"],
        "row_counts": {t: v["rows"] for t, v in record["tables"].items()},
        "changes": {t: {k: n for k, n in v.items() if k != "rows"} for t, v in record["tables"].items()},
        "checks": {k: v for k, v in record["checks"].items() if k != "checks"}
        | {"failed_or_warned": [c for c in record["checks"]["checks"] if c["outcome"] != "pass"]},
        "sources": {t: f["sha256"] for t, f in record["files"].items()},
        "started_at": record["started_at"],
        "finished_at": finished_at.isoformat(),
    }


def write(lake: lakefs.Lake, record: dict) -> Path:
    path = lake.manifest(lakefs_date(record))
    lakefs.write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def write_attempt(lake: lakefs.Lake, record: dict) -> Path:
    """Record a failed attempt without touching the month's manifest."""
    path = lake.run_dir(lakefs_date(record)) / "attempts" / f"{record['run_id']}.json"
    record = {**record, "recorded_at": datetime.now(UTC).isoformat()}
    lakefs.write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def lakefs_date(record: dict):  # noqa: ANN201 - a date
    from datetime import date

    return date.fromisoformat(record["as_of"])
