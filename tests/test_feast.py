"""Feast, the real client, over the published months (issue #16): the repository ``streamflow feast-repo``
writes, applied with ``feast apply``, returns the project's training set cell for cell, for both sample
months, in a session whose TimeZone is not UTC, as the pipeline's role and as a ``streamflow_reader``
login. Needs the ``[feast]`` extra (CI installs it: there, a missing feast fails instead of skipping)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipeline.schema import PROJECT_ROOT, load_schema
from pipeline.training import output_columns, training_frame
from tests.conftest import FEB, JAN, PublishedLake, fresh_database
from tests.conftest import pipeline_environment as environment
from tests.test_cli_status import cli, luigi

if os.environ.get("CI"):
    import feast  # CI installs the [feast] extra: a missing feast is a failure there, never a skip
else:
    feast = pytest.importorskip("feast", reason='Feast is not installed: pip install -e ".[feast]"')

SCHEMA = load_schema()
ZONES = ("America/New_York", "Asia/Tokyo")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, pg_server_dsn: str) -> Iterator[PublishedLake]:
    """Both seed months in the public schema of a database of their own, with sql/consumer_role.sql run
    as it is (it grants on public)."""
    with fresh_database(pg_server_dsn, "streamflow_feast") as dsn:
        root = tmp_path_factory.mktemp("feast") / "lake"
        env = environment(root, dsn, "public")
        result = luigi(env, "Month", "--as-of", FEB.isoformat())
        assert result.returncode == 0, result.stderr[-3000:]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((PROJECT_ROOT / "sql" / "consumer_role.sql").read_text())  # type: ignore[arg-type]
        yield PublishedLake(root, env, "public")


@pytest.fixture(scope="module")
def reader_dsn(published: PublishedLake) -> Iterator[str]:
    """A login in streamflow_reader, as a DBA gives one to a person (no password: the test server trusts)."""
    name = f"streamflow_test_reader_{uuid.uuid4().hex[:8]}"
    dsn = published.env["POSTGRES_DSN"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE streamflow_reader").format(sql.Identifier(name)))
    try:
        yield make_conninfo(dsn, user=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def feature_repo(published: PublishedLake, dsn: str, directory: Path) -> Path:
    """What the README says: streamflow feast-repo DIR, then feast apply in DIR."""
    env = {**published.env, "POSTGRES_DSN": dsn}
    result = cli(env, "feast-repo", str(directory))
    assert result.returncode == 0, result.stderr
    feast_bin = Path(sys.executable).parent / "feast"
    applied = subprocess.run(
        [str(feast_bin), "apply"], cwd=directory, env=env, capture_output=True, text=True, timeout=300
    )
    assert applied.returncode == 0, applied.stderr[-3000:]
    return directory


@pytest.fixture(scope="module", params=["pipeline role", "streamflow_reader login"])
def login(request: pytest.FixtureRequest, published: PublishedLake, tmp_path_factory) -> tuple[str, Path]:
    dsn = published.env["POSTGRES_DSN"] if request.param == "pipeline role" else request.getfixturevalue("reader_dsn")
    return dsn, feature_repo(published, dsn, tmp_path_factory.mktemp("feature_repo"))


def same(expected: object, got: object) -> bool:
    """One cell: NULL as NULL, NUMERIC at float precision (Feast's double may be one ulp away), dates and
    timestamps as the same instant."""
    import pandas as pd

    if expected is None or (isinstance(expected, float) and math.isnan(expected)) or expected is pd.NaT:
        return got is None or got is pd.NaT or (isinstance(got, float) and math.isnan(got))
    if isinstance(expected, float):
        return isinstance(got, float) and math.isclose(expected, got, rel_tol=2**-52, abs_tol=0.0)
    if isinstance(expected, pd.Timestamp):
        got = pd.Timestamp(got)
        return got.tz_convert("UTC").tz_localize(None) == expected if got.tzinfo else got == expected
    return bool(expected == got)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("as_of", [JAN, FEB], ids=str)
def test_feast_historical_features_equal_the_training_set_cell_for_cell_in_any_session_time_zone(
    published: PublishedLake, login: tuple[str, Path], as_of: date, zone: str, monkeypatch: pytest.MonkeyPatch
):
    import pandas as pd

    dsn, repo = login
    monkeypatch.setenv("PGTZ", zone)  # libpq's: every session Feast opens starts in this zone
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == (zone,)
    expected = training_frame(as_of, lake_root=published.root)
    store = feast.FeatureStore(repo_path=str(repo))
    entity_rows = pd.DataFrame({"user_id": expected["user_id"], "event_timestamp": pd.Timestamp(as_of, tz="UTC")})
    got = (
        store.get_historical_features(
            entity_df=entity_rows, features=store.get_feature_service("training_set"), full_feature_names=True
        )
        .to_df()
        .sort_values("user_id", ignore_index=True)
    )
    assert got["user_id"].tolist() == expected["user_id"].tolist()
    wrong: dict[str, int] = {}
    compared = 0
    for table, names in output_columns(SCHEMA).items():
        for source, out in names:
            if source == SCHEMA.table(table).key:
                continue
            column = f"{table}__{source}"
            pairs = zip(expected[out].tolist(), got[column].tolist(), strict=True)
            bad = sum(not same(e, g) for e, g in pairs)
            compared += len(expected)
            if bad:
                wrong[out] = bad
    assert compared == len(expected) * (len(expected.columns) - 3)  # every cell but user_id, as_of, label_as_of
    assert wrong == {}, f"{sum(wrong.values())} wrong cells through Feast at {as_of} in {zone}: {wrong}"


def test_the_reader_login_cannot_write_the_contracts_tables(reader_dsn: str):
    with psycopg.connect(reader_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM public.labels_snapshots")


def test_an_sql_entity_frame_needs_no_table_of_its_own(published: PublishedLake, reader_dsn: str, tmp_path: Path):
    """entity_select_mode: embed_query (in the generated feature_store.yaml): Feast reads the entity rows
    inside its query, so a reader without even the streamflow_feast schema gets the features."""
    repo = feature_repo(published, reader_dsn, tmp_path / "repo")
    with psycopg.connect(published.env["POSTGRES_DSN"], autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA streamflow_feast FROM streamflow_reader")
    try:
        store = feast.FeatureStore(repo_path=str(repo))
        query = (
            "SELECT user_id, as_of_ts AS event_timestamp FROM public.users_snapshots WHERE as_of = DATE '2024-02-29'"
        )
        got = store.get_historical_features(entity_df=query, features=store.get_feature_service("training_set")).to_df()
    finally:
        with psycopg.connect(published.env["POSTGRES_DSN"], autocommit=True) as conn:
            conn.execute("GRANT CREATE ON SCHEMA streamflow_feast TO streamflow_reader")
    expected = training_frame(FEB, lake_root=published.root)
    assert sorted(got["user_id"]) == expected["user_id"].tolist()
    assert got["churn_label"].sum() == expected["churn_label"].sum()


def test_the_generated_connection_is_the_pipelines(published: PublishedLake, login: tuple[str, Path]):
    dsn, repo = login
    store = feast.FeatureStore(repo_path=str(repo))
    offline = store.config.offline_store
    assert (offline.user, offline.database) == (conninfo_to_dict(dsn)["user"], conninfo_to_dict(dsn)["dbname"])
