"""Ad-hoc DuckDB over the lake: views over the published months only, and the run records.

    con = pipeline.lake.connect()
    con.sql("SELECT contract_type, count(*) FROM subscriptions GROUP BY ALL").show()

Views, for every table of sql/schema.sql:

* ``<table>``           the latest published month's snapshot;
* ``<table>_snapshots`` every published month's snapshot, with ``as_of`` (DATE);
* ``<table>_history``   SCD type 2, derived from the snapshots: one row per key and version with
  ``valid_from`` (the first as_of holding these values) and ``valid_to`` (the as_of from which they no
  longer hold: changed, or the key left the snapshot; NULL for the current version). Consecutive
  published months with equal values are one version.

plus the table ``runs``: one row per month the lake has a record of (published, or only failed
attempts), read from the manifests when the connection is made.

A month is read only when a run record says it is published, and only the data objects that record
names: an object left by a crashed or failed run is never visible. The views read those files by name,
so they are as current as the moment :func:`connect` was called, and a correction published later
does not change what an open connection reads (the replaced run's objects stay until
``streamflow vacuum`` removes them).

The lake may be on S3-compatible storage (``connect("s3://bucket/prefix")``, or LAKE_ROOT): the run
records are read there (:class:`pipeline.runs.S3RunRecords`) and each named object is registered on the
connection as a pyarrow dataset (:mod:`pipeline.lakestore`), giving the same views as the lake on disk.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline import duck, lakefs, lakestore
from pipeline.config import Settings, load_settings
from pipeline.duck import literal, quote
from pipeline.errors import LakeStateError
from pipeline.evolve import conformed_dataset, conformed_select, conforms
from pipeline.runs import MonthRecord, run_records
from pipeline.schema import Schema, Table, load_schema

SNAPSHOTS_SUFFIX = "_snapshots"
HISTORY_SUFFIX = "_history"
RUNS_VIEW = "runs"
AS_OF = "as_of"
S3_RELATION = "__streamflow_s3_"  # the prefix of the pyarrow datasets an S3 lake's views read


# --- what the lake holds ------------------------------------------------------------------------


def published_months(lake_root: lakestore.LakeRoot) -> list[date]:
    """The published months of a lake, oldest first."""
    return run_records(lake_root).published_months()


# --- the connection -----------------------------------------------------------------------------


def connect(lake_root: str | Path | None = None, settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (see the module docstring).

    The lake root is ``lake_root``, else ``settings.lake_root``, else the configured one (luigi.cfg,
    LAKE_ROOT): a folder, or an ``s3://bucket/prefix`` (read through pyarrow's S3FileSystem, the endpoint
    and credentials from the AWS environment). A lake with no published month yet gives views that exist
    and are empty.
    """
    if settings is None:
        settings = Settings(lake_root=lakestore.parse_root(lake_root)) if lake_root is not None else load_settings()
    root = lakestore.parse_root(lake_root) if lake_root is not None else settings.lake_root
    if isinstance(root, Path):
        root = root.resolve()
    settings = settings.with_(lake_root=root)
    con = duck.connect(settings) if isinstance(root, str) or root.is_dir() else duckdb.connect(":memory:")
    try:
        create_views(con, root)
    except BaseException:
        con.close()
        raise
    return con


def create_views(
    con: duckdb.DuckDBPyConnection, lake_root: lakestore.LakeRoot, schema: Schema | None = None
) -> list[date]:
    """Create (or replace) every view on ``con``; returns the published months they read."""
    schema = schema or load_schema()
    uri = lakestore.s3_uri(lake_root)
    objects = _LocalObjects(Path(lake_root)) if uri is None else _S3Objects(lakestore.S3Lake(uri), con)
    records = run_records(lake_root).months()
    months = sorted(d for d, m in records.items() if m.published)
    for table in schema.tables:
        named = {d: records[d].record.object_key(lakefs.SNAPSHOTS, table.name) for d in months}
        # a table the contract gained later has no snapshot in the months before it: empty there
        present = {d: key for d, key in named.items() if key is not None and objects.exists(key)}
        missing = [
            objects.where(key) if key else f"{table.name} (not named by run {records[d].run_id})"
            for d, key in named.items()
            if d not in present and _had(records[d], table)
        ]
        if missing:
            raise LakeStateError(
                f"{table.name}: a published month's snapshot is missing from the lake: {', '.join(missing)}. "
                f"The lake was changed outside the pipeline; restore the file or run that month again "
                f"with --replace."
            )
        snapshots = objects.snapshots_sql(table, present)
        con.execute(f"CREATE OR REPLACE VIEW {quote(table.name + SNAPSHOTS_SUFFIX)} AS {snapshots}")
        latest = f"SELECT {_columns(table)} FROM {quote(table.name + SNAPSHOTS_SUFFIX)}"
        if months:
            latest += f" WHERE {quote(AS_OF)} = DATE {literal(months[-1].isoformat())}"
        con.execute(f"CREATE OR REPLACE VIEW {quote(table.name)} AS {latest}")
        con.execute(f"CREATE OR REPLACE VIEW {quote(table.name + HISTORY_SUFFIX)} AS {history_sql(table, months)}")
    _create_runs(con, records)
    return months


