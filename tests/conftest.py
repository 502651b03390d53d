"""Shared fixtures: a real PostgreSQL database per test session, a schema and a lake per test, and one
published two-month lake per session for the tests that only read it.

PostgreSQL comes from POSTGRES_DSN when set (the session creates a fresh database there and drops it
at the end), otherwise from an embedded pgserver started for the session. Never mocked, never skipped.
Tests are isolated from a developer's own settings: every subprocess gets an explicit environment.
Object storage (the S3 drop tests) is moto's S3 server, started once per session on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipeline.config import PostgresSettings, Settings
from pipeline.lakefs import Lake
from pipeline.runs import RunStore
from pipeline.schema import PROJECT_ROOT

SEEDS = PROJECT_ROOT / "data" / "seeds"
JAN, FEB = date(2024, 1, 31), date(2024, 2, 29)
SEED_MONTHS = {JAN: SEEDS / "month_000", FEB: SEEDS / "month_001"}


def record_file(lake_root: Path, as_of: date) -> Path:
    """The file of the run record that publishes the month; while none does, a path that does not exist."""
    return RunStore(lake_root).path(as_of) or Lake(lake_root).run_dir(as_of) / "(not published).json"


def object_file(lake_root: Path, kind: str, table: str, as_of: date) -> Path:
    """The ``kind`` object (raw, snapshots) of a published month's table, as its run record names it."""
    record = RunStore(lake_root).get(as_of)
    assert record is not None, f"{as_of} is not published"
    path = record.object_file(Path(lake_root), kind, table)
    assert path is not None, f"{as_of}'s record names no {kind} object of {table}"
    return path


def snapshot_file(lake_root: Path, table: str, as_of: date) -> Path:
    return object_file(lake_root, "snapshots", table, as_of)


def raw_file(lake_root: Path, table: str, as_of: date) -> Path:
    return object_file(lake_root, "raw", table, as_of)


