"""Take back the latest published month (issue #20 case 5): ``streamflow unpublish --as-of D``.

A month published by mistake (a typo'd as_of, the wrong drop) is removed from PostgreSQL in ONE
transaction (its snapshot partitions, its pipeline_runs row, and the live tables put back to the
previous month, copied from that month's snapshot partitions in PostgreSQL), then from the lake (its
run records, the one that publishes it last, so the lake stops saying published at once; then its
objects). Only the latest month can
be taken back: a later month is built on every earlier one. A crash between the two leaves PostgreSQL
without the month and the lake still with it; running the command again finishes the job.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import date

from psycopg import sql

from pipeline import ddl, lakefs
from pipeline.config import Settings
from pipeline.errors import LakeStateError
from pipeline.month import published_months
from pipeline.pg import connect as pg
from pipeline.pg.locks import month_lock
from pipeline.pg.sqltext import RUNS_TABLE
from pipeline.pg.tables import published_runs
from pipeline.pg.transaction import advisory_key
from pipeline.runs import RunStore
from pipeline.schema import Schema, load_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unpublishing:
    """What unpublishing a month would do, to show before asking for confirmation."""

    as_of: date
    run_id: str
    previous: date | None  # the month live goes back to; None: live becomes empty

    def describe(self) -> str:
        back = f"put back to {self.previous}" if self.previous else "emptied (no earlier month is published)"
        return (
            f"month {self.as_of} (run {self.run_id}) will be removed from the lake and from PostgreSQL "
            f"(its snapshots and its pipeline_runs row), and the live tables {back}"
        )


def plan_unpublish(settings: Settings, as_of: date) -> Unpublishing:
    """Refuses a month that is not published, or not the latest published one."""
    published = published_months(lakefs.Lake(settings.lake_root))
    if as_of not in published:
        shown = ", ".join(d.isoformat() for d in sorted(published)) or "none"
        raise LakeStateError(f"month {as_of} is not published (published months: {shown}); nothing to unpublish")
    latest = max(published)
    if as_of != latest:
        raise LakeStateError(
            f"month {as_of} is not the latest published month ({latest} is): later months are built on it, so it "
            f"cannot be taken back alone. Unpublish {latest} first, or correct {as_of} with "
            f"luigi --module pipeline Month --as-of {as_of} --source DIR --replace; nothing was changed"
        )
    earlier = [d for d in published if d < as_of]
    return Unpublishing(as_of, published[as_of].run_id or "", max(earlier) if earlier else None)


def unpublish(settings: Settings, plan: Unpublishing, schema: Schema | None = None) -> None:
    schema = schema or load_schema()
    lake = lakefs.Lake(settings.lake_root)
    with month_lock(settings, plan.as_of):
        again = plan_unpublish(settings, plan.as_of)  # under the lock: still published, still the latest
        if again != plan:
            raise LakeStateError(f"month {plan.as_of} changed while asking ({again.run_id}); nothing was changed")
        _unpublish_postgres(settings, plan, schema)
        # the records it replaced first: were the current one removed first, an older one would publish the month
        for path, _ in RunStore(lake).records(plan.as_of):
            path.unlink()
        for folder in ("snapshots", "raw", "rejects"):
            for table in schema.table_names:
                shutil.rmtree(lake.root / folder / table / lakefs.partition(plan.as_of), ignore_errors=True)
        shutil.rmtree(lake.run_dir(plan.as_of), ignore_errors=True)
        shutil.rmtree(lake.work(plan.as_of), ignore_errors=True)
    log.info("unpublished %s", plan.as_of)


def _unpublish_postgres(settings: Settings, plan: Unpublishing, schema: Schema) -> None:
    dsn = pg.resolve_dsn(settings.postgres, settings.lake_root)
    pg_schema = settings.postgres.schema
    runs = sql.Identifier(pg_schema, RUNS_TABLE)
    with (
        pg.connect(dsn, autocommit=True, lock_timeout=settings.lock_timeout) as conn,
        pg.errors_are_clear(dsn, plan.as_of, pg_schema),
        conn.transaction(),
    ):
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [advisory_key(pg_schema)])
        in_postgres = published_runs(conn, pg_schema)
        later = [d for d in in_postgres if d > plan.as_of]
        if later:
            raise LakeStateError(
                f"PostgreSQL holds published months after {plan.as_of} ({', '.join(map(str, sorted(later)))}) that the "
                f"lake does not: check 'streamflow status'; nothing was changed"
            )
        if plan.previous is not None and plan.previous not in in_postgres:
            raise LakeStateError(
                f"PostgreSQL does not hold the previous month {plan.previous} (not in {RUNS_TABLE}), so the "
                f"live tables cannot be put back to it: check 'streamflow status'; nothing was changed"
            )
        live = [sql.Identifier(pg_schema, t) for t in schema.table_names]
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(live)))
        if plan.previous is not None:
            root = schema.root.name
            for table in sorted(schema.tables, key=lambda t: t.name != root):  # referenced table first
                columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
                conn.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} = %s").format(
                        sql.Identifier(pg_schema, table.name),
                        columns,
                        columns,
                        sql.Identifier(pg_schema, table.name + ddl.SNAPSHOT_SUFFIX),
                        sql.Identifier(ddl.AS_OF),
                    ),
                    [plan.previous],
                )
        for table in schema.tables:
            partition = sql.Identifier(pg_schema, ddl.partition_name(table, plan.as_of))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(partition))
        conn.execute(sql.SQL("DELETE FROM {} WHERE as_of = %s").format(runs), [plan.as_of])
