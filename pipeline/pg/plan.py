"""Pure decisions of the publish: what the merge left, the order staging loads the tables in, and for
every live table where its write reads from. No database: "which statement runs for table t this
month" is answered by :func:`plan_live` alone.

The tuning the staging load and the live write share lives here, so neither reads the other's.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipeline.duck import quote, read_parquet
from pipeline.evolve import conformed
from pipeline.pg.copy import export_expr
from pipeline.schema import Schema, Table

# Row-by-row foreign-key checks cost more than the insert itself on a big write. A table that gets more
# than this many new keys has its foreign keys dropped inside the publish transaction and added back
# validated, so readers never see them missing. Updated rows do not count: PostgreSQL does not check a
# reference again when an update leaves the referencing column as it was, and the upsert never changes a
# key. (Measurements: bench/RESULTS.md, "Tuning constants".)
BULK_WRITE_ROWS = 50_000
# Staging loads two tables at a time, each on its own connection: while PostgreSQL parses one table's
# COPY, DuckDB writes out the next, and on two cores both are busy. While the live upsert keeps a
# backend busy with a big write (more than SERIAL_STAGING_ABOVE rows), one at a time: one busy backend
# per core, and the tables the upsert reads from staging arrive one by one from the start. A smaller
# write is over soon enough for two loads to pay (bench/RESULTS.md, "Tuning constants").
STAGING_CONNECTIONS = 2
SERIAL_STAGING_ABOVE = 500_000
# A key build sorts the table's keys: in memory when they fit (the default 64MB spills a million-row
# key's sort to disk; bench/RESULTS.md, "Tuning constants").
KEY_BUILD_MEMORY = "256MB"


def snapshot_rows(counts: dict[str, int]) -> int:
    """Rows of a month's snapshot, from the merge's change counts (everything but the deleted keys)."""
    return sum(counts[k] for k in ("inserted", "updated", "unchanged", "carried"))


@dataclass(frozen=True)
class MergedTable:
    """What the merge left for one table: the snapshot, its changed keys, and the change counts."""

    snapshot_file: Path
    changes_file: Path
    counts: dict[str, int]

    @property
    def written(self) -> int:
        return self.counts["inserted"] + self.counts["updated"]

    @property
    def rows(self) -> int:
        return snapshot_rows(self.counts)

    def select(self, table: Table, changed_only: bool = False) -> str:
        """DuckDB query of the snapshot's rows as PostgreSQL reads them, or only those the merge marked
        inserted or updated."""
        query = f"SELECT {export_expr(table)} FROM {conformed(table, self.snapshot_file)}"
        if changed_only:
            key = quote(table.key)
            query += f" WHERE {key} IN (SELECT {key} FROM {read_parquet(self.changes_file)} WHERE change <> 'deleted')"
        return query

    def select_deleted(self, table: Table) -> str:
        """DuckDB query of the keys a full dump removed."""
        return f"SELECT {quote(table.key)} FROM {read_parquet(self.changes_file)} WHERE change = 'deleted'"


def staging_connections(live_writes: int) -> int:
    """Connections for the staging load, given the rows the live upsert writes meanwhile."""
    return 1 if live_writes > SERIAL_STAGING_ABOVE else STAGING_CONNECTIONS


def staging_order(schema: Schema, merged: dict[str, MergedTable], first: Collection[str] = ()) -> list[str]:
    """The order staging loads the tables in. First those the live upsert reads from staging (``first``):
    the root among them (the upsert writes it before the tables that reference it), then the quickest to
    load, so the upsert, which writes the others meanwhile, waits as little as possible. Then the root
    (the checks of a table that references it wait for it), then the slowest (with two connections, the
    quick ones fill in). A load's time follows the values PostgreSQL parses: rows times columns."""
    root = schema.root.name

    def order(name: str) -> tuple[bool, bool, int]:
        values = merged[name].rows * len(schema.table(name).columns)
        return name not in first, name != root, values if name in first else -values

    return sorted(schema.table_names, key=order)


