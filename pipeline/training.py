"""Point-in-time training sets: the features as the lake knew them at as_of D, never later.

    training_set("2024-01-31")                                # labels of D itself
    training_set("2024-01-31", label_as_of="2024-02-29")      # features at D, churn as known at L

One row per user in the users snapshot of D (ordered by user_id); the key, then ``as_of`` (D) and
``label_as_of`` (L, or D), so that a file of the set says which month it is; every other column of
the users snapshot and every value column of the other tables from their snapshot of D (LEFT JOIN: a user a table has no
row for gets NULLs there); then the label columns from the labels snapshot of D, or of L when given.
With ``label_as_of``, a user of D without a labels row at L (e.g. deleted by a --full-dump month) keeps
its row with a NULL label: rows stay "every user known at D", and the model trainer decides whether
to drop them (``churn_label IS NOT NULL``) or count them as churned.

Leakage check: every row carries the as_of of the snapshot partition each table's values were read
from (DuckDB takes it from the ``as_of=…`` folder of the file); the set is refused with
:class:`LeakageError` unless every feature came from D and every label from the label month.

``luigi --module pipeline TrainingSet --as-of D [--label-as-of L]`` writes ``<lake>/training/as_of=D/``
(or ``…/as_of=D/label_as_of=L/``): ``data.parquet`` and ``metadata.json`` (sources, run ids, counts).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import duck, lakefs, lakestore, objectstore
from pipeline.config import Settings, load_settings
from pipeline.duck import literal, quote
from pipeline.errors import ConfigError, LakeStateError, PipelineError
from pipeline.evolve import conformed_dataset, conformed_select, conforms, empty_select
from pipeline.lake import arrow
from pipeline.lakestore import LakeRoot
from pipeline.runs import run_records, versions
from pipeline.schema import LABEL_TABLE, Schema, Table, load_schema

AS_OF_COLUMN = "as_of"  # the month of the features, a column of every row (after the key)
LABEL_AS_OF_COLUMN = "label_as_of"  # the month of the label
NUMERIC_CHOICES = ("float", "decimal")
log = logging.getLogger("pipeline.training")
SOURCE_PREFIX = "__source_as_of_"
MISSING_LABEL_POLICY = "kept with a NULL label"


class LeakageError(PipelineError):
    """A training set would read a value from a snapshot other than the one it must come from."""


@dataclass(frozen=True)
class TrainingSources:
    """The snapshot file each table is read from, and the month it must belong to."""

    lake_root: LakeRoot
    as_of: date
    label_as_of: date
    # table -> snapshot data.parquet (the root table first, the label table last); None: the table is newer
    # in the contract than the month, which reads it as empty
    files: dict[str, Path | str | None]  # a file, or an s3:// URI (a lake on S3)
    run_ids: dict[str, str]  # as_of (ISO) -> run_id of the published month

    def expected(self, table: str) -> date:
        return self.label_as_of if table == LABEL_TABLE else self.as_of


def _date(value: date | str, name: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name} {value!r} is not an ISO date (YYYY-MM-DD)") from None


def plan_sources(
    lake_root: LakeRoot, as_of: date | str, label_as_of: date | str | None = None, schema: Schema | None = None
) -> TrainingSources:
    """The files of a training set, after checking that D (and L) are published and L is after D."""
    schema = schema or load_schema()
    as_of = _date(as_of, "as_of")
    label = _date(label_as_of, "label_as_of") if label_as_of is not None else as_of
    if label_as_of is not None and label <= as_of:
        raise ConfigError(
            f"label_as_of {label} must be after as_of {as_of}: the label comes from a later month so that "
            f"the model predicts churn it has not seen; leave --label-as-of out to use the labels of {as_of}"
        )
    if LABEL_TABLE not in schema.table_names:
        raise ConfigError(f"sql/schema.sql declares no {LABEL_TABLE!r} table to take the training label from")
    published = run_records(lake_root).published()
    for month, what in ((as_of, "as_of"), (label, "label_as_of")):
        if month not in published:
            shown = ", ".join(d.isoformat() for d in sorted(published)) or "none yet"
            raise LakeStateError(
                f"training set: {what} {month} is not a published month of the lake {lake_root} "
                f"(published: {shown}); run it first: luigi --module pipeline Month --as-of {month}"
            )
    tables = [
        schema.root.name,
        *(t for t in schema.table_names if t not in (schema.root.name, LABEL_TABLE)),
        LABEL_TABLE,
    ]
    sources = TrainingSources(
        lake_root=lake_root,
        as_of=as_of,
        label_as_of=label,
        files={},
        run_ids={d.isoformat(): published[d].run_id or "" for d in {as_of, label}},
    )
    for table in tables:
        month = sources.expected(table)
        key = published[month].object_key(lakefs.SNAPSHOTS, table)
        path = lakestore.locate(lake_root, key) if key else None
        contract = published[month].contract
        if (path is None or not lakestore.exists(path)) and contract is not None and table not in contract.columns:
            sources.files[table] = None  # the table came into the contract after this month
            continue
        if path is None or not lakestore.exists(path):
            named = path or f"its snapshot of {table} (its run record names none)"
            raise LakeStateError(f"training set: {named} is missing although {month} is published")
        sources.files[table] = path
    return sources


def output_columns(schema: Schema) -> dict[str, list[tuple[str, str]]]:
    """table -> [(column in the snapshot, column in the training set)]: the root table's every column,
    the value columns of the others. A name two tables share is qualified as ``<table>__<column>``."""
    root = schema.root
    picked = {t.name: [c.name for c in (t.columns if t is root else t.value_columns)] for t in schema.tables}
    counts: dict[str, int] = {}
    for names in picked.values():
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    return {t: [(n, n if counts[n] == 1 else f"{t}__{n}") for n in names] for t, names in picked.items()}


def assemble(sources: TrainingSources, settings: Settings | None = None, schema: Schema | None = None) -> pa.Table:
    """Join the snapshot files of ``sources`` into the training set; refuse it if any value came from a
    partition other than the one it must (:func:`check_sources`)."""
    schema = schema or load_schema()
    key = schema.root.key
    columns = output_columns(schema)
    tables = list(sources.files)
    alias = {t: f"t{i}" for i, t in enumerate(tables)}
    selects, joins = [], []
    with duck.connect(settings or Settings(lake_root=sources.lake_root)) as con:
        for t in tables:
            selects += [f"{alias[t]}.{quote(src)} AS {quote(out)}" for src, out in columns[t]]
            reader = _reader(con, schema.table(t), sources.files[t])
            if t == tables[0]:
                joins.append(f"{reader} AS {alias[t]}")
            else:
                on = f"{alias[t]}.{quote(key)} = {alias[tables[0]]}.{quote(key)}"
                joins.append(f"LEFT JOIN {reader} AS {alias[t]} ON {on}")
        provenance = [f"{alias[t]}.as_of AS {quote(SOURCE_PREFIX + t)}" for t in tables]
        order = f"{alias[tables[0]]}.{quote(key)}"
        query = f"SELECT {', '.join(selects + provenance)} FROM {' '.join(joins)} ORDER BY {order}"
        con.execute(f"CREATE TEMP TABLE training AS {query}")
        observed = {
            t: {
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT {quote(SOURCE_PREFIX + t)} FROM training "
                    f"WHERE {quote(SOURCE_PREFIX + t)} IS NOT NULL"
                ).fetchall()
            }
            for t in tables
        }
        check_sources(sources, observed)
        table = arrow(
            con.sql(f"SELECT * EXCLUDE ({', '.join(quote(SOURCE_PREFIX + t) for t in tables)}) FROM training")
        )
    fields = [
        pa.field(out, schema.table(t).column(src).arrow_type, nullable=src != key)
        for t in tables
        for src, out in columns[t]
    ]
    metadata = {
        "streamflow": json.dumps({"as_of": sources.as_of.isoformat(), "label_as_of": sources.label_as_of.isoformat()})
    }
    table = table.cast(pa.schema(fields, metadata=metadata))
    clash = {AS_OF_COLUMN, LABEL_AS_OF_COLUMN} & set(table.column_names)
    if clash:
        raise ConfigError(f"sql/schema.sql declares {sorted(clash)}, a name the training set gives its month columns")
    for position, (name, month) in enumerate(
        ((AS_OF_COLUMN, sources.as_of), (LABEL_AS_OF_COLUMN, sources.label_as_of)), start=1
    ):
        values = pa.repeat(pa.scalar(month, pa.date32()), table.num_rows)
        table = table.add_column(position, pa.field(name, pa.date32(), nullable=False), values)
    return table


def _reader(con: duckdb.DuckDBPyConnection, table: Table, path: Path | str | None) -> str:
    """The snapshot of one table for the join, as the current contract (:mod:`pipeline.evolve`), with the
    as_of DuckDB reads from its as_of=… folder (the provenance the leakage check compares)."""
    as_of = ", as_of"
    if path is None:
        return f"({empty_select(table, ', CAST(NULL AS DATE) AS as_of')})"
    if isinstance(path, str):
        return _s3_reader(con, table, path)
    hive = f"read_parquet({literal(str(path))}, hive_partitioning = true, hive_types = {{'as_of': DATE}})"
    if conforms(table, path):
        return hive
    return f"({conformed_select(table, path, as_of, reader=hive)})"


def _s3_reader(con: duckdb.DuckDBPyConnection, table: Table, uri: str) -> str:
    """An object of a lake on S3, registered on ``con`` as a pyarrow dataset (bench/RESULTS.md), read as
    the current contract; its as_of is taken from its key's as_of=… folder, as DuckDB's hive partitioning
    takes it from a local file's."""
    folder = next((p for p in uri.split("/") if p.startswith("as_of=")), "")
    month = f", DATE {literal(folder.removeprefix('as_of='))} AS as_of" if folder else ", CAST(NULL AS DATE) AS as_of"
    dataset = lakestore.dataset(objectstore.parse(uri))
    return f"({conformed_dataset(con, f'__s3_{table.name}', dataset, table, month)})"