class _LocalObjects:
    """The snapshots of a lake on disk, read by DuckDB's read_parquet: the files of the current contract
    in one scan, as_of from their folder's name."""

    def __init__(self, root: Path) -> None:
        self.root = lakefs.Lake(root).root

    def where(self, key: str) -> str:
        return str(self.root / key)

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def snapshots_sql(self, table: Table, objects: dict[date, str]) -> str:
        return _snapshots_sql(table, [self.root / key for key in objects.values()])


class _S3Objects:
    """The snapshots of a lake on S3, each month's object registered on the connection as a pyarrow dataset
    (measured faster than the alternatives, bench/RESULTS.md) and read as the current contract, with its
    month's as_of."""

    def __init__(self, lake: lakestore.S3Lake, con: duckdb.DuckDBPyConnection) -> None:
        self.lake = lake
        self.con = con

    def where(self, key: str) -> str:
        return str(self.lake.at(key))

    def exists(self, key: str) -> bool:
        return self.lake.exists(key)

    def snapshots_sql(self, table: Table, objects: dict[date, str]) -> str:
        if not objects:
            return _empty_select(table, f", CAST(NULL AS DATE) AS {quote(AS_OF)}")
        parts = []
        for as_of, key in sorted(objects.items()):
            name = f"{S3_RELATION}{table.name}_{as_of:%Y%m%d}"
            month = f", DATE {literal(as_of.isoformat())} AS {quote(AS_OF)}"
            parts.append(conformed_dataset(self.con, name, self.lake.dataset(key), table, month))
        return " UNION ALL ".join(parts)


def _columns(table: Table, alias: str | None = None) -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + quote(c.name) for c in table.columns)


def _empty_select(table: Table, extra: str = "") -> str:
    typed = ", ".join(f"CAST(NULL AS {c.duckdb_type}) AS {quote(c.name)}" for c in table.columns)
    return f"SELECT {typed}{extra} WHERE false"


def _had(month: MonthRecord, table: Table) -> bool:
    """Whether the month's contract had the table (a record that kept no contract: assumed)."""
    contract = month.record.contract
    return contract is None or table.name in contract.columns


def _hive(files: list[Path]) -> str:
    """read_parquet of files, with as_of taken from each file's as_of=YYYY-MM-DD folder."""
    listed = "[" + ", ".join(literal(str(f)) for f in files) + "]"
    return f"read_parquet({listed}, hive_partitioning = true, hive_types = {{'{AS_OF}': DATE}})"


def _snapshots_sql(table: Table, files: list[Path]) -> str:
    """Every month's snapshot as the current contract: the files written under it in one scan, each
    file written under an older contract read with its missing columns as NULL and narrower types cast
    (:mod:`pipeline.evolve`); older files are never rewritten."""
    if not files:
        return _empty_select(table, f", CAST(NULL AS DATE) AS {quote(AS_OF)}")
    current = [f for f in files if conforms(table, f)]
    parts = [f"SELECT {_columns(table)}, {quote(AS_OF)} FROM {_hive(current)}"] if current else []
    parts += [conformed_select(table, f, f", {quote(AS_OF)}", reader=_hive([f])) for f in files if f not in current]
    return " UNION ALL ".join(parts)


