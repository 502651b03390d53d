"""One month of the pipeline in this process: ``pipeline.month.run_month`` on a given lake and schema.

    python -m bench.run_pipeline --as-of D --source DIR --lake L --dsn DSN --schema S [--trace-sql FILE]

Not the bench's timed pipeline run (that is the whole ``luigi --module pipeline Month`` command, see
:mod:`bench.main`): ``python -m bench --trace-sql`` runs it for its profiling sequence, which needs the
pipeline in-process to time each statement.

``--trace-sql FILE`` (profiling only, never in a timed run) appends one JSON line per SQL statement the
pipeline (psycopg 3) or Soda (psycopg2) sends, with its duration, to see which statements cost what.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from datetime import date
from pathlib import Path

_STARTED = time.perf_counter()  # after the interpreter and the standard library: what the pipeline imports is next
_trace_lock = threading.Lock()


def _install_sql_trace(path: Path) -> None:
    out = path.open("a", encoding="utf-8")

    def record(who: str, query: object, seconds: float) -> None:
        text = query.decode() if isinstance(query, bytes) else str(query)
        with _trace_lock:
            out.write(json.dumps({"who": who, "s": round(seconds, 4), "sql": " ".join(text.split())[:400]}) + "\n")
            out.flush()

    import psycopg

    original = psycopg.Cursor.execute

    def execute(self, query, params=None, **kw):
        t0 = time.perf_counter()
        try:
            return original(self, query, params, **kw)
        finally:
            text = query.as_string(self) if hasattr(query, "as_string") else query
            record("pipeline", text, time.perf_counter() - t0)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]

    original_copy = psycopg.Cursor.copy

    from contextlib import contextmanager

    @contextmanager
    def copy(self, statement, params=None, **kw):
        t0 = time.perf_counter()
        with original_copy(self, statement, params, **kw) as c:
            yield c
        text = statement.as_string(self) if hasattr(statement, "as_string") else statement
        record("pipeline-copy", text, time.perf_counter() - t0)

    psycopg.Cursor.copy = copy  # type: ignore[method-assign]

    import psycopg2
    import psycopg2.extensions

    class TimedCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            t0 = time.perf_counter()
            try:
                return super().execute(query, vars)
            finally:
                record("soda", query, time.perf_counter() - t0)

    original_connect = psycopg2.connect

    def connect(*args, **kwargs):
        kwargs.setdefault("cursor_factory", TimedCursor)
        return original_connect(*args, **kwargs)

    psycopg2.connect = connect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_pipeline")
    parser.add_argument("--as-of", required=True, type=date.fromisoformat)
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--trace-sql", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.trace_sql:
        _install_sql_trace(args.trace_sql)

    from pipeline.config import PostgresSettings, Settings
    from pipeline.publish import run_month

    imported = time.perf_counter()
    settings = Settings(lake_root=args.lake, postgres=PostgresSettings(dsn=args.dsn, schema=args.schema))
    record = run_month(settings, args.as_of, args.source)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "run_id": record.run_id,
                "timings": record.timings,
                "import_s": round(imported - _STARTED, 3),
                "run_month_s": round(done - imported, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
