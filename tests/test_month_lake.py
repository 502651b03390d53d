"""The lake half of the month (issue #2): CSV drop → typed Parquet snapshots, through Luigi."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipeline.schema import load_schema
from tests.conftest import FEB, JAN, SEED_MONTHS, PublishedLake, raw_file, record_file, snapshot_file
from tests.drops import csv_count, edit_rows, seed_copy, set_value

TABLES = load_schema().table_names


def snapshot_rows(lake_root: Path, table: str) -> dict[str, int]:
    rows = duckdb.execute(
        f"SELECT as_of::VARCHAR, count(*) FROM read_parquet('{lake_root}/snapshots/{table}/*/*.parquet', "
        f"hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    return dict(rows)


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """mtime and content hash of every file under a folder."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_postgres" not in p.parts
    }


@pytest.fixture
def two_months(published: PublishedLake) -> Path:
    """The session's lake with both seed months (``luigi … Month --as-of 2024-02-29 --workers 2`` on a
    fresh lake), read only."""
    return published.root


def test_february_on_a_fresh_lake_ingests_january_first(two_months: Path):
    for table in TABLES:
        counts = snapshot_rows(two_months, table)
        assert counts == {
            JAN.isoformat(): csv_count(SEED_MONTHS[JAN] / f"{table}.csv"),
            FEB.isoformat(): csv_count(SEED_MONTHS[FEB] / f"{table}.csv"),
        }, table
    assert not (two_months / "_work").exists() or not any((two_months / "_work").iterdir())


def test_snapshots_read_back_with_the_declared_types(two_months: Path):
    schema = load_schema().table("usage_agg_30d")
    described = duckdb.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{two_months}/snapshots/usage_agg_30d/*/*.parquet', "
        f"hive_partitioning = true)"
    ).fetchall()
    types = {name: kind for name, kind, *_ in described}
    assert types["as_of"] == "DATE"
    for column in schema.columns:
        assert types[column.name] == column.duckdb_type.replace(", ", ",")


def test_snapshots_are_in_key_order_and_the_first_months_is_its_typed_drop(two_months: Path):
    for table in TABLES:
        for as_of in (JAN, FEB):
            snapshot = snapshot_file(two_months, table, as_of)
            keys = [k for (k,) in duckdb.execute(f"SELECT user_id FROM read_parquet('{snapshot}')").fetchall()]
            assert keys == sorted(keys) and len(keys) == len(set(keys)), (table, as_of)
        # nothing to merge with: the same file, not a second copy; a later month's drop stays as received
        jan, feb = (snapshot_file(two_months, table, d) for d in (JAN, FEB))
        assert jan.samefile(raw_file(two_months, table, JAN)), table
        assert not feb.samefile(raw_file(two_months, table, FEB)), table


def test_changed_value_shows_in_february_and_january_keeps_the_old_one(two_months: Path):
    jan, feb = (
        dict(
            duckdb.execute(
                f"SELECT user_id, contract_type "
                f"FROM read_parquet('{two_months}/snapshots/subscriptions/as_of={d}/*.parquet')"
            ).fetchall()
        )
        for d in (JAN, FEB)
    )
    changed = [u for u in jan if jan[u] != feb[u]]
    assert changed, "the seed's February changes some contracts"
    source = dict(
        duckdb.execute(
            f"SELECT user_id, contract_type FROM read_csv('{SEED_MONTHS[JAN]}/subscriptions.csv', all_varchar = true)"
        ).fetchall()
    )
    assert all(jan[u] == source[u] for u in changed)


def test_rerun_of_a_published_month_changes_nothing(run_luigi, published: PublishedLake):
    two_months = published.root
    before = tree_state(two_months)
    result = run_luigi("Month", "--as-of", FEB.isoformat(), env=published.env)
    assert result.returncode == 0, result.stderr
    assert "complete" in result.stderr.lower() or "already" in result.stderr.lower() or "0 ran" in result.stderr
    assert tree_state(two_months) == before


def test_a_user_absent_from_a_drop_is_carried_forward(run_luigi, lake_root: Path, tmp_path: Path):
    drop = seed_copy(tmp_path / "feb", "month_001")
    dropped = {}

    def without_first(rows):
        dropped[id(rows)] = rows[0]["user_id"]
        return rows[1:]

    edit_rows(drop / "labels.csv", without_first)
    user = next(iter(dropped.values()))
    result = run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(drop))
    assert result.returncode == 0, result.stderr
    label = lambda d: duckdb.execute(  # noqa: E731
        f"SELECT churn_label FROM read_parquet('{lake_root}/snapshots/labels/as_of={d}/*.parquet') "
        f"WHERE user_id = '{user}'"
    ).fetchall()
    assert label(FEB) == label(JAN) and len(label(FEB)) == 1
    manifest = record_file(lake_root, FEB).read_text()
    assert '"carried": 1' in manifest


def test_each_month_may_come_from_its_own_source(run_luigi, lake_root: Path, tmp_path: Path):
    jan = seed_copy(tmp_path / "jan", "month_000")
    feb = seed_copy(tmp_path / "feb", "month_001")
    assert run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(jan)).returncode == 0
    result = run_luigi("Month", "--as-of", FEB.isoformat(), "--source", str(feb))
    assert result.returncode == 0, result.stderr
    assert set(snapshot_rows(lake_root, "users")) == {JAN.isoformat(), FEB.isoformat()}


def test_numeric_values_keep_every_decimal(run_luigi, lake_root: Path, tmp_path: Path):
    drop = seed_copy(tmp_path / "jan")
    user = set_value(drop, "usage_agg_30d", 3, "watch_hours_30d", "123.4567891234")
    set_value(drop, "usage_agg_30d", 3, "avg_session_mins_7d", "0.0001")
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(drop))
    assert result.returncode == 0, result.stderr
    value = duckdb.execute(
        f"SELECT watch_hours_30d, avg_session_mins_7d FROM "
        f"read_parquet('{lake_root}/snapshots/usage_agg_30d/*/*.parquet') WHERE user_id = '{user}'"
    ).fetchone()
    assert value == (Decimal("123.4567891234"), Decimal("0.0001"))


