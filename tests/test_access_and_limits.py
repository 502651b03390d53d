"""Access and limits (issue #5): a consumer role that can read but not write, secrets that never reach
a log, a drop larger than DuckDB's memory limit, and scratch kept out of the lake."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipeline import duck, scratch
from pipeline.config import Settings
from pipeline.generate import generate_drops
from pipeline.publish import run_month
from pipeline.schema import load_schema
from tests.conftest import JAN, PROJECT_ROOT, fresh_database, record_file, snapshot_file

SCHEMA = load_schema()


@pytest.fixture
def own_database(pg_server_dsn: str):
    """A database of its own, where the pipeline publishes into `public` as in production."""
    with fresh_database(pg_server_dsn, "streamflow_access") as dsn:
        yield dsn
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS streamflow_test_alice")
        # it may hold privileges in another database of this server: leave it there then
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):
            conn.execute("DROP ROLE IF EXISTS streamflow_reader")


def test_consumer_role_reads_everything_and_writes_nothing(settings, own_database: str):
    from pipeline.config import PostgresSettings

    with psycopg.connect(own_database, autocommit=True) as admin:
        admin.execute((PROJECT_ROOT / "sql" / "consumer_role.sql").read_text())  # before the first month, as in compose
        admin.execute("DROP ROLE IF EXISTS streamflow_test_alice")
        admin.execute("CREATE ROLE streamflow_test_alice LOGIN IN ROLE streamflow_reader")
    run_month(settings.with_(postgres=PostgresSettings(dsn=own_database, schema="public")), JAN)
    params = conninfo_to_dict(own_database)
    params["user"] = "streamflow_test_alice"
    with psycopg.connect(make_conninfo(**params), autocommit=True) as alice:
        for table in ("users", "labels_snapshots", "pipeline_runs", "subscriptions_profile_snapshots"):
            assert alice.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0] > 0
        for statement in (
            "INSERT INTO labels (user_id, churn_label) VALUES ('x', true)",
            "UPDATE users SET user_gender = 'Male'",
            "DELETE FROM pipeline_runs",
            "TRUNCATE labels_snapshots",
            "CREATE TABLE public.mine (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                alice.execute(statement)


def test_the_password_never_reaches_a_log_or_the_lake(run_luigi, pg_dsn: str, lake_root: Path):
    secret = f"pw-{uuid.uuid4().hex}"
    params = conninfo_to_dict(pg_dsn)
    env = {
        "POSTGRES_DSN": "",
        "POSTGRES_HOST": params.get("host") or "localhost",
        "POSTGRES_PORT": str(params.get("port") or 5432),
        "POSTGRES_USER": params.get("user") or "postgres",
        "POSTGRES_DB": params["dbname"],
        "POSTGRES_PASSWORD": secret,
    }
    ok = run_luigi("Month", "--as-of", JAN.isoformat(), "--log-level", "DEBUG", env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    failed = run_luigi("Month", "--as-of", JAN.isoformat(), env={**env, "POSTGRES_PORT": "1"})
    lake_text = "".join(p.read_text(errors="replace") for p in lake_root.rglob("*.json"))
    for text in (ok.stdout, ok.stderr, failed.stdout, failed.stderr, lake_text):
        assert secret not in text


def test_a_drop_larger_than_duckdb_memory_limit_is_ingested(settings, tmp_path: Path):
    """DuckDB works within duckdb_memory_limit and spills to scratch_dir beyond it, never into the lake;
    each connection's spill folder is gone once the month is done."""
    ((as_of, drop),) = generate_drops(tmp_path / "big", users=400_000, months=1, seed=3)
    drop_bytes = sum(p.stat().st_size for p in drop.glob("*.csv"))
    limit = "48MB"
    assert drop_bytes > 48 * 1024 * 1024, drop_bytes
    scratch = tmp_path / "scratch"
    record = run_month(settings.with_(duckdb_memory_limit=limit, months={}, scratch_dir=scratch), as_of, drop)
    assert record.rows["users"] == 400_000
    users = duckdb.execute(
        f"SELECT count(*) FROM read_parquet('{snapshot_file(settings.lake_root, 'users', as_of)}')"
    ).fetchone()[0]
    assert users == 400_000
    assert not (settings.lake_root / "_tmp").exists()
    assert list(scratch.iterdir()) == []
    assert json.loads(record_file(settings.lake_root, as_of).read_text())["status"] == "published"


def test_duckdb_spills_into_a_folder_of_its_own_under_scratch_dir_removed_at_close(tmp_path: Path):
    settings = Settings(
        lake_root=tmp_path / "lake", scratch_dir=tmp_path / "scratch", duckdb_memory_limit="100MB", duckdb_threads=1
    )
    with duck.connect(settings) as con:
        spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
        assert spill.parent == tmp_path / "scratch" and spill.name.startswith("streamflow-duckdb-")
        rows = "SELECT range AS i, md5(range::VARCHAR) AS a, md5((-range)::VARCHAR) AS b FROM range(3000000)"
        con.execute(f"CREATE TABLE t AS {rows}")
        assert con.execute("SELECT count(*) FROM (SELECT * FROM t ORDER BY a)").fetchone()[0] == 3_000_000
        assert any(spill.iterdir()), "DuckDB did not spill: the test needs more rows than its memory limit"
    assert not spill.exists()
    assert not (tmp_path / "lake").exists()


def test_a_killed_process_s_scratch_folder_is_removed_by_the_next_one_and_a_live_one_is_kept(tmp_path: Path):
    settings = Settings(lake_root=tmp_path / "lake", scratch_dir=tmp_path / "scratch")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with scratch.folder(settings, "copy") as mine:
        left = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{dead}-"))
        left.mkdir()
        (left / "users.csv").write_text("1,2\n")
        with scratch.folder(settings, "copy") as other:  # making a folder sweeps the dead process's
            assert not left.exists()
            assert mine.is_dir() and other.is_dir()
        assert not other.exists() and mine.is_dir()
    assert list((tmp_path / "scratch").iterdir()) == []
