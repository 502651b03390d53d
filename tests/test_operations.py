"""Operating the lake (issue #4): full dumps that delete, corrections with --replace, backfills,
and months run through a real central scheduler (luigid)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
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
from tests.conftest import (
    FEB,
    JAN,
    PROJECT_ROOT,
    SEED_MONTHS,
    luigi_bin,
    record_file,
    snapshot_file,
    start_luigi,
)
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


@contextlib.contextmanager
def luigid(tmp_path: Path, scheduler: str = "") -> Iterator[int]:
    """A real central scheduler on a free port of 127.0.0.1 for the block; yields the port.
    ``scheduler``: lines of its [scheduler] section."""
    port = _free_port()
    config = tmp_path / "luigid.cfg"
    config.write_text(f"[scheduler]\n{scheduler}\n")
    state, logs = tmp_path / "luigid-state", tmp_path / "luigid-logs"
    state.mkdir()
    logs.mkdir()
    server = subprocess.Popen(
        [str(Path(luigi_bin()).with_name("luigid")), "--address", "127.0.0.1", "--port", str(port)]
        + ["--state-path", str(state / "state.pickle"), "--logdir", str(logs)],
        cwd=tmp_path,
        env={**os.environ, "LUIGI_CONFIG_PATH": str(config)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def _luigid_api(port: int, method: str, **data: object) -> dict:
    query = urllib.parse.quote(json.dumps(data))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?data={query}", timeout=10) as reply:
        return json.loads(reply.read())["response"] or {}


def _until_luigid_forgot_dead_workers(port: int, timeout: float = 60) -> None:
    """Until luigid has taken the tasks of a killed worker back (RUNNING → FAILED after
    worker_disconnect_delay, → PENDING after retry_delay); its own pruning runs once a minute."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _luigid_api(port, "prune")
        held = [_luigid_api(port, "task_list", status=s, upstream_status="", search="") for s in ("RUNNING", "FAILED")]
        if not any(held):
            return
        time.sleep(0.5)
    raise AssertionError(f"luigid still holds tasks of a dead worker after {timeout} s: {held}")


def test_month_through_a_real_luigid_with_two_workers(run_luigi, tmp_path, lake_root):
    with luigid(tmp_path) as port:
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


def test_a_backfill_shared_by_two_worker_processes_survives_one_killed_and_publishes_each_month_once(
    tmp_path: Path, lake_root: Path, pipeline_env: dict[str, str], pg, pg_schema: str
):  # issue #19.4: luigid hands the tasks of three months to two processes, each with its own scratch folder
    drops = generate_drops(tmp_path / "drops", users=3000, months=3, seed=11)
    config = tmp_path / "central.cfg"
    config.write_text(
        (PROJECT_ROOT / "luigi-central.cfg").read_text() + "\n[months]\n" + "".join(f"{d} = {p}\n" for d, p in drops)
    )
    months = [d for d, _ in drops]

    def workers(port: int, phase: str, **failpoint: str) -> list[subprocess.CompletedProcess]:
        started = []
        for name in ("a", "b"):
            scratch = tmp_path / f"scratch-{name}"  # each worker machine's own TMPDIR
            scratch.mkdir(exist_ok=True)
            env = {**pipeline_env, "LUIGI_CONFIG_PATH": str(config), "TMPDIR": str(scratch)}
            if name == "a":
                env.update(failpoint)
            args = ["Backfill", "--start", str(months[0]), "--end", str(months[-1])]
            args += ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)]
            args += ["--lock-pid-dir", str(tmp_path / f"locks-{name}-{phase}")]  # as on two machines
            started.append(start_luigi(*args, env=env))
        outputs = [w.communicate(timeout=600) for w in started]
        return [
            subprocess.CompletedProcess(w.args, w.returncode, o, e) for w, (o, e) in zip(started, outputs, strict=True)
        ]

    def published_runs() -> dict[date, str]:
        if pg.execute("SELECT to_regclass(%s)", [f"{pg_schema}.pipeline_runs"]).fetchone()[0] is None:
            return {}  # no month was ever published into the schema
        rows = pg.execute(
            sql.SQL("SELECT as_of, run_id FROM {} WHERE status = 'published'").format(
                sql.Identifier(pg_schema, "pipeline_runs")
            )
        ).fetchall()
        return dict(rows)

    # a worker gone silent is dead after 2 s, its task run again 1 s later (defaults: 60 s and 15 min)
    with luigid(tmp_path, "worker_disconnect_delay = 2\nretry_delay = 1\nprune_on_get_work = true") as port:
        killed, survivor = workers(port, "1", STREAMFLOW_FAILPOINT="merged")  # worker a dies at its first merge
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        store = RunStore(lake_root)
        done = store.published_months()
        assert done == months[: len(done)], "months publish in order"
        assert len(done) < len(months), "the killed worker's month cannot have been published"
        assert published_runs() == {d: store.get(d).run_id for d in done}, "nothing half-published"  # type: ignore[union-attr]

        _until_luigid_forgot_dead_workers(port)  # what an operator waits for: about 60 s with the defaults
        first, second = workers(port, "2")  # the same command again, on both machines
        # a worker whose remaining tasks the other one runs ends with luigi.cfg's already_running (10: "being
        # run by another worker") or not_run (25: "not granted run permission"); the other exits 0
        codes = sorted([first.returncode, second.returncode])
        assert codes[0] == 0 and codes[1] in (0, 10, 25), (codes, first.stderr[-2500:], second.stderr[-2500:])

    store = RunStore(lake_root)
    assert store.published_months() == months
    assert [len(store.records(d)) for d in months] == [1, 1, 1], "each month published once"
    records = [store.get(d) for d in months]
    assert [r.previous_as_of for r in records] == [None, *months[:-1]]  # type: ignore[union-attr]
    published_at = [r.published_at for r in records]  # type: ignore[union-attr]
    assert published_at == sorted(published_at), "and in order"
    assert published_runs() == {d: r.run_id for d, r in zip(months, records, strict=True)}  # type: ignore[union-attr]
    ran = [
        sum("running   StageTable" in line or "running   MergeTable" in line for line in w.stderr.splitlines())
        for w in (killed, survivor, first, second)
    ]
    assert all(n > 0 for n in ran[:2]), f"luigid gave both workers steps to run: {ran}"
    assert not list(tmp_path.glob("scratch-*/streamflow-*")), "the killed worker's scratch is swept"
