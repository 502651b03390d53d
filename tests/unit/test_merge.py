"""pipeline.merge.merge_table on three-row Parquet files: every change kind, counted and written.

In-memory DuckDB, files in tmp_path; no PostgreSQL, no subprocess. The table is the contract's
``support_agg_90d`` (a key, an INT and a NUMERIC), so the merge sees the real schema.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.duck import read_parquet
from pipeline.merge import MergeResult, merge_table
from pipeline.schema import load_schema

TABLE = load_schema().table("support_agg_90d")
# user_id -> (support_tickets_90d, ticket_avg_resolution_hrs_90d)
Rows = dict[str, tuple[int | None, Decimal | None]]


def write(path: Path, rows: Rows) -> Path:
    """A Parquet file with the table's declared Arrow types, rows in the order given."""
    keys = list(rows)
    columns = [keys, [rows[k][0] for k in keys], [rows[k][1] for k in keys]]
    pq.write_table(pa.table(columns, schema=TABLE.arrow_schema()), path)
    return path


def read(path: Path) -> list[tuple]:
    """Rows of a Parquet file in file order (the order matters: a snapshot is written in key order)."""
    return duckdb.execute(f"SELECT * FROM {read_parquet(path)}").fetchall()


def changes(path: Path) -> dict[str, str]:
    return dict(duckdb.execute(f"SELECT * FROM {read_parquet(path)}").fetchall())


def merge(tmp_path: Path, drop: Rows, previous: Rows | None, **options: bool) -> MergeResult:
    with duckdb.connect() as con:
        return merge_table(
            con,
            TABLE,
            drop_file=write(tmp_path / "drop.parquet", drop),
            previous_file=None if previous is None else write(tmp_path / "previous.parquet", previous),
            snapshot_file=tmp_path / "snapshot.parquet",
            changes_file=tmp_path / "changes.parquet",
            **options,
        )


PREVIOUS: Rows = {"u1": (1, Decimal("1.5")), "u2": (2, Decimal("2.5")), "u3": (3, None)}
# u1 absent, u2 the same, u3 a new value, u4 new
DROP: Rows = {"u4": (4, Decimal("4.5")), "u3": (3, Decimal("3.25")), "u2": (2, Decimal("2.5"))}


def test_every_key_gets_one_change_kind_and_the_counts_add_up(tmp_path: Path):
    result = merge(tmp_path, DROP, PREVIOUS)
    assert result.counts == {"inserted": 1, "updated": 1, "unchanged": 1, "carried": 1, "deleted": 0}
    assert (result.table, result.rows, result.previous_rows) == ("support_agg_90d", 4, 3)


def test_snapshot_takes_the_drops_values_keeps_absent_keys_and_is_in_key_order(tmp_path: Path):
    merge(tmp_path, DROP, PREVIOUS)
    assert read(tmp_path / "snapshot.parquet") == [
        ("u1", 1, Decimal("1.5")),  # carried as it was
        ("u2", 2, Decimal("2.5")),
        ("u3", 3, Decimal("3.25")),  # the drop's value
        ("u4", 4, Decimal("4.5")),
    ]


def test_changes_file_lists_only_the_keys_live_tables_must_touch(tmp_path: Path):
    merge(tmp_path, DROP, PREVIOUS)
    assert changes(tmp_path / "changes.parquet") == {"u3": "updated", "u4": "inserted"}


def test_full_dump_deletes_absent_keys_from_the_snapshot_and_lists_them_as_changes(tmp_path: Path):
    result = merge(tmp_path, DROP, PREVIOUS, full_dump=True)
    assert result.counts == {"inserted": 1, "updated": 1, "unchanged": 1, "carried": 0, "deleted": 1}
    assert (result.rows, result.previous_rows) == (3, 3)
    assert [row[0] for row in read(tmp_path / "snapshot.parquet")] == ["u2", "u3", "u4"]
    assert changes(tmp_path / "changes.parquet") == {"u1": "deleted", "u3": "updated", "u4": "inserted"}


def test_nulls_compare_equal_and_a_value_that_becomes_null_is_an_update(tmp_path: Path):
    previous: Rows = {"u1": (None, None), "u2": (2, Decimal("2")), "u3": (3, Decimal("3"))}
    drop: Rows = {"u1": (None, None), "u2": (2, None), "u3": (3, Decimal("3.0000000000"))}
    result = merge(tmp_path, drop, previous)
    assert result.counts == {"inserted": 0, "updated": 1, "unchanged": 2, "carried": 0, "deleted": 0}
    assert changes(tmp_path / "changes.parquet") == {"u2": "updated"}


@pytest.mark.parametrize("drop_sorted", [False, True], ids=["sorted by the merge", "staged in key order"])
def test_first_month_inserts_every_key_and_its_snapshot_is_the_drop_in_key_order(tmp_path: Path, drop_sorted: bool):
    drop = dict(sorted(DROP.items())) if drop_sorted else DROP
    result = merge(tmp_path, drop, None, drop_sorted=drop_sorted)
    assert result.counts == {"inserted": 3, "updated": 0, "unchanged": 0, "carried": 0, "deleted": 0}
    assert (result.rows, result.previous_rows) == (3, 0)
    assert [row[0] for row in read(tmp_path / "snapshot.parquet")] == ["u2", "u3", "u4"]
    assert changes(tmp_path / "changes.parquet") == {"u2": "inserted", "u3": "inserted", "u4": "inserted"}


def test_merge_result_survives_its_json_round_trip(tmp_path: Path):
    result = merge(tmp_path, DROP, PREVIOUS)
    assert MergeResult.from_json(result.to_json()) == result
