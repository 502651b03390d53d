"""Drift (issue #18): PSI over the previous month's deciles, checked against a hand computation on a
ten-user drop written as Parquet into a lake layout."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import drift, lakefs
from pipeline.schema import load_schema

JAN, FEB = date(2024, 1, 31), date(2024, 2, 29)
USERS = [f"u{i:02d}" for i in range(1, 11)]


def write_usage(lake: lakefs.Lake, as_of: date, hours: list[str | None]) -> Path:
    table = load_schema().table("usage_agg_30d")
    rows = [
        {
            "user_id": u,
            "watch_hours_30d": None if h is None else Decimal(h),
            "avg_session_mins_7d": Decimal("30"),
            "unique_devices_30d": 2,
            "skips_7d": i % 3,
            "rebuffer_events_7d": None,
        }
        for i, (u, h) in enumerate(zip(USERS, hours, strict=True))
    ]
    path = lake.root / lake.legacy_object("snapshots", table.name, as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.arrow_schema()), path)
    return path


@pytest.fixture
def lake(tmp_path: Path) -> lakefs.Lake:
    return lakefs.Lake(tmp_path / "lake")


def usage_drift(lake: lakefs.Lake, before: list[str | None], after: list[str | None]) -> dict[str, drift.FeatureDrift]:
    files = {"usage_agg_30d": (write_usage(lake, JAN, before), write_usage(lake, FEB, after))}
    month = drift.month_drift(
        duckdb.connect(), FEB, JAN, {t: b for t, (b, _) in files.items()}, {t: a for t, (_, a) in files.items()}
    )
    return {f.column: f for f in month.features if f.table == "usage_agg_30d"}


def test_psi_of_a_shifted_feature_matches_the_hand_computation(lake: lakefs.Lake) -> None:
    hours = [str(h) for h in range(1, 11)]  # 1 … 10: the deciles of January are 1, 2, …, 9
    shifted = [str(Decimal(h) * Decimal("1.5")) for h in hours]  # 1.5, 3, 4.5, …, 15
    watch = usage_drift(lake, hours, shifted)["watch_hours_30d"]
    assert [b.label for b in watch.bins] == ["(-inf, 1]", *(f"({i}, {i + 1}]" for i in range(1, 9)), "(9, +inf)"]
    assert [b.before for b in watch.bins] == [pytest.approx(0.1)] * 10
    # February: 1.5 → (1, 2], 3 → (2, 3], 4.5 → (4, 5], 6 → (5, 6], 7.5 → (7, 8], 9 → (8, 9], 10.5 … 15 → (9, +inf)
    after = [0, 0.1, 0.1, 0, 0.1, 0.1, 0, 0.1, 0.1, 0.4]
    assert [b.after for b in watch.bins] == [pytest.approx(a) for a in after]
    # by hand: three empty bins count as 0.0001, (0.0001 - 0.1) ln(0.0001 / 0.1) each; the last bin
    # (0.4 - 0.1) ln 4; the six others are equal and add 0
    expected = 3 * (0.0001 - 0.1) * math.log(0.0001 / 0.1) + 0.3 * math.log(4)
    assert watch.psi == pytest.approx(expected, rel=1e-9)
    assert watch.psi == pytest.approx(2.4861, abs=1e-4)
    assert watch.before == {"mean": 5.5, "median": 5.5, "p95": pytest.approx(9.55)}
    assert watch.after["mean"] == pytest.approx(8.25)
    assert (watch.null_before, watch.null_after) == (0.0, 0.0)


def test_an_unchanged_month_drifts_by_exactly_zero(lake: lakefs.Lake) -> None:
    hours = [str(h) for h in range(1, 11)]
    features = usage_drift(lake, hours, hours)
    assert {c: f.psi for c, f in features.items()} == {c: 0.0 for c in features}


def test_nulls_are_a_bin_of_their_own_and_counted_in_the_null_rate(lake: lakefs.Lake) -> None:
    hours: list[str | None] = [str(h) for h in range(1, 11)]
    half_empty = hours[:5] + [None] * 5
    watch = usage_drift(lake, hours, half_empty)["watch_hours_30d"]
    assert watch.bins[-1].label == drift.NULL_BIN
    assert (watch.null_before, watch.null_after) == (0.0, 0.5)
    # bins (-inf,1] … (4,5] keep 0.1 each; (5,6] … (9,+inf) go to 0.0001; NULL goes from 0.0001 to 0.5
    expected = 5 * (0.0001 - 0.1) * math.log(0.0001 / 0.1) + (0.5 - 0.0001) * math.log(0.5 / 0.0001)
    assert watch.psi == pytest.approx(expected, rel=1e-9)
    # rebuffer_events_7d is NULL in both months: no drift
    assert usage_drift(lake, hours, hours)["rebuffer_events_7d"].psi == 0.0


def test_an_integer_column_with_few_values_has_fewer_bins(lake: lakefs.Lake) -> None:
    hours = [str(h) for h in range(1, 11)]
    skips = usage_drift(lake, hours, hours)["skips_7d"]  # 0, 1, 2: repeated deciles are merged
    # and (2, +inf), empty in both months, is left out
    assert [b.label for b in skips.bins] == ["(-inf, 0]", "(0, 1]", "(1, 2]"]


def test_every_feature_of_the_contract_is_compared_and_labels_are_not_features() -> None:
    schema = load_schema()
    names = [f"{t.name}.{c.name}" for t, c in drift.feature_columns(schema)]
    assert "usage_agg_30d.watch_hours_30d" in names and "users.user_gender" in names
    assert not [n for n in names if n.startswith("labels.") or n.endswith(".user_id")]
    expected = sum(len(t.value_columns) for t in schema.tables if t.name != "labels")
    assert len(names) == expected


def test_text_keeps_the_twenty_most_frequent_values_and_other(tmp_path: Path) -> None:
    users = load_schema().table("users")
    rows = [{"user_id": f"a{i:03d}", "user_gender": f"g{i % 25:02d}"} for i in range(100)]
    path = tmp_path / "users.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=users.arrow_schema()), path)
    gender = drift.feature_drift(duckdb.connect(), users, users.column("user_gender"), path, path)
    assert [b.label for b in gender.bins] == [f"g{i:02d}" for i in range(20)] + [drift.OTHER]
    assert gender.bins[-1].before == pytest.approx(0.2)  # g20 … g24, four rows each
    assert gender.psi == 0.0


def test_a_column_delivered_for_the_first_time_is_not_drift_but_one_going_empty_is(lake: lakefs.Lake) -> None:
    table = load_schema().table("subscriptions")
    rows = [{"user_id": u, "add_on_backup": None} for u in USERS]
    jan, feb = (lake.root / lake.legacy_object("snapshots", table.name, d) for d in (JAN, FEB))
    for path, data in ((jan, rows), (feb, [{**r, "add_on_backup": True} for r in rows])):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(data, schema=table.arrow_schema()), path)
    con = duckdb.connect()
    arrived = drift.feature_drift(con, table, table.column("add_on_backup"), jan, feb)
    assert (arrived.psi, arrived.null_before, arrived.null_after) == (0.0, 1.0, 0.0)
    assert "hidden at start" in arrived.note
    gone = drift.feature_drift(con, table, table.column("add_on_backup"), feb, jan)
    assert gone.psi == pytest.approx(2 * (1 - 0.0001) * math.log(1 / 0.0001)) and not gone.note


def test_gate_checks_pass_warn_and_fail_by_the_thresholds() -> None:
    def feature(column: str, value: float) -> drift.FeatureDrift:
        return drift.FeatureDrift("usage_agg_30d", column, "numeric", value, 10, 10, 0.0, 0.0, [])

    month = drift.MonthDrift(
        FEB, JAN, [feature("a", 0.05), feature("b", 0.2), feature("c", 0.6)], drift.Population(1, 1, None, None)
    )
    assert [c.outcome for c in drift.gate_checks(month, 0.1, None)] == ["pass", "warn", "warn"]
    checks = drift.gate_checks(month, 0.1, 0.5)
    assert [c.outcome for c in checks] == ["pass", "warn", "fail"]
    assert checks[2].describe() == (
        "PSI of c vs the previous published month (warn over 0.1, fail over 0.5) "
        "(table usage_agg_30d, column c): PSI 0.6"
    )


def test_above_the_exact_threshold_median_and_p95_are_approximate_and_psi_is_unchanged(
    lake: lakefs.Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big tables take median and p95 from approx_quantile in the one scan; the PSI bins stay exact."""
    from pipeline import drift

    hours = [str(h) for h in range(1, len(USERS) + 1)]
    shifted = [str(Decimal(h) * Decimal("1.5")) for h in hours]
    exact = usage_drift(lake, hours, shifted)["watch_hours_30d"]
    monkeypatch.setattr(drift, "EXACT_QUANTILES_UP_TO", 0)
    approx = usage_drift(lake, hours, shifted)["watch_hours_30d"]
    assert approx.psi == exact.psi and [b.after for b in approx.bins] == [b.after for b in exact.bins]
    assert approx.before["median"] == pytest.approx(exact.before["median"], abs=1.0)
    assert approx.before["p95"] == pytest.approx(exact.before["p95"], abs=1.0)


