#!/usr/bin/env sh
# CI's proof that the bench still works: every part (pipeline, Luigi rerun, baseline, dlt peer, floor,
# the no-change month) at a tiny size, in about a minute. Timings at this size mean nothing.
# Needs the bench extra (pip install -e '.[bench]') and a PostgreSQL server: POSTGRES_DSN, default
# postgresql://postgres@127.0.0.1:5432/postgres; the bench creates its own database there and drops it.
# Exits non-zero when any run fails or the rerun of a published month is not a no-op.
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m bench --users 2000 --months 2 --short-repeat 1 \
    --json "${BENCH_SMOKE_JSON:-bench/out/results-smoke.json}" "$@"
