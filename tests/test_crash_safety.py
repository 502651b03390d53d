"""Crashes and concurrency (issue #5): the process SIGKILLed at every stage boundary and inside the
PostgreSQL transaction, PostgreSQL restarted mid-sync, the same month run twice at once. After a
rerun, the lake and PostgreSQL equal a clean run's, and nothing is left behind."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from datetime import date
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from pipeline import lakefs
from pipeline.failpoints import POINTS
from pipeline.pg.locks import month_lock_key
from pipeline.runs import RunStore
from pipeline.schema import load_schema
from tests.conftest import (
    FEB,
    JAN,
    PROJECT_ROOT,
    PublishedLake,
    luigi_bin,
    pipeline_environment,
    record_file,
    start_luigi,
)

SCHEMA = load_schema()
AFTER_COMMIT = POINTS.index("committed")
IN_PUBLISH_SCRATCH = (POINTS.index("in_sync"), POINTS.index("committed"))  # the COPY scratch folder exists


def lake_content(lake_root: Path) -> dict[str, str]:
    """md5 of the rows of every object the published run records name (file bytes may differ in metadata,
    rows may not): the lake as a reader sees it."""
    content = {}
    for as_of, record in RunStore(lake_root).published().items():
        for table in SCHEMA.table_names:
            for kind in lakefs.OBJECT_KINDS:
                path = record.object_file(lake_root, kind, table)
                assert path is not None and path.is_file(), (as_of, table, kind, path)
                content[f"{kind}/{table}/{as_of}"] = duckdb.execute(
                    f"SELECT md5(string_agg(t::VARCHAR, '|' ORDER BY t::VARCHAR)) FROM read_parquet('{path}') t"
                ).fetchone()[0]
    return content


def pg_content(pg: psycopg.Connection, pg_schema: str) -> dict[str, tuple]:
    content = {}
    for table in SCHEMA.table_names:
        for name in (table, f"{table}_snapshots"):
            content[name] = pg.execute(
                sql.SQL("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t").format(
                    sql.Identifier(pg_schema, name)
                )
            ).fetchone()
    content["pipeline_runs"] = pg.execute(
        sql.SQL("SELECT array_agg(as_of ORDER BY as_of), array_agg(status) FROM {}").format(
            sql.Identifier(pg_schema, "pipeline_runs")
        )
    ).fetchone()
    return content


def leftovers(lake_root: Path, pg: psycopg.Connection, pg_schema: str) -> list[str]:
    found = [str(p.relative_to(lake_root)) for p in lake_root.rglob(".tmp-*")]
    store = RunStore(lake_root)
    for as_of in {date.fromisoformat(p.name.removeprefix("as_of=")) for p in lake_root.glob("*/*/as_of=*")}:
        known = store.known_runs(as_of) | {None}  # objects no record names: a run that never published
        found += [str(o.path) for o in lakefs.month_objects(store.lake, as_of) if o.run_id not in known]
    work = lake_root / "_work"
    if work.exists():
        found += [str(p.relative_to(lake_root)) for p in work.iterdir()]
    found += [
        r[0]
        for r in pg.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s", [f"{pg_schema}__staging%"]
        ).fetchall()
    ]
    return found


@pytest.fixture(scope="module")
def clean_run(published: PublishedLake, pg_dsn: str) -> tuple[dict, dict]:
    """Lake and PostgreSQL content after an uninterrupted run of both seed months (the session's)."""
    with psycopg.connect(pg_dsn, autocommit=True) as pg:
        return lake_content(published.root), pg_content(pg, published.pg_schema)


def _env(lake_root: Path, dsn: str, schema: str, **extra: str) -> dict[str, str]:
    return pipeline_environment(lake_root, dsn, schema, **extra)


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_any_point_a_rerun_ends_as_a_clean_run(point, clean_run, run_luigi, lake_root, pg, pg_schema):
    scratch = lake_root.parent / "scratch"  # scratch_dir's default, the system's temporary folder
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    assert run_luigi("Month", "--as-of", JAN.isoformat(), env=env).returncode == 0
    crashed = run_luigi("Month", "--as-of", FEB.isoformat(), env={**env, "STREAMFLOW_FAILPOINT": point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    if IN_PUBLISH_SCRATCH[0] <= POINTS.index(point) <= IN_PUBLISH_SCRATCH[1]:
        assert list(scratch.glob("streamflow-copy-*")), "killed while publishing, the CSVs for COPY are left"
    manifest = record_file(lake_root, FEB)
    assert manifest.exists() == (point == "manifest_written"), "the lake never says published early"
    runs = pg.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "pipeline_runs")), [FEB]
    ).fetchone()[0]
    assert runs == (1 if POINTS.index(point) >= AFTER_COMMIT else 0), "PostgreSQL publishes only by committing"

    rerun = run_luigi("Month", "--as-of", FEB.isoformat(), env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert list(scratch.glob("streamflow-*")) == [], "the rerun removes the killed run's scratch"
    lake, postgres = clean_run
    assert lake_content(lake_root) == lake
    assert pg_content(pg, pg_schema) == postgres
    assert leftovers(lake_root, pg, pg_schema) == []
    assert json.loads(record_file(lake_root, FEB).read_text())["status"] == "published"


def test_postgres_restarted_during_the_sync_fails_clearly_then_a_rerun_completes(tmp_path, lake_root):
    import pgserver
    from pgserver._commands import pg_ctl

    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    dsn = server.get_uri()
    env = _env(lake_root, dsn, "restarted", STREAMFLOW_PAUSE="in_sync:6")
    try:
        run = start_luigi("Month", "--as-of", JAN.isoformat(), env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the run sits inside its publish transaction
            with psycopg.connect(dsn, autocommit=True) as conn:
                # the publish order's advisory lock, held in a transaction (the month's lock is not)
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE l.locktype = 'advisory' AND l.granted AND a.state = 'idle in transaction'"
                ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.2)
        pg_ctl(["-w", "restart", "-m", "fast"], pgdata=tmp_path / "pgdata", user=server.system_user)
        _, stderr = run.communicate(timeout=300)
        assert run.returncode != 0
        assert "lost the connection to PostgreSQL" in stderr and "run it again" in stderr, stderr[-3000:]
        assert "Traceback" not in stderr
        assert not record_file(lake_root, JAN).exists()
        with psycopg.connect(dsn, autocommit=True) as conn:
            # the consumers' tables are made inside the publish transaction: the restart may leave none
            if conn.execute("SELECT to_regclass('restarted.pipeline_runs')").fetchone()[0] is not None:
                assert conn.execute("SELECT count(*) FROM restarted.pipeline_runs").fetchone()[0] == 0
        rerun = subprocess.run(
            [luigi_bin(), "--module", "pipeline", "Month", "--as-of", JAN.isoformat()],
            cwd=PROJECT_ROOT,
            env={**env, "STREAMFLOW_PAUSE": ""},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT status FROM restarted.pipeline_runs").fetchall() == [("published",)]
    finally:
        server.cleanup()
        # pgserver stops the postmaster it started; the restart made a new one, which would outlive the tests
        with contextlib.suppress(Exception):
            pg_ctl(["-w", "stop", "-m", "fast"], pgdata=tmp_path / "pgdata", user=server.system_user)


def test_the_same_month_twice_at_once_publishes_once(run_luigi, pipeline_env, lake_root, pg, pg_schema):
    runs = [
        start_luigi("Month", "--as-of", JAN.isoformat(), *extra, env=pipeline_env) for extra in ([], ["--workers", "2"])
    ]
    outputs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [o[1][-2000:] for o in outputs]
    said = "".join(o[1] for o in outputs)
    assert "was published by another run meanwhile" in said
    run_rows = pg.execute(
        sql.SQL("SELECT run_id FROM {}").format(sql.Identifier(pg_schema, "pipeline_runs"))
    ).fetchall()
    assert run_rows == [(json.loads(record_file(lake_root, JAN).read_text())["run_id"],)]
    for table in SCHEMA.table_names:
        count, distinct = pg.execute(
            sql.SQL("SELECT count(*), count(DISTINCT user_id) FROM {}").format(
                sql.Identifier(pg_schema, f"{table}_snapshots")
            )
        ).fetchone()
        assert count == distinct


def test_a_month_waits_for_its_lock_held_by_another_machine_in_postgresql(pipeline_env, lake_root, pg, pg_schema):
    """The month's lock lives in PostgreSQL, not in the lake's folder: a session holding it (here the
    test's own connection, as another machine's run would) makes a run of the month wait, and letting it
    go lets the run publish. Another month of the same schema is not held up."""
    key = month_lock_key(pg_schema, JAN)
    other_month = month_lock_key(pg_schema, FEB)
    assert key != other_month and key != month_lock_key(pg_schema + "_other", JAN)
    pg.execute("SELECT pg_advisory_lock(%s)", [key])
    run = start_luigi("Month", "--as-of", JAN.isoformat(), env=pipeline_env)
    try:
        deadline = time.monotonic() + 120
        while not _sessions_on(pg, key, granted=False):  # the run's session queued behind ours
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never asked PostgreSQL for the month's lock"
            time.sleep(0.2)
        time.sleep(1)
        assert run.poll() is None, "the run went on while another session held the month's lock"
        assert not record_file(lake_root, JAN).exists()
        pg.execute("SELECT pg_advisory_unlock(%s)", [key])
        _, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr[-3000:]
    assert f"month {JAN} is locked by another run (PostgreSQL backend pid {pg.info.backend_pid}" in stderr
    assert json.loads(record_file(lake_root, JAN).read_text())["status"] == "published"
    assert not (lake_root / "_locks").exists()
    assert _sessions_on(pg, key) == 0, "the run's lock ends with its connection"


def _sessions_on(pg: psycopg.Connection, key: int, granted: bool | None = None) -> int:
    """How many sessions hold (granted), wait for (not granted) or either the advisory lock ``key``."""
    return pg.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND (%s::boolean IS NULL OR granted = %s) "
        "AND objsubid = 1 AND classid = ((%s::bigint >> 32) & 4294967295)::oid "
        "AND objid = (%s::bigint & 4294967295)::oid",
        [granted, granted, key, key],
    ).fetchone()[0]


def test_two_months_at_once_both_end_published_in_order(pipeline_env, lake_root, pg, pg_schema):
    runs = [start_luigi("Month", "--as-of", d.isoformat(), env=pipeline_env) for d in (FEB, JAN)]
    outputs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [o[1][-2000:] for o in outputs]
    manifests = {d: json.loads(record_file(lake_root, d).read_text()) for d in (JAN, FEB)}
    assert manifests[JAN]["published_at"] < manifests[FEB]["published_at"]
    assert manifests[FEB]["previous_as_of"] == JAN.isoformat()
    rows = pg.execute(
        sql.SQL("SELECT as_of, status FROM {} ORDER BY as_of").format(sql.Identifier(pg_schema, "pipeline_runs"))
    ).fetchall()
    assert rows == [(JAN, "published"), (FEB, "published")]
