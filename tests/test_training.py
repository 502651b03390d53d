"""Point-in-time training sets (issue #4, item 4): features from the snapshots of as_of only, labels of
as_of or of a later month, the leakage check, and the TrainingSet Luigi task in a subprocess."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError, LakeStateError
from pipeline.schema import load_schema
from pipeline.training import (
    LABEL_TABLE,
    LeakageError,
    assemble,
    output_dir,
    plan_sources,
    training_frame,
    training_set,
)
from tests.conftest import PublishedLake, record_file, snapshot_file
from tests.test_cli_status import luigi

JAN, FEB, MARCH = date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31)
SCHEMA = load_schema()
KEY = SCHEMA.root.key
FEATURE_TABLES = [t for t in SCHEMA.tables if t.name not in (SCHEMA.root.name, LABEL_TABLE)]


@pytest.fixture(scope="module")
def january(published: PublishedLake) -> pa.Table:
    return training_set(JAN, lake_root=published.root)


def compare(con: duckdb.DuckDBPyConnection, root: Path, table: str, as_of: date) -> tuple[int, int]:
    """(users of the training set whose ``table`` values differ from the snapshot of ``as_of``,
    users compared)."""
    columns = [c.name for c in SCHEMA.table(table).value_columns]
    mine = ", ".join(f"t.{c}" for c in columns)
    theirs = ", ".join(f"s.{c}" for c in columns)
    snapshot = snapshot_file(root, table, as_of)
    return con.execute(
        f"SELECT count(*) FILTER (WHERE ({mine}) IS DISTINCT FROM ({theirs})), count(*) FROM training AS t "
        f"JOIN read_parquet('{snapshot}', hive_partitioning = false) AS s USING ({KEY})"
    ).fetchone()


def test_one_row_per_user_known_at_as_of_with_every_feature_and_the_label(published: PublishedLake, january):
    users = duckdb.execute(
        f"SELECT {KEY} FROM read_parquet('{snapshot_file(published.root, 'users', JAN)}') ORDER BY 1"
    ).fetchall()
    assert january.column(KEY).to_pylist() == [u[0] for u in users]
    expected = (
        [KEY, "as_of", "label_as_of"]
        + [c.name for c in SCHEMA.root.value_columns]
        + [c.name for t in FEATURE_TABLES for c in t.value_columns]
        + [c.name for c in SCHEMA.table(LABEL_TABLE).value_columns]
    )
    assert january.column_names == expected
    assert january.schema.field("watch_hours_30d").type == pa.decimal128(38, 10)
    assert set(january.column("as_of").to_pylist()) == set(january.column("label_as_of").to_pylist()) == {JAN}
    assert json.loads(january.schema.metadata[b"streamflow"]) == {
        "as_of": "2024-01-31",
        "label_as_of": "2024-01-31",
    }


def test_features_equal_the_as_of_snapshot_and_would_differ_from_the_latest(published: PublishedLake, january):
    """The leak test: the seed's February changed features of many users; a set that joined the latest
    snapshot instead of January's would hold February's values for them, and this test would fail."""
    con = duckdb.connect()
    con.register("training", january)
    changed_somewhere = 0
    for table in [*FEATURE_TABLES, SCHEMA.root]:
        differ_from_jan, compared = compare(con, published.root, table.name, JAN)
        assert differ_from_jan == 0 and compared > 0, table.name
        differ_from_feb, _ = compare(con, published.root, table.name, FEB)
        changed_somewhere += differ_from_feb
        if table.name in ("subscriptions", "usage_agg_30d"):
            assert differ_from_feb > 0, f"{table.name}: the seed's February changes some users' values"
    assert changed_somewhere > 0


def test_the_leakage_check_refuses_a_feature_from_a_later_snapshot(published: PublishedLake):
    sources = plan_sources(published.root, JAN)
    leaky = replace(
        sources,
        files={**sources.files, "subscriptions": snapshot_file(published.root, "subscriptions", FEB)},
    )
    with pytest.raises(LeakageError) as error:
        assemble(leaky)
    assert str(error.value).startswith(
        "training set as of 2024-01-31: values from the wrong snapshot "
        "(subscriptions from 2024-02-29 instead of 2024-01-31)"
    )


def test_label_as_of_takes_the_labels_of_the_later_month(published: PublishedLake, january):
    later = training_set(JAN, label_as_of=FEB, lake_root=published.root)
    features = [n for n in january.column_names if n not in ("churn_label", "label_as_of")]
    assert later.select(features).equals(january.select(features)), "features still from January"
    con = duckdb.connect()
    con.register("training", later)
    assert compare(con, published.root, LABEL_TABLE, FEB)[0] == 0
    differ_from_jan, compared = compare(con, published.root, LABEL_TABLE, JAN)
    assert 0 < differ_from_jan < compared, "the seed's February relabels some users"
    assert json.loads(later.schema.metadata[b"streamflow"])["label_as_of"] == "2024-02-29"
    assert set(later.column("label_as_of").to_pylist()) == {FEB} and set(later.column("as_of").to_pylist()) == {JAN}


@pytest.mark.parametrize(
    ("as_of", "label_as_of", "error", "message"),
    [
        (JAN, JAN, ConfigError, "label_as_of 2024-01-31 must be after as_of 2024-01-31"),
        (FEB, JAN, ConfigError, "label_as_of 2024-01-31 must be after as_of 2024-02-29"),
        (
            JAN,
            MARCH,
            LakeStateError,
            "training set: label_as_of 2024-03-31 is not a published month of the lake",
        ),
        (MARCH, None, LakeStateError, "training set: as_of 2024-03-31 is not a published month of the lake"),
        ("2024-13-01", None, ConfigError, "as_of '2024-13-01' is not an ISO date"),
    ],
)
def test_bad_months_are_refused_with_a_message(published: PublishedLake, as_of, label_as_of, error, message):
    with pytest.raises(error) as raised:
        training_set(as_of, label_as_of, lake_root=published.root)
    assert str(raised.value).startswith(message)


def test_training_frame_with_exact_decimals_is_the_same_set_as_a_dataframe(published: PublishedLake, january):
    pytest.importorskip("pandas")
    frame = training_frame("2024-01-31", lake_root=published.root, numeric="decimal")
    assert list(frame.columns) == january.column_names and len(frame) == january.num_rows
    records = frame.to_dict("records")[:50]
    expected = january.slice(0, 50).to_pylist()
    dates = [f.name for f in january.schema if pa.types.is_date(f.type)]
    for row in records:  # dates are datetime64 in the frame: compare them as dates
        row.update({d: None if row[d] is None or row[d] != row[d] else row[d].date() for d in dates})
    assert records == expected


def test_training_frame_dtypes_floats_by_default_exact_decimals_on_request_dates_as_datetime64(
    published: PublishedLake, january
):
    """Issue #16: model code gets float64, not Decimal objects; dates are datetime64, not objects."""
    pd = pytest.importorskip("pandas")
    numeric = [f.name for f in january.schema if pa.types.is_decimal(f.type)]
    dates = [f.name for f in january.schema if pa.types.is_date(f.type)]
    assert numeric and set(dates) >= {"as_of", "label_as_of", "signup_date"}
    floats = training_frame(JAN, lake_root=published.root)
    exact = training_frame(JAN, lake_root=published.root, numeric="decimal")
    for name in numeric:
        assert floats[name].dtype == "float64", name
        assert exact[name].dtype == object, name
        values = january.column(name).to_pylist()
        assert isinstance(exact[name].dropna().iloc[0], Decimal), name
        # each float is the double nearest the exact decimal, not one ulp away
        assert [None if v != v else v for v in floats[name].tolist()] == [
            None if v is None else float(v) for v in values
        ], name
    for frame in (floats, exact):
        for name in dates:
            assert pd.api.types.is_datetime64_dtype(frame[name]), (name, frame[name].dtype)
        assert (frame["as_of"] == pd.Timestamp(JAN)).all() and (frame["label_as_of"] == pd.Timestamp(JAN)).all()


