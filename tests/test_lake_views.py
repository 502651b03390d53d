"""Ad-hoc DuckDB over the lake (issue #4, item 3): `pipeline.lake.connect()` views over the published
months only, the SCD2 history, and `streamflow sql` / `streamflow shell` in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import lake
from pipeline.lakefs import Lake
from pipeline.schema import load_schema
from tests.conftest import FEB, JAN, SEED_MONTHS, PublishedLake, record_file, snapshot_file
from tests.drops import csv_count
from tests.test_cli_status import cli

SCHEMA = load_schema()


@pytest.fixture(scope="module")
def con(published: PublishedLake) -> duckdb.DuckDBPyConnection:
    connection = lake.connect(published.root)
    yield connection
    connection.close()


def snapshot_values(root: Path, table: str, as_of: date, user: str) -> dict:
    cur = duckdb.execute(
        f"SELECT * FROM read_parquet('{snapshot_file(root, table, as_of)}', "
        f"hive_partitioning = false) WHERE user_id = ?",
        [user],
    )
    (row,) = cur.fetchall()
    return dict(zip([d[0] for d in cur.description], row, strict=True))


# --- the views ----------------------------------------------------------------------------------


def test_every_view_exists_for_every_table(con: duckdb.DuckDBPyConnection):
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert names == set(lake.view_names())


def test_snapshots_view_has_every_published_month_with_as_of(con: duckdb.DuckDBPyConnection):
    for table in SCHEMA.table_names:
        counts = dict(con.execute(f"SELECT as_of, count(*) FROM {table}_snapshots GROUP BY ALL").fetchall())
        assert counts == {d: csv_count(SEED_MONTHS[d] / f"{table}.csv") for d in (JAN, FEB)}, table
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'usage_agg_30d_snapshots'"
        ).fetchall()
    )
    assert types["as_of"] == "DATE" and types["watch_hours_30d"] == "DECIMAL(38,10)"


def test_table_view_is_the_latest_published_month(con: duckdb.DuckDBPyConnection):
    assert con.execute("SELECT count(*) FROM users").fetchone()[0] == csv_count(SEED_MONTHS[FEB] / "users.csv")
    assert (
        con.execute(
            "SELECT count(*) FROM (SELECT * FROM labels EXCEPT SELECT * EXCLUDE (as_of) "
            "FROM labels_snapshots WHERE as_of = DATE '2024-02-29')"
        ).fetchone()[0]
        == 0
    )


def test_runs_has_one_row_per_month_from_the_manifests(published: PublishedLake, con: duckdb.DuckDBPyConnection):
    rows = con.execute("SELECT as_of, status, run_id, users, users_inserted, checks_failed FROM runs").fetchall()
    for d, (as_of, status, run_id, users, inserted, failed) in zip((JAN, FEB), rows, strict=True):
        record = json.loads(record_file(published.root, d).read_text())
        assert (as_of, status, run_id, failed) == (d, "published", record["run_id"], 0)
        assert (users, inserted) == (record["tables"]["users"]["rows"], record["tables"]["users"]["inserted"])


def test_a_partition_without_a_published_manifest_is_invisible(published: PublishedLake, tmp_path: Path):
    root = shutil.copytree(published.root, tmp_path / "lake")
    march = date(2024, 3, 31)
    for table in SCHEMA.table_names:  # a partition a crashed or failed run left behind
        shutil.copytree(Lake(root).snapshot(table, FEB), Lake(root).snapshot(table, march))
    attempt = Lake(root).run_dir(march) / "attempts" / "x.json"
    attempt.parent.mkdir(parents=True)
    attempt.write_text(json.dumps({"as_of": march.isoformat(), "status": "failed", "run_id": "x"}))
    with lake.connect(root) as c:
        assert {r[0] for r in c.execute("SELECT DISTINCT as_of FROM users_snapshots").fetchall()} == {
            JAN,
            FEB,
        }
        assert c.execute("SELECT as_of, status FROM runs ORDER BY as_of").fetchall()[-1] == (march, "failed")


def test_history_of_a_user_whose_subscription_changed(published: PublishedLake, con: duckdb.DuckDBPyConnection):
    jan, feb = (snapshot_file(published.root, "subscriptions", d) for d in (JAN, FEB))
    user, old, new = duckdb.execute(
        f"SELECT j.user_id, j.contract_type, f.contract_type "
        f"FROM read_parquet('{jan}', hive_partitioning = false) j "
        f"JOIN read_parquet('{feb}', hive_partitioning = false) f USING (user_id) "
        f"WHERE j.contract_type <> f.contract_type ORDER BY 1 LIMIT 1"
    ).fetchone()
    history = con.execute(
        "SELECT version, contract_type, valid_from, valid_to FROM subscriptions_history WHERE user_id = ? ORDER BY 1",
        [user],
    ).fetchall()
    assert history == [(1, old, JAN, FEB), (2, new, FEB, None)]
    current = con.execute(
        "SELECT * EXCLUDE (version, valid_from, valid_to) FROM subscriptions_history "
        "WHERE user_id = ? AND valid_to IS NULL",
        [user],
    ).fetchall()
    assert current == con.execute("SELECT * FROM subscriptions WHERE user_id = ?", [user]).fetchall()
    # the same user's profile did not change: one version, valid from January, still current
    assert con.execute(
        "SELECT version, valid_from, valid_to FROM users_history WHERE user_id = ?", [user]
    ).fetchall() == [(1, JAN, None)]


def test_history_has_one_current_version_per_user_of_the_latest_month(con: duckdb.DuckDBPyConnection):
    for table in SCHEMA.table_names:
        current = con.execute(
            f"SELECT count(*), count(DISTINCT user_id) FROM {table}_history WHERE valid_to IS NULL"
        ).fetchone()
        assert current == (con.execute(f"SELECT count(*) FROM {table}").fetchone()[0],) * 2, table


# --- SCD2 on a lake crafted for it --------------------------------------------------------------

M1, M2, M3, M4 = date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)


def write_month(root: Path, as_of: date, users: list[dict], published: bool = True) -> None:
    """A month whose users snapshot holds ``users`` (other tables empty), with its run record."""
    lake, run_id = Lake(root), f"run-{as_of}"
    for table in SCHEMA.tables:
        rows = users if table.name == "users" else []
        path = root / lake.object("snapshots", table.name, as_of, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=table.arrow_schema()), path)
    record = {
        "as_of": as_of.isoformat(),
        "status": "published" if published else "failed",
        "run_id": run_id,
        "tables": {"users": {"rows": len(users)}},
        "objects": {t.name: {"snapshots": lake.object("snapshots", t.name, as_of, run_id)} for t in SCHEMA.tables},
    }
    path = lake.record(as_of, run_id) if published else lake.run_dir(as_of) / "attempts" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def user(user_id: str, gender: str | None, senior: bool | None = False) -> dict:
    return {
        "user_id": user_id,
        "signup_date": date(2020, 1, 1),
        "user_gender": gender,
        "user_is_senior": senior,
        "has_family": None,
        "has_dependents": None,
    }


def test_history_collapses_equal_months_and_closes_users_who_left(tmp_path: Path):
    root = tmp_path / "lake"
    write_month(root, M1, [user("a", "F"), user("b", "F"), user("c", "M"), user("d", None)])
    write_month(root, M2, [user("a", "F"), user("b", "M"), user("d", None)])  # b changed, c left
    write_month(root, M3, [user("a", "F"), user("b", "M"), user("c", "M"), user("d", None, None)])  # c is back
    write_month(root, M4, [user("a", "X")], published=False)  # a failed month is never read
    with lake.connect(root) as c:
        history = c.execute(
            "SELECT user_id, version, user_gender, valid_from, valid_to FROM users_history ORDER BY user_id, version"
        ).fetchall()
        runs = c.execute("SELECT as_of, status FROM runs").fetchall()
    assert history == [
        ("a", 1, "F", M1, None),  # equal in every month: one version
        ("b", 1, "F", M1, M2),
        ("b", 2, "M", M2, None),
        ("c", 1, "M", M1, M2),  # absent from M2: closed there
        ("c", 2, "M", M3, None),  # back in M3: a new version
        ("d", 1, None, M1, M3),  # NULL = NULL is no change; NULL -> value (user_is_senior) is one
        ("d", 2, None, M3, None),
    ]
    assert runs == [(M1, "published"), (M2, "published"), (M3, "published"), (M4, "failed")]


def test_an_empty_lake_has_every_view_and_no_rows(tmp_path: Path):
    with lake.connect(tmp_path / "no-lake-yet") as c:
        for name in lake.view_names():
            assert c.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 0, name
        types = dict(
            c.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'users_history'"
            ).fetchall()
        )
    assert types["valid_from"] == "DATE" and types["signup_date"] == "DATE"
    assert not (tmp_path / "no-lake-yet").exists(), "reading never creates a lake"


# --- streamflow sql / shell ---------------------------------------------------------------------

QUERY = (
    "SELECT user_id, watch_hours_30d, skips_7d FROM usage_agg_30d_snapshots "
    "WHERE as_of = DATE '2024-01-31' ORDER BY user_id LIMIT 3"
)


def test_sql_prints_an_aligned_table(published: PublishedLake):
    result = cli(published.env, "sql", QUERY)
    assert result.returncode == 0, result.stderr
    header, rule, *rows, count = result.stdout.splitlines()
    assert header.split() == ["user_id", "watch_hours_30d", "skips_7d"] and count == "(3 rows)"
    assert set(rule) == {"-", " "} and len(rows) == 3
    ends = [len(line) for line in [header, rule, *rows]]
    assert len(set(ends)) == 1, "numbers are right-aligned to the same column end"
    first = snapshot_values(published.root, "usage_agg_30d", JAN, rows[0].split()[0])
    assert rows[0].split()[1] == f"{first['watch_hours_30d'].normalize():f}"  # exact, without padding zeros


def test_sql_csv_and_json_give_the_same_exact_values(published: PublishedLake):
    as_csv = cli(published.env, "sql", "--csv", QUERY)
    as_json = cli(published.env, "sql", "--json", QUERY)
    assert as_csv.returncode == as_json.returncode == 0, as_csv.stderr + as_json.stderr
    from_csv = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    from_json = json.loads(as_json.stdout, parse_float=Decimal)
    assert [r["user_id"] for r in from_csv] == [r["user_id"] for r in from_json]
    for c_row, j_row in zip(from_csv, from_json, strict=True):
        exact = snapshot_values(published.root, "usage_agg_30d", JAN, c_row["user_id"])["watch_hours_30d"]
        assert Decimal(c_row["watch_hours_30d"]) == Decimal(str(j_row["watch_hours_30d"])) == exact
        assert int(c_row["skips_7d"]) == j_row["skips_7d"]


def test_sql_error_is_reported_without_traceback(published: PublishedLake):
    result = cli(published.env, "sql", "SELECT * FROM no_such_view")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Catalog Error") and "Traceback" not in result.stderr


def test_shell_runs_statements_piped_on_stdin(published: PublishedLake):
    script = (
        "SELECT count(*) AS n FROM users;\n"
        "SELECT count(*) AS n\n  FROM users_snapshots;\n"
        ".mode csv\n"
        "SELECT as_of, status FROM runs ORDER BY as_of;\n"
    )
    result = cli(published.env, "shell", stdin=script)
    assert result.returncode == 0, result.stderr
    users_feb = csv_count(SEED_MONTHS[FEB] / "users.csv")
    users_all = users_feb + csv_count(SEED_MONTHS[JAN] / "users.csv")
    lines = [line.strip() for line in result.stdout.splitlines() if set(line) != {"-"}]
    assert lines == [
        "n",
        str(users_feb),
        "(1 row)",
        "n",
        str(users_all),
        "(1 row)",
        "as_of,status",
        f"{JAN},published",
        f"{FEB},published",
    ]


def test_shell_reports_a_failed_statement_and_goes_on(published: PublishedLake):
    result = cli(published.env, "shell", stdin="SELECT nope FROM users;\nSELECT 42 AS answer;\n")
    assert result.returncode == 1
    assert "error: Binder Error" in result.stderr and "Traceback" not in result.stderr
    assert "42" in result.stdout
