"""The peer: dlt 1.x merge of a month, the tool a user would most likely pick instead.

Arrow tables from ``pyarrow.csv.read_csv`` of each file, ``pipeline.run(table, table_name=…,
write_disposition="merge", primary_key="user_id")`` into PostgreSQL, intermediate-file compression off
(``NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION=true``), telemetry off. Only the merge: no checks, no
snapshots, no lake.

    python -m bench.run_peer --as-of D --source DIR --dsn DSN --dataset NAME --pipelines-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_peer")
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--pipelines-dir", required=True, type=Path)
    parser.add_argument("--tables", type=Path, default=None, help="tables JSON from bench.contract.dump")
    args = parser.parse_args(argv)

    # set before dlt is imported: dlt reads its configuration from the environment
    os.environ["NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION"] = "true"
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ.setdefault("DLT_DATA_DIR", str(args.pipelines_dir / "_data"))

    import dlt
    import pyarrow.csv

    from bench.contract import load
    from bench.pg import to_url

    credentials = to_url(args.dsn)
    if "@" in credentials and ":" not in credentials.split("://", 1)[1].split("@", 1)[0]:
        # dlt insists on a password even where the server does not ask for one (trust, peer auth)
        credentials = credentials.replace("@", ":unused@", 1)
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{args.dataset}",
        destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name=args.dataset,
        pipelines_dir=str(args.pipelines_dir),
        progress="log" if os.environ.get("BENCH_DLT_PROGRESS") else None,
    )
    timings: dict[str, dict[str, float]] = {}
    for table in load(args.tables):
        t0 = time.perf_counter()
        arrow_table = pyarrow.csv.read_csv(args.source / f"{table.name}.csv")
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        pipeline.run(arrow_table, table_name=table.name, write_disposition="merge", primary_key=table.key)
        run = time.perf_counter() - t0
        del arrow_table
        timings[table.name] = {"read_csv": round(read, 3), "run": round(run, 3)}
        print(f"peer {table.name}: read_csv={read:.2f}s run={run:.2f}s", file=sys.stderr, flush=True)
    print(json.dumps({"timings": timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