class Source(StrEnum):
    """Where a live table's write reads its rows from."""

    CSV = "the month's CSV"  # COPY of the CSV staging loads too (DuckDB writes it once), at once
    STAGED = "its staging partition"  # once that partition's load has committed: the month is sent once
    CHANGES = "the merge's changed rows"  # COPYed into a temporary table of the transaction, at once


class Removal(StrEnum):
    """Which keys a live table loses."""

    ABSENT = "keys absent from the month"  # live holds another month: whatever the month does not have
    DELETED = "keys the full dump deleted"  # the merge's deleted keys


@dataclass(frozen=True)
class TableWrite:
    """The live write of one table: ``rows`` from ``source``; into an ``empty`` table (plain INSERT or
    COPY, its key built afterwards) or an upsert; ``bulk``: its references dropped and rebuilt."""

    table: str
    rows: int
    source: Source
    empty: bool
    bulk: bool

    @property
    def statement(self) -> str:
        if self.source is Source.CSV:
            return "COPY"
        return "INSERT" if self.empty else "INSERT … ON CONFLICT"


@dataclass(frozen=True)
class LivePlan:
    """What the live upsert of a month does, decided before it starts."""

    incremental: bool  # live holds the previous month: only the merge's changes are written
    writes: tuple[TableWrite, ...]  # in write order; those read from staging are taken as they commit
    removals: dict[str, Removal]  # table -> which keys it loses, for the tables that lose any

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.writes)

    @property
    def bulk(self) -> list[str]:
        return [w.table for w in self.writes if w.bulk]

    @property
    def empty(self) -> list[str]:
        return [w.table for w in self.writes if w.empty]

    @property
    def from_staging(self) -> set[str]:
        """Tables that take every row from their staging partition, once it is committed."""
        return {w.table for w in self.writes if w.source is Source.STAGED}

    def write(self, table: str) -> TableWrite | None:
        return next((w for w in self.writes if w.table == table), None)


def plan_live(schema: Schema, merged: dict[str, MergedTable], incremental: bool, empty: Collection[str]) -> LivePlan:
    """The live write of a month. ``incremental``: live holds the previous month (none: the first), so
    only the merge's inserted and updated rows are written and a full dump's deleted keys removed;
    otherwise (live holds some other month, e.g. before a correction) every row of the month is
    upserted and live keys absent from the month are removed. ``empty``: live tables with no rows.

    A table that takes every row of the month reads it from the month's CSV when it is empty and big
    (COPY, then its key built in one sorted pass), else from its staging partition; a table that takes
    some rows reads the merge's changed rows. Order: the root first (the others reference it), then the
    changed-rows tables, then the CSV ones (smallest first: staging starts with the biggest, so each
    side exports different tables first and reads the other's), then the staged ones."""
    root = schema.root.name
    writes = {name: m.written if incremental else m.rows for name, m in merged.items() if not incremental or m.written}
    # live holding another month: any of its keys may be new
    new_keys = {name: merged[name].counts["inserted"] if incremental else n for name, n in writes.items()}
    bulk = {name for name in writes if new_keys[name] > BULK_WRITE_ROWS}
    into_empty = {name for name in bulk if name in empty}  # filled without their key, built afterwards
    whole = {name for name in writes if not incremental or merged[name].written == merged[name].rows}

    def write(name: str) -> TableWrite:
        if name in whole:
            source = Source.CSV if name in into_empty else Source.STAGED
        else:
            source = Source.CHANGES
        return TableWrite(name, writes[name], source, empty=name in into_empty, bulk=name in bulk)

    planned = [write(name) for name in schema.table_names if name in writes]
    by_source = {s: [w for w in planned if w.source is s and w.table != root] for s in Source}
    smallest_first = list(reversed(staging_order(schema, merged)))
    ordered = [
        *(w for w in planned if w.table == root),
        *by_source[Source.CHANGES],
        *sorted(by_source[Source.CSV], key=lambda w: smallest_first.index(w.table)),
        *by_source[Source.STAGED],
    ]
    removals = {}
    for name in schema.table_names:
        if not incremental and name not in into_empty:
            removals[name] = Removal.ABSENT
        elif incremental and merged[name].counts["deleted"]:
            removals[name] = Removal.DELETED
    return LivePlan(incremental, tuple(ordered), removals)