def history_sql(table: Table, months: list[date]) -> str:
    """SCD type 2 over ``<table>_snapshots``: a version starts where a key appears, reappears after an
    absence, or its values differ from the previous published month; it ends (valid_to) at the next
    published month that does not hold it, and is current (valid_to NULL) when the latest month does."""
    if not months:
        return _empty_select(
            table,
            ", CAST(NULL AS INTEGER) AS version, CAST(NULL AS DATE) AS valid_from, CAST(NULL AS DATE) AS valid_to",
        )
    key = quote(table.key)
    values = [quote(c.name) for c in table.value_columns]
    month_rows = ", ".join(f"(DATE {literal(d.isoformat())}, {i})" for i, d in enumerate(months, start=1))
    changed = " OR ".join(f"{v} IS DISTINCT FROM lag({v}) OVER w" for v in values) or "false"
    return f"""
        WITH months(as_of, month_no) AS (VALUES {month_rows}),
        marked AS (
            SELECT s.*, m.month_no,
                   CASE WHEN lag(m.month_no) OVER w IS DISTINCT FROM m.month_no - 1 OR {changed}
                        THEN 1 ELSE 0 END AS starts_version
            FROM {quote(table.name + SNAPSHOTS_SUFFIX)} AS s JOIN months AS m USING ({quote(AS_OF)})
            WINDOW w AS (PARTITION BY s.{key} ORDER BY m.month_no)
        ),
        numbered AS (
            SELECT *, sum(starts_version) OVER (PARTITION BY {key} ORDER BY month_no
                                                ROWS UNBOUNDED PRECEDING) AS version
            FROM marked
        ),
        versions AS (
            SELECT {key}, version, min(month_no) AS first_no, max(month_no) AS last_no,
                   {", ".join(f"any_value({v}) AS {v}" for v in values)}
            FROM numbered GROUP BY {key}, version
        )
        SELECT {_columns(table, "v")}, CAST(v.version AS INTEGER) AS version,
               f.as_of AS valid_from, t.as_of AS valid_to
        FROM versions AS v
        JOIN months AS f ON f.month_no = v.first_no
        LEFT JOIN months AS t ON t.month_no = v.last_no + 1
    """


# --- runs ---------------------------------------------------------------------------------------

RUNS_SCHEMA = pa.schema(
    [
        ("as_of", pa.date32()),
        ("status", pa.string()),
        ("run_id", pa.string()),
        ("mode", pa.string()),
        ("source", pa.string()),
        ("previous_as_of", pa.date32()),
        ("users", pa.int64()),
        ("users_inserted", pa.int64()),
        ("users_updated", pa.int64()),
        ("users_deleted", pa.int64()),
        ("checks_passed", pa.int64()),
        ("checks_warned", pa.int64()),
        ("checks_failed", pa.int64()),
        ("failed_attempts", pa.int64()),
        ("started_at", pa.string()),
        ("published_at", pa.string()),
        ("tables", pa.string()),  # JSON: table -> rows and inserted/updated/unchanged/carried/deleted
        ("contract", pa.string()),  # JSON: sha256 of sql/schema.sql and table -> columns; NULL if not recorded
    ]
)


def runs_view_row(month: MonthRecord, root_table: str) -> dict[str, object]:
    """The row of one month in the DuckDB table ``runs`` (not PostgreSQL's pipeline_runs row)."""
    r = month.record
    users = r.tables.get(root_table) or {}
    checks = r.checks
    return {
        "as_of": month.as_of,
        "status": str(month.status),
        "run_id": r.run_id,
        "mode": r.mode,
        "source": r.source,
        "previous_as_of": r.previous_as_of,
        "users": users.get("rows"),
        "users_inserted": users.get("inserted"),
        "users_updated": users.get("updated"),
        "users_deleted": users.get("deleted"),
        "checks_passed": checks.passed if checks else None,
        "checks_warned": checks.warned if checks else None,
        "checks_failed": checks.failed if checks else None,
        "failed_attempts": month.failed_attempts,
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "published_at": r.published_at.isoformat() if r.published_at else None,
        "tables": json.dumps(r.tables),
        "contract": json.dumps(r.contract.to_json()) if r.contract else None,
    }


def _create_runs(con: duckdb.DuckDBPyConnection, records: dict[date, MonthRecord]) -> None:
    root = load_schema().root.name
    rows = pa.Table.from_pylist([runs_view_row(records[d], root) for d in sorted(records)], schema=RUNS_SCHEMA)
    con.register("__streamflow_runs", rows)
    try:  # a small table, copied so that it does not depend on a registered Python object
        con.execute(
            f"CREATE OR REPLACE TABLE {RUNS_VIEW} AS SELECT * REPLACE ("
            f"CAST(started_at AS TIMESTAMPTZ) AS started_at, "
            f"CAST(published_at AS TIMESTAMPTZ) AS published_at, CAST(tables AS JSON) AS tables, "
            f"CAST(contract AS JSON) AS contract) "
            f"FROM __streamflow_runs ORDER BY as_of"
        )
    finally:
        con.unregister("__streamflow_runs")


def view_names(schema: Schema | None = None) -> list[str]:
    schema = schema or load_schema()
    names = [f"{t.name}{suffix}" for t in schema.tables for suffix in ("", SNAPSHOTS_SUFFIX, HISTORY_SUFFIX)]
    return [*names, RUNS_VIEW]


def arrow(result: duckdb.DuckDBPyRelation | duckdb.DuckDBPyConnection) -> pa.Table:
    """A result as an Arrow table, on every DuckDB from 1.1 (``fetch_arrow_table`` became
    ``to_arrow_table`` in 1.4)."""
    to_table = getattr(result, "to_arrow_table", None) or getattr(result, "fetch_arrow_table")  # noqa: B009
    return to_table()
