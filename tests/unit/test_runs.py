"""The typed run record and the lake's store of them (pipeline/runs.py, issue #13 point 4, #14 point 1).

No PostgreSQL, no pipeline run: records are built by hand and the store works in ``tmp_path``. The
manifests below are in the exact shape the pipeline wrote before runs.py existed: old lakes must keep
reading the same.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline import pipeline_tables
from pipeline.lakefs import Lake
from pipeline.merge import MergeResult
from pipeline.runs import Checks, Contract, DropFile, ReplacedRun, RunRecord, RunStore, Status
from pipeline.schema import SCHEMA_FILE, load_schema
from pipeline.stage import SourceFile, StageResult

JAN = date(2024, 1, 31)
FEB = date(2024, 2, 29)


def old_manifest(as_of: date = FEB, run_id: str = "20240229-20261207T214502-254814") -> dict[str, Any]:
    """A published manifest exactly as manifest.py wrote it (one table and two checks, for brevity)."""
    return {
        "as_of": as_of.isoformat(),
        "status": "published",
        "run_id": run_id,
        "source": "data/seeds/month_001",
        "mode": "upsert",
        "previous_as_of": "2024-01-31",
        "previous_run_id": "20240131-20261207T214500-985560",
        "files": {
            "users": {
                "name": "users.csv",
                "size": 321763,
                "sha256": "ffee93ec7441010edceb161ab5d256fe4a18c2d40cf82b4da17f32958dc4f660",
                "rows": 7140,
                "mtime_ns": 1796206171000000000,
            }
        },
        "rejects": {"users": 0},
        "missing_columns": {},
        "tables": {
            "users": {"rows": 7140, "inserted": 140, "updated": 0, "unchanged": 7000, "carried": 0, "deleted": 0}
        },
        "checks": {
            "passed": 1,
            "warned": 1,
            "failed": 0,
            "checks": [
                {"name": "users is not empty", "table": "users", "column": None, "outcome": "pass", "value": 7140},
                {"name": "few seniors", "table": "users", "column": "user_is_senior", "outcome": "warn", "value": 3},
            ],
        },
        "timings": {"stage": 0.149, "merge": 0.127, "checks": 0.344, "sync": 0.015, "sync_live": 0.21},
        "versions": {
            "streamflow-lake": "0.1.0",
            "duckdb": "2.0.1",
            "soda-core": "3.5.6",
            "postgresql": "15.20 (Debian 15.20-0+deb12u1)",
        },
        "postgres": {"server": "127.0.0.1:5432/streamflow", "schema": "public"},
        "started_at": "2026-12-07T21:45:02.860948+00:00",
        "published_at": "2026-12-07T21:45:03.457363+00:00",
        "replaced": [
            {
                "run_id": "20240229-20261201T100000-aaaaaa",
                "published_at": "2026-12-01T10:00:01.523311+00:00",
                "sha256": {"users": "0" * 64},
            }
        ],
        "live_updated": True,
    }


def old_attempt() -> dict[str, Any]:
    """A failed attempt as manifest.write_attempt wrote it: status failed, recorded_at, no published_at."""
    record = old_manifest(run_id="20240229-20261207T214400-bbbbbb")
    del record["replaced"], record["live_updated"]
    record["checks"]["failed"] = 1
    record["checks"]["checks"][1]["outcome"] = "fail"
    return {**record, "status": "failed", "published_at": None, "recorded_at": "2026-12-07T21:44:05.120044+00:00"}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# --- reading what older versions wrote ------------------------------------------------------------


def test_an_old_manifest_reads_into_typed_fields():
    record = RunRecord.from_json(old_manifest())
    assert record.as_of == FEB and record.status is Status.PUBLISHED and record.published
    assert record.previous_as_of == JAN and not record.full_dump
    assert record.files["users"] == DropFile(
        "users.csv",
        321763,
        "ffee93ec7441010edceb161ab5d256fe4a18c2d40cf82b4da17f32958dc4f660",
        7140,
        1796206171000000000,
    )
    assert record.rows == {"users": 7140}
    assert record.changes["users"] == {"inserted": 140, "updated": 0, "unchanged": 7000, "carried": 0, "deleted": 0}
    assert record.checks is not None and record.checks.warned == 1
    assert [c["name"] for c in record.checks.not_passed] == ["few seniors"]
    assert record.started_at == datetime(2026, 12, 7, 21, 45, 2, 860948, tzinfo=UTC)
    assert record.replaced == [
        ReplacedRun("20240229-20261201T100000-aaaaaa", "2026-12-01T10:00:01.523311+00:00", {"users": "0" * 64})
    ]
    assert record.live_updated is True and record.recorded_at is None


def test_an_old_manifest_has_no_contract():
    assert RunRecord.from_json(old_manifest()).contract is None


def test_an_old_manifest_is_written_back_unchanged():
    data = old_manifest()
    assert RunRecord.from_json(copy.deepcopy(data)).to_json() == data


def test_an_old_failed_attempt_is_written_back_unchanged():
    data = old_attempt()
    record = RunRecord.from_json(copy.deepcopy(data))
    assert record.status is Status.FAILED and not record.published and record.published_at is None
    assert record.to_json() == data


def test_keys_this_version_does_not_know_are_kept():
    data = {**old_manifest(), "confirmed_deletions": True, "operator": "ops@example.org"}
    record = RunRecord.from_json(data)
    assert record.extra == {"confirmed_deletions": True, "operator": "ops@example.org"}
    assert record.to_json() == data


def test_a_minimal_manifest_reads_with_defaults():
    record = RunRecord.from_json({"as_of": "2024-01-31", "status": "published", "run_id": "x"})
    assert record.published and record.files == {} and record.checks is None and record.contract is None


def test_an_unknown_status_reads_as_none():
    assert RunRecord.from_json({"as_of": "2024-01-31", "status": "half-done"}).status is None


# --- building and the run row ---------------------------------------------------------------------


def built_record(contract: Contract | None = None) -> RunRecord:
    stage = StageResult("users", SourceFile("users.csv", 10, "a" * 64, 3, 5), rows=3, rejected=0)
    merge = MergeResult("users", rows=3, inserted=1, updated=1, unchanged=1, previous_rows=2)
    return RunRecord.build(
        as_of=FEB,
        run_id="run-feb",
        source=Path("/drops/feb"),
        full_dump=True,
        previous_as_of=JAN,
        previous=RunRecord(as_of=JAN, run_id="run-jan", status=Status.PUBLISHED),
        stages={"users": stage},
        merges={"users": merge},
        checks={"passed": 2, "warned": 0, "failed": 1, "checks": [{"name": "c", "outcome": "fail", "value": 1}]},
        timings={"stage": 1.0},
        started_at=datetime(2024, 3, 1, 8, 0, tzinfo=UTC),
        postgres="db:5432/x",
        pg_schema="public",
        server_version="16.1",
        contract=contract,
        extra={"note": "a correction"},
    )


def test_built_record_round_trips_through_json():
    record = built_record().as_published(timings={"stage": 1.0, "sync": 2.0}, live_updated=False)
    assert RunRecord.from_json(json.loads(record.dumps())) == record


def test_built_record_says_full_dump_and_previous_run():
    record = built_record()
    assert record.mode == "full-dump" and record.full_dump and record.previous_run_id == "run-jan"
    assert record.source == "/drops/feb" and record.status is None
    assert record.to_json()["note"] == "a correction"


def test_built_record_carries_the_current_contract():
    contract = built_record().contract
    assert contract is not None and contract == Contract.current()
    assert contract.columns["users"] == load_schema().table("users").column_names
    import hashlib

    assert contract.sha256 == hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()


def test_as_published_sets_status_timings_and_live_updated():
    at = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    record = built_record().as_published(timings={"sync": 2.0}, live_updated=True, published_at=at)
    assert record.status is Status.PUBLISHED and record.published_at == at
    assert record.timings == {"sync": 2.0} and record.live_updated is True


def test_replacing_keeps_the_history_of_replaced_runs():
    old = RunRecord.from_json(old_manifest())
    record = built_record().replacing(old)
    assert [r.run_id for r in record.replaced] == ["20240229-20261201T100000-aaaaaa", old.run_id]
    assert record.replaced[-1].published_at == "2026-12-07T21:45:03.457363+00:00"
    assert record.replaced[-1].sha256 == old.sha256
    assert built_record().replacing(None).replaced == []


def test_pipeline_runs_row_is_the_row_manifest_run_row_wrote_plus_the_contract():
    record = RunRecord.from_json(old_manifest())
    finished = datetime(2026, 12, 7, 21, 45, 3, tzinfo=UTC)
    assert record.pipeline_runs_row(finished) == {
        "as_of": "2024-02-29",
        "status": "published",
        "run_id": "20240229-20261207T214502-254814",
        "row_counts": {"users": 7140},
        "changes": {"users": {"inserted": 140, "updated": 0, "unchanged": 7000, "carried": 0, "deleted": 0}},
        "checks": {
            "passed": 1,
            "warned": 1,
            "failed": 0,
            "failed_or_warned": [old_manifest()["checks"]["checks"][1]],
        },
        "sources": {"users": "ffee93ec7441010edceb161ab5d256fe4a18c2d40cf82b4da17f32958dc4f660"},
        "started_at": "2026-12-07T21:45:02.860948+00:00",
        "finished_at": finished.isoformat(),
        "contract": None,
    }


def test_pipeline_runs_row_has_exactly_the_declared_columns():
    row = built_record().pipeline_runs_row(datetime.now(UTC))
    assert list(row) == pipeline_tables.column_names(pipeline_tables.RUNS_TABLE)
    assert row["contract"] == built_record().contract.to_json()  # type: ignore[union-attr]


# --- the contract ---------------------------------------------------------------------------------


def test_contract_changes_name_added_and_removed_columns_and_tables():
    before = Contract("a", {"users": ["user_id", "gender"], "labels": ["user_id"], "old": ["user_id"]})
    after = Contract("b", {"users": ["user_id", "gender", "referral_code"], "labels": ["user_id"], "new": ["id"]})
    assert after.changes_since(before) == "users +referral_code; -old; +new"


def test_contract_change_without_column_changes_says_so():
    before = Contract("a", {"users": ["user_id"]})
    assert "same tables and columns" in Contract("b", {"users": ["user_id"]}).changes_since(before)


# --- the store ------------------------------------------------------------------------------------


def test_store_reads_published_months_of_an_old_lake(tmp_path: Path):
    lake = Lake(tmp_path)
    write_json(lake.legacy_manifest(JAN), {**old_manifest(JAN, "run-jan"), "previous_as_of": None})
    write_json(lake.legacy_manifest(FEB), old_manifest(FEB, "run-feb"))
    store = RunStore(lake)
    assert {d: r.run_id for d, r in store.published().items()} == {JAN: "run-jan", FEB: "run-feb"}
    assert store.get(FEB) is not None and store.get(FEB).run_id == "run-feb"  # type: ignore[union-attr]
    assert store.get(date(2024, 3, 31)) is None
    assert store.published_months() == [JAN, FEB]


def test_store_write_then_get_returns_the_same_record(tmp_path: Path):
    store = RunStore(tmp_path)
    record = built_record().as_published(timings={}, live_updated=True)
    path = store.write(record)
    assert path == Lake(tmp_path).record(FEB, record.run_id) == store.path(FEB)
    assert store.get(FEB) == record
    assert list(path.parent.iterdir()) == [path], "created in place: no temporary file, nothing renamed"
    with pytest.raises(FileExistsError):
        store.write(record)  # a run's record is written once, never replaced


def test_a_correction_is_a_newer_record_and_the_month_is_the_newest(tmp_path: Path):
    store = RunStore(tmp_path)
    write_json(store.lake.legacy_manifest(FEB), old_manifest(FEB, "run-old"))  # a lake from before issue #19
    first = built_record().as_published(timings={}, live_updated=True, published_at=datetime(2026, 12, 8, tzinfo=UTC))
    store.write(first)
    second = dataclasses.replace(built_record(), run_id="run-feb-corrected").replacing(first)
    second = second.as_published(timings={}, live_updated=True, published_at=datetime(2026, 12, 9, tzinfo=UTC))
    store.write(second)
    assert [r.run_id for _, r in store.records(FEB)] == ["run-old", first.run_id, second.run_id]
    assert store.get(FEB) == second and store.months()[FEB].run_id == second.run_id
    assert store.known_runs(FEB) == {"run-old", first.run_id, second.run_id}


def test_a_record_names_its_runs_objects_and_an_old_one_the_months_only_object(tmp_path: Path):
    lake = Lake(tmp_path)
    record = built_record().with_objects(lake, ["users"])
    assert record.snapshot_file(tmp_path, "users") == tmp_path / f"snapshots/users/as_of={FEB}/{record.run_id}.parquet"
    assert record.raw_file(tmp_path, "users") == tmp_path / f"raw/users/as_of={FEB}/{record.run_id}.parquet"
    assert record.snapshot_file(tmp_path, "labels") is None, "a table the run did not write"
    assert RunRecord.from_json(record.to_json()).objects == record.objects
    old = RunRecord.from_json(old_manifest())
    assert old.snapshot_file(tmp_path, "labels") == tmp_path / f"snapshots/labels/as_of={FEB}/data.parquet"


def test_store_get_ignores_a_manifest_that_is_not_published(tmp_path: Path):
    write_json(Lake(tmp_path).legacy_manifest(FEB), {"as_of": FEB.isoformat(), "status": "half-done", "run_id": "x"})
    store = RunStore(tmp_path)
    assert store.get(FEB) is None and store.published() == {}
    assert store.months()[FEB].status == "unknown"


def test_store_attempts_are_kept_beside_the_manifest_oldest_first(tmp_path: Path):
    store = RunStore(tmp_path)
    write_json(store.attempts_dir(FEB) / "run-old.json", old_attempt())
    path = store.write_attempt(built_record().as_failed())
    assert path == Lake(tmp_path).run_dir(FEB) / "attempts" / "run-feb.json"
    attempts = store.attempts(FEB)
    assert [a.run_id for a in attempts] == ["20240229-20261207T214400-bbbbbb", "run-feb"]
    assert attempts[-1].status is Status.FAILED and attempts[-1].recorded_at is not None
    assert store.path(FEB) is None, "an attempt never publishes the month"


def test_store_months_says_published_or_failed_with_attempts(tmp_path: Path):
    store = RunStore(tmp_path)
    write_json(store.lake.legacy_manifest(JAN), {**old_manifest(JAN, "run-jan"), "previous_as_of": None})
    write_json(store.attempts_dir(JAN) / "a.json", {**old_attempt(), "as_of": JAN.isoformat()})
    write_json(store.attempts_dir(FEB) / "b.json", old_attempt())
    (tmp_path / "runs" / "as_of=not-a-date").mkdir()
    months = store.months()
    assert sorted(months) == [JAN, FEB]
    assert months[JAN].published and months[JAN].run_id == "run-jan" and months[JAN].failed_attempts == 1
    assert months[FEB].status == "failed" and not months[FEB].published
    assert months[FEB].record.run_id == "20240229-20261207T214400-bbbbbb"


def test_store_of_an_empty_lake_is_empty(tmp_path: Path):
    store = RunStore(tmp_path / "nowhere")
    assert store.published() == {} and store.months() == {} and store.attempts(JAN) == []


@pytest.mark.parametrize("status", list(Status))
def test_status_values_are_the_strings_in_the_manifests(status: Status):
    assert json.loads(json.dumps({"s": status}))["s"] == status.value


def test_checks_summary_round_trips():
    data = {"passed": 1, "warned": 0, "failed": 0, "checks": [{"name": "n", "outcome": "pass"}]}
    assert Checks.from_json(data).to_json() == data  # type: ignore[union-attr]


# --- issue #15 ----------------------------------------------------------------------------------


def test_a_confirmed_full_dump_keeps_its_confirmation_through_json():
    record = RunRecord(as_of=date(2024, 5, 31), mode="full-dump", confirm_deletions=True)
    assert record.to_json()["confirm_deletions"] is True
    assert RunRecord.from_json(json.loads(record.dumps())).confirm_deletions is True
    assert "confirm_deletions" not in RunRecord(as_of=date(2024, 5, 31)).to_json()  # older shape kept


def test_an_unreadable_manifest_is_one_message_naming_the_file(tmp_path: Path):
    from pipeline.errors import LakeStateError

    path = tmp_path / "manifest.json"
    path.write_text('{"as_of": "2024-01-31", "status": "publ')
    with pytest.raises(LakeStateError, match=rf"{path} is not a run record the pipeline can read \(JSONDecodeError"):
        RunRecord.read(path)
