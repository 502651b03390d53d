"""pipeline.config: defaults, then luigi.cfg (and LUIGI_CONFIG_PATH), then the environment and `.env`;
unknown keys refused; every value validated when it is read (issues #13 and #15.4).

Each test runs in an empty folder with Luigi's configuration reset to read only that folder's luigi.cfg
(plus LUIGI_CONFIG_PATH when a test sets it), and none of the developer's POSTGRES_*, LAKE_ROOT or
LUIGI_CONFIG_PATH: what the developer has configured never leaks in.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date
from pathlib import Path

import luigi.configuration
import pytest
from luigi.configuration.cfg_parser import LuigiConfigParser

from pipeline.config import _KNOWN_KEYS, POSTGRES_ENV, SETTINGS, PostgresSettings, Settings, load_settings
from pipeline.errors import ConfigError

# Luigi warns about dashes in option names; the [months] keys are dates, as in the repository's luigi.cfg.
pytestmark = pytest.mark.filterwarnings(r"ignore:Configuration \[months\]:DeprecationWarning")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(LuigiConfigParser, "_instance", None)  # Luigi's singleton, rebuilt on next use
    monkeypatch.setattr(LuigiConfigParser, "_config_paths", ["luigi.cfg"])  # relative: this test's folder
    for name in ("LUIGI_CONFIG_PATH", "LAKE_ROOT", "POSTGRES_SCHEMA", *POSTGRES_ENV):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def luigi_cfg(text: str, path: Path = Path("luigi.cfg")) -> Path:
    path.write_text(text)
    return path


def point_luigi_config_path(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What Luigi does when it is imported with LUIGI_CONFIG_PATH set (its module reads the variable once)."""
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(path))
    luigi.configuration.add_config_path(str(path))


# --- the layers ---------------------------------------------------------------------------------


def test_without_luigi_cfg_every_setting_has_its_default():
    assert load_settings(env={}) == Settings()


def test_every_declared_default_is_the_default_of_its_settings_field():
    defaults = {f.name: f.default for f in fields(Settings)}
    parsed = {s.key: s.parse(s.default) for s in SETTINGS}
    assert Path(str(parsed.pop("lake_root"))) == defaults["lake_root"]
    assert parsed.pop("postgres_schema") == PostgresSettings().schema
    assert parsed == {key: defaults[key] for key in parsed}


def test_luigi_cfg_overrides_the_defaults_and_leaves_the_keys_it_omits():
    luigi_cfg(
        "[pipeline]\nlake_root = /data/lake\nmax_reject_ratio = 0.25\nduckdb_threads = 2\npostgres_schema = churn\n"
        "[months]\n2024-02-29 = drops/feb\n2024-01-31 = drops/jan\n"
    )
    settings = load_settings(env={})
    assert settings.lake_root == Path("/data/lake")
    assert (settings.max_reject_ratio, settings.duckdb_threads, settings.postgres.schema) == (0.25, 2, "churn")
    assert settings.volume_change_ratio == Settings.volume_change_ratio, "an omitted key keeps its default"
    assert settings.months == {date(2024, 1, 31): Path("drops/jan"), date(2024, 2, 29): Path("drops/feb")}
    assert list(settings.months) == sorted(settings.months)


def test_luigi_config_path_overrides_the_luigi_cfg_of_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    luigi_cfg("[pipeline]\nmax_delete_ratio = 0.2\nduckdb_memory_limit = 2GB\n")
    elsewhere = tmp_path / "conf" / "test.cfg"
    elsewhere.parent.mkdir()
    luigi_cfg("[pipeline]\nduckdb_memory_limit = 512MB\n", elsewhere)
    point_luigi_config_path(elsewhere, monkeypatch)
    settings = load_settings(env={})
    assert settings.duckdb_memory_limit == "512MB"
    assert settings.max_delete_ratio == 0.2


