"""pipeline_runs records the contract a month was published under, as its manifest does (issue #14
point 1), and a pipeline_runs table made before the column existed gains it: older rows hold NULL."""

from __future__ import annotations

import json
from datetime import date

from psycopg import sql

from pipeline.publish import run_month
from pipeline.runs import Contract
from tests.conftest import JAN, record_file

BEFORE_CONTRACTS = date(2023, 12, 31)

# pipeline_runs exactly as versions before sql/pipeline_tables.sql created it
OLD_RUNS_TABLE = """CREATE TABLE {} (
    as_of DATE PRIMARY KEY, status TEXT NOT NULL, run_id TEXT NOT NULL, row_counts JSONB NOT NULL,
    changes JSONB NOT NULL, checks JSONB NOT NULL, sources JSONB NOT NULL,
    started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ NOT NULL
)"""


def test_an_older_pipeline_runs_gains_the_contract_and_the_month_records_it(settings, pg, pg_schema):
    runs = sql.Identifier(pg_schema, "pipeline_runs")
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    pg.execute(sql.SQL(OLD_RUNS_TABLE).format(runs))
    pg.execute(
        sql.SQL(
            "INSERT INTO {} VALUES (%s, 'published', 'old-run', '{{}}', '{{}}', '{{}}', '{{}}', now(), now())"
        ).format(runs),
        [BEFORE_CONTRACTS],
    )
    pg.commit()

    run_month(settings, JAN)

    rows = dict(pg.execute(sql.SQL("SELECT as_of, contract FROM {} ORDER BY as_of").format(runs)).fetchall())
    manifest = json.loads(record_file(settings.lake_root, JAN).read_text())
    assert rows[BEFORE_CONTRACTS] is None, "a row written before contracts were recorded holds NULL"
    assert rows[JAN] == manifest["contract"] == Contract.current().to_json()
