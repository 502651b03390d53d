"""The baseline: the approach this project replaces, written the way a typical user wrote it.

Per table, in schema order (users first, the others reference it):
  pandas.read_csv → DataFrame.to_sql into a temporary table (SQLAlchemy + psycopg2, default method and
  chunksize, if_exists='replace') → INSERT INTO live SELECT … FROM tmp ON CONFLICT (user_id) DO UPDATE
  → INSERT INTO <table>_snapshots SELECT *, as_of FROM live.

    python -m bench.run_baseline --setup --dsn DSN --schema S        # once: live + snapshot tables
    python -m bench.run_baseline --as-of D --source DIR --dsn DSN --schema S

Tables and types come from sql/schema.sql through pipeline.schema.load_schema() (see bench.contract);
nothing is hand-written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

from bench.contract import Table, load
from bench.contract import quote as _q


def setup_sql(tables: list[Table], pg_schema: str) -> list[str]:
    s = _q(pg_schema)
    statements = [f"CREATE SCHEMA IF NOT EXISTS {s}"]
    for table in tables:
        cols = []
        for c in table.columns:
            ref = f" REFERENCES {s}.{_q(c.references)} ({_q(c.name)})" if c.references else ""
            cols.append(f"{_q(c.name)} {c.ddl_type}{ref}")
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {s}.{_q(table.name)} ({', '.join(cols)}, PRIMARY KEY ({_q(table.key)}))"
        )
        snap_cols = [f"{_q(c.name)} {c.ddl_type}" for c in table.columns]
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {s}.{_q(table.name + '_snapshots')} ({', '.join(snap_cols)}, "
            f"as_of DATE NOT NULL, PRIMARY KEY ({_q(table.key)}, as_of))"
        )
    return statements


def run_month(engine, tables: list[Table], pg_schema: str, as_of: date, source: Path) -> dict:
    import pandas as pd
    from sqlalchemy import text

    s = _q(pg_schema)
    timings: dict[str, dict[str, float]] = {}
    for table in tables:
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        df = pd.read_csv(source / f"{table.name}.csv")
        t["read_csv"] = time.perf_counter() - t0
        tmp = f"tmp_{table.name}"
        t0 = time.perf_counter()
        df.to_sql(tmp, engine, schema=pg_schema, if_exists="replace", index=False)
        t["to_sql"] = time.perf_counter() - t0
        present = [c for c in table.columns if c.name in df.columns]  # month 0 lacks the hidden-at-start columns
        del df
        names = ", ".join(_q(c.name) for c in present)
        casts = ", ".join(f"{_q(c.name)}::{c.pg_type}" for c in present)
        updates = ", ".join(f"{_q(c.name)} = EXCLUDED.{_q(c.name)}" for c in present if c.name != table.key)
        all_names = ", ".join(_q(c.name) for c in table.columns)
        with engine.begin() as conn:
            t0 = time.perf_counter()
            conn.execute(
                text(
                    f"INSERT INTO {s}.{_q(table.name)} ({names}) SELECT {casts} FROM {s}.{_q(tmp)} "
                    f"ON CONFLICT ({_q(table.key)}) DO UPDATE SET {updates}"
                )
            )
            t["upsert"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            conn.execute(
                text(
                    f"INSERT INTO {s}.{_q(table.name + '_snapshots')} ({all_names}, as_of) "
                    f"SELECT {all_names}, DATE '{as_of.isoformat()}' FROM {s}.{_q(table.name)}"
                )
            )
            t["snapshot"] = time.perf_counter() - t0
        timings[table.name] = {k: round(v, 3) for k, v in t.items()}
        print(f"baseline {table.name}: " + " ".join(f"{k}={v:.2f}s" for k, v in t.items()), file=sys.stderr, flush=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_baseline")
    parser.add_argument("--setup", action="store_true", help="create the schema, live and snapshot tables")
    parser.add_argument("--as-of", type=date.fromisoformat)
    parser.add_argument("--source", type=Path)
    parser.add_argument("--dsn", required=True, help="libpq DSN or URL of the bench database")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--tables", type=Path, default=None, help="tables JSON from bench.contract.dump")
    args = parser.parse_args(argv)
    tables = load(args.tables)

    from sqlalchemy import create_engine, text

    from bench.pg import to_url

    engine = create_engine(to_url(args.dsn, "postgresql+psycopg2"))
    try:
        if args.setup:
            with engine.begin() as conn:
                for statement in setup_sql(tables, args.schema):
                    conn.execute(text(statement))
            return 0
        if args.as_of is None or args.source is None:
            parser.error("--as-of and --source are required unless --setup")
        timings = run_month(engine, tables, args.schema, args.as_of, args.source)
        print(json.dumps({"timings": timings}))
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
