"""Issue #20: a month's inputs fixed once (case 1), only the lock holder touches a month's work folder
(case 2), months published out of order (case 3), typo'd as_of and unpublish (case 5), return codes that
do not depend on the working directory (case 7)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import date
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from pipeline import cli
from pipeline.errors import DropChangedError
from pipeline.lakefs import Lake, month_objects
from pipeline.month import plan_month, published_months, stage_and_merge
from pipeline.publish import publish_month
from pipeline.runs import RunStore
from pipeline.schema import PROJECT_ROOT, load_schema
from tests.conftest import FEB, JAN, SEED_MONTHS, luigi_bin, raw_file, record_file, snapshot_file, start_luigi
from tests.drops import edit_rows, seed_copy, set_value
from tests.test_crash_safety import lake_content, pg_content

SCHEMA = load_schema()
MARCH = date(2024, 3, 31)


def run_count(pg: psycopg.Connection, pg_schema: str, as_of: date) -> int:
    if pg.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."pipeline_runs"']).fetchone()[0] is None:
        return 0
    query = sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "pipeline_runs"))
    return pg.execute(query, [as_of]).fetchone()[0]


# --- case 1: a month's inputs are fixed once --------------------------------------------------------


@pytest.mark.parametrize("when", ["before_publish", "checked"])
def test_a_drop_file_touched_after_staging_is_published_complete(settings, tmp_path, monkeypatch, when):  # issue #20
    drop = seed_copy(tmp_path / "jan")
    labels = drop / "labels.csv"
    plan = plan_month(settings, JAN, drop)
    stage_and_merge(settings, plan, SCHEMA)

    def touch() -> None:  # same bytes, a new modification time
        st = labels.stat()
        os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    if when == "before_publish":
        touch()
    else:  # inside the publish, after the checks passed, before the lake's partitions are renamed into place
        import pipeline.month

        real = pipeline.month.failpoint
        monkeypatch.setattr(pipeline.month, "failpoint", lambda name: touch() if name == when else real(name))
    publish_month(settings, plan)
    lake = Lake(settings.lake_root)
    assert JAN in published_months(lake)
    for table in SCHEMA.table_names:
        assert snapshot_file(lake.root, table, JAN).exists(), table
        assert raw_file(lake.root, table, JAN).exists(), table


def test_a_drop_file_rewritten_after_staging_refuses_the_month(settings, tmp_path, pg, pg_schema):  # issue #20
    drop = seed_copy(tmp_path / "jan")
    plan = plan_month(settings, JAN, drop)
    stage_and_merge(settings, plan, SCHEMA)
    edit_rows(drop / "labels.csv", lambda rows: rows[:-1])  # a different file: one row fewer
    with pytest.raises(DropChangedError, match=r"labels.csv changed while the month was running .* nothing was publ"):
        publish_month(settings, plan)
    assert published_months(Lake(settings.lake_root)) == {}
    assert run_count(pg, pg_schema, JAN) == 0
    assert not month_objects(Lake(settings.lake_root), JAN), "no object of the refused month is written"


# --- case 2: only the holder of a month's lock touches its work folder ------------------------------


def test_a_rerun_of_a_published_month_leaves_a_replace_under_way_alone(
    run_luigi, pipeline_env, tmp_path, lake_root, pg, pg_schema, pg_dsn
):  # issue #20: --replace of February while another shell runs February (or a month after it)
    assert run_luigi("Month", "--as-of", FEB.isoformat()).returncode == 0
    fixed = seed_copy(tmp_path / "feb-fixed", "month_001")
    set_value(fixed, "subscriptions", 0, "monthly_fee", "1.23")
    replacing = start_luigi(
        "Month",
        "--as-of",
        FEB.isoformat(),
        "--source",
        str(fixed),
        "--replace",
        "--lock-pid-dir",
        str(tmp_path / "locks-a"),
        env={**pipeline_env, "STREAMFLOW_PAUSE": "merged:3"},
    )
    try:
        work = Lake(lake_root).work(FEB)
        deadline = time.monotonic() + 300
        while not list(work.glob("merge/*/*/result.json")):
            assert replacing.poll() is None, replacing.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the replace never merged a table"
            time.sleep(0.2)
        other = run_luigi("Month", "--as-of", FEB.isoformat())  # the published month, from its own drop
        assert other.returncode == 0, other.stderr[-3000:]
        assert list(work.glob("merge/*/*/result.json")), "the other run deleted the replace's work"
        _, stderr = replacing.communicate(timeout=600)
    finally:
        if replacing.poll() is None:
            replacing.kill()
    assert replacing.returncode == 0, stderr[-3000:]

    clean_root, clean_schema = tmp_path / "clean" / "lake", pg_schema + "_clean"
    env = {"LAKE_ROOT": str(clean_root), "POSTGRES_SCHEMA": clean_schema}
    assert run_luigi("Month", "--as-of", JAN.isoformat(), env=env).returncode == 0
    assert run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(fixed), env=env).returncode == 0
    assert lake_content(lake_root) == lake_content(clean_root)
    assert pg_content(pg, pg_schema) == pg_content(pg, clean_schema)


# --- case 3: months published out of order ----------------------------------------------------------


def _user_ids(path: Path) -> set[str]:
    return {r[0] for r in duckdb.execute(f"SELECT user_id FROM read_csv('{path}', all_varchar=true)").fetchall()}


def test_a_month_published_before_a_later_one_recomputes_it(pipeline_env, tmp_path, lake_root, pg, pg_schema):
    """issue #20: January; then March from --source; then February: March is recomputed on top of February."""
    home = tmp_path / "home"  # a folder whose luigi.cfg configures January only
    home.mkdir()
    (home / "luigi.cfg").write_text(f"[core]\nlocal_scheduler = true\n\n[months]\n{JAN} = {SEED_MONTHS[JAN]}\n")

    def run_luigi(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [luigi_bin(), "--module", "pipeline", *args, "--lock-pid-dir", str(tmp_path / "locks")],
            cwd=home,
            env=pipeline_env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    new_in_feb = _user_ids(SEED_MONTHS[FEB] / "users.csv") - _user_ids(SEED_MONTHS[JAN] / "users.csv")
    assert new_in_feb
    march = seed_copy(tmp_path / "march", "month_001")  # March: February's drop without February's new users
    for table in SCHEMA.table_names:
        edit_rows(march / f"{table}.csv", lambda rows: [r for r in rows if r["user_id"] not in new_in_feb])

    assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    result = run_luigi("Month", "--as-of", MARCH.isoformat(), "--source", str(march))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(record_file(lake_root, MARCH).read_text())["previous_as_of"] == JAN.isoformat()
    result = run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(SEED_MONTHS[FEB]))
    assert result.returncode == 0, result.stderr[-3000:]

    record = json.loads(record_file(lake_root, MARCH).read_text())
    assert record["previous_as_of"] == FEB.isoformat(), "March is rebuilt on top of February"
    assert record["replaced"], "and its manifest keeps the run it replaced"
    snapshot = snapshot_file(lake_root, "users", MARCH)
    in_march = {r[0] for r in duckdb.execute(f"SELECT user_id FROM read_parquet('{snapshot}')").fetchall()}
    assert new_in_feb <= in_march, "February's new users are carried into March"
    live = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "users"))).fetchone()[0]
    assert live == len(in_march), "live holds the recomputed March"
    snap = pg.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "users_snapshots")),
        [MARCH],
    ).fetchone()[0]
    assert snap == len(in_march)


