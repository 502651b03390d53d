"""pipeline_runs and drop_volume are declared once, in sql/pipeline_tables.sql (issue #13 point 4), and
every statement and column list that writes them is built from there."""

from __future__ import annotations

import re

import sqlglot
import yaml

from pipeline import pipeline_tables
from pipeline.pipeline_tables import RUNS_TABLE, VOLUME_TABLE
from pipeline.schema import PROJECT_ROOT


def test_pipeline_runs_create_is_the_declared_table_in_the_target_schema():
    create = pipeline_tables.runs_table("sales")[0]
    parsed = sqlglot.parse_one(create, read="postgres")
    assert parsed.this.this.name == RUNS_TABLE and parsed.this.this.db == "sales"
    assert parsed.args["exists"], "IF NOT EXISTS: ensure_tables runs it on every publish"
    assert [c.name for c in parsed.this.expressions] == pipeline_tables.column_names(RUNS_TABLE)
    assert create.startswith('CREATE TABLE IF NOT EXISTS "sales"."pipeline_runs" ("as_of" DATE PRIMARY KEY')


def test_an_older_pipeline_runs_gains_the_contract_column():
    _, *alters = pipeline_tables.runs_table("sales")
    assert alters == ['ALTER TABLE "sales"."pipeline_runs" ADD COLUMN IF NOT EXISTS "contract" JSONB']


def test_drop_volume_is_created_fresh_in_the_staging_schema():
    statement = pipeline_tables.volume_table("sales__staging_20240131")
    assert statement.startswith('CREATE TABLE "sales__staging_20240131"."drop_volume" ("table_name" TEXT')
    assert pipeline_tables.column_names(VOLUME_TABLE) == [
        "table_name",
        "drop_rows",
        "previous_drop_rows",
        "snapshot_rows",
        "previous_snapshot_rows",
        "deleted_rows",
    ]


def test_the_drop_volume_checks_name_only_declared_columns():
    checks = yaml.safe_load((PROJECT_ROOT / "checks" / "across_tables.yml").read_text())
    text = str(checks[f"checks for {VOLUME_TABLE}"])
    conditions = re.findall(r"'fail condition': '([^']*)'", text)
    assert conditions, "checks/across_tables.yml has a failed-rows rule on drop_volume"
    named = {w for c in conditions for w in re.findall(r"\b[a-z_]+\b", c)} - {"and", "or", "abs", "not", "null", "is"}
    assert named <= set(pipeline_tables.column_names(VOLUME_TABLE))
