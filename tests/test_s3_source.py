"""Drops read from S3-compatible object storage (issue #19, item 1), against moto's S3 server.

The two seed months are uploaded to a bucket and run through the real command, one from luigi.cfg
[months] (an s3:// value), one from ``--source s3://…``; they must publish what the local folders publish,
keep the credentials out of the lake and the output, and be "nothing to do" when run again. A missing file
and a missing bucket are refused with one line each, and a drop object rewritten mid-run is caught before
anything is published, as a local file is.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from pipeline import drops
from pipeline.errors import DropChangedError, DropErrors
from pipeline.month import plan_month, stage_one, verify_inputs
from pipeline.publish import run_month
from pipeline.runs import RunStore
from pipeline.schema import PROJECT_ROOT, load_schema
from tests.conftest import (
    FEB,
    JAN,
    SEED_MONTHS,
    PublishedLake,
    S3Server,
    luigi_bin,
    pipeline_environment,
    record_file,
    snapshot_file,
)
from tests.drops import drop_column, seed_copy, set_value
from tests.test_month_lake import tree_state

TABLES = load_schema().table_names
EXIT_FAILED = 30  # luigi.cfg [retcode] task_failed


def new_bucket() -> str:
    return f"drops-{uuid.uuid4().hex[:10]}"


def luigi(*args: str, env: dict[str, str], lock_dir: Path) -> subprocess.CompletedProcess:
    """``luigi --module pipeline ARGS`` from the repository root, as a person runs it."""
    return subprocess.run(
        [luigi_bin(), "--module", "pipeline", *args, "--lock-pid-dir", str(lock_dir)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def rows_digest(path: Path) -> tuple[int, str]:
    """The row count and the md5 of every row, in user_id order: the content of a Parquet object."""
    found = duckdb.execute(
        "SELECT count(*), md5(string_agg(t::VARCHAR, '\n' ORDER BY t.user_id)) FROM read_parquet(?) t", [str(path)]
    ).fetchone()
    assert found is not None
    return found[0], found[1]


def nothing_published(lake_root: Path, pg: psycopg.Connection, pg_schema: str, as_of: date) -> bool:
    """No run record, no data object in the lake, no pipeline_runs row in PostgreSQL."""
    objects = [p for p in lake_root.glob("*/*/as_of=*/*.parquet") if p.parts[-4] in ("raw", "snapshots")]
    table = pg.execute("SELECT to_regclass(%s)", [f"{pg_schema}.pipeline_runs"]).fetchone()
    rows = 0
    if table is not None and table[0] is not None:
        found = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg_schema, "pipeline_runs")))
        rows = (found.fetchone() or (0,))[0]
    return not record_file(lake_root, as_of).exists() and not objects and rows == 0


@dataclass(frozen=True)
class S3Lake:
    """A lake and a PostgreSQL schema with both seed months published from a bucket, the environment that
    did it, and what each command printed."""

    root: Path
    env: dict[str, str]
    pg_schema: str
    uris: dict[date, str]
    outputs: list[str]


@pytest.fixture(scope="module")
def s3_lake(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, s3_server: S3Server) -> S3Lake:
    """READ ONLY. January from luigi.cfg [months] (``2024-01-31 = s3://…``), then February from
    ``--source s3://…``, each through ``luigi --module pipeline Month … --workers 2``."""
    bucket, base = new_bucket(), tmp_path_factory.mktemp("s3lake")
    uris = {as_of: s3_server.upload(SEED_MONTHS[as_of], f"s3://{bucket}/drops/{as_of:%Y-%m}") for as_of in (JAN, FEB)}
    config = base / "luigi.cfg"
    config.write_text(f"[months]\n{JAN} = {uris[JAN]}\n", encoding="utf-8")
    pg_schema = f"t_{uuid.uuid4().hex[:10]}"
    env = pipeline_environment(base / "lake", pg_dsn, pg_schema, LUIGI_CONFIG_PATH=str(config), **s3_server.env)
    outputs = []
    for args in (["--as-of", JAN.isoformat()], ["--as-of", FEB.isoformat(), "--source", uris[FEB]]):
        result = luigi("Month", *args, "--workers", "2", env=env, lock_dir=base / "locks")
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
    return S3Lake(base / "lake", env, pg_schema, uris, outputs)


def test_months_from_s3_publish_the_same_snapshots_as_from_the_local_folders(s3_lake: S3Lake, published: PublishedLake):
    for as_of in (JAN, FEB):
        record = RunStore(s3_lake.root).get(as_of)
        assert record is not None and record.source == s3_lake.uris[as_of]  # the URI, as given
        for table in TABLES:
            # the bytes staged are the object's, and the object is the seed file
            seed = (SEED_MONTHS[as_of] / f"{table}.csv").read_bytes()
            assert record.files[table].sha256 == hashlib.sha256(seed).hexdigest(), (as_of, table)
            from_s3 = rows_digest(snapshot_file(s3_lake.root, table, as_of))
            assert from_s3[0] > 0
            assert from_s3 == rows_digest(snapshot_file(published.root, table, as_of)), (as_of, table)


def test_the_credentials_are_nowhere_in_the_lake_the_output_or_postgresql(
    s3_lake: S3Lake, s3_server: S3Server, pg: psycopg.Connection
):
    secrets = [s3_server.secret.encode(), s3_server.env["AWS_ACCESS_KEY_ID"].encode()]
    files = [p for p in s3_lake.root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in files) and any(p.suffix == ".parquet" for p in files)
    for path in files:
        content = path.read_bytes()
        assert not any(secret in content for secret in secrets), path
    for output in s3_lake.outputs:
        assert "Month" in output and not any(secret.decode() in output for secret in secrets)
    runs = pg.execute(
        sql.SQL("SELECT r::text FROM {} r").format(sql.Identifier(s3_lake.pg_schema, "pipeline_runs"))
    ).fetchall()
    assert len(runs) == 2
    assert not any(secret.decode() in text for (text,) in runs for secret in secrets)


def test_a_month_run_again_from_the_same_s3_drop_has_nothing_to_do(s3_lake: S3Lake, tmp_path: Path):
    before = tree_state(s3_lake.root)
    for args in (["--as-of", JAN.isoformat()], ["--as-of", FEB.isoformat(), "--source", s3_lake.uris[FEB]]):
        result = luigi("Month", *args, env=s3_lake.env, lock_dir=tmp_path / "locks")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "1 complete ones were encountered" in result.stderr, result.stderr[-3000:]
        assert "ran successfully" not in result.stderr
    assert tree_state(s3_lake.root) == before


def refuses_jan(run_luigi, uri: str, env: dict[str, str], expected: str) -> None:  # noqa: ANN001
    """``Month --as-of JAN --source uri`` fails (exit 30) with ``expected`` in its message, no traceback."""
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", uri, env=env)
    assert result.returncode == EXIT_FAILED, result.stderr[-3000:]
    assert expected in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_a_file_missing_from_the_s3_drop_is_refused_by_name_and_nothing_is_published(
    run_luigi, s3_server: S3Server, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):
    uri = s3_server.upload(SEED_MONTHS[JAN], f"s3://{new_bucket()}/drops/2024-01", skip=("labels.csv",))
    expected = (
        f"{uri}/labels.csv: missing file; a drop needs labels.csv (found: payments_agg_90d.csv, "
        f"subscriptions.csv, support_agg_90d.csv, usage_agg_30d.csv, users.csv)"
    )
    refuses_jan(run_luigi, uri, s3_server.env, expected)
    assert nothing_published(lake_root, pg, pg_schema, JAN)


def test_a_bucket_that_does_not_exist_is_refused_in_one_line_and_nothing_is_published(
    run_luigi, s3_server: S3Server, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):
    bucket = f"no-such-{uuid.uuid4().hex[:8]}"
    uri = f"s3://{bucket}/drops/2024-01"
    expected = (
        f"{uri}: bucket '{bucket}' does not exist at {s3_server.endpoint}; check the bucket in --source "
        f"(or luigi.cfg [months]) and AWS_ENDPOINT_URL"
    )
    refuses_jan(run_luigi, uri, s3_server.env, expected)
    assert nothing_published(lake_root, pg, pg_schema, JAN)


def test_a_prefix_with_no_drop_under_it_is_refused_naming_it(
    run_luigi, s3_server: S3Server, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):
    uri = s3_server.upload(SEED_MONTHS[JAN], f"s3://{new_bucket()}/drops/2024-01")
    empty = uri.replace("2024-01", "2024-03")
    refuses_jan(run_luigi, empty, s3_server.env, f"{empty}: no drop there (no object under 'drops/2024-03/' in bucket")
    assert nothing_published(lake_root, pg, pg_schema, JAN)


def test_an_endpoint_that_does_not_answer_is_one_line_saying_what_to_check(
    run_luigi, s3_server: S3Server, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):
    with socket.socket() as free:  # a port nothing listens on once it is closed
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}"
    env = {**s3_server.env, "AWS_ENDPOINT_URL": closed}
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", "s3://drops/2024-01", env=env)
    assert result.returncode != 0
    expected = (
        f"s3://drops/2024-01/users.csv: the object storage endpoint {closed} does not answer; check "
        f"AWS_ENDPOINT_URL and that the server is running"
    )
    assert expected in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert nothing_published(lake_root, pg, pg_schema, JAN)


