"""The DuckDB table ``runs`` (pipeline.lake) is read from the run records through RunStore, and shows the
contract each month was run under (issue #14 point 1). A lake with only failed attempts needs no
snapshot file, so this runs on a plain folder."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pipeline import lake
from pipeline.runs import Contract, RunRecord, RunStore

MAR = date(2024, 3, 31)


def test_runs_table_shows_a_failed_month_with_its_contract(tmp_path: Path):
    contract = Contract("3" * 64, {"users": ["user_id"]})
    RunStore(tmp_path).write_attempt(RunRecord(as_of=MAR, run_id="run-mar", contract=contract).as_failed())
    with lake.connect(tmp_path) as con:
        row = con.execute("SELECT as_of, status, run_id, failed_attempts, contract FROM runs").fetchone()
    assert row is not None
    assert row[:4] == (MAR, "failed", "run-mar", 1)
    assert json.loads(row[4]) == contract.to_json()
    assert lake.published_months(tmp_path) == []
