-- The pipeline's own tables, declared once. pipeline/pipeline_tables.py parses this file with sqlglot
-- and builds from it the CREATE of pipeline_runs in the consumers' schema (plus an ADD COLUMN IF NOT
-- EXISTS for every nullable column, so a table made by an older version gains the new ones), the
-- drop_volume table of each month's staging schema, and the column lists of the rows written to both.
-- sql/schema.sql stays the contract of the drop's tables; this file is not part of it.

-- One row per published month, written in the month's publish transaction (pipeline/runs.py builds it).
CREATE TABLE pipeline_runs (
    as_of        DATE PRIMARY KEY,
    status       TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    row_counts   JSONB NOT NULL,
    changes      JSONB NOT NULL,
    checks       JSONB NOT NULL,
    sources      JSONB NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ NOT NULL,
    -- the contract the month was published under: sha256 of sql/schema.sql and every table's columns
    -- (issue #14); NULL for months published before it was recorded
    contract     JSONB
);

-- Built per run in the staging schema: one row per table with the row counts of this drop and of the
-- previous one, which the rules of checks/across_tables.yml compare.
CREATE TABLE drop_volume (
    table_name              TEXT,
    drop_rows               BIGINT,
    previous_drop_rows      BIGINT,
    snapshot_rows           BIGINT,
    previous_snapshot_rows  BIGINT,
    deleted_rows            BIGINT
);
