"""The contract evolves under published months (issue #14): a new column and a new table arrive with the
month that first carries them, a type widens, and anything the published months cannot follow is
refused before anything changes. Real DuckDB files, real PostgreSQL, real Soda."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pipeline import lake as lakeviews
from pipeline.errors import ContractError
from pipeline.lakefs import Lake
from pipeline.publish import run_month
from pipeline.runs import RunStore
from pipeline.schema import SCHEMA_ENV, SCHEMA_FILE, load_schema
from pipeline.training import training_set
from tests.conftest import FEB, JAN, SEED_MONTHS
from tests.drops import read_rows, write_rows
from tests.test_postgres_sync import assert_nothing_published, fingerprint

MARCH = date(2024, 3, 31)
USERS_BEFORE = "    has_dependents  BOOLEAN\n);"


@pytest.fixture
def two_months(settings):
    """January and February published under today's contract."""
    for as_of in (JAN, FEB):
        run_month(settings, as_of)
    return settings


def contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *changes: tuple[str, str], extra: str = "") -> Path:
    """sql/schema.sql with ``changes`` (old, new text) and ``extra`` statements, made the contract in force."""
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "schema.sql"
    path.write_text(text + extra, encoding="utf-8")
    monkeypatch.setenv(SCHEMA_ENV, str(path))
    return path


def march_drop(tmp_path: Path) -> Path:
    """February's drop again as March's (same users, same values)."""
    return Path(shutil.copytree(SEED_MONTHS[FEB], tmp_path / "march"))


def columns_of(pg: psycopg.Connection, pg_schema: str, table: str) -> dict[str, str]:
    rows = pg.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        [pg_schema, table],
    ).fetchall()
    return dict(rows)


