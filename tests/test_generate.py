"""The drop generator, checked on real files it writes (DuckDB reads them back as text)."""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

import duckdb
import pytest

from pipeline.generate import generate_drops, main, month_end_dates, user_ids_query
from pipeline.schema import SCHEMA_FILE, load_schema, parse_schema

USERS = 2_000
MONTHS = 3
SEEDS_DIR = Path(__file__).resolve().parent.parent / "data" / "seeds"
ID_PATTERN = r"[0-9]{4}-[A-Z]{5}"

SCHEMA = load_schema()
TABLES = [t.name for t in SCHEMA.tables]


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> list[tuple[date, Path]]:
    return generate_drops(tmp_path_factory.mktemp("drops"), users=USERS, months=MONTHS)


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    yield c
    c.close()


def csv(folder: Path, table: str) -> str:
    """The file as text columns, exactly as written."""
    return f"read_csv('{folder / (table + '.csv')}', header = true, all_varchar = true, delim = ',')"


def header(folder: Path, table: str) -> list[str]:
    with open(folder / f"{table}.csv", encoding="utf-8") as f:
        return f.readline().rstrip("\n").split(",")


def changed_share(con, before: Path, after: Path, table: str) -> float:
    """Share of the users of `before` whose row (on the columns both files have) differs in `after`."""
    common = [c for c in header(before, table) if c in header(after, table)]
    cols = ", ".join(f'"{c}"' for c in common)
    changed, total = con.execute(
        f"""
        WITH a AS (SELECT {cols} FROM {csv(before, table)}),
             b AS (SELECT {cols} FROM {csv(after, table)} WHERE user_id IN (SELECT user_id FROM a))
        SELECT (SELECT count(*) FROM (FROM b EXCEPT FROM a)), (SELECT count(*) FROM a)
        """
    ).fetchone()
    return changed / total


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


def test_month_end_dates():
    assert month_end_dates(date(2024, 1, 31), 4) == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 30),
    ]
    assert month_end_dates(date(2023, 12, 31), 2) == [date(2023, 12, 31), date(2024, 1, 31)]
    with pytest.raises(ValueError, match="not the last day"):
        month_end_dates(date(2024, 1, 15), 2)


def test_returns_as_of_and_folder_per_month(drops):
    assert [a for a, _ in drops] == month_end_dates(date(2024, 1, 31), MONTHS)
    assert [f.name for _, f in drops] == ["month_000", "month_001", "month_002"]
    for _, folder in drops:
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.csv" for t in TABLES)


def test_same_parameters_same_bytes(tmp_path):
    a = generate_drops(tmp_path / "a", users=500, months=2, seed=7)
    b = generate_drops(tmp_path / "b", users=500, months=2, seed=7, threads=1)
    assert [x for x, _ in a] == [x for x, _ in b]
    first, second = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert len(first) == 2 * len(TABLES)
    assert first == second


def test_same_bytes_whatever_the_threads(tmp_path):
    # more users than one DuckDB row group (122,880), so two threads really split the work
    generate_drops(tmp_path / "a", users=150_000, months=1, threads=1)
    generate_drops(tmp_path / "b", users=150_000, months=1, threads=2)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")


def test_other_seed_other_bytes_same_ids(tmp_path, con):
    generate_drops(tmp_path / "a", users=500, months=1, seed=1)
    generate_drops(tmp_path / "b", users=500, months=1, seed=2)
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    for name in a:
        assert a[name] != b[name], name
    # ids belong to the user index, not to the seed
    ids = [
        con.execute(f"SELECT list(user_id) FROM {csv(tmp_path / x / 'month_000', 'users')}").fetchone()[0] for x in "ab"
    ]
    assert ids[0] == ids[1]


def id_counts(con, source: str) -> tuple[int, int, int]:
    """rows, distinct ids, well-formed ids"""
    return con.execute(
        "SELECT count(*), count(DISTINCT user_id),"
        f" count(*) FILTER (regexp_full_match(user_id, '{ID_PATTERN}')) FROM {source}"
    ).fetchone()


