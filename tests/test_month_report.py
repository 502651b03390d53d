"""The month report (issue #18): drift as checks of the gate, and the report pages in a real browser.

January is the sample month; February is January's drop again, unchanged or with every
``watch_hours_30d`` times 1.5, so that exactly one feature moves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg import sql

from pipeline import drift, lakefs, report
from pipeline.config import PostgresSettings, Settings
from pipeline.errors import QualityGateError
from pipeline.publish import run_month
from pipeline.runs import RunRecord, RunStore
from tests.conftest import FEB, JAN, PROJECT_ROOT, SEED_MONTHS, luigi_bin, pipeline_environment
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


@dataclass(frozen=True)
class ShiftedLake:
    settings: Settings
    february: RunRecord


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> ShiftedLake:
    """READ ONLY. January, then February = January's drop with every watch_hours_30d times 1.5, published
    into a lake and schema of this module's own."""
    tmp = tmp_path_factory.mktemp("shifted")
    settings = Settings(
        lake_root=tmp / "lake",
        months=dict(SEED_MONTHS),
        postgres=PostgresSettings(dsn=pg_dsn, schema=f"t_{uuid.uuid4().hex[:10]}"),
    )
    run_month(settings, JAN)
    return ShiftedLake(settings, run_month(settings, FEB, shifted_drop(tmp / "feb")))


def test_a_shifted_feature_is_the_top_mover_and_a_warning_that_does_not_block(shifted: ShiftedLake, pg):
    record = shifted.february
    assert record.published and record.checks is not None
    checks = drift_checks(record.checks.checks)
    top = max(checks.values(), key=lambda c: c["value"])
    assert (top["column"], top["outcome"]) == ("watch_hours_30d", "warn")
    assert top["value"] == pytest.approx(0.2364, abs=1e-4)  # the sample January, shifted: deterministic
    assert [c for c in checks.values() if c["outcome"] != "pass"] == [top]
    assert record.checks.warned == 1 and "drift" in record.timings
    runs = pg.execute(
        sql.SQL("SELECT checks FROM {} WHERE as_of = %s").format(
            sql.Identifier(shifted.settings.postgres.schema, "pipeline_runs")
        ),
        [FEB],
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
    assert not lakefs.month_objects(lakefs.Lake(settings.lake_root), FEB), "no object of the refused month"
    (attempt,) = store.attempts(FEB)
    assert [c["column"] for c in attempt.checks.not_passed if c["outcome"] == "fail"] == ["watch_hours_30d"]
    months = pg.execute(
        sql.SQL("SELECT as_of FROM {} ORDER BY as_of").format(sql.Identifier(pg_schema, "pipeline_runs"))
    ).fetchall()
    assert [m for (m,) in months] == [JAN]
    # the refused month gets its report, from its attempt: the failing check first, the drift that explains it
    page, _ = report.write_reports(strict, FEB)
    html = page.read_text(encoding="utf-8")
    assert re.search(
        r'id="verdict">2024-02-29 refused: 1 check\(s\) failed \(watch_hours_30d \(usage_agg_30d\)\)', html
    )
    first_check = re.search(r"<h2>Checks of the month.*?</th></tr><tr>(.*?)</tr>", html, flags=re.DOTALL)
    assert first_check and "PSI of watch_hours_30d" in first_check.group(1) and ">fail<" in first_check.group(1)
    assert "the merged files of the refused attempt" in html
    assert html.index("<h2>Checks of the month") < html.index("<h2>Drift of every feature")


# --- the report, in a real browser ----------------------------------------------------------------

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
URL = re.compile(r"\bhttps?://", re.IGNORECASE)
DRAWN = re.compile(r"<(rect|polyline|circle|line)\b")


@dataclass(frozen=True)
class Loaded:
    dom: str
    console: list[str]  # the page's console messages (the pages have no script: any one is an error)
    requests: list[str]  # URLs the page asked the network for
    screenshot: Path


@pytest.fixture(scope="module")
def chromium() -> str:
    found = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Chromium is installed: .ci/run installs Debian's chromium with apt-get")
        pytest.skip("no Chromium on this machine (apt-get install chromium); CI installs it and runs this test")
    return found


def load(chromium: str, page: Path, out: Path) -> Loaded:
    """Open ``page`` from disk in headless Chromium twice: once dumping the DOM with the console on stderr
    and a network log, once for a screenshot (saved under ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
    net_log = out / "net-log.json"
    dumped = subprocess.run(
        [chromium, *flags, f"--user-data-dir={out / 'profile-dom'}", "--enable-logging=stderr", "--v=0"]
        + [f"--log-net-log={net_log}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    screenshot = out / f"{page.parent.name}.png"
    shot = subprocess.run(
        [chromium, *flags, f"--user-data-dir={out / 'profile-shot'}", "--window-size=1200,2400"]
        + [f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    console = [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line]
    return Loaded(dumped.stdout, console, page_requests(net_log), screenshot)


def page_requests(net_log: Path) -> list[str]:
    """The URLs requested on behalf of a page loaded from file:// (Chromium's own background requests,
    for updates or accounts, belong to no page and are left out), other than file: and data: URLs."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        on_page = event["type"] == start and "file://" in str(params.get("network_isolation_key", ""))
        if on_page and not str(params.get("url", "")).startswith(("file:", "data:")):
            urls.append(params["url"])
    return urls


