"""``streamflow feast-repo`` (issue #16): what it writes, without Feast itself (tests/test_feast.py runs
the written repository with the real client)."""

from __future__ import annotations

import ast
import calendar
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from pipeline import feast_repo
from pipeline.errors import ConfigError
from pipeline.schema import load_schema
from tests.conftest import pipeline_environment as environment
from tests.test_cli_status import cli

SCHEMA = load_schema()


def written(tmp_path: Path, env: dict[str, str]) -> tuple[dict, str]:
    feast_repo.write_repo(tmp_path, env)
    config = yaml.safe_load((tmp_path / feast_repo.CONFIG_FILE).read_text())
    return config, (tmp_path / feast_repo.FEATURES_FILE).read_text()


@pytest.mark.parametrize(
    ("env", "sslmode"),
    [
        ({"POSTGRES_DSN": "postgresql://bob@db.example:6543/lake"}, "prefer"),  # libpq's default, not Feast's
        ({"POSTGRES_DSN": "postgresql://bob@db.example:6543/lake?sslmode=verify-full"}, "verify-full"),
        ({"POSTGRES_DSN": "postgresql://bob@db.example:6543/lake", "PGSSLMODE": "require"}, "require"),
        (
            {"POSTGRES_HOST": "db.example", "POSTGRES_PORT": "6543", "POSTGRES_USER": "bob", "POSTGRES_DB": "lake"},
            "prefer",
        ),
    ],
)
def test_feature_store_yaml_connects_with_the_pipelines_settings_and_ssl_mode(tmp_path: Path, env, sslmode):
    config, _ = written(tmp_path, env)
    offline = config["offline_store"]
    assert offline["type"] == "postgres"
    assert (offline["host"], offline["port"], offline["database"], offline["user"]) == (
        "db.example",
        6543,
        "lake",
        "bob",
    )
    assert offline["sslmode"] == sslmode
    assert offline["password"] == ""
    assert offline["db_schema"] == feast_repo.ENTITY_SCHEMA


@pytest.mark.parametrize(
    "env",
    [
        {"POSTGRES_DSN": "postgresql://bob:s3cr3t-pw@db.example/lake"},
        {"POSTGRES_HOST": "db.example", "POSTGRES_USER": "bob", "POSTGRES_PASSWORD": "s3cr3t-pw"},
    ],
)
def test_the_password_is_never_written_feast_reads_it_from_the_environment(tmp_path: Path, env):
    config, features = written(tmp_path, env)
    for path in tmp_path.iterdir():
        assert "s3cr3t-pw" not in path.read_text(), path.name
    assert config["offline_store"]["password"] == "${POSTGRES_PASSWORD}"  # Feast expands it when it reads the file


def test_feature_views_cover_every_value_column_of_the_contract_over_the_snapshot_tables(tmp_path: Path):
    _, features = written(tmp_path, {"POSTGRES_DSN": "postgresql://bob@db/lake", "POSTGRES_SCHEMA": "lake"})
    module = ast.parse(features)  # valid Python
    views = {}
    for node in module.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "FeatureView"
        ):
            keywords = {k.arg: k.value for k in node.value.keywords}
            fields = [
                (ast.literal_eval(f.keywords[0].value), ast.unparse(f.keywords[1].value))
                for f in keywords["schema"].elts
            ]
            source = {k.arg: ast.literal_eval(k.value) for k in keywords["source"].keywords}
            views[ast.literal_eval(keywords["name"])] = (fields, source)
    assert list(views) == SCHEMA.table_names
    for table in SCHEMA.tables:
        fields, source = views[table.name]
        assert fields == [(c.name, feast_repo.FEAST_TYPES[c.pg_type]) for c in table.value_columns], table.name
        assert source == {
            "name": f"{table.name}_snapshots",
            "table": f'"lake"."{table.name}_snapshots"',
            "timestamp_field": "as_of_ts",
        }
    assert "join_keys=['user_id']" in features
    assert "FeatureService(name='training_set', features=[" + ", ".join(SCHEMA.table_names) + "])" in features


def test_the_ttl_never_lets_a_month_read_the_month_before():
    """Month ends are at least 28 days apart (February); a row must not answer at the next as_of_ts."""
    month_ends = [date(y, m, calendar.monthrange(y, m)[1]) for y in (2023, 2024) for m in range(1, 13)]
    shortest = min(b - a for a, b in zip(month_ends, month_ends[1:], strict=False))
    assert shortest == timedelta(days=28)
    assert shortest > feast_repo.TTL


def test_without_a_postgresql_setting_it_says_what_to_set():
    with pytest.raises(ConfigError, match="feast-repo: no PostgreSQL configured; set POSTGRES_DSN"):
        feast_repo.connection({})


def test_the_cli_writes_the_repository(tmp_path: Path):
    env = environment(tmp_path / "lake", "postgresql://bob@db.example/lake", "public")
    result = cli(env, "feast-repo", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [feast_repo.CONFIG_FILE, feast_repo.FEATURES_FILE]
    assert "feast apply" in result.stdout