def test_training_frame_refuses_an_unknown_numeric_choice(published: PublishedLake):
    with pytest.raises(ConfigError, match="numeric='double'; choose one of 'float', 'decimal'"):
        training_frame(JAN, lake_root=published.root, numeric="double")


def test_training_frame_without_pandas_says_how_to_get_it(published: PublishedLake, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match="training_frame needs pandas, which is not installed: pip install pandas"):
        training_frame(JAN, lake_root=published.root)


# --- the Luigi task -----------------------------------------------------------------------------


def test_training_set_task_writes_data_and_metadata(published_copy: PublishedLake):
    # the task writes training/ into the lake: a copy of the shared one
    result = luigi(published_copy.env, "TrainingSet", "--as-of", "2024-01-31", "--label-as-of", "2024-02-29")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = output_dir(published_copy.root, JAN, FEB)
    assert folder == published_copy.root / "training" / "as_of=2024-01-31" / "label_as_of=2024-02-29"
    written = pq.read_table(folder / "data.parquet")
    assert written.equals(training_set(JAN, FEB, lake_root=published_copy.root))
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["rows"] == written.num_rows and meta["rows_without_label"] == 0
    assert not {"as_of", "label_as_of"} & set(meta["feature_columns"])
    # the task says where it wrote and how many rows (issue #16)
    assert f"{written.num_rows} rows written to {folder / 'data.parquet'}" in result.stderr
    assert {t: s["as_of"] for t, s in meta["sources"].items()} == {
        t: ("2024-02-29" if t == LABEL_TABLE else "2024-01-31") for t in SCHEMA.table_names
    }
    manifest = json.loads(record_file(published_copy.root, JAN).read_text())
    assert meta["sources"]["users"]["run_id"] == manifest["run_id"]

    result = luigi(published_copy.env, "TrainingSet", "--as-of", "2024-01-31")
    assert result.returncode == 0, result.stderr[-3000:]
    plain = output_dir(published_copy.root, JAN)
    assert pq.read_table(plain / "data.parquet").equals(training_set(JAN, lake_root=published_copy.root))
    assert (folder / "data.parquet").exists(), "the labelled set beside it is kept"

    before = (folder / "data.parquet").stat().st_mtime_ns
    again = luigi(published_copy.env, "TrainingSet", "--as-of", "2024-01-31", "--label-as-of", "2024-02-29")
    assert again.returncode == 0 and "1 complete ones were encountered" in again.stderr
    assert (folder / "data.parquet").stat().st_mtime_ns == before


def test_training_set_task_for_an_unpublished_month_fails_with_its_message(published: PublishedLake):
    result = luigi(published.env, "TrainingSet", "--as-of", "2024-03-31")
    assert result.returncode != 0
    assert (
        "training set: as_of 2024-03-31 is not a published month of the lake" in result.stderr
        and "run it first: luigi --module pipeline Month --as-of 2024-03-31" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not output_dir(published.root, MARCH).exists()
