"""The month report's pages (issue #18), from a tiny lake written here: run records and Parquet snapshots,
no PostgreSQL. What a browser makes of them is tested in tests/test_month_report.py."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import lakefs, report
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.runs import Checks, RunRecord, RunStore, Status
from pipeline.schema import load_schema

JAN, FEB, MAR = date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31)
URL = re.compile(r"https?://", re.IGNORECASE)


def snapshot(lake: lakefs.Lake, as_of: date, hours: list[str]) -> None:
    schema = load_schema()
    for table in schema.tables:  # every table holds the same ten users; usage carries the hours
        rows = [{"user_id": f"u{i:02d}"} for i in range(len(hours))]
        if table.name == "usage_agg_30d":
            rows = [{**r, "watch_hours_30d": Decimal(h)} for r, h in zip(rows, hours, strict=True)]
        if table.name == "labels":
            rows = [{**r, "churn_label": i % 4 == 0} for i, r in enumerate(rows)]
        path = lake.root / lake.legacy_object("snapshots", table.name, as_of)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=table.arrow_schema()), path)


def record(as_of: date, previous: date | None, checks: list[dict], status: Status) -> RunRecord:
    counts = {"rows": 10, "inserted": 0, "updated": 10, "unchanged": 0, "carried": 0, "deleted": 0}
    return RunRecord(
        as_of=as_of,
        run_id=f"{as_of:%Y%m%d}-run",
        status=status,
        source=f"/drops/{as_of}",
        mode="upsert",
        previous_as_of=previous,
        tables={t: dict(counts) for t in load_schema().table_names},
        rejects={t: 0 for t in load_schema().table_names},
        checks=Checks(
            passed=sum(c["outcome"] == "pass" for c in checks),
            warned=sum(c["outcome"] == "warn" for c in checks),
            failed=sum(c["outcome"] == "fail" for c in checks),
            checks=checks,
        ),
        timings={"stage": 0.5, "merge": 0.25, "checks": 1.0},
    )


def check(name: str, outcome: str, value: float, column: str = "watch_hours_30d") -> dict:
    return {"name": name, "table": "usage_agg_30d", "column": column, "outcome": outcome, "value": value}


@pytest.fixture
def lake(tmp_path: Path) -> lakefs.Lake:
    """January and February published (February's hours shifted), March refused by a failed check."""
    lake = lakefs.Lake(tmp_path / "lake")
    store = RunStore(lake)
    hours = [str(h) for h in range(1, 11)]
    snapshot(lake, JAN, hours)
    snapshot(lake, FEB, [str(Decimal(h) * Decimal("1.5")) for h in hours])
    store.write(record(JAN, None, [check("not negative", "pass", 0)], Status.PUBLISHED))
    psi = check("PSI of watch_hours_30d vs the previous published month (warn over 0.1, fail over off)", "warn", 2.4861)
    store.write(record(FEB, JAN, [check("not negative", "pass", 0), psi], Status.PUBLISHED))
    failed = [check("not negative", "fail", 3), {**psi, "value": 0.0, "outcome": "pass"}]
    store.write_attempt(record(MAR, FEB, failed, Status.FAILED))
    return lake


def test_every_month_gets_a_page_and_the_overview_links_them(lake: lakefs.Lake) -> None:
    pages = report.write_reports(Settings(lake_root=lake.root))
    assert pages == [*(report.month_page(lake.root, d) for d in (JAN, FEB, MAR)), lake.root / "reports/index.html"]
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert not URL.search(html) and "<script" not in html and len(html.encode()) < 5_000_000
    overview = pages[-1].read_text(encoding="utf-8")
    assert all(f'href="as_of={d}/index.html"' in overview for d in (JAN, FEB, MAR))
    assert 'id="verdict">latest: 2024-03-31 refused: 1 check(s) failed' in overview


def test_a_published_month_with_a_warning_says_so_first_and_charts_its_drift(lake: lakefs.Lake) -> None:
    (page, _) = report.write_reports(Settings(lake_root=lake.root), FEB)
    html = page.read_text(encoding="utf-8")
    assert 'id="verdict">2024-02-29 published with 1 warning(s): watch_hours_30d (usage_agg_30d)</div>' in html
    assert "usage_agg_30d.watch_hours_30d</b> PSI 2.4861" in html  # recomputed from the snapshots
    assert "<title>usage_agg_30d.watch_hours_30d: 2.486</title>" in html  # the first bar of the PSI chart
    assert "<title>churn rate per month</title>" in html and "<title>seconds per stage</title>" in html


def test_a_refused_month_lists_its_failing_checks_first_with_the_psi_it_recorded(lake: lakefs.Lake) -> None:
    (page, _) = report.write_reports(Settings(lake_root=lake.root), MAR)
    html = page.read_text(encoding="utf-8")
    assert 'id="verdict">2024-03-31 refused: 1 check(s) failed (watch_hours_30d (usage_agg_30d)); nothing was' in html
    assert html.index("<h2>Checks of the month") < html.index("<h2>Drift of every feature")
    first = re.search(r"<h2>Checks of the month.*?</th></tr><tr>(.*?)</tr>", html, flags=re.DOTALL)
    assert first and "not negative" in first.group(1) and ">fail<" in first.group(1)
    assert "only the PSI it recorded" in html  # its work folder is gone: the chart of the recorded PSI


def test_a_month_without_a_record_is_one_line(lake: lakefs.Lake) -> None:
    with pytest.raises(PipelineError, match=r"^month 2024-04-30 has no run record in the lake at .*; no report$"):
        report.write_reports(Settings(lake_root=lake.root), date(2024, 4, 30))


def test_the_page_is_current_until_a_run_record_is_newer(lake: lakefs.Lake) -> None:
    import os

    assert not report.is_current(lake.root, FEB)
    report.write_reports(Settings(lake_root=lake.root), FEB)
    assert report.is_current(lake.root, FEB)
    manifest = RunStore(lake).path(FEB)
    later = report.month_page(lake.root, FEB).stat().st_mtime_ns + 10**9
    os.utime(manifest, ns=(later, later))
    assert not report.is_current(lake.root, FEB)
