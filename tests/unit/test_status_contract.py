"""`streamflow status` says where the contract a month was published under changed (issue #14 point 1):
read from the run records of a lake in tmp_path, no PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

from pipeline.cli import render_status
from pipeline.runs import Contract, RunRecord, RunStore, Status
from pipeline.status import StatusReport, lake_side

JAN, FEB, MAR, APR = date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)
V1 = Contract("1" * 64, {"users": ["user_id", "user_gender"], "labels": ["user_id", "churn_label"]})
V2 = Contract("2" * 64, {"users": ["user_id", "user_gender", "referral_code"], "labels": ["user_id", "churn_label"]})


def publish(store: RunStore, as_of: date, contract: Contract | None) -> None:
    store.write(RunRecord(as_of=as_of, run_id=f"run-{as_of}", status=Status.PUBLISHED, contract=contract))


def test_status_names_the_month_whose_contract_changed(tmp_path: Path):
    store = RunStore(tmp_path)
    publish(store, JAN, V1)
    publish(store, FEB, V1)
    publish(store, MAR, V2)
    months = lake_side(tmp_path)
    assert {d: m.contract_change for d, m in months.items()} == {JAN: None, FEB: None, MAR: "users +referral_code"}
    report = StatusReport(tmp_path, "db:5432/x", "public", [months[d] for d in sorted(months)], "not asked")
    assert f"  {MAR}  contract changed: users +referral_code" in render_status(report).splitlines()


def test_a_failed_month_between_is_skipped_and_an_old_manifest_is_not_compared(tmp_path: Path):
    store = RunStore(tmp_path)
    publish(store, JAN, None)  # published before contracts were recorded
    publish(store, FEB, V1)
    store.write_attempt(RunRecord(as_of=MAR, run_id="run-mar", contract=V2).as_failed())
    publish(store, APR, V2)
    months = lake_side(tmp_path)
    assert months[FEB].contract_change is None, "nothing recorded before February to compare with"
    assert months[MAR].contract_change is None and months[MAR].status == "failed"
    assert months[APR].contract_change == "users +referral_code", "compared with February, the last published"


def test_status_without_a_contract_change_has_no_contract_section(tmp_path: Path):
    store = RunStore(tmp_path)
    publish(store, JAN, V1)
    publish(store, FEB, dataclasses.replace(V1))
    months = lake_side(tmp_path)
    report = StatusReport(tmp_path, "db:5432/x", "public", [months[d] for d in sorted(months)], "not asked")
    assert "contract changed" not in render_status(report)