def check_sources(sources: TrainingSources, observed: dict[str, set[date]]) -> None:
    """Every table's values must come from its expected snapshot: features from as_of, labels from
    label_as_of. ``observed`` is table -> the as_of partitions its joined rows were read from."""
    wrong = {t: sorted(found - {sources.expected(t)}) for t, found in observed.items() if found - {sources.expected(t)}}
    if wrong:
        detail = "; ".join(
            f"{t} from {', '.join(d.isoformat() for d in ds)} instead of {sources.expected(t)}"
            for t, ds in wrong.items()
        )
        raise LeakageError(
            f"training set as of {sources.as_of}: values from the wrong snapshot ({detail}). A feature from "
            f"after as_of leaks the future into the model; every feature must come from "
            f"as_of={sources.as_of}."
        )


def _lake_root(lake_root: str | Path | None) -> tuple[LakeRoot, Settings]:
    settings = load_settings() if lake_root is None else Settings(lake_root=lakestore.parse_root(lake_root))
    return settings.lake_root, settings


def training_set(
    as_of: date | str, label_as_of: date | str | None = None, lake_root: str | Path | None = None
) -> pa.Table:
    """The point-in-time training set of ``as_of`` as an Arrow table (see the module docstring)."""
    root, settings = _lake_root(lake_root)
    return assemble(plan_sources(root, as_of, label_as_of), settings)


