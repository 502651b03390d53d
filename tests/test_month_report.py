"""The month report (issue #18): drift as checks of the gate, and the report pages in a real browser.

January is the sample month; February is January's drop again, unchanged or with every
``watch_hours_30d`` times 1.5, so that exactly one feature moves.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from psycopg import sql

from pipeline import drift, lakefs
from pipeline.config import Settings
from pipeline.errors import QualityGateError
from pipeline.publish import run_month
from pipeline.runs import RunStore
from tests.conftest import FEB, JAN
from tests.drops import edit_rows, seed_copy


def shifted_drop(dest: Path, factor: str = "1.5") -> Path:
    """January's drop as February's, every watch_hours_30d times ``factor``."""
    drop = seed_copy(dest)

    def shift(rows: list[dict[str, str]]) -> None:
        for row in rows:
            if row["watch_hours_30d"]:
                row["watch_hours_30d"] = str(Decimal(row["watch_hours_30d"]) * Decimal(factor))

    edit_rows(drop / "usage_agg_30d.csv", shift)
    return drop


def drift_checks(record_checks: list[dict]) -> dict[str, dict]:
    return {c["column"]: c for c in record_checks if c["name"].startswith(drift.CHECK_PREFIX)}


def test_a_shifted_feature_is_the_top_mover_and_a_warning_that_does_not_block(
    settings: Settings, tmp_path, pg, pg_schema
):
    run_month(settings, JAN)
    record = run_month(settings, FEB, shifted_drop(tmp_path / "feb"))
    assert record.published and record.checks is not None
    checks = drift_checks(record.checks.checks)
    top = max(checks.values(), key=lambda c: c["value"])
    assert (top["column"], top["outcome"]) == ("watch_hours_30d", "warn")
    assert top["value"] == pytest.approx(0.2364, abs=1e-4)  # the sample January, shifted: deterministic
    assert [c for c in checks.values() if c["outcome"] != "pass"] == [top]
    assert record.checks.warned == 1 and "drift" in record.timings
    runs = pg.execute(
        sql.SQL("SELECT checks FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "pipeline_runs")), [FEB]
    ).fetchone()[0]
    assert runs["warned"] == 1
    assert [c["column"] for c in runs["failed_or_warned"]] == ["watch_hours_30d"]


def test_an_unchanged_drop_drifts_by_zero_on_every_feature(settings: Settings, tmp_path):
    run_month(settings, JAN)
    record = run_month(settings, FEB, seed_copy(tmp_path / "feb"))
    assert record.checks is not None
    checks = drift_checks(record.checks.checks)
    assert len(checks) == len(drift.feature_columns(drift.load_schema()))
    assert {c: v["value"] for c, v in checks.items()} == {c: 0.0 for c in checks}


def test_a_month_over_drift_fail_psi_is_refused_with_nothing_published(settings: Settings, tmp_path, pg, pg_schema):
    run_month(settings, JAN)
    strict = settings.with_(drift_fail_psi=0.2)
    with pytest.raises(QualityGateError) as refused:
        run_month(strict, FEB, shifted_drop(tmp_path / "feb"))
    message = str(refused.value)
    assert message.startswith("month 2024-02-29: 1 quality check(s) failed; nothing was published:")
    assert "FAILED PSI of watch_hours_30d vs the previous published month (warn over 0.1, fail over 0.2)" in message
    assert "(table usage_agg_30d, column watch_hours_30d): PSI " in message
    store = RunStore(lakefs.Lake(settings.lake_root))
    assert store.published_months() == [JAN]
    assert not lakefs.Lake(settings.lake_root).snapshot_file("usage_agg_30d", FEB).exists()
    (attempt,) = store.attempts(FEB)
    assert [c["column"] for c in attempt.checks.not_passed if c["outcome"] == "fail"] == ["watch_hours_30d"]
    months = pg.execute(
        sql.SQL("SELECT as_of FROM {} ORDER BY as_of").format(sql.Identifier(pg_schema, "pipeline_runs"))
    ).fetchall()
    assert [m for (m,) in months] == [JAN]