def test_ids_unique_and_well_formed(drops, con):
    for _, folder in drops:
        for table in TABLES:
            n, distinct, good = id_counts(con, csv(folder, table))
            assert n == distinct == good, (folder.name, table)


def test_id_scheme_unique_beyond_ten_million_users(con):
    # a bijection by construction; checked across the 10M mark and the first letter blocks
    for first in (0, 9_500_000):
        n, distinct, good = id_counts(con, f"({user_ids_query(1_000_000, first=first)})")
        assert n == distinct == good == 1_000_000


def test_every_file_has_the_same_users_in_a_month(drops, con):
    for month, (_, folder) in enumerate(drops):
        users = con.execute(f"SELECT list(user_id ORDER BY user_id) FROM {csv(folder, 'users')}").fetchone()[0]
        assert len(users) == USERS + month * round(USERS * 0.02)
        for table in TABLES:
            other = con.execute(f"SELECT list(user_id ORDER BY user_id) FROM {csv(folder, table)}").fetchone()[0]
            assert other == users, (folder.name, table)


def test_new_users_sign_up_inside_their_month(drops, con):
    for month in range(1, MONTHS):
        (_, prev), (as_of, folder) = drops[month - 1], drops[month]
        new = con.execute(
            f"SELECT min(signup_date::DATE), max(signup_date::DATE), count(*) FROM {csv(folder, 'users')}"
            f" WHERE user_id NOT IN (SELECT user_id FROM {csv(prev, 'users')})"
        ).fetchone()
        assert new[2] == round(USERS * 0.02)
        assert as_of.replace(day=1) <= new[0] and new[1] <= as_of
        # nobody disappears
        gone = con.execute(
            f"SELECT count(*) FROM {csv(prev, 'users')}"
            f" WHERE user_id NOT IN (SELECT user_id FROM {csv(folder, 'users')})"
        ).fetchone()[0]
        assert gone == 0


def test_signup_date_not_after_as_of(drops, con):
    for as_of, folder in drops:
        latest, earliest, bad_format = con.execute(
            f"SELECT max(signup_date::DATE), min(signup_date::DATE),"
            f" count(*) FILTER (NOT regexp_full_match(signup_date, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}'))"
            f" FROM {csv(folder, 'users')}"
        ).fetchone()
        assert latest <= as_of
        assert earliest >= date(as_of.year - 7, 1, 1)
        assert bad_format == 0


def test_about_five_percent_subscriptions_and_labels_change(drops, con):
    for month in range(1, MONTHS):
        before, after = drops[month - 1][1], drops[month][1]
        assert 0.03 <= changed_share(con, before, after, "subscriptions") <= 0.07
        assert 0.03 <= changed_share(con, before, after, "labels") <= 0.07
        assert 0.01 <= changed_share(con, before, after, "payments_agg_90d") <= 0.06
        assert 0.01 <= changed_share(con, before, after, "support_agg_90d") <= 0.06
        assert changed_share(con, before, after, "users") == 0


def test_change_rates_are_parameters(tmp_path, con):
    (_, a), (_, b) = generate_drops(
        tmp_path,
        users=USERS,
        months=2,
        subscription_change_rate=0.2,
        label_change_rate=0.0,
        new_user_rate=0.0,
    )
    assert 0.16 <= changed_share(con, a, b, "subscriptions") <= 0.24
    assert changed_share(con, a, b, "labels") == 0
    assert con.execute(f"SELECT count(*) FROM {csv(b, 'users')}").fetchone()[0] == USERS