@pytest.fixture(scope="session")
def pg_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a PostgreSQL server's maintenance database."""
    dsn = os.environ.get("POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@contextmanager
def fresh_database(server_dsn: str, prefix: str = "streamflow_test") -> Iterator[str]:
    """Create a database on the server, yield its DSN, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    with fresh_database(pg_server_dsn) as dsn:
        yield dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> str:
    """A schema name no other test uses: each test publishes into its own consumers' tables."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def settings(lake_root: Path, pg_dsn: str, pg_schema: str) -> Settings:
    return Settings(
        lake_root=lake_root,
        months=dict(SEED_MONTHS),
        postgres=PostgresSettings(dsn=pg_dsn, schema=pg_schema),
        duckdb_memory_limit="1GB",
    )


def pipeline_environment(lake_root: Path, dsn: str, schema: str, **extra: str) -> dict[str, str]:
    """The environment of a pipeline subprocess: this lake, database and schema, none of the caller's
    own pipeline settings (POSTGRES_*, LAKE_ROOT, LUIGI_CONFIG_PATH, failpoints) nor AWS_* (an S3 test
    passes moto's in ``extra``)."""
    own = ("POSTGRES_", "LAKE_ROOT", "LUIGI_CONFIG", "STREAMFLOW_", "AWS_")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    return {
        **keep,
        "LAKE_ROOT": str(lake_root),
        "POSTGRES_DSN": dsn,
        "POSTGRES_SCHEMA": schema,
        "PYTHONPATH": str(PROJECT_ROOT),
        **extra,
    }


@pytest.fixture
def pipeline_env(lake_root: Path, pg_dsn: str, pg_schema: str) -> dict[str, str]:
    """The environment of a pipeline subprocess: this test's lake, database and schema, nothing else."""
    return pipeline_environment(lake_root, pg_dsn, pg_schema)


def start_luigi(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """``luigi --module pipeline ARGS`` in the background, from the repository root, output captured."""
    return subprocess.Popen(
        [luigi_bin(), "--module", "pipeline", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def luigi_bin() -> str:
    found = shutil.which("luigi", path=str(Path(sys.executable).parent))
    return found or "luigi"


@pytest.fixture
def run_luigi(pipeline_env: dict[str, str], tmp_path: Path):
    """Run ``luigi --module pipeline ARGS`` the way a person does, from the repository root. Luigi's
    "already running" lock is kept per test, so tests running beside each other never collide on it."""
    lock_dir = tmp_path / "luigi-locks"

    def run(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [luigi_bin(), "--module", "pipeline", *args, "--lock-pid-dir", str(lock_dir)],
            cwd=PROJECT_ROOT,
            env={**pipeline_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


# --- S3-compatible object storage: moto's server ------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    """An S3 API on 127.0.0.1 (moto's server: real HTTP requests, signed and answered as S3 answers them,
    the objects kept in memory) and the environment a pipeline subprocess reads it with. The credentials
    are fake and made for the session, so a test can look for them where they must never be."""

    endpoint: str
    env: dict[str, str]

    @property
    def secret(self) -> str:
        return self.env["AWS_SECRET_ACCESS_KEY"]

    def client(self):  # noqa: ANN201 - a boto3 S3 client (boto3 comes with moto[server])
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.secret,
            region_name=self.env["AWS_REGION"],
        )

    @contextmanager
    def checking_credentials(self) -> Iterator[None]:
        """moto accepts any key unless told to check them (its server's reset-auth): for the block, a key
        it does not know is refused, as S3 refuses it."""
        import urllib.request

        def checked_after(requests: str) -> None:
            request = urllib.request.Request(
                f"{self.endpoint}/moto-api/reset-auth",
                data=requests.encode(),
                method="POST",
                headers={"Content-Type": "text/plain"},  # else werkzeug takes the body for a form
            )
            urllib.request.urlopen(request, timeout=10).close()

        checked_after("0")
        try:
            yield
        finally:
            checked_after("inf")

    def upload(self, folder: Path, uri: str, skip: tuple[str, ...] = ()) -> str:
        """Every CSV file of ``folder`` put under ``uri`` (``s3://bucket/prefix``, the bucket made if need
        be), except the names in ``skip``. Returns the URI."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        client = self.client()
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        for path in sorted(folder.glob("*.csv")):
            if path.name not in skip:
                client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
        return uri


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the session, on 127.0.0.1 and a free port (moto[server], a dev dependency)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request in the test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": f"AKIATEST{uuid.uuid4().hex[:12].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"test-secret-{uuid.uuid4().hex}",
        "AWS_REGION": "us-east-1",
        # nothing of the developer's own AWS configuration is read
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        yield S3Server(endpoint, env)
    finally:
        server.stop()


def copy_drop(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


# --- the seed months, published once per session ----------------------------------------------


@dataclass(frozen=True)
class PublishedLake:
    """A lake and a PostgreSQL schema with both seed months published, and the environment of a
    subprocess (``luigi``, ``python -m pipeline``) that works on them."""

    root: Path
    env: dict[str, str]
    pg_schema: str


def publish_seed_months(root: Path, pg_dsn: str) -> PublishedLake:
    """Both seed months published into the lake ``root`` and a schema of their own, the way a person
    does it: ``luigi --module pipeline Month --as-of 2024-02-29 --workers 2`` (February pulls in January)."""
    pg_schema = f"t_{uuid.uuid4().hex[:10]}"
    env = pipeline_environment(root, pg_dsn, pg_schema)
    result = subprocess.run(
        [luigi_bin(), "--module", "pipeline", "Month", "--as-of", FEB.isoformat(), "--workers", "2"]
        + ["--lock-pid-dir", str(root.parent / "luigi-locks")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return PublishedLake(root, env, pg_schema)


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> PublishedLake:
    """READ ONLY. Both seed months, published once per session and shared by every test that only reads
    the lake or the schema (running a published month again, which must change nothing, is a read).
    A test that writes to the lake uses ``published_copy``; one that writes to PostgreSQL builds its own
    lake and schema (``settings``, ``run_luigi``)."""
    return publish_seed_months(tmp_path_factory.mktemp("published") / "lake", pg_dsn)


@pytest.fixture
def published_copy(published: PublishedLake, tmp_path: Path) -> PublishedLake:
    """A copy of the shared lake of its own, for a test that writes to the lake. It shares the published
    schema, which it must only read."""
    root = Path(shutil.copytree(published.root, tmp_path / "lake"))
    return PublishedLake(root, {**published.env, "LAKE_ROOT": str(root)}, published.pg_schema)
