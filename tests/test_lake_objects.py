"""The lake's commit without a rename (issue #19): every data object is written once under its run's own
name, a month becomes visible through its run record alone, a correction switches to new objects while
an open reader keeps the old ones, and ``streamflow vacuum`` removes what no reader needs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from pipeline import lake as lake_views
from pipeline import lakefs
from pipeline import vacuum as vacuum_module
from pipeline.config import Settings
from pipeline.pg.locks import month_lock_key
from pipeline.publish import run_month
from pipeline.runs import RunStore
from pipeline.schema import PROJECT_ROOT, load_schema
from tests.conftest import FEB, JAN, SEED_MONTHS
from tests.drops import seed_copy, set_value

SCHEMA = load_schema()


def vacuum(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "vacuum", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )


def objects(lake_root: Path, as_of) -> dict[str | None, int]:  # noqa: ANN001
    """run id -> how many objects of the month the lake holds for it."""
    found: dict[str | None, int] = {}
    for o in lakefs.month_objects(lakefs.Lake(lake_root), as_of):
        found[o.run_id] = found.get(o.run_id, 0) + 1
    return found


def test_no_file_of_the_lake_is_renamed_while_months_are_published(settings: Settings, monkeypatch):
    """Object storage has no rename: the whole month (stage, merge, gate, publish, a correction and the
    recompute it causes) is run in this process with every rename of the standard library refused."""
    renamed: list[str] = []

    def refuse(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        renamed.append(f"{src} -> {dst}")
        raise AssertionError(f"a rename: {src} -> {dst}")

    monkeypatch.setattr(os, "rename", refuse)
    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(shutil, "move", refuse)
    run_month(settings, JAN, SEED_MONTHS[JAN])
    run_month(settings, FEB, SEED_MONTHS[FEB])
    corrected = seed_copy(settings.lake_root.parent / "jan-corrected")
    set_value(corrected, "subscriptions", 0, "monthly_fee", "1.23")
    run_month(settings, JAN, corrected, replace=True)  # and February recomputed on top of it
    assert renamed == []
    store = RunStore(settings.lake_root)
    assert store.published_months() == [JAN, FEB]
    for as_of in (JAN, FEB):  # each month: its first run's objects and its correction's (until vacuum)
        record = store.get(as_of)
        assert record is not None and len(record.replaced) == 1
        assert sorted(objects(settings.lake_root, as_of).values()) == [2 * len(SCHEMA.tables)] * 2


def test_a_correction_switches_to_new_objects_an_open_reader_keeps_the_old_and_vacuum_removes_them(
    run_luigi, pipeline_env: dict[str, str], lake_root: Path, tmp_path: Path
):
    assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    first = RunStore(lake_root).get(JAN)
    assert first is not None
    before = lake_views.connect(lake_root)  # a reader that connected before the correction
    corrected = seed_copy(tmp_path / "jan")
    user_id = set_value(corrected, "subscriptions", 0, "monthly_fee", "1.23")
    fee = f"SELECT CAST(monthly_fee AS DOUBLE) FROM subscriptions WHERE user_id = '{user_id}'"
    (old_fee,) = before.execute(fee).fetchone()
    assert old_fee != 1.23
    result = run_luigi("Month", "--as-of", JAN.isoformat(), "--source", str(corrected), "--replace")
    assert result.returncode == 0, result.stderr[-3000:]
    second = RunStore(lake_root).get(JAN)
    assert second is not None and second.run_id != first.run_id
    assert [r.run_id for r in second.replaced] == [first.run_id]
    for table in SCHEMA.table_names:  # new objects; the replaced run's are untouched, never overwritten
        new, old = second.snapshot_file(lake_root, table), first.snapshot_file(lake_root, table)
        assert new is not None and old is not None and new != old and new.is_file() and old.is_file()

    after = lake_views.connect(lake_root)
    assert after.execute(fee).fetchone() == (1.23,)
    assert before.execute(fee).fetchone() == (old_fee,), "an open reader sees one run, the one it opened"

    kept = vacuum(pipeline_env)  # the correction is younger than the default retention
    assert kept.returncode == 0, kept.stderr
    assert "nothing to remove" in kept.stdout
    dry = vacuum(pipeline_env, "--retain-days", "0", "--dry-run")
    assert f"{JAN}: would remove {2 * len(SCHEMA.tables) + 1} file(s)" in dry.stdout, dry.stdout
    assert f"run {first.run_id} was replaced by run {second.run_id}" in dry.stdout
    assert first.snapshot_file(lake_root, "users").is_file(), "a dry run removes nothing"  # type: ignore[union-attr]

    done = vacuum(pipeline_env, "--retain-days", "0")
    assert done.returncode == 0, done.stderr
    assert f"{JAN}: removed {2 * len(SCHEMA.tables) + 1} file(s)" in done.stdout, done.stdout
    assert objects(lake_root, JAN) == {second.run_id: 2 * len(SCHEMA.tables)}
    assert [r.run_id for _, r in RunStore(lake_root).records(JAN)] == [second.run_id]
    assert lake_views.connect(lake_root).execute(fee).fetchone() == (1.23,), "the month is intact"
    assert vacuum(pipeline_env, "--retain-days", "0").stdout.strip() == "nothing to remove"


def test_a_run_killed_before_its_record_leaves_objects_nobody_reads_vacuum_and_the_rerun_remove_them(
    run_luigi, pipeline_env: dict[str, str], lake_root: Path, pg: psycopg.Connection, pg_schema: str
):
    assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    killed = run_luigi("Month", "--as-of", FEB.isoformat(), env={"STREAMFLOW_FAILPOINT": "in_transaction"})
    assert killed.returncode == -signal.SIGKILL
    (orphan_run,) = (r for r in objects(lake_root, FEB) if r is not None)
    assert RunStore(lake_root).get(FEB) is None, "objects without a record are not a month"
    assert lake_views.connect(lake_root).execute(
        f"SELECT count(*) FROM users_snapshots WHERE as_of = '{FEB}'"
    ).fetchone() == (0,)

    # a month being run (its lock held, here by this test's session) is left alone
    key = month_lock_key(pg_schema, FEB)
    pg.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        busy = vacuum(pipeline_env)
        assert f"{FEB}: skipped, a run of the month holds its lock" in busy.stdout, busy.stdout
        assert orphan_run in objects(lake_root, FEB)
    finally:
        pg.execute("SELECT pg_advisory_unlock(%s)", [key])

    done = vacuum(pipeline_env)  # never published: no retention applies
    assert f"{FEB}: removed {2 * len(SCHEMA.tables)} file(s)" in done.stdout and "never published" in done.stdout
    assert objects(lake_root, FEB) == {}
    rerun = run_luigi("Month", "--as-of", FEB.isoformat())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    published = RunStore(lake_root).get(FEB)
    assert published is not None and objects(lake_root, FEB) == {published.run_id: 2 * len(SCHEMA.tables)}


@pytest.mark.parametrize("point", ["lake_half_written", "committed"])
def test_the_months_next_run_sweeps_the_objects_of_a_run_that_never_published(point, run_luigi, lake_root: Path):
    assert run_luigi("Month", "--as-of", JAN.isoformat(), env={"STREAMFLOW_FAILPOINT": point}).returncode == -9
    assert objects(lake_root, JAN), "the killed run wrote objects"
    assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    published = RunStore(lake_root).get(JAN)
    assert published is not None and list(objects(lake_root, JAN)) == [published.run_id]


def _as_an_old_lake(root: Path) -> None:
    """Rewrite a lake the way the pipeline wrote it before issue #19: each month's one ``data.parquet``
    per table and kind, and one ``manifest.json`` that names no objects."""
    store, lake = RunStore(root), lakefs.Lake(root)
    for as_of, record in store.published().items():
        for table in record.objects:
            for kind in lakefs.OBJECT_KINDS:
                record.object_file(root, kind, table).rename(root / lake.legacy_object(kind, table, as_of))  # type: ignore[union-attr]
        path = store.path(as_of)
        lake.legacy_manifest(as_of).write_text(json.dumps({**record.to_json(), "objects": None}))
        path.unlink()  # type: ignore[union-attr]


def test_a_lake_written_before_issue_19_is_read_corrected_and_vacuumed_as_it_is(settings: Settings, tmp_path):
    run_month(settings, JAN, SEED_MONTHS[JAN])
    run_month(settings, FEB, SEED_MONTHS[FEB])
    counts = (
        "SELECT as_of, count(*), sum(CAST(monthly_fee AS DOUBLE)) FROM subscriptions_snapshots GROUP BY 1 ORDER BY 1"
    )
    before = lake_views.connect(settings.lake_root).execute(counts).fetchall()
    _as_an_old_lake(settings.lake_root)
    assert not any(r.objects for r in RunStore(settings.lake_root).published().values())
    assert lake_views.connect(settings.lake_root).execute(counts).fetchall() == before, "read as it is"

    corrected = seed_copy(tmp_path / "feb", "month_001")
    user_id = set_value(corrected, "subscriptions", 0, "monthly_fee", "1.23")
    run_month(settings, FEB, corrected, replace=True)  # merged on January's old-style snapshot
    store = RunStore(settings.lake_root)
    feb = store.get(FEB)
    assert feb is not None and feb.objects and len(feb.replaced) == 1, "the old-style run is the replaced one"
    fee = f"SELECT CAST(monthly_fee AS DOUBLE) FROM subscriptions WHERE user_id = '{user_id}'"
    assert lake_views.connect(settings.lake_root).execute(fee).fetchone() == (1.23,)

    removed, busy = vacuum_module.vacuum(settings, timedelta(0))
    assert busy == [] and [(r.as_of, len(r.paths)) for r in removed] == [(FEB, 2 * len(SCHEMA.tables) + 1)]
    assert not lakefs.Lake(settings.lake_root).legacy_manifest(FEB).exists()
    assert lakefs.Lake(settings.lake_root).legacy_manifest(JAN).exists(), "January's only record stays"
    assert objects(settings.lake_root, FEB) == {feb.run_id: 2 * len(SCHEMA.tables)}
    after = lake_views.connect(settings.lake_root).execute(counts).fetchall()
    assert after[0] == before[0] and after[1][:2] == before[1][:2], "January as it was, February corrected"
