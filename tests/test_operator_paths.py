"""The operator's paths (issue #15): a correction carried through a confirmed --full-dump month, a
correction whose luigi.cfg [months] still names the old folder, and a month PostgreSQL holds that the
lake lacks. Each runs the real commands and asserts the exit code, the one message, and the lake and
PostgreSQL state. (The mistakes a person makes on the command line: tests/test_operator_mistakes.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from pipeline.schema import PROJECT_ROOT
from tests.conftest import FEB, JAN, record_file
from tests.drops import seed_copy, set_value
from tests.test_operations import _remove_users


def manifest(lake_root: Path, as_of: date) -> dict:
    return json.loads(record_file(lake_root, as_of).read_text())


def postgres_runs(pg: psycopg.Connection, pg_schema: str) -> dict[date, str]:
    rows = pg.execute(
        sql.SQL("SELECT as_of, run_id FROM {} WHERE status = 'published'").format(
            sql.Identifier(pg_schema, "pipeline_runs")
        )
    ).fetchall()
    return dict(rows)


def status(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "status"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )


def _jan_and_confirmed_full_dump_feb(run_luigi, tmp_path: Path) -> Path:
    """January from the seeds; February a --full-dump that deletes 1,500 of 7,000 users, confirmed."""
    assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    feb = seed_copy(tmp_path / "feb", "month_001")
    _remove_users(feb, 1500)
    result = run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(feb), "--full-dump", "--confirm-deletions")
    assert result.returncode == 0, result.stderr[-3000:]
    return feb


def _corrected_jan(tmp_path: Path) -> Path:
    jan = seed_copy(tmp_path / "jan")
    set_value(jan, "subscriptions", 0, "monthly_fee", "1.23")
    return jan


def test_replace_through_a_confirmed_full_dump_month_republishes_it_with_its_confirmation(
    run_luigi, pipeline_env, tmp_path: Path, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):  # issue #15.1
    _jan_and_confirmed_full_dump_feb(run_luigi, tmp_path)
    feb_before = manifest(lake_root, FEB)
    assert feb_before["confirm_deletions"] is True and feb_before["tables"]["users"]["deleted"] == 1500

    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(_corrected_jan(tmp_path)), "--replace")
    assert result.returncode == 0, result.stderr[-3000:]
    jan, feb = manifest(lake_root, JAN), manifest(lake_root, FEB)
    assert feb["previous_run_id"] == jan["run_id"]  # February builds on the corrected January
    assert feb["run_id"] != feb_before["run_id"] and feb["replaced"][-1]["run_id"] == feb_before["run_id"]
    assert feb["confirm_deletions"] is True and feb["mode"] == "full-dump"
    assert feb["tables"]["users"]["deleted"] == 1500
    assert postgres_runs(pg, pg_schema) == {JAN: jan["run_id"], FEB: feb["run_id"]}
    report = status(pipeline_env)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "lake and PostgreSQL agree (2 published months)" in report.stdout


def test_a_full_dump_manifest_from_before_the_recorded_confirmation_is_recomputed_as_confirmed(
    run_luigi, tmp_path: Path, lake_root: Path
):  # issue #15.1: its deletions (21% > 10%) say it was confirmed
    _jan_and_confirmed_full_dump_feb(run_luigi, tmp_path)
    path = record_file(lake_root, FEB)
    old = json.loads(path.read_text())
    del old["confirm_deletions"]
    path.write_text(json.dumps(old, indent=2))

    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(_corrected_jan(tmp_path)), "--replace")
    assert result.returncode == 0, result.stderr[-3000:]
    feb = manifest(lake_root, FEB)
    assert feb["previous_run_id"] == manifest(lake_root, JAN)["run_id"] and feb["confirm_deletions"] is True


def test_a_recompute_stopped_halfway_is_named_by_status_and_completed_by_a_rerun(
    run_luigi, pipeline_env, tmp_path: Path, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):  # issue #15.1: the corrected January lacks 5,000 users, so February's volume check now fails
    feb_drop = _jan_and_confirmed_full_dump_feb(run_luigi, tmp_path)
    old = manifest(lake_root, FEB)
    jan_drop = seed_copy(tmp_path / "jan")
    _remove_users(jan_drop, 5000)

    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(jan_drop), "--replace")
    assert result.returncode == 30
    assert "Traceback" not in result.stderr
    assert (
        f"month {JAN} is published, and the months after it recomputed on top of it so far: none; "
        f"recomputing {FEB} failed: month {FEB}: 1 quality check(s) failed; nothing was published:" in result.stderr
    )
    assert (
        f"Months {FEB} still hold their earlier version (built on a run that was replaced; streamflow status names "
        f"them). To complete them: luigi --module pipeline Month --as-of {FEB} --source {feb_drop}\n"
    ) in result.stderr
    jan = manifest(lake_root, JAN)
    assert manifest(lake_root, FEB)["run_id"] == old["run_id"]  # February unchanged, on the replaced January
    assert postgres_runs(pg, pg_schema) == {JAN: jan["run_id"], FEB: old["run_id"]}

    report = status(pipeline_env)
    assert report.returncode == 3
    assert (
        f"  {FEB}: the lake's month is built on run {old['previous_run_id']} of {JAN}, which was replaced "
        f"(now run {jan['run_id']}): run `luigi --module pipeline Month --as-of {FEB} --source {feb_drop}`"
    ) in report.stdout

    (tmp_path / "looser.cfg").write_text("[pipeline]\nvolume_change_ratio = 5\n")  # the operator's decision
    looser = {"LUIGI_CONFIG_PATH": str(tmp_path / "looser.cfg")}
    result = run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(feb_drop), env=looser)
    assert result.returncode == 0, result.stderr[-3000:]
    feb = manifest(lake_root, FEB)
    assert feb["previous_run_id"] == jan["run_id"] and feb["confirm_deletions"] is True
    assert postgres_runs(pg, pg_schema) == {JAN: jan["run_id"], FEB: feb["run_id"]}
    assert status(pipeline_env).returncode == 0


def test_after_a_correction_the_old_configured_folder_is_not_compared(
    run_luigi, tmp_path: Path, lake_root: Path
):  # issue #15.2: luigi.cfg [months] still names data/seeds/month_000
    assert run_luigi("Month", "--as-of", FEB.isoformat()).returncode == 0
    jan_drop = _corrected_jan(tmp_path)
    assert run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(jan_drop), "--replace").returncode == 0
    jan, feb = manifest(lake_root, JAN), manifest(lake_root, FEB)

    result = run_luigi("Month", "--as-of", JAN.isoformat())
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"month {JAN} is published from the correction in {jan_drop} (its run record says so); luigi.cfg [months] "
        f"still names data/seeds/month_000, which is not compared: set '{JAN} = {jan_drop}' in luigi.cfg [months]"
    ) in result.stderr
    result = run_luigi("Backfill", "--start", JAN.isoformat(), "--end", FEB.isoformat())
    assert result.returncode == 0, result.stderr[-3000:]
    assert (manifest(lake_root, JAN), manifest(lake_root, FEB)) == (jan, feb)  # nothing republished
    # a drop that differs from the correction too, given with --source, is still refused:
    other = seed_copy(tmp_path / "other")
    set_value(other, "subscriptions", 0, "monthly_fee", "4.56")
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(other))
    assert result.returncode == 30 and "is published and immutable" in result.stderr


def test_a_month_postgres_committed_but_the_lake_lacks_is_named_with_its_repair(
    run_luigi, pipeline_env, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):  # issue #15.5: the process dies after the PostgreSQL commit, before the lake's rename
    assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    result = run_luigi("Month", "--as-of", FEB.isoformat(), env={"STREAMFLOW_FAILPOINT": "committed"})
    assert result.returncode != 0
    assert FEB in postgres_runs(pg, pg_schema) and not record_file(lake_root, FEB).exists()

    report = status(pipeline_env)
    assert report.returncode == 3
    assert (
        f"the lake has no record of this month (a lake write that failed after PostgreSQL committed?). Run "
        f"`luigi --module pipeline Month --as-of {FEB}` again: it completes the month"
    ) in report.stdout

    assert run_luigi("Month", "--as-of", FEB.isoformat()).returncode == 0
    assert postgres_runs(pg, pg_schema)[FEB] == manifest(lake_root, FEB)["run_id"]
    assert status(pipeline_env).returncode == 0