def training_frame(  # noqa: ANN201 - pandas.DataFrame, an optional dependency
    as_of: date | str,
    label_as_of: date | str | None = None,
    lake_root: str | Path | None = None,
    numeric: str = "float",
):
    """:func:`training_set` as a pandas DataFrame, for model code.

    ``numeric="float"`` (the default): NUMERIC columns are ``float64``, each the double nearest the exact
    value (through its decimal text, never through a binary intermediate); ``numeric="decimal"``: exact
    ``decimal.Decimal`` objects (an ``object`` column). DATE columns (``as_of``, ``label_as_of`` too) are
    ``datetime64``; NULL is NaN / NaT / None as pandas has it."""
    if numeric not in NUMERIC_CHOICES:
        raise ConfigError(f"training_frame: numeric={numeric!r}; choose one of {', '.join(map(repr, NUMERIC_CHOICES))}")
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ImportError(
            "training_frame needs pandas, which is not installed: pip install pandas "
            "(or use pipeline.training.training_set for a pyarrow Table)"
        ) from None
    table = training_set(as_of, label_as_of, lake_root)
    if numeric == "float":
        table = as_floats(table)
    return table.to_pandas(date_as_object=False)


def as_floats(table: pa.Table) -> pa.Table:
    """Every decimal column as float64, each value the nearest double to the exact decimal: its text is
    parsed (correctly rounded), where Arrow's decimal-to-float cast divides in binary and may land one
    ulp away."""
    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type):
            text = pc.cast(table.column(i), pa.string())
            table = table.set_column(i, pa.field(field.name, pa.float64(), field.nullable), pc.cast(text, pa.float64()))
    return table


