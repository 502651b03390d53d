"""Time the drift of one month against the previous one over the snapshot files of a lake, as the
publish computes it (``drift.work_drift`` on a connection from ``duck.connect``): wall and CPU seconds
(the whole process: DuckDB's threads included) per run, the slowest queries, and the result as JSON so
that two versions of the code can be compared value for value.

    LAKE_ROOT=/tmp/drift-lake nice -n 19 python -m bench.drift_profile 2024-02-29 2024-01-31 --runs 3 \
        --json /tmp/drift-after.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from pipeline import drift, duck, lakefs, runs
from pipeline.config import load_settings
from pipeline.schema import load_schema


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Timed:
    """A connection whose every query's wall and CPU seconds are noted (results fetched in execute)."""

    def __init__(self, con: Any, log: list[tuple[float, float, str]]) -> None:
        self.con, self.log = con, log

    def execute(self, sql: str, *args: Any) -> Any:
        w, c = time.perf_counter(), _cpu()
        rel = self.con.execute(sql, *args)
        rows = rel.fetchall()
        self.log.append((time.perf_counter() - w, _cpu() - c, " ".join(sql.split())[:140]))
        return _Rows(rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("as_of", type=date.fromisoformat)
    parser.add_argument("previous", type=date.fromisoformat)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", action="store_true", help="time every query (one more run)")
    parser.add_argument("--json", type=Path, help="write the drift of the last run here")
    parser.add_argument("--threads", type=int, help="DuckDB threads of the drift connection (default: the settings')")
    parser.add_argument("--no-record", action="store_true", help="ignore the previous month's stored numbers")
    args = parser.parse_args()
    settings = load_settings()
    if args.threads:
        settings = dataclasses.replace(settings, duckdb_threads=args.threads)
    schema = load_schema()
    lake = lakefs.Lake(settings.lake_root)
    store = runs.RunStore(lake)
    month_record, previous_record = store.get(args.as_of), store.get(args.previous)
    if month_record is None or previous_record is None:
        sys.exit(f"both {args.as_of} and {args.previous} must be published in {lake.root}")
    merged = {t: month_record.snapshot_file(lake.root, t) for t in schema.table_names}
    kwargs: dict[str, Any] = {}
    if not args.no_record:  # the previous month's profiles as its record keeps them (made here, untimed, if not)
        stored = drift.profiles_from_json(previous_record.drift_profile)
        if not stored:
            with duck.connect(settings) as con:
                before = {t: previous_record.snapshot_file(lake.root, t) for t in schema.table_names}
                stored = drift.month_profiles(con, dict(before), schema)
        kwargs["stored"] = stored
    print(f"duckdb_threads={settings.duckdb_threads or 'default'} runs={args.runs}")
    month = None
    for i in range(args.runs):
        w, c = time.perf_counter(), _cpu()
        with duck.connect(settings) as con:
            month, _ = drift.work_drift(con, lake, args.as_of, args.previous, merged, schema, **kwargs)
        print(f"run {i + 1}: wall {time.perf_counter() - w:.2f} s, cpu {_cpu() - c:.2f} s")
    if args.queries:
        log: list[tuple[float, float, str]] = []
        with duck.connect(settings) as con:
            drift.work_drift(_Timed(con, log), lake, args.as_of, args.previous, merged, schema, **kwargs)  # type: ignore[arg-type]
        print(f"{len(log)} queries, wall {sum(x[0] for x in log):.2f} s, cpu {sum(x[1] for x in log):.2f} s")
        for wall, cpu, sql in sorted(log, key=lambda x: -x[1])[:30]:
            print(f"  {wall:6.2f} s wall {cpu:6.2f} s cpu  {sql}")
    if args.json and month is not None:
        data = {"features": [f.to_json() for f in month.features], "population": month.population.__dict__}
        args.json.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
