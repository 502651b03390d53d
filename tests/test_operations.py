"""Operating the lake (issue #4): full dumps that delete, corrections with --replace, backfills,
and months run through a real central scheduler (luigid)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import date
from pathlib import Path

import duckdb
import pytest
from psycopg import sql

from pipeline.errors import DeletionLimitError
from pipeline.generate import generate_drops
from pipeline.publish import run_month
from pipeline.runs import RunStore
from pipeline.schema import load_schema
from tests.conftest import FEB, JAN, PROJECT_ROOT, SEED_MONTHS, luigi_bin, record_file, snapshot_file
from tests.drops import edit_rows, seed_copy, set_value

SCHEMA = load_schema()
MARCH = date(2024, 3, 31)


def manifest(lake_root: Path, as_of: date) -> dict:
    return json.loads(record_file(lake_root, as_of).read_text())


def snapshot_value(lake_root: Path, table: str, as_of: date, column: str, user_id: str):
    rows = duckdb.execute(
        f"SELECT {column} FROM read_parquet('{snapshot_file(lake_root, table, as_of)}') WHERE user_id = ?",
        [user_id],
    ).fetchall()
    return rows[0][0] if rows else None


def _remove_users(drop: Path, count: int) -> list[str]:
    removed: list[str] = []
    header_rows = {}
    for table in SCHEMA.table_names:

        def cut(rows, table=table):
            if not removed:
                removed.extend(r["user_id"] for r in rows[:count])
            header_rows[table] = len(rows)
            return [r for r in rows if r["user_id"] not in removed]

        edit_rows(drop / f"{table}.csv", cut)
    return removed


def test_full_dump_deletes_absent_users_from_snapshot_and_live(settings, tmp_path, pg, pg_schema):
    run_month(settings, JAN)
    feb = seed_copy(tmp_path / "feb", "month_001")
    gone = _remove_users(feb, 50)
    record = run_month(settings, FEB, feb, full_dump=True)
    assert record.tables["users"]["deleted"] == 50
    assert record.tables["labels"]["deleted"] == 50
    for user in gone[:3]:
        assert snapshot_value(settings.lake_root, "users", FEB, "user_id", user) is None
        assert snapshot_value(settings.lake_root, "users", JAN, "user_id", user) == user  # history stays
    live = pg.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE user_id = ANY(%s)").format(sql.Identifier(pg_schema, "users")), [gone]
    ).fetchone()[0]
    assert live == 0
    kept = pg.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE user_id = ANY(%s) AND as_of = %s").format(
            sql.Identifier(pg_schema, "users_snapshots")
        ),
        [gone, JAN],
    ).fetchone()[0]
    assert kept == 50
    changes = pg.execute(
        sql.SQL("SELECT changes FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "pipeline_runs")), [FEB]
    ).fetchone()[0]
    assert changes["users"]["deleted"] == 50


def test_full_dump_deleting_too_many_users_needs_confirmation(settings, tmp_path, pg, pg_schema):
    run_month(settings, JAN)
    feb = seed_copy(tmp_path / "feb", "month_001")
    _remove_users(feb, 1500)  # about 21% of 7,000
    with pytest.raises(DeletionLimitError, match=r"would delete 1500 of 7000 users \(21.4%\).*--confirm-deletions"):
        run_month(settings, FEB, feb, full_dump=True)
    assert not record_file(settings.lake_root, FEB).exists()
    from pipeline.publish import PublishOptions

    settings_loose = settings.with_(volume_change_ratio=0.9)
    record = run_month(settings_loose, FEB, feb, full_dump=True, options=PublishOptions(confirm_deletions=True))
    assert record.tables["users"]["deleted"] == 1500


def test_full_dump_refusal_through_luigi(run_luigi, tmp_path, lake_root):
    assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    feb = seed_copy(tmp_path / "feb", "month_001")
    _remove_users(feb, 1500)
    result = run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(feb), "--full-dump")
    assert result.returncode != 0 and "--confirm-deletions" in result.stderr and "Traceback" not in result.stderr


def test_a_changed_drop_for_a_published_month_is_refused_with_how_to_replace(run_luigi, tmp_path, lake_root):
    assert run_luigi("Month", "--as-of", FEB.isoformat()).returncode == 0
    jan = seed_copy(tmp_path / "jan")
    set_value(jan, "subscriptions", 0, "monthly_fee", "1.23")
    before = manifest(lake_root, JAN)
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(jan))
    assert result.returncode != 0
    assert "is published and immutable" in result.stderr and "--replace" in result.stderr
    assert "subscriptions.csv published" in result.stderr
    assert manifest(lake_root, JAN) == before
    # as a dependency of February, January is not compared with any folder:
    assert run_luigi("Month", "--as-of", FEB.isoformat()).returncode == 0


def test_replace_recomputes_the_month_and_every_later_one(run_luigi, tmp_path, lake_root, pg, pg_schema):
    assert run_luigi("Month", "--as-of", FEB.isoformat()).returncode == 0
    jan = seed_copy(tmp_path / "jan")
    # a user that February's drop does not mention: the correction must carry into February
    feb_users = {
        r[0]
        for r in duckdb.execute(
            f"SELECT user_id FROM read_csv('{SEED_MONTHS[FEB]}/payments_agg_90d.csv', all_varchar=true)"
        ).fetchall()
    }
    old_jan = manifest(lake_root, JAN)
    edit_rows(
        jan / "payments_agg_90d.csv",
        lambda rows: [{**r, "failed_payments_90d": "4"} if i == 0 else r for i, r in enumerate(rows)],
    )
    user = duckdb.execute(
        f"SELECT user_id FROM read_csv('{jan}/payments_agg_90d.csv', all_varchar=true) LIMIT 1"
    ).fetchone()[0]
    assert user in feb_users  # the seed is a full dump; make February silent about this user instead
    feb = seed_copy(tmp_path / "feb", "month_001")
    edit_rows(feb / "payments_agg_90d.csv", lambda rows: [r for r in rows if r["user_id"] != user])
    # publish february from the edited folder first (a fresh lake), so it carries the user from January
    lake2 = tmp_path / "lake2"
    env = {"LAKE_ROOT": str(lake2), "POSTGRES_SCHEMA": pg_schema + "_b"}
    assert run_luigi("Month", "--as-of", JAN.isoformat(), env=env).returncode == 0
    assert run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(feb), env=env).returncode == 0
    assert snapshot_value(lake2, "payments_agg_90d", FEB, "failed_payments_90d", user) != 4
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(jan), "--replace", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot_value(lake2, "payments_agg_90d", JAN, "failed_payments_90d", user) == 4
    assert snapshot_value(lake2, "payments_agg_90d", FEB, "failed_payments_90d", user) == 4  # carried
    live = pg.execute(
        sql.SQL("SELECT failed_payments_90d FROM {} WHERE user_id = %s").format(
            sql.Identifier(pg_schema + "_b", "payments_agg_90d")
        ),
        [user],
    ).fetchone()[0]
    assert live == 4  # the latest month changed, so live did too
    snap = pg.execute(
        sql.SQL("SELECT as_of, failed_payments_90d FROM {} WHERE user_id = %s ORDER BY as_of").format(
            sql.Identifier(pg_schema + "_b", "payments_agg_90d_snapshots")
        ),
        [user],
    ).fetchall()
    assert [v for _, v in snap] == [4, 4]
    new_jan = manifest(lake2, JAN)
    assert new_jan["replaced"][0]["sha256"]["payments_agg_90d"] == old_jan["files"]["payments_agg_90d"]["sha256"]
    assert new_jan["files"]["payments_agg_90d"]["sha256"] != old_jan["files"]["payments_agg_90d"]["sha256"]
    assert manifest(lake2, FEB)["replaced"], "February was recomputed and says so"


def test_replacing_the_only_month_removes_the_users_the_correction_dropped_from_live(settings, tmp_path, pg, pg_schema):
    """Live holds the month being corrected, not the one before it: the whole corrected month is
    upserted and the live keys it no longer has are deleted (#6 regression: the first month's
    correction once took the incremental path, which only deletes what a full dump removed)."""
    run_month(settings, JAN)
    jan = seed_copy(tmp_path / "jan")
    gone = _remove_users(jan, 20)
    run_month(settings.with_(volume_change_ratio=0.9), JAN, jan, replace=True)
    for table in SCHEMA.table_names:
        live = pg.execute(
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE user_id = ANY(%s)) FROM {}").format(
                sql.Identifier(pg_schema, table)
            ),
            [gone],
        ).fetchone()
        snapshot_rows = duckdb.execute(
            f"SELECT count(*) FROM read_parquet('{snapshot_file(settings.lake_root, table, JAN)}')"
        ).fetchone()[0]
        assert live == (snapshot_rows, 0), table


def test_backfill_ingests_configured_months_in_order_and_skips_done(run_luigi, tmp_path, lake_root):
    drops = generate_drops(tmp_path / "drops", users=1500, months=3, seed=7)
    config = tmp_path / "backfill.cfg"
    config.write_text("[months]\n" + "".join(f"{d} = {p}\n" for d, p in drops))
    env = {"LUIGI_CONFIG_PATH": str(config)}
    result = run_luigi("Backfill", "--start", "2024-01-01", "--end", "2024-03-31", "--workers", "2", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    published = {d.isoformat(): r.to_json() for d, r in RunStore(lake_root).published().items()}
    assert sorted(published) == ["2024-01-31", "2024-02-29", "2024-03-31"]
    assert published["2024-03-31"]["previous_as_of"] == "2024-02-29"
    assert published["2024-02-29"]["previous_as_of"] == "2024-01-31"
    again = run_luigi("Backfill", "--start", "2024-01-01", "--end", "2024-03-31", env=env)
    assert again.returncode == 0
    rerun = {d.isoformat(): r.run_id for d, r in RunStore(lake_root).published().items()}
    assert rerun == {d: m["run_id"] for d, m in published.items()}, "done months are skipped, not run again"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_month_through_a_real_luigid_with_two_workers(run_luigi, tmp_path, lake_root):
    port = _free_port()
    state, logs = tmp_path / "luigid-state", tmp_path / "luigid-logs"
    state.mkdir()
    logs.mkdir()
    luigid = Path(luigi_bin()).with_name("luigid")
    server = subprocess.Popen(
        [
            str(luigid),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-path",
            str(state / "state.pickle"),
            "--logdir",
            str(logs),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        config = tmp_path / "central.cfg"
        config.write_text((PROJECT_ROOT / "luigi-central.cfg").read_text())
        result = run_luigi(
            "Month",
            "--as-of",
            FEB.isoformat(),
            "--workers",
            "2",
            "--scheduler-host",
            "127.0.0.1",
            "--scheduler-port",
            str(port),
            env={"LUIGI_CONFIG_PATH": str(config)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "local scheduler" not in result.stderr.lower()
        assert RunStore(lake_root).published_months() == [JAN, FEB]
        query = urllib.parse.quote(json.dumps({"status": "DONE", "upstream_status": "", "search": ""}))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={query}", timeout=10) as reply:
            done = json.loads(reply.read())["response"]
        families = sorted({task["name"] for task in done.values()})
        assert families == ["MergeTable", "Month", "StageTable"]  # the central scheduler ran them all
        assert sum(task["name"] == "Month" for task in done.values()) == 2
    finally:
        server.terminate()
        server.wait(10)