# --- the lake's copy ----------------------------------------------------------------------------


def output_dir(lake_root: Path, as_of: date, label_as_of: date | None = None) -> Path:
    base = lakefs.Lake(Path(lake_root)).training(as_of)
    return base / f"label_as_of={label_as_of.isoformat()}" if label_as_of else base


def write_training_set(
    lake_root: Path,
    as_of: date | str,
    label_as_of: date | str | None = None,
    settings: Settings | None = None,
) -> Path:
    """Build the set and write data.parquet + metadata.json; returns the folder (in a local lake only:
    an s3:// lake is refused, :func:`pipeline.lakestore.local_root`; :func:`training_set` reads one)."""
    lake_root = lakestore.local_root(lake_root)
    settings = settings or Settings(lake_root=Path(lake_root))
    sources = plan_sources(lake_root, as_of, label_as_of)
    table = assemble(sources, settings)
    label_key = sources.label_as_of if label_as_of is not None else None
    dest = output_dir(lake_root, sources.as_of, label_key)
    root = Path(lake_root).resolve()
    schema = load_schema()
    labels = [out for _, out in output_columns(schema)[LABEL_TABLE]]
    meta = {
        "as_of": sources.as_of.isoformat(),
        "label_as_of": sources.label_as_of.isoformat(),
        "rows": table.num_rows,
        "rows_without_label": table.column(labels[0]).null_count,
        "missing_label": MISSING_LABEL_POLICY,
        "key": schema.root.key,
        "label_columns": labels,
        "feature_columns": [
            f.name for f in table.schema if f.name not in (*labels, schema.root.key, AS_OF_COLUMN, LABEL_AS_OF_COLUMN)
        ],
        "sources": {
            t: {
                "as_of": sources.expected(t).isoformat(),
                "run_id": sources.run_ids[sources.expected(t).isoformat()],
                "file": str(Path(p).resolve().relative_to(root)) if p else None,  # None: not in the month's contract
            }
            for t, p in sources.files.items()
        },
        "leakage_check": (f"passed: every feature from as_of={sources.as_of}, labels from as_of={sources.label_as_of}"),
        "created_at": datetime.now(UTC).isoformat(),
        "versions": {k: v for k, v in versions().items() if k != "postgresql"} | {"pyarrow": pa.__version__},
    }
    text = json.dumps(meta, indent=2) + "\n"
    # metadata.json marks the set complete: removed first, written last; each file replaced whole
    lakefs.fresh(dest / "metadata.json")
    with lakefs.atomic_file(dest / "data.parquet") as tmp:
        pq.write_table(table, tmp)
    lakefs.write_text_atomic(dest / "metadata.json", text)
    log.info(
        "training set as_of %s, labels of %s: %d rows written to %s",
        sources.as_of,
        sources.label_as_of,
        table.num_rows,
        dest / "data.parquet",
    )
    return dest
