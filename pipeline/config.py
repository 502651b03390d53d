"""Settings in layers: built-in defaults, then luigi.cfg, then the environment (and `.env`).

Plain functions take a :class:`Settings`; only the Luigi tasks and the console script build one from
the configuration files. Relative paths in luigi.cfg are relative to the current directory.

Every ``[pipeline]`` key is declared once, in :data:`SETTINGS` (its default as luigi.cfg spells it, what
it means, how its value is read); the README's configuration table is checked against it
(tests/unit/test_docs.py). A value is validated when it is read, so a bad one stops the command at
once with the file, section, key, value and what is allowed, not halfway through a month.
"""

from __future__ import annotations

import configparser
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from pipeline import lakestore, objectstore
from pipeline.errors import ConfigError, DropError

PIPELINE_SECTION = "pipeline"
MONTHS_SECTION = "months"
POSTGRES_ENV = ("POSTGRES_DSN", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")


class _Invalid(ValueError):
    """A value outside what its key allows; the message says what is allowed."""


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # fails every range check below


def _share(of_what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _float(text)
        if not 0 <= value <= 1:
            raise _Invalid(f"must be a number from 0 to 1 (a share of {of_what})")
        return value

    return parse


def _change_ratio(text: str) -> float:
    """Greater than 0, no upper bound: the change is a share of the previous drop's rows, and a drop may
    more than double (ratio above 1). 0 would fail any month whose row count moves at all."""
    value = _float(text)
    if not 0 < value < math.inf:
        raise _Invalid(
            "must be a number greater than 0 (a share of the previous drop's rows: 0.5 allows from half to "
            "one and a half times as many)"
        )
    return value


def _memory_limit(text: str) -> str:
    from pipeline.duck import memory_bytes  # imported here: pipeline.duck imports this module

    try:
        size = memory_bytes(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise _Invalid("must be a size like 1GB, 512MB or 2GiB (DuckDB spills to disk beyond it)")
    return text.strip()


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise _Invalid("must be a whole number from 0 up (0: DuckDB's default, every core)")
    return value


def _interval(text: str) -> str:
    """A PostgreSQL interval as ``lock_timeout`` takes it: a whole number with an optional unit."""
    import re

    if not re.fullmatch(r"[0-9]+\s*(us|ms|s|min|h|d)?", text.strip()):
        raise _Invalid("must be a duration like 30s, 2min or 1h (0: wait for ever)")
    return text.strip()


def _folder_or_temp(text: str) -> Path | None:
    """A folder (made on first use), or None for the system's temporary folder (empty value)."""
    if not text.strip():
        return None
    path = Path(text.strip())
    if path.exists() and not path.is_dir():
        raise _Invalid("must be a folder (made on first use), or empty for the system's temporary folder")
    return path


def _calendar(text: str) -> str:
    if text.strip() not in ("month_end", "any"):
        raise _Invalid("must be month_end (an as_of is the last day of a month) or any")
    return text.strip()


def _psi(text: str) -> float:
    value = _float(text)
    if not 0 < value < math.inf:
        raise _Invalid("must be a number greater than 0 (a population stability index; 0.1 is a common warning level)")
    return value


def _psi_or_off(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    try:
        return _psi(text)
    except _Invalid:
        raise _Invalid("must be off or a number greater than 0 (a population stability index, e.g. 0.25)") from None


def _name(text: str) -> str:
    if not text.strip():
        raise _Invalid("must not be empty")
    return text.strip()


@dataclass(frozen=True)
class Setting:
    """One ``[pipeline]`` key of luigi.cfg, as the README's configuration table lists it."""

    key: str
    default: str  # as luigi.cfg would spell it; parses to the default of the Settings field
    meaning: str
    parse: Callable[[str], object] = field(repr=False, compare=False)


SETTINGS: tuple[Setting, ...] = (
    Setting("lake_root", "lake", "the lake; `LAKE_ROOT` overrides", _name),
    Setting(
        "max_reject_ratio",
        "0",
        "share of a file's rows that may be rejected, from 0 to 1 (0: any reject fails)",
        _share("the file's rows"),
    ),
    Setting(
        "volume_change_ratio",
        "0.5",
        "allowed change of a drop's row count vs the previous drop's, as a share of it; greater than 0 "
        "(above 1 allows more than doubling)",
        _change_ratio,
    ),
    Setting(
        "max_delete_ratio",
        "0.10",
        "share of users a `--full-dump` month may delete unconfirmed, from 0 to 1",
        _share("the users"),
    ),
    Setting(
        "duckdb_memory_limit",
        "1GB",
        "DuckDB spills to disk (under `scratch_dir`) beyond this; a size such as `1GB`, `512MB`, `2GiB`",
        _memory_limit,
    ),
    Setting(
        "duckdb_threads",
        "0",
        "threads of each DuckDB connection, a whole number; 0: DuckDB's default (every core)",
        _threads,
    ),
    Setting(
        "scratch_dir",
        "",
        "folder under which each run makes (and removes) its own scratch: DuckDB's spill files, the CSVs for "
        "PostgreSQL's COPY; empty: the system's temporary folder (`TMPDIR`)",
        _folder_or_temp,
    ),
    Setting("postgres_schema", "public", "schema of the consumers' tables; `POSTGRES_SCHEMA` overrides", _name),
    Setting(
        "lock_timeout",
        "2min",
        "how long a publish waits for a lock a consumer's session holds, a duration such as `30s`, `2min` "
        "(0: for ever)",
        _interval,
    ),
    Setting(
        "as_of_calendar",
        "month_end",
        "which dates may be an as_of: `month_end` (the last day of a month) or `any`",
        _calendar,
    ),
    Setting(
        "drift_warn_psi",
        "0.1",
        "a feature whose PSI vs the previous published month is over this is a warn-level check of the month "
        "(greater than 0)",
        _psi,
    ),
    Setting(
        "drift_fail_psi",
        "off",
        "a feature whose PSI is over this refuses the month before publish, like a failed check; `off` or a "
        "number greater than 0",
        _psi_or_off,
    ),
)
_KNOWN_KEYS = frozenset(s.key for s in SETTINGS)


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
    """The defaults here are those of :data:`SETTINGS` (a unit test keeps the two equal)."""

    lake_root: lakestore.LakeRoot = Path("lake")  # a folder, or an s3:// URI (text) that only readers accept
    months: dict[date, Path | str] = field(default_factory=dict)  # as_of -> drop folder, or s3:// URI (a str)
    max_reject_ratio: float = 0.0  # share of a file's rows that may be rejected; 0 = any reject fails
    volume_change_ratio: float = 0.5  # a drop whose row count moves more than this vs the previous drop fails
    max_delete_ratio: float = 0.10  # --full-dump may delete at most this share of users unless confirmed
    duckdb_memory_limit: str = "1GB"  # DuckDB spills to a folder under scratch_dir beyond this
    duckdb_threads: int = 0  # 0 = DuckDB's default (all cores)
    scratch_dir: Path | None = None  # per-run scratch goes under it; None: the system's temporary folder
    lock_timeout: str = "2min"  # how long a publish waits for a consumer's lock (PostgreSQL interval)
    as_of_calendar: str = "month_end"  # which dates may be an as_of: month_end, or any
    drift_warn_psi: float = 0.1  # a feature drifting more than this (PSI) is a warn-level check
    drift_fail_psi: float | None = None  # a feature drifting more than this refuses the month; None: never
    postgres: PostgresSettings = field(default_factory=PostgresSettings)

    @property
    def lake_path(self) -> Path:
        """The lake's folder, for code that writes the lake: an s3:// lake is refused (issue #19)."""
        return lakestore.local_root(self.lake_root)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _parse_date(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an ISO date (YYYY-MM-DD)") from None


def _source(config: configparser.RawConfigParser, section: str, key: str) -> str:
    """The configuration file a key was read from: the last of Luigi's files that sets it (Luigi reads
    them in order, LUIGI_CONFIG_PATH last); ``luigi.cfg`` when that cannot be told."""
    for path in reversed(getattr(type(config), "_config_paths", [])):
        if not os.path.isfile(path):
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        if parser.has_option(section, key):
            return str(path)
    return "luigi.cfg"


def _read_pipeline_section(config: configparser.RawConfigParser) -> dict[str, object]:
    """The ``[pipeline]`` keys that are set, each parsed and validated."""
    if not config.has_section(PIPELINE_SECTION):
        return {}
    keys = [k for k in config.options(PIPELINE_SECTION) if k not in config.defaults()]
    unknown = sorted(set(keys) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{_source(config, PIPELINE_SECTION, unknown[0])} [{PIPELINE_SECTION}]: unknown key(s) {unknown}; "
            f"known: {sorted(_KNOWN_KEYS)}"
        )
    values: dict[str, object] = {}
    for setting in SETTINGS:
        if setting.key not in keys:
            continue
        text = config.get(PIPELINE_SECTION, setting.key)
        try:
            values[setting.key] = setting.parse(text)
        except _Invalid as e:
            where = _source(config, PIPELINE_SECTION, setting.key)
            raise ConfigError(f"{where} [{PIPELINE_SECTION}] {setting.key} = {text}: {e}") from None
    return values


def _drop(config: configparser.RawConfigParser, key: str) -> Path | str:
    """A [months] value: a local folder, or an s3:// URI, kept as text (a Path would make ``s3://b/x``
    ``s3:/b/x``) and checked now, so a typo in it is found before any month runs."""
    text = config.get(MONTHS_SECTION, key).strip()
    if not objectstore.is_uri(text):
        return Path(text)
    try:
        objectstore.parse(text)
    except DropError as error:
        raise ConfigError(f"{_source(config, MONTHS_SECTION, key)} [{MONTHS_SECTION}] {key}: {error}") from None
    return text


def _check_lake_root(lake_root: Path, where: str) -> None:
    """The lake is a folder (made on first use): a path to a file, or under one, is a typo (issue #15.3)."""
    for path in (lake_root, *lake_root.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(
                    f"{where} = {lake_root}: {path} is a file, not a folder; point it at the lake's folder "
                    f"(created on first use); nothing was run"
                )
            return


def load_settings(env: dict[str, str] | os._Environ | None = None) -> Settings:
    """Read luigi.cfg (through Luigi's own config loader, so LUIGI_CONFIG_PATH works), then the
    environment: LAKE_ROOT overrides ``[pipeline] lake_root``, POSTGRES_SCHEMA ``postgres_schema``;
    POSTGRES_* / POSTGRES_DSN pick the server. A ``.env`` file in the current directory is read first
    and never overrides the real environment. A key luigi.cfg leaves out keeps its default."""
    import luigi.configuration
    from dotenv import dotenv_values

    if env is None:
        env = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **os.environ}
    config = luigi.configuration.get_config()
    values = _read_pipeline_section(config)
    months: dict[date, Path | str] = {}
    if config.has_section(MONTHS_SECTION):
        for key in config.options(MONTHS_SECTION):
            if key in config.defaults():
                continue
            months[_parse_date(key, f"luigi.cfg [{MONTHS_SECTION}]")] = _drop(config, key)
    configured_root = values.pop("lake_root", Settings.lake_root)
    where = "LAKE_ROOT" if env.get("LAKE_ROOT") else f"luigi.cfg [{PIPELINE_SECTION}] lake_root"
    try:
        lake_root = lakestore.parse_root(env.get("LAKE_ROOT") or str(configured_root))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if isinstance(lake_root, Path):
        _check_lake_root(lake_root, where)
    schema = str(values.pop("postgres_schema", PostgresSettings.schema))
    return Settings(
        lake_root=lake_root,
        months=dict(sorted(months.items())),
        postgres=PostgresSettings.from_env(env, schema=schema),
        **values,  # type: ignore[arg-type]
    )