def test_months_active_moves_only_with_a_changed_row(drops, con):
    before, after = drops[0][1], drops[1][1]
    moved, changed = con.execute(
        f"""
        SELECT count(*) FILTER (a.months_active <> b.months_active),
               count(*) FILTER (a.months_active <> b.months_active OR a.monthly_fee <> b.monthly_fee
                                OR a.contract_type <> b.contract_type OR a.total_paid <> b.total_paid
                                OR a.plan_stream_tv <> b.plan_stream_tv
                                OR a.plan_stream_movies <> b.plan_stream_movies)
        FROM {csv(before, "subscriptions")} a JOIN {csv(after, "subscriptions")} b USING (user_id)
        """
    ).fetchone()
    assert moved == changed > 0


def test_usage_changes_for_everyone(drops, con):
    for month in range(1, MONTHS):
        assert changed_share(con, drops[month - 1][1], drops[month][1], "usage_agg_30d") == 1.0


def test_hidden_columns_absent_in_month_0_present_from_month_1(drops):
    hidden = [c.name for t in SCHEMA.tables for c in t.columns if c.hidden_at_start]
    assert {"add_on_security", "add_on_backup", "add_on_device_protect", "add_on_support"} <= set(hidden)
    for month, (_, folder) in enumerate(drops):
        for table in SCHEMA.tables:
            expected = [c.name for c in table.columns if month >= 1 or not c.hidden_at_start]
            assert header(folder, table.name) == expected, (folder.name, table.name)


def test_hidden_columns_from_month_is_a_parameter(tmp_path):
    (_, m0), (_, m1), (_, m2) = generate_drops(tmp_path, users=100, months=3, hidden_columns_from_month=2)
    subs = SCHEMA.table("subscriptions")
    assert "add_on_security" not in header(m0, "subscriptions")
    assert "add_on_security" not in header(m1, "subscriptions")
    assert header(m2, "subscriptions") == [c.name for c in subs.columns]
    (_, first), *_ = generate_drops(tmp_path / "all", users=100, months=1, hidden_columns_from_month=0)
    assert header(first, "subscriptions") == [c.name for c in subs.columns]


def test_value_domains(drops, con):
    def values(folder, table, column):
        return {r[0] for r in con.execute(f'SELECT DISTINCT "{column}" FROM {csv(folder, table)}').fetchall()}

    def decimals(folder, table, column, places):
        bad = con.execute(
            f"SELECT count(*) FILTER (NOT regexp_full_match(\"{column}\", '[0-9]+\\.[0-9]{{{places}}}')),"
            f' min("{column}"::DOUBLE), max("{column}"::DOUBLE) FROM {csv(folder, table)}'
        ).fetchone()
        assert bad[0] == 0, (folder.name, table, column)
        return bad[1], bad[2]

    def ints(folder, table, column):
        bad, lo, hi = con.execute(
            f"SELECT count(*) FILTER (NOT regexp_full_match(\"{column}\", '[0-9]+')),"
            f' min("{column}"::INT), max("{column}"::INT) FROM {csv(folder, table)}'
        ).fetchone()
        assert bad == 0, (folder.name, table, column)
        return lo, hi

    for _, folder in drops:
        for table in SCHEMA.tables:
            for col in table.columns:
                if col.pg_type == "BOOLEAN" and col.name in header(folder, table.name):
                    assert values(folder, table.name, col.name) == {"True", "False"}, (table.name, col.name)
        assert values(folder, "users", "user_gender") == {"Male", "Female"}
        assert values(folder, "subscriptions", "contract_type") == {"Month-to-month", "One year", "Two year"}
        assert values(folder, "subscriptions", "net_service") == {"DSL", "Fiber optic", "No"}

        lo, hi = decimals(folder, "subscriptions", "monthly_fee", 2)
        assert lo >= 18.25 and hi <= 118.75
        assert decimals(folder, "subscriptions", "total_paid", 2)[0] >= 0
        lo, hi = decimals(folder, "usage_agg_30d", "watch_hours_30d", 4)
        assert lo >= 0 and hi <= 300
        assert decimals(folder, "usage_agg_30d", "avg_session_mins_7d", 4)[0] >= 0
        assert decimals(folder, "support_agg_90d", "ticket_avg_resolution_hrs_90d", 4)[0] >= 0

        assert ints(folder, "subscriptions", "months_active")[0] >= 0
        lo, hi = ints(folder, "usage_agg_30d", "unique_devices_30d")
        assert lo >= 1 and hi <= 6
        assert ints(folder, "usage_agg_30d", "skips_7d")[0] >= 0
        assert ints(folder, "usage_agg_30d", "rebuffer_events_7d")[0] >= 0
        lo, hi = ints(folder, "payments_agg_90d", "failed_payments_90d")
        assert lo >= 0 and hi <= 5
        lo, hi = ints(folder, "support_agg_90d", "support_tickets_90d")
        assert lo >= 0 and hi <= 10

        zero_failed, churn = con.execute(
            f"SELECT avg((failed_payments_90d = '0')::INT) FROM {csv(folder, 'payments_agg_90d')}"
            f" UNION ALL SELECT avg((churn_label = 'True')::INT) FROM {csv(folder, 'labels')}"
        ).fetchall()
        assert zero_failed[0] > 0.7
        assert 0.2 <= churn[0] <= 0.3
        no_ticket_hours = con.execute(
            f"SELECT count(*) FROM {csv(folder, 'support_agg_90d')}"
            f" WHERE support_tickets_90d = '0' AND ticket_avg_resolution_hrs_90d <> '0.0000'"
        ).fetchone()[0]
        assert no_ticket_hours == 0


