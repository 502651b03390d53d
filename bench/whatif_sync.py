"""What-if measurements of the PostgreSQL publish, to decide what to optimise (no pipeline code changed).

Loads one drop into UNLOGGED staging tables (COPY, as the pipeline's staging is), then times in separate
transactions, per table, ways to fill the live table and the month's snapshot partition:

  live_as_pipeline      INSERT … ON CONFLICT (key) DO UPDATE … WHERE (…) IS DISTINCT FROM (…), into a
                        table with its primary key and REFERENCES users (what pipeline.pg does)
  live_no_fk            the same, without the REFERENCES constraint (Soda already checked references)
  live_plain_insert     plain INSERT into the empty table with key and reference (first month only)
  live_index_after      INSERT into a table without any index, then ADD PRIMARY KEY
  live_key_collate_c    as live_as_pipeline, the key declared COLLATE "C"
  snapshot_as_pipeline  INSERT into a fresh partition of a table with PRIMARY KEY (key, as_of)
  snapshot_index_after  INSERT into a plain table, then ADD PRIMARY KEY, then ATTACH PARTITION

    python -m bench.whatif_sync --source DIR --dsn DSN [--tables users,subscriptions]

Creates and drops its own schema ``whatif``. Run it on a quiet server: it reports wall seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg

from bench.contract import Table, load
from bench.contract import quote as q

S = "whatif"


def _cols(table: Table, **kw: str) -> str:
    return ", ".join(f"{q(c.name)} {c.pg_type}" + kw.get(c.name, "") for c in table.columns)


def timed(conn: psycopg.Connection, statements: list[str]) -> float:
    conn.execute("CHECKPOINT")
    t0 = time.perf_counter()
    with conn.transaction():
        for s in statements:
            conn.execute(s)
    return round(time.perf_counter() - t0, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.whatif_sync")
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--dsn", required=True)
    p.add_argument("--tables", default="")
    p.add_argument("--as-of", default="2024-01-31")
    args = p.parse_args(argv)
    tables = load(None)
    root = tables[0]
    wanted = {t for t in args.tables.split(",") if t} or {t.name for t in tables}
    results: dict[str, dict[str, float]] = {}
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
        conn.execute(f"CREATE SCHEMA {S}")
        for t in tables:  # staging, like the pipeline's: UNLOGGED, no index
            path = args.source / f"{t.name}.csv"
            header = path.open("rb").readline().decode().strip().split(",")
            conn.execute(f"CREATE UNLOGGED TABLE {S}.{q('stg_' + t.name)} ({_cols(t)})")
            with (
                conn.cursor().copy(
                    f"COPY {S}.{q('stg_' + t.name)} ({', '.join(map(q, header))}) FROM STDIN (FORMAT csv, HEADER true)"
                ) as cp,
                path.open("rb") as f,
            ):
                while chunk := f.read(1 << 20):
                    cp.write(chunk)
            conn.execute(f"ANALYZE {S}.{q('stg_' + t.name)}")
        # the root's live table exists for the references of the others
        conn.execute(f"CREATE TABLE {S}.live_root ({_cols(root)}, PRIMARY KEY ({q(root.key)}))")
        conn.execute(f"INSERT INTO {S}.live_root SELECT * FROM {S}.{q('stg_' + root.name)}")
        conn.execute("CHECKPOINT")
        for t in tables:
            if t.name not in wanted:
                continue
            key, stg = q(t.key), f"{S}.{q('stg_' + t.name)}"
            names = ", ".join(q(c.name) for c in t.columns)
            values = [c.name for c in t.columns if c.name != t.key]
            upsert_tail = (
                f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(f'{q(c)} = EXCLUDED.{q(c)}' for c in values)} "
                f"WHERE ({', '.join('t.' + q(c) for c in values)}) IS DISTINCT FROM "
                f"({', '.join('EXCLUDED.' + q(c) for c in values)})"
            )
            fk = f", FOREIGN KEY ({key}) REFERENCES {S}.live_root ({q(root.key)})" if t is not root else ""
            r: dict[str, float] = {}

            variants = {  # name: (columns, constraints, ON CONFLICT clause, statements after)
                "live_as_pipeline": (_cols(t), f", PRIMARY KEY ({key}){fk}", upsert_tail, []),
                "live_no_fk": (_cols(t), f", PRIMARY KEY ({key})", upsert_tail, []),
                "live_plain_insert": (_cols(t), f", PRIMARY KEY ({key}){fk}", "", []),
                "live_index_after": (_cols(t), "", "", [f"ALTER TABLE {{target}} ADD PRIMARY KEY ({key})"]),
                "live_key_collate_c": (
                    _cols(t, **{t.key: ' COLLATE "C"'}),
                    f", PRIMARY KEY ({key}){fk}",
                    upsert_tail,
                    [],
                ),
            }
            for name, (cols, constraints, on_conflict, after) in variants.items():
                target = f"{S}.{q(name)}"
                conn.execute(f"DROP TABLE IF EXISTS {target}")
                r[name] = timed(
                    conn,
                    [
                        f"CREATE TABLE {target} ({cols}{constraints})",
                        f"INSERT INTO {target} AS t ({names}) SELECT {names} FROM {stg} {on_conflict}",
                        *(a.format(target=target) for a in after),
                    ],
                )
                conn.execute(f"DROP TABLE {target}")
            # snapshots: a partitioned parent with PRIMARY KEY (key, as_of), one partition per month
            parent = f"{S}.{q('snap_' + t.name)}"
            conn.execute(f"DROP TABLE IF EXISTS {parent}")
            conn.execute(
                f"CREATE TABLE {parent} ({_cols(t)}, as_of DATE NOT NULL, PRIMARY KEY ({key}, as_of)) "
                f"PARTITION BY LIST (as_of)"
            )
            part = f"{S}.{q('snap_' + t.name + '_p')}"
            src = f"SELECT {names}, DATE '{args.as_of}' FROM {stg}"
            r["snapshot_as_pipeline"] = timed(
                conn,
                [
                    f"CREATE TABLE {part} PARTITION OF {parent} FOR VALUES IN ('{args.as_of}')",
                    f"INSERT INTO {part} ({names}, as_of) {src}",
                ],
            )
            conn.execute(f"DROP TABLE {part}")
            r["snapshot_index_after"] = timed(
                conn,
                [
                    f"CREATE TABLE {part} ({_cols(t)}, as_of DATE NOT NULL)",
                    f"INSERT INTO {part} ({names}, as_of) {src}",
                    f"ALTER TABLE {part} ADD PRIMARY KEY ({key}, as_of)",
                    f"ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES IN ('{args.as_of}')",
                ],
            )
            conn.execute(f"DROP TABLE {parent}")
            results[t.name] = r
            print(f"{t.name}: " + "  ".join(f"{k}={v:.2f}s" for k, v in r.items()), file=sys.stderr, flush=True)
        conn.execute(f"DROP SCHEMA {S} CASCADE")
    totals = {k: round(sum(r[k] for r in results.values() if k in r), 2) for k in next(iter(results.values()))}
    print(json.dumps({"tables": results, "total": totals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