def write_month(lake: lakefs.Lake, as_of: date, shift: int) -> dict[str, Path | None]:
    """users, subscriptions and usage of 40 users, every number, text and flag moved by ``shift``."""
    schema = load_schema()
    ids = [f"u{i:02d}" for i in range(40)]
    rows = {
        "users": [
            {"user_id": u, "signup_date": date(2023, 1, 1 + (i + shift) % 28), "user_gender": f"g{(i + shift) % 23}"}
            for i, u in enumerate(ids)
        ],
        "subscriptions": [
            {
                "user_id": u,
                "months_active": (i * 7 + shift) % 30,
                "plan_stream_tv": None if i % 9 == 0 else (i + shift) % 3 == 0,
                "monthly_fee": Decimal(f"{(i + shift) % 17}.25"),
                "contract_type": ["month", "year", "two"][(i * shift) % 3],
                "add_on_backup": None if not shift else i % 2 == 0,
            }
            for i, u in enumerate(ids)
        ],
        "usage_agg_30d": [
            {"user_id": u, "watch_hours_30d": None if i % 5 == shift else Decimal(i * (1 + shift)), "skips_7d": i % 4}
            for i, u in enumerate(ids)
        ],
    }
    files: dict[str, Path | None] = {}
    for name, data in rows.items():
        table = schema.table(name)
        path = lake.root / lake.legacy_object("snapshots", name, as_of)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(data, schema=table.arrow_schema()), path)
        files[name] = path
    return files


