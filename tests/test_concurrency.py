"""Tables run two at a time; failures and memory behave as if they ran one after the other."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline import duck
from pipeline.concurrency import run_all
from pipeline.config import Settings


def test_results_come_back_in_the_order_of_the_calls():
    delays = {"a": 0.05, "b": 0.0, "c": 0.02}

    def call(key: str) -> str:
        time.sleep(delays[key])
        return key.upper()

    results = run_all({k: (lambda k=k: call(k)) for k in delays}, workers=2)
    assert list(results.items()) == [("a", "A"), ("b", "B"), ("c", "C")]


def test_the_error_raised_is_the_first_failing_call_in_order_and_later_calls_are_cancelled():
    started: list[str] = []
    lock = threading.Lock()

    def call(key: str) -> None:
        with lock:
            started.append(key)
        if key == "first":
            time.sleep(0.1)  # fails after "second" has already failed
            raise ValueError("first failed")
        if key == "second":
            raise ValueError("second failed")

    calls = {k: (lambda k=k: call(k)) for k in ("first", "second", "third", "fourth", "fifth")}
    with pytest.raises(ValueError, match="first failed"):
        run_all(calls, workers=2)
    assert "fifth" not in started  # not started once an error was known


@pytest.mark.parametrize(
    ("limit", "jobs", "each"),
    [("1GB", 2, 500_000_000), ("512MiB", 2, 2**28), ("48MB", 1, 48_000_000), ("300MB", 1, 300_000_000)],
)
def test_parallel_duckdb_jobs_share_the_memory_limit(limit: str, jobs: int, each: int, tmp_path):
    settings = Settings(lake_root=tmp_path, duckdb_memory_limit=limit)
    assert duck.parallel_jobs(settings, 2) == jobs
    shared = duck.share(settings, jobs)
    assert duck.memory_bytes(shared.duckdb_memory_limit) == each
    with duck.connect(shared) as con:  # DuckDB takes the share as its limit
        reported = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert reported.split()[0] not in ("", "0")


def test_a_memory_limit_that_is_not_a_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a size like 1GB"):
        duck.memory_bytes("lots")
