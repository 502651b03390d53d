"""Which statement runs for each live table in a month: pipeline.pg.plan, with no database."""

from __future__ import annotations

from pathlib import Path

from pipeline.pg.plan import (
    BULK_WRITE_ROWS,
    SERIAL_STAGING_ABOVE,
    STAGING_CONNECTIONS,
    MergedTable,
    Removal,
    Source,
    plan_live,
    staging_connections,
    staging_order,
)
from pipeline.schema import load_schema

SCHEMA = load_schema()
ROOT = SCHEMA.root.name
BIG = BULK_WRITE_ROWS + 1


def month(**counts: dict[str, int]) -> dict[str, MergedTable]:
    """Every table of the schema with the given change counts (default: 10 unchanged rows)."""
    merged = {}
    for name in SCHEMA.table_names:
        table_counts = {"inserted": 0, "updated": 0, "unchanged": 10, "carried": 0, "deleted": 0}
        table_counts.update(counts.get(name, {}))
        merged[name] = MergedTable(Path("unused.parquet"), Path("unused-changes.parquet"), table_counts)
    return merged


def first_month(rows: int) -> dict[str, MergedTable]:
    return month(**{t: {"inserted": rows, "unchanged": 0} for t in SCHEMA.table_names})


def test_a_small_first_month_upserts_every_table_from_its_staging_partition_root_first():
    plan = plan_live(SCHEMA, first_month(7000), incremental=True, empty=SCHEMA.table_names)
    assert [w.table for w in plan.writes][0] == ROOT
    assert {w.table for w in plan.writes} == set(SCHEMA.table_names)
    assert all(w.source is Source.STAGED and w.statement == "INSERT … ON CONFLICT" for w in plan.writes)
    assert plan.from_staging == set(SCHEMA.table_names)
    assert plan.bulk == [] and plan.empty == [] and plan.removals == {}


def test_a_big_first_month_copies_the_csv_into_empty_tables_and_builds_their_keys_afterwards():
    plan = plan_live(SCHEMA, first_month(BIG), incremental=True, empty=SCHEMA.table_names)
    assert all(w.source is Source.CSV and w.statement == "COPY" for w in plan.writes)
    assert set(plan.empty) == set(plan.bulk) == set(SCHEMA.table_names)
    assert plan.from_staging == set()
    # the root first; the others smallest first, the reverse of the order staging loads them in
    loads = [t for t in staging_order(SCHEMA, first_month(BIG)) if t != ROOT]
    assert [w.table for w in plan.writes] == [ROOT, *reversed(loads)]


def test_a_following_month_upserts_the_merges_changed_rows_and_reads_whole_tables_from_staging():
    merged = month(
        users={"inserted": 2, "unchanged": 8},
        usage_agg_30d={"updated": 10, "unchanged": 0},
        labels={"updated": 1, "unchanged": 9},
    )
    plan = plan_live(SCHEMA, merged, incremental=True, empty=[])
    assert [w.table for w in plan.writes] == [ROOT, "labels", "usage_agg_30d"]
    sources = {w.table: (w.source, w.rows, w.statement) for w in plan.writes}
    assert sources == {
        ROOT: (Source.CHANGES, 2, "INSERT … ON CONFLICT"),
        "labels": (Source.CHANGES, 1, "INSERT … ON CONFLICT"),
        "usage_agg_30d": (Source.STAGED, 10, "INSERT … ON CONFLICT"),
    }
    assert plan.removals == {}


def test_a_month_that_changes_nothing_writes_nothing():
    plan = plan_live(SCHEMA, month(), incremental=True, empty=[])
    assert plan.writes == () and plan.rows == 0 and plan.removals == {}


def test_a_full_dump_removes_the_keys_the_merge_deleted():
    merged = month(users={"deleted": 3, "unchanged": 7}, subscriptions={"deleted": 3, "unchanged": 7})
    plan = plan_live(SCHEMA, merged, incremental=True, empty=[])
    assert plan.writes == ()
    assert plan.removals == {ROOT: Removal.DELETED, "subscriptions": Removal.DELETED}


def test_live_holding_another_month_takes_the_whole_month_and_loses_keys_absent_from_it():
    """A correction of the latest month: live holds the month being replaced, not the previous one."""
    merged = month(users={"inserted": 2, "unchanged": 8})
    plan = plan_live(SCHEMA, merged, incremental=False, empty=[])
    assert {w.table for w in plan.writes} == set(SCHEMA.table_names)
    assert all(w.source is Source.STAGED and w.rows == merged[w.table].rows for w in plan.writes)
    assert plan.removals == dict.fromkeys(SCHEMA.table_names, Removal.ABSENT)


def test_a_big_write_into_a_table_with_rows_drops_only_its_references():
    merged = month(users={"inserted": BIG, "unchanged": 10})
    plan = plan_live(SCHEMA, merged, incremental=True, empty=[])
    (users,) = plan.writes
    assert users.bulk and not users.empty and users.source is Source.CHANGES
    assert plan.bulk == [ROOT] and plan.empty == []


def test_staging_loads_one_table_at_a_time_only_beside_a_live_write_too_big_to_be_over_soon():
    assert STAGING_CONNECTIONS == 2
    assert staging_connections(0) == staging_connections(SERIAL_STAGING_ABOVE) == STAGING_CONNECTIONS
    assert staging_connections(SERIAL_STAGING_ABOVE + 1) == 1
    assert staging_connections(BULK_WRITE_ROWS + 1) == STAGING_CONNECTIONS  # a write that drops references
