"""A Feast feature repository over the published months, generated from sql/schema.sql (issue #16).

    streamflow feast-repo DIR      # then: cd DIR && feast apply

writes two files, regenerated as a whole on every run (do not edit them):

- ``feature_store.yaml``: Feast's PostgreSQL offline store, connected with the settings the pipeline
  reads (``POSTGRES_DSN`` or ``POSTGRES_*``; SSL mode from the DSN, else ``PGSSLMODE``, else libpq's
  ``prefer``, where Feast's own default, ``require``, refuses a local server). A password is never
  written: the file says ``${POSTGRES_PASSWORD}``, which Feast expands when it reads the file;
- ``streamflow_features.py``: the entity ``user`` (join key: the root table's key), one feature view
  per table over ``<table>_snapshots`` with ``timestamp_field="as_of_ts"``, its value columns typed
  from the contract (:data:`FEAST_TYPES`), and the feature service ``training_set`` of every view.

The point in time of a month is ``as_of_ts`` (as_of 00:00 UTC): an entity row whose event_timestamp is
that instant reads that month. :data:`TTL` keeps a row from answering for a later month: a user absent
from the newer month gets NULLs, not the older month's values.

Entity rows are read by Feast from a table it creates (for a DataFrame) in ``db_schema``
(:data:`ENTITY_SCHEMA`, made by ``sql/consumer_role.sql``, where ``streamflow_reader`` may create
tables), or embedded in the query (for an SQL entity frame, ``entity_select_mode: embed_query``): a
login in ``streamflow_reader`` needs no write access to the contract's tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from pipeline import ddl
from pipeline.config import PostgresSettings
from pipeline.errors import ConfigError
from pipeline.schema import Schema, Table, load_schema

PROJECT = "streamflow"
ENTITY = "user"
FEATURE_SERVICE = "training_set"
FEATURES_FILE = "streamflow_features.py"
CONFIG_FILE = "feature_store.yaml"
# The schema where Feast creates its entity tables; sql/consumer_role.sql makes it and lets
# streamflow_reader create tables there (and only there).
ENTITY_SCHEMA = "streamflow_feast"
PASSWORD_VARIABLE = "POSTGRES_PASSWORD"
# libpq's default: SSL when the server offers it. Feast's default is "require", which a local server
# without SSL refuses.
DEFAULT_SSLMODE = "prefer"
# A month's row answers for 27 days after its as_of_ts: month ends are at least 28 days apart, so a user
# absent from the newer month never reads the older month's row at the newer as_of_ts (a 40-day TTL
# gave February's absent users January's values, churn_label included). An event_timestamp between
# as_of_ts + 27 days and the next as_of_ts reads NULLs: ask at a month's as_of_ts.
TTL = timedelta(days=27)

# Contract type -> Feast type. NUMERIC becomes Float64 (Feast has no decimal type): a float64 holds 15-17
# significant digits, so NUMERIC(38,10) values beyond that are rounded (to the nearest double, 1 ulp off
# at most through Feast's PostgreSQL reader). DATE becomes UnixTimestamp (00:00 UTC of the day).
FEAST_TYPES = {
    "TEXT": "String",
    "INT": "Int32",
    "BIGINT": "Int64",
    "NUMERIC": "Float64",
    "BOOLEAN": "Bool",
    "DATE": "UnixTimestamp",
}


@dataclass(frozen=True)
class Connection:
    """What feature_store.yaml says about the server (no password: see :data:`PASSWORD_VARIABLE`)."""

    host: str
    port: int
    database: str
    user: str
    sslmode: str
    has_password: bool
    schema: str  # where the contract's tables are (POSTGRES_SCHEMA)


def connection(env: Mapping[str, str] = os.environ) -> Connection:
    """The pipeline's PostgreSQL settings, as Feast needs them."""
    from psycopg.conninfo import conninfo_to_dict

    settings = PostgresSettings.from_env(dict(env))
    if settings.dsn is None:
        raise ConfigError(
            "feast-repo: no PostgreSQL configured; set POSTGRES_DSN (or POSTGRES_HOST, POSTGRES_USER, …) to the "
            "server the months are published to (with the embedded server: the URI the pipeline logged)"
        )
    parts = conninfo_to_dict(settings.dsn)
    user = str(parts.get("user") or env.get("PGUSER") or env.get("USER") or "postgres")
    return Connection(
        host=str(parts.get("host") or env.get("PGHOST") or "localhost"),
        port=int(parts.get("port") or env.get("PGPORT") or 5432),
        database=str(parts.get("dbname") or env.get("PGDATABASE") or user),
        user=user,
        sslmode=str(parts.get("sslmode") or env.get("PGSSLMODE") or DEFAULT_SSLMODE),
        has_password=bool(parts.get("password") or env.get(PASSWORD_VARIABLE) or env.get("PGPASSWORD")),
        schema=settings.schema,
    )