BAD_DROPS = {
    # name: (how to break the drop, words the message must contain)
    "unparseable number": (
        lambda d: set_value(d, "usage_agg_30d", 5, "skips_7d", "twelve"),
        ["usage_agg_30d.csv", "line 7", "skips_7d", '"twelve" is not a whole number'],
    ),
    "bad date": (
        lambda d: set_value(d, "users", 0, "signup_date", "2023-02-30"),
        ["users.csv", "line 2", "signup_date", "not a calendar date"],
    ),
    "bad boolean": (
        lambda d: set_value(d, "labels", 9, "churn_label", "maybe"),
        ["labels.csv", "line 11", "churn_label", "not a boolean"],
    ),
    "empty user_id": (
        lambda d: set_value(d, "payments_agg_90d", 2, "user_id", ""),
        ["payments_agg_90d.csv", "line 4", "empty user_id"],
    ),
    "too many decimals": (
        lambda d: set_value(d, "subscriptions", 1, "monthly_fee", "1.12345678901"),
        ["subscriptions.csv", "line 3", "monthly_fee", "more than 10 decimal places"],
    ),
    "missing file": (lambda d: (d / "labels.csv").unlink(), ["labels.csv", "missing file"]),
    "missing column": (
        lambda d: (
            edit_rows(d / "users.csv", lambda rows: [{k: v for k, v in r.items() if k != "user_gender"} for r in rows])
            or _drop_header(d / "users.csv", "user_gender")
        ),
        ["users.csv", "missing column(s): user_gender"],
    ),
    "unknown column": (
        lambda d: _add_column(d / "labels.csv", "favourite_colour"),
        ["labels.csv", "unknown column(s): favourite_colour"],
    ),
}


def _drop_header(path: Path, column: str) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    index = header.index(column) if column in header else None
    if index is None:
        return
    path.write_text(
        "\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != index) for line in lines) + "\n"
    )


def _add_column(path: Path, column: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + f",{column}", *(line + ",x" for line in lines[1:])]) + "\n")


@pytest.mark.parametrize("kind", sorted(BAD_DROPS))
def test_bad_drop_fails_with_its_message_and_leaves_no_partition(kind, run_luigi, lake_root: Path, tmp_path: Path):
    breaker, words = BAD_DROPS[kind]
    drop = seed_copy(tmp_path / "jan")
    breaker(drop)
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(drop))
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr, (word, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    assert not list(lake_root.glob(f"snapshots/*/as_of={JAN}")), "no partition for a failed month"
    assert not list(lake_root.glob(f"raw/*/as_of={JAN}"))
    assert not record_file(lake_root, JAN).exists()