def test_the_previous_months_kept_profile_gives_the_same_drift_as_its_files(lake: lakefs.Lake) -> None:
    """A month whose previous record keeps its drift profile (through the record's JSON) gets exactly the
    drift of one whose previous record lacks it (read from the previous month's files, as before)."""
    import json

    from pipeline.runs import RunRecord

    schema, con = load_schema(), duckdb.connect()
    jan, feb = write_month(lake, JAN, 0), write_month(lake, FEB, 1)
    assert drift.work_drift(con, lake, JAN, None, {t: p for t, p in jan.items() if p}, schema) == (None, {})
    january = drift.month_profiles(con, jan, schema)  # what a second month keeps of itself, for the next
    assert set(january) == {t.name for t, _ in drift.feature_columns(schema)}
    record = RunRecord(JAN, drift_profile=drift.profiles_to_json(january))
    kept = RunRecord.from_json(json.loads(record.dumps())).drift_profile
    assert RunRecord.from_json({"as_of": "2024-01-31"}).drift_profile is None  # a record from before
    with_record = drift.month_drift(con, FEB, JAN, jan, feb, schema, drift.profiles_from_json(kept))
    from_files = drift.month_drift(con, FEB, JAN, jan, feb, schema)
    assert with_record.features == from_files.features
    assert with_record.profiles == from_files.profiles == drift.month_profiles(con, feb, schema)
    moved = {f.feature for f in from_files.features if f.psi > 0}
    assert {"users.user_gender", "subscriptions.months_active", "usage_agg_30d.watch_hours_30d"} <= moved
    # a column the kept profile lacks (added to the contract since), or counted as another type, is read
    # from the previous month's files
    partial = drift.profiles_from_json(kept)
    del partial["subscriptions"].columns["monthly_fee"]
    partial["users"].columns["signup_date"] = dataclasses.replace(
        partial["users"].columns["signup_date"], type="INTEGER"
    )
    assert drift.month_drift(con, FEB, JAN, jan, feb, schema, partial).features == from_files.features


def test_text_with_more_values_than_kept_is_counted_over_both_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = load_schema().table("users")
    paths = []
    for month, values in (("jan", 25), ("feb", 22)):
        rows = [{"user_id": f"a{i:03d}", "user_gender": f"g{i % values:02d}"} for i in range(100)]
        paths.append(tmp_path / f"{month}.parquet")
        pq.write_table(pa.Table.from_pylist(rows, schema=users.arrow_schema()), paths[-1])
    kept = drift.feature_drift(duckdb.connect(), users, users.column("user_gender"), *paths)
    monkeypatch.setattr(drift, "TEXT_VALUES_KEPT", 5)
    over_files = drift.feature_drift(duckdb.connect(), users, users.column("user_gender"), *paths)
    assert over_files == kept and kept.psi > 0 and kept.bins[-1].label == drift.OTHER
