"""A lake on S3-compatible storage, read (issue #19, item 1: the readers), against moto's S3 server.

The session's published two-month lake is uploaded to a bucket (objects first, run records last, as a
month is committed) and read through LAKE_ROOT=s3://…: every view of ``pipeline.lake.connect()``, the
``streamflow sql`` output, the lake side of ``streamflow status`` and the training set must equal what the
same lake gives on disk, row for row. A record naming an object missing on S3 is the same LakeStateError as
on disk, the credentials appear in no output, and every command that writes the lake refuses an s3:// lake
with one line before anything is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import lake, training
from pipeline.errors import LakeStateError
from pipeline.lakestore import refusal
from pipeline.schema import PROJECT_ROOT
from tests.conftest import FEB, JAN, PublishedLake, S3Server, luigi_bin, snapshot_file

LAKE_FOLDERS = ("raw", "snapshots", "rejects")  # the objects; runs/ is uploaded last
EXIT_ERROR = 2  # streamflow: a PipelineError
EXIT_SCHEDULING = 35  # luigi.cfg [retcode] scheduling_error: settings refused before any task runs


def upload_lake(s3: S3Server, root: Path, uri: str) -> str:
    """The lake's objects, then its run records, put under ``uri`` with boto3 (moto 5.2's multipart answer
    breaks pyarrow's uploads)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = s3.client()
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
    for folder in (*LAKE_FOLDERS, "runs"):
        for path in sorted(p for p in (root / folder).rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return uri


def bucket_keys(s3: S3Server, uri: str) -> list[tuple[str, str]]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted((o["Key"], o["ETag"]) for o in listed)


@pytest.fixture(scope="module")
def s3_env(s3_server: S3Server) -> Iterator[dict[str, str]]:
    """The AWS environment of moto's server, in this process too (pyarrow's S3FileSystem reads it)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        yield s3_server.env


@pytest.fixture(scope="module")
def s3_lake(s3_server: S3Server, s3_env: dict[str, str], published: PublishedLake) -> str:
    """READ ONLY: the published lake, uploaded under a prefix of its own."""
    return upload_lake(s3_server, published.root, f"s3://lake-{uuid.uuid4().hex[:10]}/streamflow/lake")


def rows(con, name: str) -> list[tuple]:  # noqa: ANN001 - a DuckDB connection
    return con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall()


def streamflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )


def s3_environment(published: PublishedLake, s3: S3Server, uri: str) -> dict[str, str]:
    return {**published.env, **s3.env, "LAKE_ROOT": uri}


def test_every_view_of_a_lake_on_s3_holds_the_rows_of_the_same_lake_on_disk(
    s3_lake: str, published: PublishedLake
) -> None:
    local, remote = lake.connect(published.root), lake.connect(s3_lake)
    try:
        for name in lake.view_names():
            expected = rows(local, name)
            assert rows(remote, name) == expected, name
            assert expected, f"{name} is empty in the published lake: the comparison would prove nothing"
        assert [r[0] for r in remote.execute("SELECT DISTINCT as_of FROM users_snapshots ORDER BY 1").fetchall()] == [
            JAN,
            FEB,
        ]
    finally:
        local.close()
        remote.close()


def test_streamflow_sql_and_status_read_a_lake_on_s3_as_they_read_it_on_disk(
    s3_server: S3Server, s3_lake: str, published: PublishedLake
) -> None:
    env = s3_environment(published, s3_server, s3_lake)
    for query in (
        "SELECT as_of, count(*), min(user_id), max(user_id) FROM users_snapshots GROUP BY ALL ORDER BY as_of",
        "SELECT * FROM subscriptions_history ORDER BY ALL",
    ):
        on_s3 = streamflow("sql", query, "--csv", env=env)
        on_disk = streamflow("sql", query, "--csv", env=published.env)
        assert on_s3.returncode == 0, on_s3.stderr
        assert on_s3.stdout == on_disk.stdout
        assert on_s3.stdout.count("\n") >= 3  # the header and at least both months

    status_s3 = streamflow("status", "--json", env=env)
    status_disk = streamflow("status", "--json", env=published.env)
    assert status_s3.returncode == 0, status_s3.stderr
    report_s3, report_disk = json.loads(status_s3.stdout), json.loads(status_disk.stdout)
    assert report_s3["lake_root"] == s3_lake
    assert report_s3["months"] == report_disk["months"]
    assert report_s3["agree"] is True

    shell = subprocess.run(
        [sys.executable, "-m", "pipeline", "shell"],
        input="SELECT count(*) FROM users;\n",
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    local = lake.connect(published.root)
    try:
        users = local.execute("SELECT count(*) FROM users").fetchone()
    finally:
        local.close()
    assert shell.returncode == 0, shell.stderr
    assert users is not None and str(users[0]) in shell.stdout
    for result in (on_s3, status_s3, shell):
        output = result.stdout + result.stderr
        assert s3_server.secret not in output and s3_server.env["AWS_ACCESS_KEY_ID"] not in output


def test_a_training_set_from_a_lake_on_s3_equals_the_one_from_disk(s3_lake: str, published: PublishedLake) -> None:
    for as_of, label_as_of in ((JAN, None), (JAN, FEB)):
        expected = training.training_set(as_of, label_as_of, lake_root=published.root)
        found = training.training_set(as_of, label_as_of, lake_root=s3_lake)
        assert found.num_rows > 0
        assert found.equals(expected), (as_of, label_as_of)
        assert found.schema.metadata == expected.schema.metadata


def test_a_record_naming_an_object_missing_on_s3_is_the_same_lake_state_error_as_on_disk(
    s3_server: S3Server, s3_env: dict[str, str], published_copy: PublishedLake
) -> None:
    uri = upload_lake(s3_server, published_copy.root, f"s3://lake-{uuid.uuid4().hex[:10]}/lake")
    gone = snapshot_file(published_copy.root, "subscriptions", FEB)
    gone.unlink()
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3_server.client().delete_object(Bucket=bucket, Key=f"{prefix}/{gone.relative_to(published_copy.root).as_posix()}")

    with pytest.raises(LakeStateError) as on_disk:
        lake.connect(published_copy.root)
    with pytest.raises(LakeStateError) as on_s3:
        lake.connect(uri)
    root = str(published_copy.root.resolve())
    assert str(on_s3.value) == str(on_disk.value).replace(root, uri)
    assert f"{uri}/snapshots/subscriptions/as_of={FEB}/" in str(on_s3.value)


def test_every_command_that_writes_the_lake_refuses_a_lake_on_s3_before_writing_anything(
    s3_server: S3Server, s3_lake: str, published: PublishedLake, tmp_path: Path
) -> None:
    env = s3_environment(published, s3_server, s3_lake)
    before = bucket_keys(s3_server, s3_lake)
    message = refusal(s3_lake)
    for task in (["Month", "--as-of", str(FEB)], ["Backfill", "--start", str(JAN), "--end", str(FEB)]):
        result = subprocess.run(
            [
                luigi_bin(),
                "--module",
                "pipeline",
                *task,
                "--local-scheduler",
                "--lock-pid-dir",
                str(tmp_path / "locks"),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = result.stdout + result.stderr
        assert result.returncode == EXIT_SCHEDULING, output[-3000:]
        assert output.count(message) == 1 and "Traceback" not in output, output[-3000:]
        assert s3_server.secret not in output
    for args in (["vacuum"], ["vacuum", "--dry-run"], ["unpublish", "--as-of", str(FEB), "--yes"], ["report"]):
        result = streamflow(*args, env=env)
        assert (result.returncode, result.stderr) == (EXIT_ERROR, f"error: {message}\n"), args
        assert s3_server.secret not in result.stdout + result.stderr
    assert bucket_keys(s3_server, s3_lake) == before, "nothing written to the bucket"
    assert not (PROJECT_ROOT / "s3:").exists(), "nothing written locally either (a Path would make it 's3:/…')"