def svgs(dom: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", dom, flags=re.DOTALL)


def test_the_browser_check_sees_console_errors_and_requests(chromium: str, tmp_path: Path):
    """The checks below are not vacuous: a page with a console error and an image from the network is caught."""
    page = tmp_path / "bad" / "index.html"
    page.parent.mkdir()
    page.write_text('<html><body><script>console.error("boom")</script><img src="https://example.invalid/x.png">')
    loaded = load(chromium, page, tmp_path / "out")
    assert any('"boom"' in line for line in loaded.console)
    assert loaded.requests == ["https://example.invalid/x.png"]


def test_the_month_report_and_the_overview_open_offline_in_a_browser(chromium: str, shifted: ShiftedLake, tmp_path):
    pages = report.write_reports(shifted.settings)
    lake_root = shifted.settings.lake_root
    assert pages == [
        report.month_page(lake_root, JAN),
        report.month_page(lake_root, FEB),
        lake_root / "reports/index.html",
    ]
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert len(html.encode()) < 5_000_000
        assert not URL.search(html), f"{page} names a URL: it must need no network"
        assert "<script" not in html and "<link" not in html
        loaded = load(chromium, page, tmp_path / page.parent.name)
        assert loaded.console == [], loaded.console
        assert loaded.requests == [], loaded.requests
        drawn = svgs(loaded.dom)
        assert drawn and all(DRAWN.search(chart) for chart in drawn), page
    feb = load(chromium, report.month_page(lake_root, FEB), tmp_path / "feb-again")
    verdict = re.search(r'id="verdict">(.*?)</div>', feb.dom)
    assert verdict and verdict.group(1) == "2024-02-29 published with 1 warning(s): watch_hours_30d (usage_agg_30d)"
    psi_chart = svgs(feb.dom)[0]
    assert "<title>PSI per feature, largest first</title>" in psi_chart
    bars = re.findall(r"<title>([a-z_0-9]+\.[a-z_0-9]+): ([0-9.e-]+)</title>", psi_chart)
    assert bars[0][0] == "usage_agg_30d.watch_hours_30d" and float(bars[0][1]) > 0.1
    assert all(float(v) < 0.1 for _, v in bars[1:])
    assert ">warn 0.1</text>" in psi_chart  # the threshold line
    assert "usage_agg_30d.watch_hours_30d</b> PSI 0.2364" in feb.dom  # first of the top movers, overlaid
    overview = load(chromium, lake_root / "reports/index.html", tmp_path / "overview-again")
    assert 'href="as_of=2024-02-29/index.html"' in overview.dom and 'href="as_of=2024-01-31/index.html"' in overview.dom


def test_luigi_report_task_writes_the_page_and_is_then_complete(shifted: ShiftedLake, tmp_path):
    lake_root = shifted.settings.lake_root
    env = pipeline_environment(lake_root, str(shifted.settings.postgres.dsn), shifted.settings.postgres.schema)
    command = [luigi_bin(), "--module", "pipeline", "Report", "--as-of", "2024-02-29", "--lock-pid-dir", str(tmp_path)]
    shutil.rmtree(lake_root / "reports", ignore_errors=True)
    first = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    page = report.month_page(lake_root, FEB)
    assert page.is_file() and (lake_root / "reports/index.html").is_file()
    assert report.is_current(lake_root, FEB)
    again = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Did not run any tasks" in again.stdout + again.stderr  # complete: no run record is newer
