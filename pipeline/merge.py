"""Merge: the previous month's snapshot upserted with the new drop, by key, in DuckDB.

Every key of either side gets one change kind:
- ``inserted``: new in the drop;
- ``updated``: in both, some value differs;
- ``unchanged``: in both, every value equal (NULLs equal);
- ``carried``: only in the previous snapshot, kept as it was (the default, upsert);
- ``deleted``: only in the previous snapshot, and the drop is a full dump: removed.

The snapshot (everything but ``deleted``, sorted by key so the file is reproducible) is written as
zstd Parquet; a first month's, with nothing to merge, is the typed drop that staging wrote in key
order, linked rather than written again. The keys that PostgreSQL's live tables must touch (inserted,
updated, deleted) go to a small ``changes.parquet``, so the live upsert costs what changed, not the
table's size.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from pipeline import lakefs
from pipeline.duck import PARQUET_OPTIONS, literal, quote
from pipeline.evolve import conformed, conforms
from pipeline.schema import Table

CHANGE_KINDS = ("inserted", "updated", "unchanged", "carried", "deleted")
LIVE_CHANGES = ("inserted", "updated", "deleted")


@dataclass
class MergeResult:
    table: str
    rows: int  # rows in the new snapshot
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    carried: int = 0
    deleted: int = 0
    previous_rows: int = 0
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> MergeResult:
        return cls(**json.loads(text))

    @property
    def counts(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in CHANGE_KINDS}


def merge_table(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    drop_file: Path,
    previous_file: Path | None,
    snapshot_file: Path,
    changes_file: Path,
    full_dump: bool = False,
    drop_sorted: bool = False,
) -> MergeResult:
    """Write the snapshot ``previous ⊕ drop`` to ``snapshot_file`` and the live changes to ``changes_file``.
    ``drop_sorted``: the drop file is in key order already (see :func:`pipeline.stage.stage_table`)."""
    started = time.perf_counter()
    columns = ", ".join(quote(c) for c in table.column_names)
    if previous_file is None:
        counts = _first_month(con, table, drop_file, drop_sorted, columns, snapshot_file, changes_file)
    else:
        # either side may have been written under an older contract (a month recomputed from its raw
        # drop, the previous snapshot before a column was added): read both as the current contract
        drop, previous = conformed(table, drop_file), conformed(table, previous_file)
        counts = _upsert(con, table, drop, previous, columns, snapshot_file, changes_file, full_dump)
    result = MergeResult(table=table.name, rows=0, **{k: counts.get(k, 0) for k in CHANGE_KINDS})
    result.rows = result.inserted + result.updated + result.unchanged + result.carried
    result.previous_rows = result.updated + result.unchanged + result.carried + result.deleted
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _first_month(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    drop_file: Path,
    drop_sorted: bool,
    columns: str,
    snapshot_file: Path,
    changes_file: Path,
) -> dict[str, int]:
    """Nothing to merge with: the snapshot is the drop in key order, and every key is new. A drop staged
    in key order is linked, not written again (bench/RESULTS.md, "Tuning constants")."""
    key = quote(table.key)
    drop = conformed(table, drop_file)
    if drop_sorted and conforms(table, drop_file):
        lakefs.link_or_copy(drop_file, lakefs.fresh(snapshot_file))
    else:
        sorted_drop = f"SELECT {columns} FROM {drop} ORDER BY {key}"
        con.execute(f"COPY ({sorted_drop}) TO {literal(str(lakefs.fresh(snapshot_file)))} ({PARQUET_OPTIONS})")
    (rows,) = con.execute(
        f"COPY (SELECT {key}, 'inserted' AS change FROM {drop}) "
        f"TO {literal(str(lakefs.fresh(changes_file)))} ({PARQUET_OPTIONS})"
    ).fetchone() or (0,)
    return {"inserted": int(rows)}


def _upsert(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    drop: str,
    previous: str,
    columns: str,
    snapshot_file: Path,
    changes_file: Path,
    full_dump: bool,
) -> dict[str, int]:
    """The previous snapshot upserted with the drop by key: each key's change kind, the snapshot and the
    changed keys (unsorted: the live sync only looks keys up in it)."""
    key = quote(table.key)
    same = " AND ".join(f"d.{quote(c.name)} IS NOT DISTINCT FROM p.{quote(c.name)}" for c in table.value_columns)
    gone = "deleted" if full_dump else "carried"
    values = ", ".join(
        f"CASE WHEN d.{key} IS NULL THEN p.{quote(c.name)} ELSE d.{quote(c.name)} END AS {quote(c.name)}"
        for c in table.value_columns
    )
    merged = f"merged_{table.name}"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {merged} AS
        SELECT coalesce(d.{key}, p.{key}) AS {key}, {values},
               CASE WHEN d.{key} IS NULL THEN '{gone}'
                    WHEN p.{key} IS NULL THEN 'inserted'
                    WHEN {same or "true"} THEN 'unchanged'
                    ELSE 'updated' END AS _change
        FROM {drop} AS d FULL OUTER JOIN {previous} AS p ON d.{key} = p.{key}"""
    )
    con.execute(
        f"COPY (SELECT {columns} FROM {merged} WHERE _change <> 'deleted' ORDER BY {key}) "
        f"TO {literal(str(lakefs.fresh(snapshot_file)))} ({PARQUET_OPTIONS})"
    )
    kinds = ", ".join(map(literal, LIVE_CHANGES))
    con.execute(
        f"COPY (SELECT {key}, _change AS change FROM {merged} WHERE _change IN ({kinds})) "
        f"TO {literal(str(lakefs.fresh(changes_file)))} ({PARQUET_OPTIONS})"
    )
    counts = dict(con.execute(f"SELECT _change, count(*) FROM {merged} GROUP BY ALL").fetchall())
    con.execute(f"DROP TABLE {merged}")
    return {k: int(v) for k, v in counts.items()}
