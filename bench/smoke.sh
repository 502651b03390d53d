#!/usr/bin/env sh
# CI's proof that the bench still works: a sweep of two tiny sizes (each on fresh state: its own
# drops, database and lakes), every part at each (the luigi month command, its rerun, baseline, dlt
# peer, floor, the no-change month), the per-size tables and the targets table, in about two minutes.
# Timings at these sizes mean nothing.
# Needs the bench extra (pip install -e '.[bench]') and a PostgreSQL server: POSTGRES_DSN, default
# postgresql://postgres@127.0.0.1:5432/postgres; the bench creates a database per size there and drops it.
# Exits non-zero when any run fails or the rerun of a published month is not a no-op.
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m bench --sizes 1000,2000 --months 2 --short-repeat 1 \
    --json "${BENCH_SMOKE_JSON:-bench/out/results-smoke.json}" "$@"
