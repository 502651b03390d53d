"""Settings in layers: built-in defaults, then luigi.cfg, then the environment (and `.env`).

Plain functions take a :class:`Settings`; only the Luigi tasks and the console script build one from
the configuration files. Relative paths in luigi.cfg are relative to the current directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from pipeline.errors import ConfigError

PIPELINE_SECTION = "pipeline"
MONTHS_SECTION = "months"
_KNOWN_KEYS = {
    "lake_root",
    "max_reject_ratio",
    "volume_change_ratio",
    "max_delete_ratio",
    "duckdb_memory_limit",
    "duckdb_threads",
    "postgres_schema",
    "as_of_calendar",
}
POSTGRES_ENV = ("POSTGRES_DSN", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")


@dataclass(frozen=True)
class PostgresSettings:
    """Where the live, snapshot and run tables go. ``dsn`` is None when nothing is configured:
    the pipeline then starts the embedded server (see :mod:`pipeline.embedded`)."""

    dsn: str | None = None
    schema: str = "public"

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ = os.environ, schema: str = "public") -> PostgresSettings:
        schema = env.get("POSTGRES_SCHEMA") or schema
        if env.get("POSTGRES_DSN"):
            return cls(dsn=env["POSTGRES_DSN"], schema=schema)
        if not any(env.get(name) for name in POSTGRES_ENV[1:]):
            return cls(dsn=None, schema=schema)
        from psycopg.conninfo import make_conninfo

        parts = {
            "host": env.get("POSTGRES_HOST") or "localhost",
            "port": env.get("POSTGRES_PORT") or "5432",
            "user": env.get("POSTGRES_USER") or "postgres",
            "dbname": env.get("POSTGRES_DB") or "postgres",
        }
        if env.get("POSTGRES_PASSWORD"):
            parts["password"] = env["POSTGRES_PASSWORD"]
        return cls(dsn=make_conninfo(**parts), schema=schema)


@dataclass(frozen=True)
class Settings:
    lake_root: Path = Path("lake")
    months: dict[date, Path] = field(default_factory=dict)  # as_of -> configured drop folder
    max_reject_ratio: float = 0.0  # share of a file's rows that may be rejected; 0 = any reject fails
    volume_change_ratio: float = 0.5  # a drop whose row count moves more than this vs the previous drop fails
    max_delete_ratio: float = 0.10  # --full-dump may delete at most this share of users unless confirmed
    duckdb_memory_limit: str = "1GB"  # DuckDB spills to <lake>/_tmp/duckdb beyond this
    duckdb_threads: int = 0  # 0 = DuckDB's default (all cores)
    as_of_calendar: str = "month_end"  # which dates may be an as_of: month_end, or any
    postgres: PostgresSettings = field(default_factory=PostgresSettings)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _parse_date(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an ISO date (YYYY-MM-DD)") from None


def load_settings(env: dict[str, str] | os._Environ | None = None) -> Settings:
    """Read luigi.cfg (through Luigi's own config loader, so LUIGI_CONFIG_PATH works), then the
    environment: LAKE_ROOT overrides ``[pipeline] lake_root``; POSTGRES_* / POSTGRES_DSN pick the server.
    A ``.env`` file in the current directory is read first and never overrides the real environment."""
    import luigi.configuration
    from dotenv import dotenv_values

    if env is None:
        env = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **os.environ}
    config = luigi.configuration.get_config()
    values: dict[str, object] = {}
    if config.has_section(PIPELINE_SECTION):
        unknown = set(config.options(PIPELINE_SECTION)) - _KNOWN_KEYS - set(config.defaults())
        if unknown:
            raise ConfigError(
                f"luigi.cfg [{PIPELINE_SECTION}]: unknown key(s) {sorted(unknown)}; known: {sorted(_KNOWN_KEYS)}"
            )
        for key in _KNOWN_KEYS:
            if config.has_option(PIPELINE_SECTION, key):
                values[key] = config.get(PIPELINE_SECTION, key)
    months: dict[date, Path] = {}
    if config.has_section(MONTHS_SECTION):
        for key in config.options(MONTHS_SECTION):
            if key in config.defaults():
                continue
            months[_parse_date(key, f"luigi.cfg [{MONTHS_SECTION}]")] = Path(config.get(MONTHS_SECTION, key))
    lake_root = Path(env.get("LAKE_ROOT") or str(values.pop("lake_root", "lake")))
    values.pop("lake_root", None)
    schema = str(values.pop("postgres_schema", "public"))
    try:
        return Settings(
            lake_root=lake_root,
            months=dict(sorted(months.items())),
            max_reject_ratio=float(values.get("max_reject_ratio", 0.0)),  # type: ignore[arg-type]
            volume_change_ratio=float(values.get("volume_change_ratio", 0.5)),  # type: ignore[arg-type]
            max_delete_ratio=float(values.get("max_delete_ratio", 0.10)),  # type: ignore[arg-type]
            duckdb_memory_limit=str(values.get("duckdb_memory_limit", "1GB")),
            duckdb_threads=int(values.get("duckdb_threads", 0)),  # type: ignore[call-overload]
            as_of_calendar=str(values.get("as_of_calendar", "month_end")).strip(),
            postgres=PostgresSettings.from_env(env, schema=schema),
        )
    except ValueError as e:
        raise ConfigError(f"luigi.cfg [{PIPELINE_SECTION}]: {e}") from None