def feature_store_yaml(conn: Connection) -> str:
    offline = {
        "type": "postgres",
        "host": conn.host,
        "port": conn.port,
        "database": conn.database,
        "db_schema": ENTITY_SCHEMA,
        "user": conn.user,
        "password": "${" + PASSWORD_VARIABLE + "}" if conn.has_password else "",
        "sslmode": conn.sslmode,
        "entity_select_mode": "embed_query",
    }
    config = {
        "project": PROJECT,
        "provider": "local",
        "registry": "data/registry.db",
        "online_store": {"type": "sqlite", "path": "data/online_store.db"},
        "offline_store": offline,
        "entity_key_serialization_version": 3,
    }
    header = (
        "# Generated by `streamflow feast-repo` from sql/schema.sql and the POSTGRES_* settings: regenerate it,\n"
        "# do not edit it. "
        + (
            f"The password is read from ${PASSWORD_VARIABLE} when feast runs (never written here).\n"
            if conn.has_password
            else "No password was configured (a .pgpass file still works).\n"
        )
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def _source_table(pg_schema: str, table: Table) -> str:
    """The snapshot table, quoted, as Feast puts it into its SQL."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (pg_schema, table.name + ddl.SNAPSHOT_SUFFIX))


def features_py(schema: Schema, pg_schema: str) -> str:
    key = schema.root.key
    types = sorted({FEAST_TYPES[c.pg_type] for t in schema.tables for c in t.columns if c.name != t.key})
    lines = [
        '"""Generated by `streamflow feast-repo` from sql/schema.sql: regenerate it, do not edit it.',
        "",
        "One feature view per table over <table>_snapshots; a month's values are at its as_of_ts",
        f'(as_of 00:00 UTC) and answer for {TTL.days} days (see the README, "Feast")."""',
        "",
        "from datetime import timedelta",
        "",
        "from feast import Entity, FeatureService, FeatureView, Field, ValueType",
        "from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource",
        f"from feast.types import {', '.join(types)}",
        "",
        f"TTL = timedelta(days={TTL.days})",
        "",
        f"{ENTITY} = Entity(name={ENTITY!r}, join_keys=[{key!r}], value_type=ValueType.STRING)",
    ]
    views = []
    for table in schema.tables:
        fields = [f"        Field(name={c.name!r}, dtype={FEAST_TYPES[c.pg_type]})," for c in table.value_columns]
        if table.key != key:
            raise ConfigError(f"feast-repo: table {table.name} is keyed by {table.key}, not by {key}")
        lines += [
            "",
            f"{table.name} = FeatureView(",
            f"    name={table.name!r},",
            f"    entities=[{ENTITY}],",
            "    ttl=TTL,",
            "    schema=[",
            *fields,
            "    ],",
            "    source=PostgreSQLSource(",
            f"        name={table.name + ddl.SNAPSHOT_SUFFIX!r},",
            f"        table={_source_table(pg_schema, table)!r},",
            f"        timestamp_field={ddl.AS_OF_TS!r},",
            "    ),",
            ")",
        ]
        views.append(table.name)
    lines += ["", f"{FEATURE_SERVICE} = FeatureService(name={FEATURE_SERVICE!r}, features=[{', '.join(views)}])", ""]
    return "\n".join(lines)


def write_repo(directory: Path, env: Mapping[str, str] = os.environ, schema: Schema | None = None) -> list[Path]:
    """Write (or rewrite) the repository's two files in ``directory``; returns their paths."""
    schema = schema or load_schema()
    conn = connection(env)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((CONFIG_FILE, feature_store_yaml(conn)), (FEATURES_FILE, features_py(schema, conn.schema))):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
