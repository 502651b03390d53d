"""``as_of_ts`` on every ``<table>_snapshots`` table (issue #16): ``as_of`` 00:00 UTC as a timestamptz, the
same instant in every session time zone, added to snapshot tables made before it existed."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from pipeline.publish import run_month
from pipeline.schema import load_schema
from tests.conftest import FEB, JAN

SCHEMA = load_schema()


def as_of_pairs(pg: psycopg.Connection, pg_schema: str, table: str) -> set[tuple]:
    return set(
        pg.execute(
            sql.SQL("SELECT DISTINCT as_of, as_of_ts FROM {}").format(sql.Identifier(pg_schema, f"{table}_snapshots"))
        ).fetchall()
    )


def midnight_utc(day) -> datetime:  # noqa: ANN001 - a date
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_snapshot_tables_made_before_as_of_ts_get_it_filled_for_old_months_on_the_next_publish(settings, pg, pg_schema):
    run_month(settings, JAN)
    for table in SCHEMA.table_names:  # a database from before issue #16
        pg.execute(
            sql.SQL("ALTER TABLE {} DROP COLUMN as_of_ts").format(sql.Identifier(pg_schema, f"{table}_snapshots"))
        )
    files = filenodes(pg, pg_schema)
    run_month(settings, FEB)
    for table in SCHEMA.table_names:
        assert as_of_pairs(pg, pg_schema, table) == {(JAN, midnight_utc(JAN)), (FEB, midnight_utc(FEB))}, table
    assert filenodes(pg, pg_schema) == files, "January's partitions were rewritten"
    defaults = pg.execute(
        "SELECT count(*) FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname LIKE %s",
        [pg_schema, "%_snapshots_%"],
    ).fetchone()
    assert defaults == (0,), "a published partition keeps no default"
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute(
            sql.SQL("UPDATE {} SET as_of_ts = as_of_ts + interval '5 hours'").format(
                sql.Identifier(pg_schema, "labels_snapshots")
            )
        )


def filenodes(pg: psycopg.Connection, pg_schema: str) -> dict[str, int]:
    """January's partitions -> the file holding their rows (a rewrite gives a table a new file)."""
    return {
        t: pg.execute("SELECT pg_relation_filenode(%s)", [f"{pg_schema}.{t}_snapshots_{JAN:%Y%m%d}"]).fetchone()[0]
        for t in SCHEMA.table_names
    }


def test_as_of_ts_is_the_same_instant_in_every_session_time_zone(settings, pg_dsn, pg_schema):
    """A DATE compared with a timestamptz is midnight of the session's zone; as_of_ts is not."""
    run_month(settings, JAN)
    for zone in ("UTC", "America/New_York", "Asia/Tokyo"):
        with psycopg.connect(pg_dsn, options=f"-c TimeZone={zone}") as conn:
            found = conn.execute(
                sql.SQL("SELECT count(*) FILTER (WHERE as_of_ts = %s), count(*) FROM {}").format(
                    sql.Identifier(pg_schema, "labels_snapshots")
                ),
                [midnight_utc(JAN)],
            ).fetchone()
            assert found is not None and found[0] == found[1] > 0, zone
