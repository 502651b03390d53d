"""pipeline.lakestore and the run records of a lake on S3 (issue #19, item 1: reading).

The S3 side is exercised against a local folder standing in for the bucket (the same listing and reading
as :class:`pipeline.lakestore.S3Lake`): :class:`pipeline.runs.S3RunRecords` must say what
:class:`pipeline.runs.RunStore` says about the same records. tests/test_s3_lake_read.py reads a real S3
API (moto's server).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import lakefs, lakestore, objectstore, training
from pipeline.config import Settings
from pipeline.errors import ConfigError, LakeStateError
from pipeline.runs import RunStore, S3RunRecords, run_records
from tests.unit.test_runs import FEB, JAN, built_record, old_attempt, old_manifest, write_json

URI = "s3://bucket/streamflow/lake"


@dataclass(frozen=True)
class FolderAsBucket(lakestore.S3Lake):
    """An S3Lake whose objects are a local folder's files: the listing and reading S3RunRecords relies on."""

    folder: Path = Path(".")

    def listing(self, relative: str) -> list[lakestore.Listed]:
        where = self.folder / relative
        found = sorted(where.iterdir()) if where.is_dir() else []
        return [lakestore.Listed(p.name, p.is_file(), p.stat().st_size, p.stat().st_mtime_ns) for p in found]

    def read_bytes(self, relative: str) -> bytes:
        return (self.folder / relative).read_bytes()


def on_s3(folder: Path) -> S3RunRecords:
    return S3RunRecords(FolderAsBucket(objectstore.parse(URI), folder))


def test_a_lake_root_is_a_folder_or_an_s3_uri_kept_as_text():
    assert lakestore.parse_root("lake") == Path("lake")
    assert lakestore.parse_root(Path("/data/lake")) == Path("/data/lake")
    assert lakestore.parse_root(" s3://bucket/streamflow/lake/ ") == URI
    assert lakestore.s3_uri(URI) == objectstore.S3Uri("bucket", "streamflow/lake")
    assert lakestore.s3_uri(Path("lake")) is None and lakestore.s3_uri("lake") is None


def test_a_bad_s3_lake_root_is_one_line_without_its_credentials():
    with pytest.raises(ConfigError, match=r"^lake_root: s3://B: 'B' is not a bucket name"):
        lakestore.parse_root("s3://B")
    with pytest.raises(ConfigError) as error:
        lakestore.parse_root("s3://KEY:topsecret@bucket/lake")
    assert "topsecret" not in str(error.value) and "credentials" in str(error.value)
    with pytest.raises(ConfigError, match="a lake is a local folder or an s3:// URI"):
        lakestore.parse_root("gs://bucket/lake")


def test_every_writer_refuses_a_lake_on_s3_with_one_line_saying_what_works():
    message = lakestore.refusal(URI)
    assert "cannot write to a lake on object storage yet (issue #19)" in message
    assert "reading it works" in message and "local lake_root" in message and "\n" not in message
    for write in (
        lambda: lakestore.local_root(URI),
        lambda: Settings(lake_root=URI).lake_path,
        lambda: lakefs.Lake(URI),
        lambda: training.write_training_set(URI, JAN),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigError) as refused:
            write()
        assert str(refused.value) == message
    assert Settings(lake_root=Path("lake")).lake_path == Path("lake")
    assert lakefs.Lake(Path("lake")).root == Path("lake")


def test_an_object_a_record_names_is_located_under_the_lake_root(tmp_path: Path):
    key = f"snapshots/users/as_of={FEB}/run-feb.parquet"
    assert lakestore.locate(tmp_path, key) == tmp_path / key
    assert lakestore.locate(URI, key) == f"{URI}/{key}"
    assert lakestore.exists(tmp_path / key) is False


def test_run_records_of_a_root_are_the_local_store_or_the_s3_reader(tmp_path: Path):
    assert isinstance(run_records(tmp_path), RunStore)
    assert isinstance(run_records(URI), S3RunRecords)


def test_the_run_records_on_s3_say_what_the_same_records_say_on_disk(tmp_path: Path):
    store = RunStore(tmp_path)
    write_json(store.lake.legacy_manifest(JAN), {**old_manifest(JAN, "run-jan"), "previous_as_of": None})
    write_json(store.attempts_dir(JAN) / "a.json", {**old_attempt(), "as_of": JAN.isoformat()})
    first = built_record().as_published(timings={}, live_updated=True, published_at=datetime(2026, 12, 8, tzinfo=UTC))
    store.write(first)
    second = dataclasses.replace(built_record(), run_id="run-feb-corrected").replacing(first)
    store.write(second.as_published(timings={}, live_updated=True, published_at=datetime(2026, 12, 9, tzinfo=UTC)))
    store.write_attempt(dataclasses.replace(built_record(), run_id="run-failed").as_failed())
    (tmp_path / "runs" / "as_of=not-a-date").mkdir()
    (store.lake.run_dir(FEB) / f"{lakefs.TMP_PREFIX}x.json").write_text("{")  # a temporary name: never read

    s3 = on_s3(tmp_path)
    assert s3.months() == store.months()
    assert s3.published() == store.published()
    assert s3.published_months() == store.published_months() == [JAN, FEB]
    assert [r for _, r in s3.records(FEB)] == [r for _, r in store.records(FEB)]
    assert s3.known_runs(FEB) == store.known_runs(FEB) == {first.run_id, "run-feb-corrected"}
    assert s3.attempts(FEB) == store.attempts(FEB) and len(s3.attempts(FEB)) == 1
    assert s3.path(FEB) == f"{URI}/runs/as_of={FEB}/run-feb-corrected.json"


def test_an_unreadable_record_on_s3_is_one_message_naming_its_uri(tmp_path: Path):
    (lakefs.Lake(tmp_path).run_dir(FEB)).mkdir(parents=True)
    (lakefs.Lake(tmp_path).run_dir(FEB) / "run-broken.json").write_text('{"as_of": "2024-02-29", "status": "publ')
    with pytest.raises(LakeStateError, match=rf"^{URI}/runs/as_of={FEB}/run-broken.json is not a run record"):
        on_s3(tmp_path).months()


def test_an_empty_prefix_is_a_lake_with_no_month(tmp_path: Path):
    s3 = on_s3(tmp_path / "nowhere")
    assert s3.months() == {} and s3.published() == {} and s3.attempts(JAN) == []
