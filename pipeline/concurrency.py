"""Run independent steps a few at a time, failing like a sequential loop would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Skipped(Exception):
    """A call not started because another had already failed."""


def run_all(calls: Mapping[K, Callable[[], V]], workers: int, name: str = "worker") -> dict[K, V]:
    """Run every call, ``workers`` at a time, in threads (DuckDB, psycopg and file I/O release the GIL).

    Results come back in the order of ``calls``. Once a call fails, calls not yet started are skipped;
    the error raised is that of the first failing call in the order of ``calls``, as a sequential loop
    would raise it (whichever failed first in time)."""
    failed = threading.Event()

    def guarded(call: Callable[[], V]) -> V:
        if failed.is_set():
            raise _Skipped
        try:
            return call()
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix=name) as pool:
        futures = {key: pool.submit(guarded, call) for key, call in calls.items()}
    for future in futures.values():
        error = future.exception()
        if error is not None and not isinstance(error, _Skipped):
            raise error
    return {key: future.result() for key, future in futures.items()}
