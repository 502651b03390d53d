"""The publish under an operator's ordinary actions (issue #20): a consumer holding locks, passwords and
names that YAML would misread, the gate's own connection failing. Real PostgreSQL, real Soda."""

from __future__ import annotations

import logging
import threading
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipeline import quality
from pipeline.errors import PostgresUnavailableError, PublishError
from pipeline.lakefs import Lake
from pipeline.publish import run_month
from pipeline.runs import RunStore
from tests.conftest import FEB, JAN
from tests.test_postgres_sync import assert_nothing_published, fingerprint


def test_a_consumer_reading_the_profile_view_in_an_open_transaction_does_not_stall_the_month(
    settings, pg, pg_dsn, pg_schema
):
    """issue #20: the view is made once, not replaced every month, so a reader's lock on it blocks nothing."""
    run_month(settings, JAN)
    with psycopg.connect(pg_dsn) as consumer:  # a transaction left open after a read
        consumer.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "subscriptions_profile_snapshots"))
        )
        record = run_month(settings.with_(lock_timeout="5s"), FEB)
    assert record.status == "published"


def test_a_consumer_lock_on_a_live_table_fails_the_month_after_lock_timeout_naming_the_holder(
    settings, pg, pg_dsn, pg_schema
):
    """issue #20: a SHARE lock on users blocks the upsert; after lock_timeout the month is refused with one
    line naming the table and the holder's pid, nothing published, and it publishes once the lock is gone."""
    run_month(settings, JAN)
    before = fingerprint(pg, pg_schema)
    with psycopg.connect(pg_dsn, application_name="a-consumer") as consumer:
        consumer.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(pg_schema, "users")))
        holder = consumer.execute("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(PublishError) as failure:
            run_month(settings.with_(lock_timeout="1s"), FEB)
    message = str(failure.value)
    assert "waited longer than [pipeline] lock_timeout" in message
    assert f"{pg_schema}.users by pid {holder} (user " in message and "application a-consumer" in message
    assert "nothing of the month was published" in message and "\n" not in message
    assert_nothing_published(pg, pg_schema, settings.lake_root, FEB, before)
    assert run_month(settings, FEB).status == "published"


@pytest.fixture
def quoted_database(pg_server_dsn: str):
    """A database whose name has a quote, a colon and a hash in it."""
    name = f"it's: a #db {uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("password", ["*x", "a: b", "p #q", "'q'", "{{ q }}", "${HOME}"])
def test_passwords_and_names_reach_soda_as_values_never_as_text(password, pg_server_dsn, quoted_database, caplog):
    """issue #20: the data source is a mapping dumped as YAML, the password set as a value after Soda
    parsed it: nothing is misread, cut short, substituted or printed."""
    from soda.scan import Scan

    dsn = make_conninfo(pg_server_dsn, dbname=quoted_database, password=password)
    scan = Scan()
    scan.set_data_source_name(quality.DATA_SOURCE)
    scan.add_configuration_yaml_str(quality._data_source_yaml(dsn, "it's a schema"))
    quality._set_password(scan, dsn)
    properties = scan._configuration.data_source_properties_by_name[quality.DATA_SOURCE]
    assert properties["password"] == password
    assert properties["database"] == quoted_database and properties["schema"] == "it's a schema"
    assert not scan.has_error_logs()

    # and a real scan on that database (the server trusts local logins, so the password is not checked)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (user_id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO probe VALUES ('u1')")
    caplog.set_level(logging.DEBUG)
    results = quality._scan(dsn, "public", JAN, {}, [("checks for probe:\n  - row_count = 1\n", "test")])
    assert [(r.name, r.outcome) for r in results] == [("row_count = 1", "pass")]
    assert password not in caplog.text


def test_the_gates_connection_failing_is_reported_as_such_not_as_failed_checks(settings, pg, pg_schema, monkeypatch):
    """issue #20: the backend Soda scans on is terminated mid-scan: the month ends with "lost the connection
    … while checking", records no failed-check attempt, and publishes nothing."""
    run_month(settings, JAN)
    before = fingerprint(pg, pg_schema)
    configure = quality._configure_session
    terminated = threading.Event()

    def terminate_after_configuring(scan):
        configure(scan)
        if terminated.is_set():
            return
        data_source = scan._data_source_manager.get_data_source(quality.DATA_SOURCE)
        with data_source.connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        data_source.connection.commit()
        with psycopg.connect(settings.postgres.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        terminated.set()

    monkeypatch.setattr(quality, "_configure_session", terminate_after_configuring)
    with pytest.raises(PostgresUnavailableError) as failure:
        run_month(settings, FEB)
    message = str(failure.value)
    host = conninfo_to_dict(settings.postgres.dsn).get("host") or "localhost"
    assert message.startswith(f"lost the connection to PostgreSQL at {host}") and "while checking 2024-02-29" in message
    assert "not a failed check" in message and "quality check" not in message
    assert not list(Lake(settings.lake_root).run_dir(FEB).glob("attempts/*.json"))
    assert_nothing_published(pg, pg_schema, settings.lake_root, FEB, before)


def test_every_bad_file_of_a_drop_is_reported_at_once(settings, pg, pg_schema, tmp_path):
    """issue #13: two bad files, one message naming both (in the contract's table order), each with its
    rejects explained in the lake, and nothing published."""
    from pipeline.errors import DropErrors
    from tests.drops import seed_copy, set_value

    drop = seed_copy(tmp_path / "jan")
    set_value(drop, "labels", 3, "churn_label", "maybe")
    set_value(drop, "users", 5, "signup_date", "2024-13-45")
    with pytest.raises(DropErrors) as refused:
        run_month(settings, JAN, drop)
    message = str(refused.value)
    assert message.startswith("month 2024-01-31: 2 files of the drop cannot be published; nothing was published.")
    users, labels = message.index("users.csv"), message.index("labels.csv")
    assert users < labels and "line 7, column signup_date" in message and "line 5, column churn_label" in message
    assert [e.__class__.__name__ for e in refused.value.errors] == ["RejectedRowsError", "RejectedRowsError"]
    lake = Lake(settings.lake_root)
    assert all((lake.rejects(t, JAN) / "rejects.parquet").exists() for t in ("users", "labels"))
    assert RunStore(lake).months() == {} and not (settings.lake_root / "snapshots").exists()