def test_a_new_column_and_a_new_table_arrive_with_the_month_that_carries_them(
    two_months, tmp_path, monkeypatch, pg, pg_schema
):
    settings = two_months
    contract(
        tmp_path,
        monkeypatch,
        (USERS_BEFORE, "    has_dependents  BOOLEAN,\n    referral_code   TEXT\n);"),
        extra='\nCREATE TABLE devices (\n    user_id TEXT COLLATE "C" PRIMARY KEY REFERENCES users (user_id),\n'
        "    device_count INT\n);\n",
    )
    drop = march_drop(tmp_path)
    header, users = read_rows(drop / "users.csv")
    for i, row in enumerate(users):
        row["referral_code"] = f"R{i}" if i % 2 else ""
    write_rows(drop / "users.csv", [*header, "referral_code"], users)
    write_rows(
        drop / "devices.csv",
        ["user_id", "device_count"],
        [{"user_id": u["user_id"], "device_count": "2"} for u in users],
    )

    record = run_month(settings, MARCH, drop)

    assert record.status == "published"
    assert "referral_code" in record.contract.columns["users"] and "devices" in record.contract.columns
    store = RunStore(Lake(settings.lake_root))
    assert "referral_code" not in store.get(FEB).contract.columns["users"]
    # PostgreSQL: migrated in the month's transaction; earlier partitions read the column as NULL
    assert columns_of(pg, pg_schema, "users")["referral_code"] == "text"
    assert columns_of(pg, pg_schema, "users_snapshots")["referral_code"] == "text"
    per_month = dict(
        pg.execute(
            sql.SQL("SELECT as_of, count(referral_code) FROM {} GROUP BY 1").format(
                sql.Identifier(pg_schema, "users_snapshots")
            )
        ).fetchall()
    )
    assert per_month == {JAN: 0, FEB: 0, MARCH: len(users) // 2}
    in_postgres = pg.execute(
        sql.SQL("SELECT as_of, count(*) FROM {} GROUP BY 1").format(sql.Identifier(pg_schema, "devices_snapshots"))
    ).fetchall()
    assert in_postgres == [(MARCH, len(users))]
    # the lake's readers, every month: old months read the column as NULL, the new table as empty
    with lakeviews.connect(settings.lake_root) as con:
        assert con.execute("SELECT count(*) FROM users_history").fetchone()[0] > 0
        by_month = dict(con.execute("SELECT as_of, count(referral_code) FROM users_snapshots GROUP BY 1").fetchall())
        assert by_month == {JAN: 0, FEB: 0, MARCH: len(users) // 2}
        assert con.execute("SELECT DISTINCT as_of FROM devices_snapshots").fetchall() == [(MARCH,)]
        assert con.execute("SELECT count(*) FROM devices").fetchone()[0] == len(users)
    january = training_set(JAN, lake_root=settings.lake_root)
    assert january.column("referral_code").null_count == january.num_rows
    assert january.column("device_count").null_count == january.num_rows
    march = training_set(MARCH, lake_root=settings.lake_root)
    assert march.column("device_count").to_pylist() == [2] * march.num_rows


def test_a_correction_of_a_month_published_under_an_older_contract_recomputes_the_later_months(
    two_months, tmp_path, monkeypatch, pg, pg_schema
):
    """issue #14: January (old contract) corrected after March brought referral_code: its corrected drop
    carries the column, February is recomputed from its raw drop (no such column: NULL), March keeps its
    values; every month is published again, PostgreSQL and the lake agree."""
    settings = two_months
    contract(tmp_path, monkeypatch, (USERS_BEFORE, "    has_dependents  BOOLEAN,\n    referral_code   TEXT\n);"))
    march = march_drop(tmp_path)
    header, users = read_rows(march / "users.csv")
    write_rows(march / "users.csv", [*header, "referral_code"], [{**u, "referral_code": "M"} for u in users])
    run_month(settings, MARCH, march)
    january = Path(shutil.copytree(SEED_MONTHS[JAN], tmp_path / "january"))
    header, users = read_rows(january / "users.csv")
    write_rows(january / "users.csv", [*header, "referral_code"], [{**u, "referral_code": "J"} for u in users])

    run_month(settings, JAN, january, replace=True)

    store = RunStore(Lake(settings.lake_root))
    assert all(store.get(d).replaced for d in (JAN, FEB, MARCH)), "every month published again"
    with lakeviews.connect(settings.lake_root) as con:
        lake = dict(
            con.execute("SELECT as_of, string_agg(DISTINCT referral_code) FROM users_snapshots GROUP BY 1").fetchall()
        )
    in_postgres = dict(
        pg.execute(
            sql.SQL("SELECT as_of, string_agg(DISTINCT referral_code, ',') FROM {} GROUP BY 1").format(
                sql.Identifier(pg_schema, "users_snapshots")
            )
        ).fetchall()
    )
    # February's drop never had the column: carried users keep January's code, February's own rows none
    assert lake[JAN] == in_postgres[JAN] == "J" and lake[MARCH] == in_postgres[MARCH] == "M"
    assert lake[FEB] == in_postgres[FEB]


def test_a_widened_type_is_migrated_and_older_months_read_back_exactly(
    two_months, tmp_path, monkeypatch, pg, pg_schema
):
    settings = two_months
    contract(tmp_path, monkeypatch, ("    months_active         INT,", "    months_active         BIGINT,"))
    before = pg.execute(
        sql.SQL("SELECT as_of, sum(months_active) FROM {} GROUP BY 1 ORDER BY 1").format(
            sql.Identifier(pg_schema, "subscriptions_snapshots")
        )
    ).fetchall()

    run_month(settings, MARCH, march_drop(tmp_path))

    assert columns_of(pg, pg_schema, "subscriptions")["months_active"] == "bigint"
    assert columns_of(pg, pg_schema, "subscriptions_snapshots")["months_active"] == "bigint"
    after = pg.execute(
        sql.SQL("SELECT as_of, sum(months_active) FROM {} GROUP BY 1 ORDER BY 1").format(
            sql.Identifier(pg_schema, "subscriptions_snapshots")
        )
    ).fetchall()
    assert after[:2] == before
    with lakeviews.connect(settings.lake_root) as con:
        lake = con.execute(
            "SELECT as_of, sum(months_active) FROM subscriptions_snapshots GROUP BY 1 ORDER BY 1"
        ).fetchall()
        kind = con.execute("SELECT typeof(months_active) FROM subscriptions_snapshots LIMIT 1").fetchone()[0]
    assert lake == after and kind == "BIGINT"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            ("    monthly_fee           NUMERIC,", "    monthly_fee           NUMERIC(6, 2),"),
            "subscriptions.monthly_fee",
        ),
        (("    has_family      BOOLEAN,\n", ""), "column users.has_family was removed"),
        (("    churn_label BOOLEAN", "    churn_label TEXT"), "labels.churn_label: BOOLEAN -> TEXT is not a widening"),
    ],
    ids=["narrowed", "dropped", "retyped"],
)
def test_a_change_the_published_months_cannot_follow_is_refused_before_anything_changes(
    change, named, two_months, tmp_path, monkeypatch, pg, pg_schema
):
    settings = two_months
    before = fingerprint(pg, pg_schema)
    contract(tmp_path, monkeypatch, change)
    drop = march_drop(tmp_path)
    if "has_family" in named:
        header, rows = read_rows(drop / "users.csv")
        kept = [h for h in header if h != "has_family"]
        write_rows(drop / "users.csv", kept, [{h: r[h] for h in kept} for r in rows])
    with pytest.raises(ContractError) as refused:
        run_month(settings, MARCH, drop)
    message = str(refused.value)
    assert named in message and "hidden at start" in message and "nothing was published" in message
    assert_nothing_published(pg, pg_schema, settings.lake_root, MARCH, before)
    assert sorted(RunStore(Lake(settings.lake_root)).published()) == [JAN, FEB]


def test_the_contract_in_force_is_the_repositorys_unless_named(monkeypatch, tmp_path):
    monkeypatch.delenv(SCHEMA_ENV, raising=False)
    assert "labels" in load_schema().table_names
    path = contract(
        tmp_path, monkeypatch, extra="\nCREATE TABLE extra (user_id TEXT PRIMARY KEY REFERENCES users (user_id));\n"
    )
    assert "extra" in load_schema().table_names and path.exists()
