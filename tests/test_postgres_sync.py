"""The quality gate and the PostgreSQL sync (issue #3), against a real server and real Soda scans."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from pipeline.config import PostgresSettings, Settings
from pipeline.errors import PostgresUnavailableError, QualityGateError
from pipeline.publish import run_month
from pipeline.schema import load_schema
from tests.conftest import FEB, JAN, PROJECT_ROOT, SEED_MONTHS, PublishedLake, luigi_bin, record_file, snapshot_file
from tests.drops import edit_rows, seed_copy, set_value

SCHEMA = load_schema()


def table_rows(pg: psycopg.Connection, pg_schema: str, table: str, where: str = "") -> list[tuple]:
    names = SCHEMA.table(table).column_names
    query = sql.SQL("SELECT {} FROM {} {} ORDER BY 1").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(pg_schema, table), sql.SQL(where)
    )
    return [tuple(r) for r in pg.execute(query).fetchall()]


def lake_rows(lake_root: Path, table: str, as_of: date) -> list[tuple]:
    names = ", ".join(f'"{c}"' for c in SCHEMA.table(table).column_names)
    return [
        tuple(r)
        for r in duckdb.execute(
            f"SELECT {names} FROM read_parquet('{snapshot_file(lake_root, table, as_of)}') ORDER BY 1"
        ).fetchall()
    ]


def fingerprint(pg: psycopg.Connection, pg_schema: str) -> dict[str, tuple]:
    """xmin and content of every live and snapshot row: any write shows."""
    result = {}
    for table in SCHEMA.table_names:
        for name in (table, f"{table}_snapshots"):
            result[name] = pg.execute(
                sql.SQL(
                    "SELECT count(*), sum(xmin::text::bigint), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t"
                ).format(sql.Identifier(pg_schema, name))
            ).fetchone()
    result["pipeline_runs"] = pg.execute(
        sql.SQL("SELECT count(*), sum(xmin::text::bigint) FROM {}").format(sql.Identifier(pg_schema, "pipeline_runs"))
    ).fetchone()
    return result


def assert_nothing_published(pg: psycopg.Connection, pg_schema: str, lake_root: Path, as_of: date, before: dict):
    """A failed publish left PostgreSQL as it was, wrote no manifest and left no staging schema."""
    assert fingerprint(pg, pg_schema) == before
    assert not record_file(lake_root, as_of).exists()
    staging = pg.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE %s", [f"{pg_schema}__staging%"]
    ).fetchone()[0]
    assert staging == 0


def test_live_tables_equal_the_latest_snapshot_row_for_row(published: PublishedLake, pg):
    for table in SCHEMA.table_names:
        assert table_rows(pg, published.pg_schema, table) == lake_rows(published.root, table, FEB), table


def test_snapshot_tables_hold_both_months_with_january_values(published: PublishedLake, pg):
    for table in SCHEMA.table_names:
        for as_of in (JAN, FEB):
            fetched = pg.execute(
                sql.SQL("SELECT * FROM {} WHERE as_of = %s ORDER BY 1").format(
                    sql.Identifier(published.pg_schema, f"{table}_snapshots")
                ),
                [as_of],
            ).fetchall()
            # the last two columns: as_of, then as_of_ts, the same day at 00:00 UTC (issue #16)
            assert {(r[-2], r[-1]) for r in fetched} == {
                (as_of, datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC))
            }
            rows = [tuple(r[:-2]) for r in fetched]
            assert rows == lake_rows(published.root, table, as_of), (table, as_of)
    profile = pg.execute(
        sql.SQL("SELECT count(*), count(DISTINCT as_of) FROM {}").format(
            sql.Identifier(published.pg_schema, "subscriptions_profile_snapshots")
        )
    ).fetchone()
    assert profile[1] == 2 and profile[0] > 0


def test_pipeline_runs_records_both_months_with_counts(published: PublishedLake, pg):
    runs = pg.execute(
        sql.SQL("SELECT as_of, status, row_counts, changes FROM {} ORDER BY as_of").format(
            sql.Identifier(published.pg_schema, "pipeline_runs")
        )
    ).fetchall()
    assert [(r[0], r[1]) for r in runs] == [(JAN, "published"), (FEB, "published")]
    feb_users = len(lake_rows(published.root, "users", FEB))
    assert runs[1][2]["users"] == feb_users
    assert runs[0][3]["users"]["inserted"] == len(lake_rows(published.root, "users", JAN))
    assert runs[1][3]["users"]["inserted"] == feb_users - runs[0][2]["users"]


def test_rerun_of_a_published_month_writes_no_row(published: PublishedLake, run_luigi, pg):
    before = fingerprint(pg, published.pg_schema)
    assert run_luigi("Month", "--as-of", FEB.isoformat(), env=published.env).returncode == 0
    assert fingerprint(pg, published.pg_schema) == before


def test_republishing_the_same_month_in_process_leaves_rows_untouched(settings: Settings, pg, pg_schema: str):
    run_month(settings, JAN)
    before = fingerprint(pg, pg_schema)
    # a crash after the PostgreSQL commit but before the manifest: the month runs again in full
    record_file(settings.lake_root, JAN).unlink()
    run_month(settings, JAN)
    after = fingerprint(pg, pg_schema)
    assert {k: v for k, v in after.items() if k != "pipeline_runs"} == {
        k: v for k, v in before.items() if k != "pipeline_runs"
    }


def test_numeric_with_many_decimals_is_identical_in_postgres(settings: Settings, tmp_path: Path, pg, pg_schema):
    drop = seed_copy(tmp_path / "jan")
    user = set_value(drop, "usage_agg_30d", 0, "watch_hours_30d", "7.1234567891")
    set_value(drop, "subscriptions", 0, "total_paid", "1234567890123.5")
    run_month(settings, JAN, drop)
    value = pg.execute(
        sql.SQL("SELECT watch_hours_30d::text FROM {} WHERE user_id = %s").format(
            sql.Identifier(pg_schema, "usage_agg_30d")
        ),
        [user],
    ).fetchone()[0]
    assert value == "7.1234567891"
    paid = pg.execute(
        sql.SQL("SELECT total_paid FROM {} WHERE user_id = %s").format(sql.Identifier(pg_schema, "subscriptions")),
        [user],
    ).fetchone()[0]
    assert paid == Decimal("1234567890123.5")


def _negative_watch_hours(drop: Path) -> None:
    set_value(drop, "usage_agg_30d", 4, "watch_hours_30d", "-3.5")


def _bad_contract(drop: Path) -> None:
    set_value(drop, "subscriptions", 2, "contract_type", "Forever")


def _bad_gender(drop: Path) -> None:
    set_value(drop, "users", 2, "user_gender", "Unknown")


def _future_signup(drop: Path) -> None:
    set_value(drop, "users", 1, "signup_date", "2024-06-01")


def _orphan_label(drop: Path) -> None:
    edit_rows(drop / "labels.csv", lambda rows: [*rows, {**rows[0], "user_id": "0000-ORPHN"}])


def _shrunk_drop(drop: Path) -> None:
    for table in SCHEMA.table_names:
        edit_rows(drop / f"{table}.csv", lambda rows: rows[: len(rows) // 3])


FAILING_RULES = {
    # crafted drop: (the check's name, table, column or None)
    "negative watch hours": (
        _negative_watch_hours,
        "watch_hours_30d is not negative",
        "usage_agg_30d",
        "watch_hours_30d",
    ),
    "contract type": (
        _bad_contract,
        "contract_type is Month-to-month, One year or Two year",
        "subscriptions",
        "contract_type",
    ),
    "gender": (_bad_gender, "user_gender is Male or Female", "users", "user_gender"),
    "future signup": (_future_signup, "signup_date is not after the as_of date", "users", None),
    "orphan label": (_orphan_label, "every labels user_id exists in users", "labels", "user_id"),
    "volume": (_shrunk_drop, "differs from the previous drop's by more than the allowed ratio", "drop_volume", None),
}


@pytest.mark.parametrize("rule", sorted(FAILING_RULES))
def test_failing_rule_stops_the_month_and_changes_nothing(rule, settings, tmp_path, pg, pg_schema, lake_root):
    breaker, check, table, column = FAILING_RULES[rule]
    scratch = tmp_path / "scratch"
    settings = settings.with_(scratch_dir=scratch)
    run_month(settings, JAN)
    before_pg, before_lake = fingerprint(pg, pg_schema), sorted(p.name for p in lake_root.glob("snapshots/*/*"))
    drop = seed_copy(tmp_path / "feb", "month_001")
    breaker(drop)
    with pytest.raises(QualityGateError) as failure:
        run_month(settings, FEB, drop)
    message = str(failure.value)
    assert check in message and f"table {table}" in message
    if column:
        assert f"column {column}" in message
    if rule == "volume":  # the drops, their two row counts and the change (issue #15.4)
        assert re.search(r"\w+\.csv has \d+ rows, the previous drop \d+ \([+-]\d+\.\d%\)", message), message
        assert "allowed: ±50%" in message
    else:
        assert "1 row broke it" in message or "rows broke it" in message
    assert fingerprint(pg, pg_schema) == before_pg
    assert sorted(p.name for p in lake_root.glob("snapshots/*/*")) == before_lake
    assert not record_file(lake_root, FEB).exists()
    staging = pg.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE %s", [f"{pg_schema}__staging%"]
    ).fetchone()[0]
    assert staging == 0
    assert list(scratch.iterdir()) == [], "a refused month's scratch (the CSVs for COPY) is removed"


def test_negative_watch_hours_through_luigi_exits_non_zero_naming_the_check(run_luigi, tmp_path, pg, pg_schema):
    drop = seed_copy(tmp_path / "jan")
    _negative_watch_hours(drop)
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(drop))
    assert result.returncode != 0
    assert (
        "watch_hours_30d is not negative (table usage_agg_30d, column watch_hours_30d): 1 row broke it" in result.stderr
    )
    assert "Traceback" not in result.stderr
    exists = pg.execute("SELECT to_regclass(%s)", [f'"{pg_schema}"."usage_agg_30d"']).fetchone()[0]
    assert (
        exists is None
        or pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "usage_agg_30d"))).fetchone()[
            0
        ]
        == 0
    )


def test_backfilled_older_month_never_overwrites_live(settings: Settings, pg, pg_schema: str):
    unconfigured = settings.with_(months={})
    run_month(unconfigured, FEB, SEED_MONTHS[FEB])
    live_before = {t: table_rows(pg, pg_schema, t) for t in SCHEMA.table_names}
    run_month(unconfigured, JAN, SEED_MONTHS[JAN])  # January arrives late
    assert {t: table_rows(pg, pg_schema, t) for t in SCHEMA.table_names} == live_before
    runs = pg.execute(
        sql.SQL("SELECT as_of FROM {} ORDER BY as_of").format(sql.Identifier(pg_schema, "pipeline_runs"))
    ).fetchall()
    assert [r[0] for r in runs] == [JAN, FEB]
    for as_of in (JAN, FEB):
        rows = pg.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "users_snapshots")),
            [as_of],
        ).fetchone()[0]
        assert rows == len(lake_rows(settings.lake_root, "users", as_of))


def test_unreachable_postgres_gives_one_clear_line_then_a_rerun_completes(settings: Settings, pg, pg_schema):
    down = settings.with_(
        postgres=PostgresSettings(dsn="postgresql://streamflow:s3cret-pw@127.0.0.1:1/streamflow", schema=pg_schema)
    )
    with pytest.raises(PostgresUnavailableError) as failure:
        run_month(down, JAN)
    message = str(failure.value)
    assert "127.0.0.1:1/streamflow" in message and "s3cret-pw" not in message
    assert "\n" not in message
    assert not record_file(settings.lake_root, JAN).exists()
    run_month(settings, JAN)  # the server is back: the same month completes
    assert record_file(settings.lake_root, JAN).exists()
    assert table_rows(pg, pg_schema, "users") == lake_rows(settings.lake_root, "users", JAN)


def test_unreachable_postgres_through_luigi_prints_no_traceback(run_luigi):
    result = run_luigi(
        "Month",
        "--as-of",
        JAN.isoformat(),
        env={"POSTGRES_DSN": "postgresql://streamflow:s3cret-pw@127.0.0.1:1/streamflow"},
    )
    assert result.returncode != 0
    assert "PostgreSQL at 127.0.0.1:1/streamflow is not available" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_embedded_postgres_when_none_is_configured(lake_root: Path, pipeline_env: dict[str, str]):
    env = {k: v for k, v in pipeline_env.items() if not k.startswith("POSTGRES_")}
    command = [luigi_bin(), "--module", "pipeline", "Month", "--as-of", JAN.isoformat()]
    try:
        result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert "using the embedded server at postgresql://" in result.stderr
        from pipeline.embedded import embedded_dsn

        with psycopg.connect(embedded_dsn(lake_root)) as conn:
            users = conn.execute("SELECT count(*) FROM public.users").fetchone()[0]
        assert users == len(lake_rows(lake_root, "users", JAN))
    finally:
        from pipeline.embedded import stop_embedded

        stop_embedded(lake_root)
    assert os.path.isdir(lake_root / "_postgres")


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk-write", "row-by-row"])
def test_both_live_write_paths_give_the_snapshot_and_keep_every_constraint(bulk, settings, pg, pg_schema, monkeypatch):
    """A big write drops the live keys and rebuilds them validated; a small one upserts row by row.
    Either way live equals the snapshot and every declared key and reference is back in place."""
    from pipeline.pg import plan

    monkeypatch.setattr(plan, "BULK_WRITE_ROWS", 0 if bulk else 10**9)
    for as_of in (JAN, FEB):
        run_month(settings, as_of)
    for table in SCHEMA.table_names:
        assert table_rows(pg, pg_schema, table) == lake_rows(settings.lake_root, table, FEB), table
    constraints = pg.execute(
        "SELECT conrelid::regclass::text, contype, convalidated FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s AND contype IN ('p', 'f') "
        "AND conrelid::regclass::text NOT LIKE '%%snapshots%%' AND conrelid::regclass::text NOT LIKE '%%pipeline_runs'",
        [pg_schema],
    ).fetchall()
    kinds = sorted((name.split(".")[-1].strip('"'), kind) for name, kind, _ in constraints)
    expected = sorted(
        [(t.name, "p") for t in SCHEMA.tables]
        + [(t.name, "f") for t in SCHEMA.tables if any(c.references for c in t.columns)]
    )
    assert kinds == expected
    assert all(valid for *_, valid in constraints)


def test_a_warn_level_check_is_reported_and_does_not_block(settings, tmp_path, pg, pg_schema):
    drop = seed_copy(tmp_path / "jan")
    set_value(drop, "labels", 3, "churn_label", "")  # a missing label only warns
    record = run_month(settings, JAN, drop)
    assert record.checks is not None
    warned = [c for c in record.checks.checks if c["outcome"] == "warn"]
    assert [(c["name"], c["table"], c["value"]) for c in warned] == [("every user has a churn_label", "labels", 1)]
    assert record.published
    summary = pg.execute(
        sql.SQL("SELECT checks FROM {} WHERE as_of = %s").format(sql.Identifier(pg_schema, "pipeline_runs")), [JAN]
    ).fetchone()[0]
    assert summary["warned"] == 1 and summary["failed"] == 0


def test_postgres_refusing_the_data_rolls_back_with_one_clear_line(settings, pg, pg_schema):
    """A constraint someone added to a live table makes the publish fail inside its transaction."""
    from pipeline.errors import PublishError

    run_month(settings, JAN)
    before = fingerprint(pg, pg_schema)
    pg.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT no_new_users CHECK (signup_date < '2024-02-01')").format(
            sql.Identifier(pg_schema, "users")
        )
    )
    with pytest.raises(PublishError) as failure:
        run_month(settings, FEB)
    message = str(failure.value)
    assert "refused month 2024-02-29 (table users)" in message and "no_new_users" in message
    assert "rolled back" in message and "\n" not in message
    assert_nothing_published(pg, pg_schema, settings.lake_root, FEB, before)


def test_each_month_is_one_attached_partition_keyed_like_its_parent(published: PublishedLake, pg):
    """The month's partition is loaded and keyed in staging, then moved and attached: afterwards it is an
    ordinary partition (its primary key attached to the parent's, the parent's CHECK on as_of_ts, no
    staging default or CHECK left), and
    no staging schema or scratch table remains."""
    for table in SCHEMA.table_names:
        parent = f'"{published.pg_schema}"."{table}_snapshots"'
        partitions = pg.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass ORDER BY 1",
            [parent],
        ).fetchall()
        assert partitions == [
            (f"{table}_snapshots_{d:%Y%m%d}", f"FOR VALUES IN ('{d.isoformat()}')") for d in (JAN, FEB)
        ]
        for name, _ in partitions:
            part = f'"{published.pg_schema}"."{name}"'
            constraints = pg.execute(
                "SELECT contype, pg_get_constraintdef(oid), conparentid <> 0 OR NOT conislocal FROM pg_constraint "
                "WHERE conrelid = %s::regclass ORDER BY contype DESC",
                [part],
            ).fetchall()
            assert constraints == [
                ("p", "PRIMARY KEY (user_id, as_of)", True),
                # the parent's, which ATTACH requires of a partition (issue #16)
                ("c", "CHECK ((as_of_ts = ((as_of)::timestamp without time zone AT TIME ZONE 'UTC'::text)))", True),
            ], (name, constraints)
            defaults = pg.execute("SELECT count(*) FROM pg_attrdef WHERE adrelid = %s::regclass", [part]).fetchone()[0]
            assert defaults == 0, name
    leftovers = pg.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"{published.pg_schema}__staging%"]
    ).fetchall()
    assert leftovers == []


def test_a_failed_staging_load_stops_the_waiting_live_upsert_and_publishes_nothing(
    settings, pg, pg_schema, monkeypatch
):
    """The live upsert reads a table whose every row changed (usage) from its staging partition, so it
    waits for that load; when the load fails, the upsert stops, the transaction rolls back and the run
    ends with the error instead of waiting forever. The failure is injected: a full disk on that COPY."""
    from pipeline.errors import PublishError
    from pipeline.pg import staging

    run_month(settings, JAN)
    before = fingerprint(pg, pg_schema)
    load_table = staging._load_table

    def disk_full_on_usage(dsn, exports, table, *args):
        if table.name == "usage_agg_30d":
            raise psycopg.errors.DiskFull("could not extend file: No space left on device")
        return load_table(dsn, exports, table, *args)

    monkeypatch.setattr(staging, "_load_table", disk_full_on_usage)
    outcome: dict[str, BaseException] = {}

    def publish_february() -> None:
        try:
            run_month(settings, FEB)
        except BaseException as e:  # handed to the test, which asserts on it
            outcome["error"] = e

    runner = threading.Thread(target=publish_february, daemon=True)
    runner.start()
    runner.join(timeout=120)
    assert not runner.is_alive(), "the publish hung waiting for a staging load that had failed"
    error = outcome.get("error")
    assert isinstance(error, PublishError), error
    assert "No space left on device" in str(error) and "rolled back" in str(error)
    assert_nothing_published(pg, pg_schema, settings.lake_root, FEB, before)


def test_tables_made_before_the_keys_collated_as_bytes_get_the_declared_collation(settings, pg, pg_schema):
    """Tables made when sql/schema.sql declared no collation on the keys keep working: the first publish
    gives their key columns COLLATE "C" (a month's partition can only be attached to a table that
    collates like it), the profile view is made again, and both months are published."""
    from pipeline.pg.tables import ensure_tables
    from pipeline.schema import SCHEMA_FILE, parse_schema

    older = parse_schema(SCHEMA_FILE.read_text().replace(' COLLATE "C"', ""))
    assert all(c.collation is None for t in older.tables for c in t.columns)
    with psycopg.connect(settings.postgres.dsn, autocommit=True) as conn:
        ensure_tables(conn, older, pg_schema)
    for as_of in (JAN, FEB):
        run_month(settings, as_of)
    collations = pg.execute(
        "SELECT c.relname, coalesce(k.collname, '') FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_collation k ON k.oid = a.attcollation "
        "WHERE n.nspname = %s AND a.attname = 'user_id' AND c.relkind IN ('r', 'p', 'v')",
        [pg_schema],
    ).fetchall()
    expected = {
        name
        for t in SCHEMA.table_names
        for name in (t, f"{t}_snapshots", f"{t}_snapshots_{JAN:%Y%m%d}", f"{t}_snapshots_{FEB:%Y%m%d}")
    } | {"subscriptions_profile_snapshots"}
    assert {name for name, _ in collations} == expected
    assert {collation for _, collation in collations} == {"C"}
    for table in SCHEMA.table_names:
        assert table_rows(pg, pg_schema, table) == lake_rows(settings.lake_root, table, FEB), table


def test_check_files_run_with_the_table_they_are_for_and_the_rest_last(tmp_path: Path):
    from pipeline import quality

    files = quality.check_files(SCHEMA)
    assert {t: [p.name for p in ps] for t, ps in files.items()} == {
        **{t: [f"{t}.yml"] for t in SCHEMA.table_names},
        None: ["across_tables.yml"],
    }
    (tmp_path / "mixed.yml").write_text("checks for users:\n  - row_count > 0\nchecks for labels:\n  - row_count > 0\n")
    (tmp_path / "renamed.yml").write_text("checks for labels:\n  - row_count > 0\n")
    (tmp_path / "soda_config.yml").write_text("send_anonymous_usage_stats: false\n")
    files = quality.check_files(SCHEMA, tmp_path)
    assert {t: [p.name for p in ps] for t, ps in files.items()} == {"labels": ["renamed.yml"], None: ["mixed.yml"]}


def test_a_tables_checks_run_while_later_tables_still_load(settings, pg, pg_schema, monkeypatch):
    """The last table's staging load waits until some table's checks have started: if the checks only ran
    after staging, it would wait in vain and the month would fail."""
    from pipeline import quality
    from pipeline.pg import staging

    scanning = threading.Event()
    original_scan, original_load = quality._scan, staging._load_table
    loads: list[str] = []

    def scan(*args, **kwargs):
        scanning.set()
        return original_scan(*args, **kwargs)

    def load(dsn, exports, table, *args, **kwargs):
        loads.append(table.name)
        if len(loads) == len(SCHEMA.table_names) and not scanning.wait(60):
            raise AssertionError("no table was checked before the last one was staged")
        return original_load(dsn, exports, table, *args, **kwargs)

    monkeypatch.setattr(quality, "_scan", scan)
    monkeypatch.setattr(staging, "_load_table", load)
    monkeypatch.setattr(quality, "ONE_SCAN_MAX_ROWS", 0)  # the sample month is small: check it table by table
    record = run_month(settings, JAN)
    assert record.checks is not None and record.checks.failed == 0 and record.checks.passed > 0
    for table in SCHEMA.table_names:
        assert table_rows(pg, pg_schema, table) == lake_rows(settings.lake_root, table, JAN), table


def test_a_small_month_is_checked_in_one_scan_with_the_same_checks_as_table_by_table(settings, pg_dsn, monkeypatch):
    """Below ONE_SCAN_MAX_ROWS every rule runs in one Soda scan once the month is staged; above it, one
    scan per table and one across tables. Either way the same checks run, with the same outcomes."""
    from pipeline import quality

    scans: list[int] = []
    original_scan = quality._scan

    def scan(dsn, staging_schema, as_of, variables, sodacl):
        scans.append(len(sodacl))
        return original_scan(dsn, staging_schema, as_of, variables, sodacl)

    monkeypatch.setattr(quality, "_scan", scan)
    outcomes = {}
    for limit in (10**9, 0):
        monkeypatch.setattr(quality, "ONE_SCAN_MAX_ROWS", limit)
        scans.clear()
        schema = f"gate_{'one' if limit else 'per_table'}"
        run = settings.with_(lake_root=settings.lake_root / schema, postgres=PostgresSettings(pg_dsn, schema))
        record = run_month(run, JAN)
        assert record.checks is not None
        outcomes[limit] = sorted((c["name"], c["outcome"]) for c in record.checks.to_json()["checks"])
        expected_scans = 1 if limit else len(SCHEMA.table_names) + 1
        assert len(scans) == expected_scans, (limit, scans)
    assert outcomes[10**9] == outcomes[0]
    assert len(outcomes[0]) > 30 and {outcome for _, outcome in outcomes[0]} == {"pass"}


def test_the_gate_scans_in_a_session_that_merges_keys_on_one_process(pg, pg_dsn: str, pg_schema: str):
    """The reference checks are planned as a merge of two key indexes on one process (quality.GATE_SESSION):
    the settings must reach the connection Soda itself scans on, which a plain connection does not have."""
    from pipeline import quality

    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(sql.SQL("CREATE TABLE {} (user_id TEXT PRIMARY KEY)").format(sql.Identifier(pg_schema, "probe")))
    expected = ", ".join(f"('{name}', '{value}')" for name, value in quality.GATE_SESSION.items())
    names = ", ".join(f"'{name}'" for name in quality.GATE_SESSION)
    otherwise = f"SELECT count(*) FROM pg_settings WHERE name IN ({names}) AND (name, setting) NOT IN ({expected})"
    assert pg.execute(otherwise).fetchone()[0] > 0  # a session that is not the gate's differs

    sodacl = f"checks for probe:\n  - settings_otherwise = 0:\n      settings_otherwise query: {otherwise}\n"
    results = quality._scan(pg_dsn, pg_schema, JAN, {}, [(sodacl, "test")])
    assert [(r.name, r.outcome, r.value) for r in results] == [("settings_otherwise = 0", "pass", 0)]


def test_staging_loads_first_the_partitions_the_live_upsert_waits_for():
    from pipeline.pg.plan import MergedTable, staging_order

    counts = {"inserted": 1000, "updated": 0, "unchanged": 0, "carried": 0, "deleted": 0}
    month = {t: MergedTable(Path("unused"), Path("unused"), counts) for t in SCHEMA.table_names}
    # nobody waits: the root (the others' reference checks need it), then the most values to parse first
    order = staging_order(SCHEMA, month)
    assert order[:2] == ["users", "subscriptions"] and order[-1] in ("payments_agg_90d", "labels")
    # the upsert reads usage and subscriptions from staging: the quicker to load first, then the root
    waited = staging_order(SCHEMA, month, first={"subscriptions", "usage_agg_30d"})
    assert waited[:3] == ["usage_agg_30d", "subscriptions", "users"]
    # the root first of all when the upsert reads it too: it writes the root before what references it
    assert staging_order(SCHEMA, month, first={"usage_agg_30d", "users"})[:2] == ["users", "usage_agg_30d"]