# --- case 5: a typo'd as_of, and taking a month back ------------------------------------------------


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("2099-12-31", "as_of 2099-12-31 is in the future"),
        ("2024-02-15", "as_of 2024-02-15 is not the last day of its month (did you mean 2024-02-29?)"),
        ("2024-02-30", "--as-of '2024-02-30' is not a date"),
    ],
)
def test_a_typo_in_as_of_is_refused_in_one_line(run_luigi, lake_root, as_of, message):  # issue #20
    result = run_luigi("Month", "--as-of", as_of, "--source", str(SEED_MONTHS[FEB]))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not RunStore(lake_root).months()


def test_unpublish_takes_back_the_latest_month_only(settings, pg, pg_schema, monkeypatch, capsys):  # issue #20
    from pipeline.publish import run_month

    run_month(settings, JAN)
    run_month(settings, FEB)
    monkeypatch.setenv("LAKE_ROOT", str(settings.lake_root))
    monkeypatch.setenv("POSTGRES_DSN", settings.postgres.dsn)
    monkeypatch.setenv("POSTGRES_SCHEMA", pg_schema)
    lake = Lake(settings.lake_root)

    assert cli.main(["unpublish", "--as-of", JAN.isoformat(), "--yes"]) == cli.EXIT_ERROR
    assert "month 2024-01-31 is not the latest published month (2024-02-29 is)" in capsys.readouterr().err
    assert cli.main(["unpublish", "--as-of", FEB.isoformat()]) == cli.EXIT_ERROR  # no terminal to confirm on
    assert "pass --yes to confirm" in capsys.readouterr().err
    assert sorted(published_months(lake)) == [JAN, FEB]

    assert cli.main(["unpublish", "--as-of", FEB.isoformat(), "--yes"]) == 0
    assert "unpublished 2024-02-29" in capsys.readouterr().out
    assert sorted(published_months(lake)) == [JAN]
    for kind in ("snapshots", "raw", "rejects"):
        assert not list((settings.lake_root / kind).glob(f"*/as_of={FEB}")), kind
    assert run_count(pg, pg_schema, FEB) == 0
    for table in SCHEMA.table_names:
        live, snapshot = (
            pg.execute(
                sql.SQL("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ({}) t").format(q)
            ).fetchone()
            for q in (
                sql.SQL("SELECT * FROM {}").format(sql.Identifier(pg_schema, table)),
                sql.SQL("SELECT {} FROM {} WHERE as_of = {}").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in SCHEMA.table(table).column_names),
                    sql.Identifier(pg_schema, f"{table}_snapshots"),
                    sql.Literal(JAN),
                ),
            )
        )
        assert live == snapshot, f"live {table} is January again"
        feb_rows = pg.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, f"{table}_snapshots")),
            [FEB],
        ).fetchone()[0]
        assert feb_rows == 0
    assert cli.main(["status"]) == 0  # the lake and PostgreSQL agree
    capsys.readouterr()
    run_month(settings, FEB)  # and the month can be published again
    assert sorted(published_months(lake)) == [JAN, FEB]


# --- case 7: return codes without the repository's luigi.cfg ----------------------------------------


def test_a_failed_month_exits_non_zero_from_any_directory(pipeline_env, tmp_path):  # issue #20
    result = subprocess.run(
        [luigi_bin(), "--module", "pipeline", "Month", "--as-of", str(JAN), "--source", str(tmp_path)]
        + ["--local-scheduler"],  # no luigi.cfg to say so either
        cwd=tmp_path,  # no luigi.cfg here
        env={**pipeline_env, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert not (tmp_path / "luigi.cfg").exists()
    assert result.returncode == 30, result.stderr[-3000:]
    assert "missing file; a drop needs" in result.stderr