def test_an_s3_object_rewritten_mid_run_refuses_the_month_and_one_only_rewritten_alike_passes(
    settings, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    uri = s3_server.upload(SEED_MONTHS[JAN], f"s3://{new_bucket()}/drops/2024-01")
    plan = plan_month(settings, JAN, uri)
    assert isinstance(plan.source, drops.S3Drop) and all(plan.files[t] is not None for t in TABLES)
    assert plan_month(settings, JAN, uri).stage_dir("users") == plan.stage_dir("users")  # a stable identity
    stage_one(settings, plan, "users")
    verify_inputs(plan)  # unchanged
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    seed = (SEED_MONTHS[JAN] / "users.csv").read_bytes()
    time.sleep(1.1)  # S3 keeps an object's modification time in seconds
    s3_server.client().put_object(Bucket=bucket, Key=f"{key}/users.csv", Body=seed)
    assert drops.at(uri).identity("users.csv") != plan.files["users"]
    verify_inputs(plan)  # put again with the same bytes: the sha256 says it is the file staged
    changed = seed.replace(b"True", b"Fals", 1) if b"True" in seed else seed[:-2] + b"x\n"
    assert len(changed) == len(seed) and changed != seed
    s3_server.client().put_object(Bucket=bucket, Key=f"{key}/users.csv", Body=changed)
    with pytest.raises(DropChangedError, match=rf"month {JAN}: {uri}/users\.csv changed while the month was running"):
        verify_inputs(plan)


def test_credentials_the_server_refuses_are_one_line_saying_what_to_set(
    run_luigi, s3_server: S3Server, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):
    uri = s3_server.upload(SEED_MONTHS[JAN], f"s3://{new_bucket()}/drops/2024-01")
    wrong = {**s3_server.env, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN0000", "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with s3_server.checking_credentials():
        result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", uri, env=wrong)
    assert result.returncode != 0
    said = f"{uri}/users.csv: {s3_server.endpoint} refused the credentials (ACCESS_DENIED); set AWS_ACCESS_KEY_ID"
    assert said in result.stderr, result.stderr[-3000:]
    assert "not-the-secret" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert nothing_published(lake_root, pg, pg_schema, JAN)


def test_a_uri_with_credentials_is_refused_and_luigi_never_shows_them(
    run_luigi, s3_server: S3Server, lake_root: Path, pg: psycopg.Connection, pg_schema: str
):
    uri = s3_server.upload(SEED_MONTHS[JAN], f"s3://{new_bucket()}/drops/2024-01")
    bucket_and_key = uri.removeprefix("s3://")
    secret = s3_server.secret
    with_them = f"s3://{s3_server.env['AWS_ACCESS_KEY_ID']}:{secret}@{bucket_and_key}"
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", with_them, "--log-level", "DEBUG")
    assert result.returncode != 0
    assert f"s3://…@{bucket_and_key}: the URI holds credentials" in result.stderr, result.stderr[-3000:]
    assert secret not in result.stdout + result.stderr  # nor in Luigi's task names, summary or tracebacks
    assert nothing_published(lake_root, pg, pg_schema, JAN)


def test_bad_files_in_an_s3_drop_are_explained_as_local_ones_naming_their_uri(
    settings, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The standard of docs/bad-input.md: file, line, column, reason, what to do; the file is the object's
    URI, never the scratch copy staging read."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    drop = seed_copy(tmp_path / "drop")
    set_value(drop, "labels", 9, "churn_label", "maybe")
    drop_column(drop / "users.csv", "user_gender")
    uri = s3_server.upload(drop, f"s3://{new_bucket()}/drops/2024-01")
    with pytest.raises(DropErrors) as refused:
        run_month(settings, JAN, uri)
    said = str(refused.value)
    assert f"{uri}/users.csv: line 1: missing column(s): user_gender" in said
    assert f"{uri}/labels.csv: 1 of 7000 rows rejected (any reject fails the month):" in said
    assert 'labels.csv, line 11, column churn_label: "maybe" is not a boolean' in said
    assert "Fix the export and run the month again" in said
    assert "streamflow-drop-" not in said  # no scratch path
    rejects = duckdb.execute(
        'SELECT line, "column" FROM read_parquet(?)',
        [str(settings.lake_root / "rejects/labels/as_of=2024-01-31/rejects.parquet")],
    ).fetchall()
    assert rejects == [(11, "churn_label")]
    assert RunStore(settings.lake_root).get(JAN) is None


def test_a_correction_from_s3_recomputes_the_later_month_which_keeps_its_uri(
    run_luigi, s3_server: S3Server, lake_root: Path, tmp_path: Path
):
    """A correction (--replace) of January from another prefix rebuilds February from its typed drop in the
    lake: February's new record still names its drop by its URI (never a Path, which makes it 's3:/…')."""
    bucket = new_bucket()
    uris = {d: s3_server.upload(SEED_MONTHS[d], f"s3://{bucket}/drops/{d:%Y-%m}") for d in (JAN, FEB)}
    for as_of in (JAN, FEB):
        result = run_luigi("Month", "--as-of", as_of.isoformat(), "--source", uris[as_of], env=s3_server.env)
        assert result.returncode == 0, result.stderr[-3000:]
    corrected = seed_copy(tmp_path / "jan", "month_000")
    user = set_value(corrected, "users", 0, "user_gender", "Male")  # was Female
    fixed = s3_server.upload(corrected, f"s3://{bucket}/corrected/2024-01")
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", fixed, "--replace", env=s3_server.env)
    assert result.returncode == 0, result.stderr[-3000:]
    store = RunStore(lake_root)
    jan, feb = store.get(JAN), store.get(FEB)
    assert jan is not None and jan.source == fixed and jan.replaced
    assert feb is not None and feb.source == uris[FEB] and feb.replaced  # recomputed on the correction
    gender = duckdb.execute(
        "SELECT user_gender FROM read_parquet(?) WHERE user_id = ?", [str(snapshot_file(lake_root, "users", JAN)), user]
    ).fetchone()
    assert gender == ("Male",)
    again = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", fixed, env=s3_server.env)
    assert again.returncode == 0 and "1 complete ones were encountered" in again.stderr, again.stderr[-3000:]
