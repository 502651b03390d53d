"""The floor: the raw work a month needs at least, with nothing else.

1. DuckDB turns each of the six CSVs into Parquet (type detection, default compression);
2. psycopg 3 COPY FROM STDIN of each CSV's bytes into a fresh, unindexed PostgreSQL table (the types of
   sql/schema.sql, no key, no constraint).

    python -m bench.run_floor --source DIR --dsn DSN --schema S --parquet-dir DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench.contract import load
from bench.contract import quote as _q

COPY_CHUNK = 1 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_floor")
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--parquet-dir", required=True, type=Path)
    parser.add_argument("--tables", type=Path, default=None, help="tables JSON from bench.contract.dump")
    args = parser.parse_args(argv)

    import duckdb
    import psycopg

    tables = load(args.tables)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    shutil.rmtree(args.parquet_dir, ignore_errors=True)
    args.parquet_dir.mkdir(parents=True)
    con = duckdb.connect()
    for table in tables:
        src = str(args.source / f"{table.name}.csv").replace("'", "''")
        dest = str(args.parquet_dir / f"{table.name}.parquet").replace("'", "''")
        con.execute(f"COPY (SELECT * FROM read_csv('{src}')) TO '{dest}' (FORMAT parquet)")
    con.close()
    timings["duckdb_csv_to_parquet"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    s = _q(args.schema)
    with psycopg.connect(args.dsn) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        for table in tables:
            path = args.source / f"{table.name}.csv"
            with path.open("rb") as f:
                header = [h.strip() for h in f.readline().decode("utf-8-sig").rstrip("\r\n").split(",")]
            columns = [table.column(h) for h in header]
            conn.execute(f"DROP TABLE IF EXISTS {s}.{_q(table.name)}")
            conn.execute(
                f"CREATE TABLE {s}.{_q(table.name)} ({', '.join(f'{_q(c.name)} {c.ddl_type}' for c in columns)})"
            )
            names = ", ".join(_q(c.name) for c in columns)
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {s}.{_q(table.name)} ({names}) FROM STDIN (FORMAT csv, HEADER true)") as copy,
                path.open("rb") as f,
            ):
                while chunk := f.read(COPY_CHUNK):
                    copy.write(chunk)
            conn.commit()
    timings["pg_copy"] = round(time.perf_counter() - t0, 3)
    shutil.rmtree(args.parquet_dir, ignore_errors=True)
    print(f"floor: {timings}", file=sys.stderr)
    print(json.dumps({"timings": timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
