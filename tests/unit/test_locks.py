"""pipeline.pg.locks.month_lock_key: every machine, and every version of the pipeline, must compute the
same key for a month, or two runs of it would not exclude each other. Holding the lock is tested with
real processes in tests/test_crash_safety.py."""

from __future__ import annotations

from datetime import date

from pipeline.pg.locks import month_lock_key


def test_the_key_is_pinned_so_machines_on_other_versions_still_agree():
    # the first 8 bytes of sha256("streamflow:public:2024-01-31"), as a signed bigint
    assert month_lock_key("public", date(2024, 1, 31)) == -2200099508051163699


def test_the_key_differs_by_schema_and_by_month_and_fits_a_bigint():
    keys = {month_lock_key(s, d) for s in ("public", "analytics") for d in (date(2024, 1, 31), date(2024, 2, 29))}
    assert len(keys) == 4
    assert all(-(2**63) <= k < 2**63 for k in keys)
