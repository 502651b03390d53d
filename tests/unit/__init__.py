"""The fast tier: plain functions on tiny inputs, in-memory DuckDB, no PostgreSQL."""