def test_environment_overrides_luigi_cfg():
    luigi_cfg("[pipeline]\nlake_root = from-cfg\npostgres_schema = from_cfg\n")
    settings = load_settings(env={"LAKE_ROOT": "from-env", "POSTGRES_SCHEMA": "from_env", "POSTGRES_DSN": "dbname=x"})
    assert (settings.lake_root, settings.postgres) == (Path("from-env"), PostgresSettings("dbname=x", "from_env"))


def test_dot_env_is_read_but_never_overrides_the_real_environment(monkeypatch: pytest.MonkeyPatch):
    Path(".env").write_text("LAKE_ROOT=from-dot-env\nPOSTGRES_SCHEMA=dot_env\n")
    monkeypatch.setenv("POSTGRES_SCHEMA", "real_env")
    settings = load_settings()
    assert (settings.lake_root, settings.postgres.schema) == (Path("from-dot-env"), "real_env")


def test_postgres_parts_make_one_dsn_and_none_means_the_embedded_server():
    assert load_settings(env={}).postgres.dsn is None
    dsn = load_settings(env={"POSTGRES_HOST": "db", "POSTGRES_PASSWORD": "secret"}).postgres.dsn
    assert dsn is not None and "host=db" in dsn and "password=secret" in dsn and "port=5432" in dsn


# --- refused ------------------------------------------------------------------------------------


def test_a_month_from_s3_keeps_its_uri_as_text():
    luigi_cfg("[months]\n2024-03-31 = s3://drops/2024-03\n2024-02-29 = drops/feb\n")
    assert load_settings({}).months == {date(2024, 2, 29): Path("drops/feb"), date(2024, 3, 31): "s3://drops/2024-03"}


def test_a_month_from_s3_with_credentials_in_its_uri_is_refused_without_repeating_them():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    luigi_cfg(f"[months]\n2024-03-31 = s3://AKIAEXAMPLE:{secret}@drops/2024-03\n")
    with pytest.raises(ConfigError) as refused:
        load_settings({})
    said = str(refused.value)
    assert said.startswith("luigi.cfg [months] 2024-03-31: s3://…@drops/2024-03: the URI holds credentials")
    assert secret not in said and "AKIAEXAMPLE" not in said


