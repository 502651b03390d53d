"""pipeline.objectstore and pipeline.drops without a server: s3:// URIs, the environment → pyarrow's
S3FileSystem options, and which kind of drop a location is (tests/test_s3_source.py runs against moto)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline import drops, objectstore
from pipeline.errors import DropError, LakeStateError, ObjectStoreError
from pipeline.objectstore import S3Uri, filesystem_options, parse

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


# --- s3:// URIs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bucket", "key"),
    [
        ("s3://drops/2024-03", "drops", "2024-03"),
        ("s3://drops/exports/2024-03/", "drops", "exports/2024-03"),
        ("s3://drops//2024-03", "drops", "2024-03"),
        ("s3://my.drops-1", "my.drops-1", ""),
        ("  S3://drops/2024-03 ", "drops", "2024-03"),
    ],
)
def test_a_uri_is_its_bucket_and_a_key_without_slashes_around_it(text: str, bucket: str, key: str):
    uri = parse(text)
    assert (uri.bucket, uri.key) == (bucket, key)
    assert str(uri) == (f"s3://{bucket}/{key}" if key else f"s3://{bucket}")
    assert uri.child("users.csv") == S3Uri(bucket, f"{key}/users.csv" if key else "users.csv")
    assert uri.child("users.csv").path == f"{bucket}/{key}/users.csv".replace("//", "/")


@pytest.mark.parametrize("text", [f"s3://AKIAEXAMPLE:{SECRET}@drops/2024-03", f"s3://{SECRET}@drops/2024-03"])
def test_a_uri_with_credentials_is_refused_without_repeating_them(text: str):
    with pytest.raises(DropError) as refused:
        parse(text)
    message = str(refused.value)
    assert SECRET not in message and "AKIAEXAMPLE" not in message
    assert message.startswith("s3://…@drops/2024-03: the URI holds credentials")
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("gs://drops/2024-03", "'gs://' is not supported"),
        ("s3://drops/2024-03?endpoint_override=localhost:9000", "options in the URI"),
        ("s3://Drops/2024-03", "'Drops' is not a bucket name"),
        ("s3:///2024-03", "'' is not a bucket name"),
        ("s3://a/2024-03", "'a' is not a bucket name"),
    ],
)
def test_a_uri_that_is_not_a_drop_is_refused_saying_why(text: str, says: str):
    with pytest.raises(DropError, match=rf"{says}"):
        parse(text)


def test_only_a_scheme_makes_a_uri():
    assert objectstore.is_uri("s3://drops/x") and objectstore.is_uri("gs://drops/x")
    assert not objectstore.is_uri("data/seeds/month_000") and not objectstore.is_uri("/drops/s3:/x")


# --- the environment → S3FileSystem --------------------------------------------------------------


def test_the_endpoint_becomes_pyarrows_endpoint_override_and_scheme():
    assert filesystem_options({"AWS_ENDPOINT_URL": "http://localhost:9000"}) == {
        "endpoint_override": "localhost:9000",
        "scheme": "http",
    }
    assert filesystem_options({"AWS_ENDPOINT_URL": "https://s3.example.com/"})["scheme"] == "https"
    both = {"AWS_ENDPOINT_URL": "http://other:1", "AWS_ENDPOINT_URL_S3": "http://minio:9000"}
    assert filesystem_options(both)["endpoint_override"] == "minio:9000"  # the S3-specific one wins


@pytest.mark.parametrize("endpoint", ["localhost:9000", "ftp://host:21", "http://host:9000/bucket", "http://"])
def test_an_endpoint_that_is_not_a_url_is_refused_with_an_example(endpoint: str):
    with pytest.raises(ObjectStoreError, match=r"is not an endpoint: .* e\.g\. http://localhost:9000"):
        filesystem_options({"AWS_ENDPOINT_URL": endpoint})


def test_an_endpoint_with_credentials_is_refused_without_repeating_them():
    with pytest.raises(ObjectStoreError) as refused:
        filesystem_options({"AWS_ENDPOINT_URL": f"http://key:{SECRET}@localhost:9000"})
    assert SECRET not in str(refused.value) and "holds credentials" in str(refused.value)


def test_credentials_and_region_come_from_the_standard_variables():
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": "token",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    assert filesystem_options(env) == {
        "access_key": "AKIAEXAMPLE",
        "secret_key": SECRET,
        "session_token": "token",
        "region": "eu-west-1",
    }
    assert filesystem_options({**env, "AWS_REGION": "eu-central-1"})["region"] == "eu-central-1"


def test_without_credentials_the_aws_sdk_finds_them_itself():
    assert filesystem_options({"AWS_PROFILE": "drops"}) == {}  # the profile is the SDK's to read


@pytest.mark.parametrize("given", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_half_a_key_is_refused_naming_the_missing_variable(given: str):
    with pytest.raises(ObjectStoreError) as refused:
        filesystem_options({given: SECRET})
    other = ({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} - {given}).pop()
    assert str(refused.value).startswith(f"{given} is set but {other} is not") and SECRET not in str(refused.value)


def test_the_filesystem_is_pyarrows_with_the_environments_region():
    fs = objectstore.filesystem({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-3"})
    assert type(fs).__name__ == "S3FileSystem" and fs.region == "eu-west-3"


def test_describe_names_the_endpoint_or_aws_never_a_credential():
    assert objectstore.describe({"AWS_ENDPOINT_URL": "http://localhost:9000", "AWS_SECRET_ACCESS_KEY": SECRET}) == (
        "http://localhost:9000"
    )
    assert objectstore.describe({}) == "AWS S3"


def test_a_lakes_object_storage_failures_name_the_lake_setting_and_say_nothing_was_read(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:9000")
    uri = S3Uri("lake", "streamflow/runs")
    gone = objectstore._said(uri, "AWS Error NO_SUCH_BUCKET during ListObjectsV2", objectstore.LAKE)
    assert isinstance(gone, LakeStateError)
    assert "check the bucket in LAKE_ROOT (or luigi.cfg [pipeline] lake_root) and AWS_ENDPOINT_URL" in str(gone)
    refused = objectstore._said(uri, "AWS Error ACCESS_DENIED during HeadObject", objectstore.LAKE)
    assert str(refused).endswith("may list and read bucket 'lake'; nothing was read")
    gone_object = r"no such object \(removed meanwhile\?\); a run record names it"
    with pytest.raises(LakeStateError, match=gone_object), objectstore.said(uri, objectstore.LAKE):
        raise FileNotFoundError(uri.path)
    drop = objectstore._said(uri, "AWS Error ACCESS_DENIED during HeadObject")
    assert str(drop).endswith("nothing was published"), "a drop's wording by default"


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (
            "When getting information for key 'x/users.csv' in bucket 'drops': AWS Error NETWORK_CONNECTION during "
            "HeadObject operation: curlCode: 7, Could not connect to server",
            "does not answer; check AWS_ENDPOINT_URL",
        ),
        (
            "When getting information for key 'x/users.csv' in bucket 'drops': AWS Error ACCESS_DENIED during "
            "HeadObject operation: No response body.",
            "refused the credentials (ACCESS_DENIED); set AWS_ACCESS_KEY_ID",
        ),
        (
            "When listing objects under key 'x/' in bucket 'drops': AWS Error INVALID_ACCESS_KEY_ID during "
            "ListObjectsV2 operation: The AWS Access Key Id you provided does not exist in our records.",
            "refused the credentials (INVALID_ACCESS_KEY_ID)",
        ),
        (
            "When listing objects under key 'x/' in bucket 'drops': AWS Error NO_SUCH_BUCKET during ListObjectsV2",
            "bucket 'drops' does not exist",
        ),
        (
            "When getting information for key 'x/users.csv' in bucket 'drops': AWS Error UNKNOWN (HTTP status 301) "
            "during HeadObject operation: No response body.",
            "is in another region than AWS_REGION=eu-west-1; set AWS_REGION to the bucket's region",
        ),
    ],
)
def test_pyarrows_errors_are_said_in_one_line_with_what_to_do(error: str, says: str, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    said = objectstore._said(S3Uri("drops", "x/users.csv"), error)
    assert str(said).startswith("s3://drops/x/users.csv: ") and says in str(said)
    assert "\n" not in str(said)


# --- a drop: a local folder or an S3 prefix ------------------------------------------------------


def test_a_uri_is_an_s3_drop_and_anything_else_a_local_folder(tmp_path: Path):
    s3 = drops.at("s3://drops/2024-03/")
    assert isinstance(s3, drops.S3Drop) and str(s3) == "s3://drops/2024-03"
    assert s3.file("users.csv") == s3.where("users.csv") == "s3://drops/2024-03/users.csv"
    local = drops.at(tmp_path)
    assert isinstance(local, drops.LocalDrop) and str(local) == str(tmp_path)
    assert drops.at(str(tmp_path)) == local and drops.at(local) is local


def test_two_spellings_of_one_drop_are_the_same_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "feb").mkdir()
    assert drops.same_place("feb", str(tmp_path / "feb"))
    assert drops.same_place("s3://drops/2024-03/", "s3://drops/2024-03")
    assert not drops.same_place("s3://drops/2024-03", "s3://drops/2024-04")
    assert not drops.same_place("s3://drops/feb", "feb")


def test_a_local_files_identity_and_work_key_are_what_they_were_before_s3(tmp_path: Path):
    """The work folders of a month under way keep their names across the upgrade: the key of a local file
    is still sha1(resolved path | size | mtime_ns)."""
    path = tmp_path / "users.csv"
    path.write_text("user_id\nu1\n", encoding="utf-8")
    st = path.stat()
    identity = drops.at(tmp_path).identity("users.csv")
    assert identity == drops.FileIdentity(st.st_size, st.st_mtime_ns)
    old_key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    assert identity.key(drops.at(tmp_path).where("users.csv")) == old_key
    assert drops.at(tmp_path).identity("labels.csv") is None
    (tmp_path / "labels.csv").mkdir()
    assert drops.at(tmp_path).identity("labels.csv") is None  # not a regular file