def test_new_users_start_with_zero_months_active(drops, con):
    _, prev = drops[0]
    _, folder = drops[1]
    active = con.execute(
        f"SELECT list(DISTINCT months_active) FROM {csv(folder, 'subscriptions')}"
        f" WHERE user_id NOT IN (SELECT user_id FROM {csv(prev, 'users')})"
    ).fetchone()[0]
    assert active == ["0"]


def test_unknown_schema_column_fails_loudly(tmp_path):
    text = SCHEMA_FILE.read_text(encoding="utf-8").replace(
        "churn_label BOOLEAN", "churn_label BOOLEAN,\n    churn_reason TEXT"
    )
    with pytest.raises(ValueError, match=r"labels\.churn_reason"):
        generate_drops(tmp_path, users=10, months=1, schema=parse_schema(text))
    retyped = SCHEMA_FILE.read_text(encoding="utf-8").replace("churn_label BOOLEAN", "churn_label TEXT")
    with pytest.raises(ValueError, match=r"labels\.churn_label declared TEXT"):
        generate_drops(tmp_path, users=10, months=1, schema=parse_schema(retyped))
    assert not any(tmp_path.iterdir())


def test_cli_writes_months_and_logs_one_line_each(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.generate"):
        assert (
            main(
                [
                    "--out",
                    str(tmp_path),
                    "--users",
                    "50",
                    "--months",
                    "2",
                    "--seed",
                    "3",
                    "--start",
                    "2024-03-31",
                ]
            )
            == 0
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["month_000", "month_001"]
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.generate"]
    assert len(lines) == 2
    assert "2024-03-31" in lines[0] and "2024-04-30" in lines[1]


def test_committed_seeds_are_the_generator_output(tmp_path):
    """data/seeds is exactly `python -m pipeline.generate --users 7000 --months 2 --seed 42`."""
    generate_drops(tmp_path, users=7_000, months=2, seed=42)
    committed = file_bytes(SEEDS_DIR)
    assert sorted(committed) == sorted(f"month_00{m}/{t}.csv" for m in (0, 1) for t in TABLES)
    assert file_bytes(tmp_path) == committed


def test_seed_ids_look_like_telco_ids():
    first = (SEEDS_DIR / "month_000" / "users.csv").read_text(encoding="utf-8").splitlines()[1]
    assert re.fullmatch(ID_PATTERN, first.split(",")[0])
