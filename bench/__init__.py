"""Benchmark of the month pipeline against the approach it replaces (pandas + to_sql), dlt's merge and the
raw floor (DuckDB CSV→Parquet + COPY). Run ``python -m bench --help`` from the repository root; see
bench/RESULTS.md for the numbers and bench/smoke.sh for the tiny run CI does."""