def test_an_unknown_key_is_refused_naming_it_and_the_known_ones():
    luigi_cfg("[pipeline]\nmax_reject_ratio = 0\nmax_rejects = 5\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(env={})
    assert str(refused.value) == (f"luigi.cfg [pipeline]: unknown key(s) ['max_rejects']; known: {sorted(_KNOWN_KEYS)}")


def test_a_month_that_is_not_a_date_is_refused():
    luigi_cfg("[months]\n2024-02-30 = drops/feb\n")
    with pytest.raises(ConfigError, match=r"luigi.cfg \[months\]: '2024-02-30' is not an ISO date"):
        load_settings(env={})


SHARE = "must be a number from 0 to 1 (a share of {})"
SHARE_OF_ROWS = SHARE.format("the file's rows")
CHANGE = (
    "must be a number greater than 0 (a share of the previous drop's rows: 0.5 allows from half to one and a "
    "half times as many)"
)
MEMORY = "must be a size like 1GB, 512MB or 2GiB (DuckDB spills to disk beyond it)"
THREADS = "must be a whole number from 0 up (0: DuckDB's default, every core)"

INVALID = [
    ("max_reject_ratio", "5", SHARE_OF_ROWS),
    ("max_reject_ratio", "-0.1", SHARE_OF_ROWS),
    ("max_reject_ratio", "ten percent", SHARE_OF_ROWS),
    ("max_reject_ratio", "nan", SHARE_OF_ROWS),
    ("max_delete_ratio", "1.5", SHARE.format("the users")),
    ("max_delete_ratio", "", SHARE.format("the users")),
    ("volume_change_ratio", "0", CHANGE),
    ("volume_change_ratio", "-1", CHANGE),
    ("volume_change_ratio", "inf", CHANGE),
    ("duckdb_memory_limit", "lots", MEMORY),
    ("duckdb_memory_limit", "1 potato", MEMORY),
    ("duckdb_memory_limit", "0GB", MEMORY),
    ("duckdb_memory_limit", "-1GB", MEMORY),
    ("duckdb_threads", "-1", THREADS),
    ("duckdb_threads", "1.5", THREADS),
    ("duckdb_threads", "all", THREADS),
    ("lake_root", " ", "must not be empty"),
    ("postgres_schema", "", "must not be empty"),
    ("scratch_dir", "luigi.cfg", "must be a folder (made on first use), or empty for the system's temporary folder"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), INVALID, ids=[f"{k}={v!r}" for k, v, _ in INVALID])
def test_a_value_out_of_range_is_refused_naming_file_section_key_value_and_what_is_allowed(key, value, allowed):
    luigi_cfg(f"[pipeline]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(env={})
    assert str(refused.value) == f"luigi.cfg [pipeline] {key} = {value.strip()}: {allowed}"


def test_the_message_names_the_file_luigi_config_path_points_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    luigi_cfg("[pipeline]\nmax_reject_ratio = 0\n")
    elsewhere = luigi_cfg("[pipeline]\nmax_reject_ratio = 5\n", tmp_path / "ops.cfg")
    point_luigi_config_path(elsewhere, monkeypatch)
    with pytest.raises(ConfigError) as refused:
        load_settings(env={})
    assert str(refused.value) == f"{elsewhere} [pipeline] max_reject_ratio = 5: {SHARE_OF_ROWS}"


VALID = [
    ("max_reject_ratio", "0", 0.0),
    ("max_reject_ratio", "1", 1.0),
    ("max_delete_ratio", "0.10", 0.1),
    ("volume_change_ratio", "0.01", 0.01),
    ("volume_change_ratio", "3", 3.0),  # a drop may be allowed to more than double
    ("duckdb_memory_limit", "512MiB", "512MiB"),
    ("duckdb_memory_limit", "1.5GB", "1.5GB"),
    ("duckdb_threads", "0", 0),
    ("duckdb_threads", "4", 4),
    ("scratch_dir", "scratch", Path("scratch")),
    ("scratch_dir", "", None),  # the system's temporary folder
]


@pytest.mark.parametrize(("key", "value", "expected"), VALID, ids=[f"{k}={v}" for k, v, _ in VALID])
def test_a_value_in_range_is_read_with_its_type(key, value, expected):
    luigi_cfg(f"[pipeline]\n{key} = {value}\n")
    read = getattr(load_settings(env={}), key)
    assert read == expected and type(read) is type(expected)


def test_drift_thresholds_are_read_and_fail_is_off_by_default():
    assert (Settings().drift_warn_psi, Settings().drift_fail_psi) == (0.1, None)
    luigi_cfg("[pipeline]\ndrift_warn_psi = 0.2\ndrift_fail_psi = 0.5\n")
    settings = load_settings(env={})
    assert (settings.drift_warn_psi, settings.drift_fail_psi) == (0.2, 0.5)


def test_a_bad_drift_threshold_names_the_key_and_what_is_allowed():
    luigi_cfg("[pipeline]\ndrift_fail_psi = never\n")
    with pytest.raises(ConfigError) as error:
        load_settings(env={})
    assert str(error.value) == (
        "luigi.cfg [pipeline] drift_fail_psi = never: must be off or a number greater than 0 "
        "(a population stability index, e.g. 0.25)"
    )


def test_an_s3_lake_root_is_kept_as_its_uri_from_the_environment_or_luigi_cfg():
    luigi_cfg("[pipeline]\nlake_root = s3://bucket/from-cfg/\n")
    assert load_settings(env={}).lake_root == "s3://bucket/from-cfg"
    assert load_settings(env={"LAKE_ROOT": "s3://bucket/from-env"}).lake_root == "s3://bucket/from-env"
    with pytest.raises(ConfigError, match=r"^LAKE_ROOT: lake_root: s3://Bad: 'Bad' is not a bucket name"):
        load_settings(env={"LAKE_ROOT": "s3://Bad"})
