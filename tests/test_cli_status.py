"""`streamflow status` (issue #4, item 2): one row per month and whether the lake and PostgreSQL agree,
through ``python -m pipeline`` in a subprocess, against a real lake and a real PostgreSQL.

The helpers at the top (``cli``, ``luigi``) are shared with test_lake_views.py and test_training.py;
the published two-month lake they all read is the session's ``published`` (tests/conftest.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pipeline.cli import build_parser, main
from pipeline.schema import PROJECT_ROOT
from tests.conftest import FEB, JAN, PublishedLake, luigi_bin, record_file
from tests.drops import seed_copy, set_value

MARCH = "2024-03-31"


# --- shared helpers -----------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` from the repository root, as a person runs ``streamflow ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=PROJECT_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def luigi(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [luigi_bin(), "--module", "pipeline", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_cli(pipeline_env: dict[str, str]):
    """Run ``python -m pipeline ARGS`` with this test's lake, database and schema."""

    def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        return cli({**pipeline_env, **(env or {})}, *args, stdin=stdin)

    return run


def status_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout)


def month_line(text: str, as_of: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(as_of)]
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- tests --------------------------------------------------------------------------------------


def test_status_after_two_months_shows_both_published_and_agrees(published: PublishedLake):
    result = cli(published.env, "status")
    assert result.returncode == 0, result.stderr
    jan, feb = month_line(result.stdout, JAN.isoformat()), month_line(result.stdout, FEB.isoformat())
    assert jan.split()[:4] == [JAN.isoformat(), "published", "7000", "+7000"]
    assert feb.split()[:4] == [FEB.isoformat(), "published", "7140", "+140"]
    assert jan.endswith("agrees") and feb.endswith("agrees")
    assert "lake and PostgreSQL agree (2 published months)." in result.stdout


def test_status_json_has_one_entry_per_month_with_both_run_ids(published: PublishedLake):
    result = cli(published.env, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = status_json(result)
    assert report["agree"] is True and report["postgres"]["error"] is None
    assert report["postgres"]["schema"] == published.pg_schema
    assert [m["as_of"] for m in report["months"]] == [JAN.isoformat(), FEB.isoformat()]
    for month in report["months"]:
        path = record_file(published.root, JAN if month["as_of"] == JAN.isoformat() else FEB)
        record = json.loads(path.read_text())
        assert month["status"] == "published" and month["agrees"] is True
        assert month["run_id"] == month["postgres_run_id"] == record["run_id"]
        assert month["changes"]["users"]["inserted"] == record["tables"]["users"]["inserted"]
        assert month["checks_failed"] == 0 and month["published_at"] == record["published_at"]


def test_status_with_postgres_down_shows_the_lake_side_and_one_error_line(published: PublishedLake):
    port = free_port()
    result = cli({**published.env, "POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:{port}/postgres"}, "status")
    assert result.returncode == 4
    assert month_line(result.stdout, FEB.isoformat()).split()[:3] == [FEB.isoformat(), "published", "7140"]
    assert "PostgreSQL could not be asked" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: PostgreSQL at 127.0.0.1:{port}/postgres is not available")
    assert "Traceback" not in result.stderr


def test_status_of_an_empty_lake_says_no_month_has_run(run_cli):
    result = run_cli("status")
    assert result.returncode == 0, result.stderr
    assert "no month has run yet" in result.stdout
    assert status_json(run_cli("status", "--json"))["months"] == []


def test_failed_third_month_shows_failed_and_agrees_until_postgres_loses_february(
    run_luigi, run_cli, pg: psycopg.Connection, pg_schema: str, lake_root: Path, tmp_path: Path
):
    assert run_luigi("Month", "--as-of", FEB.isoformat()).returncode == 0
    march = seed_copy(tmp_path / "march", "month_001")
    set_value(march, "usage_agg_30d", 0, "watch_hours_30d", "-5")
    failed = run_luigi("Month", "--as-of", MARCH, "--source", str(march))
    assert failed.returncode != 0 and "watch_hours_30d is not negative" in failed.stderr

    result = run_cli("status")
    assert result.returncode == 0, result.stdout + result.stderr
    line = month_line(result.stdout, MARCH)
    assert line.split()[1] == "failed" and line.endswith("agrees (not in pipeline_runs)")
    assert f"{MARCH}  fail  watch_hours_30d is not negative (usage_agg_30d: 1)" in result.stdout
    march_json = status_json(run_cli("status", "--json"))["months"][2]
    assert march_json["status"] == "failed" and march_json["checks_failed"] == 1
    assert march_json["failed_attempts"] == 1 and march_json["postgres_run_id"] is None

    pg.execute(sql.SQL("DELETE FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "pipeline_runs")), [FEB])
    result = run_cli("status")
    assert result.returncode == 3
    assert month_line(result.stdout, FEB.isoformat()).endswith("DISAGREES")
    assert month_line(result.stdout, JAN.isoformat()).endswith("agrees")
    assert "lake and PostgreSQL DISAGREE:" in result.stdout
    feb_run = json.loads(record_file(lake_root, FEB).read_text())["run_id"]
    assert f"  {FEB}: the lake published run {feb_run}; PostgreSQL has no pipeline_runs row" in result.stdout
    report = status_json(run_cli("status", "--json"))
    assert report["agree"] is False
    assert [m["as_of"] for m in report["months"] if not m["agrees"]] == [FEB.isoformat()]


def test_status_disagrees_on_a_month_only_postgres_has(published: PublishedLake, tmp_path: Path):
    result = cli({**published.env, "LAKE_ROOT": str(tmp_path / "another-lake")}, "status")
    assert result.returncode == 3
    assert f"  {JAN}: PostgreSQL's pipeline_runs holds run " in result.stdout
    assert "the lake has no record of this month" in result.stdout


@pytest.mark.parametrize("command", ["status", "sql", "shell", "stop-embedded"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: streamflow {command}") and "--lake DIR" in out
    assert len(out.split("\n\n")[1]) > 40, "a description, not just the usage line"


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]):
    commands = build_parser()._subparsers._group_actions[0].choices
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in commands)


def test_a_pipeline_error_is_one_line_with_exit_code_2(run_cli, lake_root: Path):
    path = record_file(lake_root, JAN)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"as_of": JAN.isoformat(), "status": "published", "run_id": "x"}))
    result = run_cli("sql", "SELECT count(*) FROM users")
    assert result.returncode == 2
    assert result.stderr.startswith("error: users: a published month's snapshot is missing from the lake")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
