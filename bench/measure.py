"""Time one command as a separate process: wall time and peak RSS of its whole process tree.

The command runs under a fresh, small wrapper (:mod:`bench.wrap`) that times it and reads the kernel's
``ru_maxrss`` of its children: the exact high-water mark of the largest single process of the tree
(a poll can miss a short spike). In parallel this module polls with psutil (every ``POLL_SECONDS``)
the wrapper's descendants and sums their RSS, so a tree of several processes counts as the memory it
holds at once. Peak RSS is the larger of the two. The PostgreSQL server is not a child: its memory is
not counted for any tool.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

POLL_SECONDS = 0.02


@dataclass
class Measurement:
    wall_s: float
    peak_rss_bytes: int
    polled_rss_bytes: int
    maxrss_bytes: int
    returncode: int
    log: str
    cpu_s: float = 0.0  # user + system CPU of the command's processes (not PostgreSQL's)
    load_before: float = 0.0  # 1-minute load average when the run started: others' work makes it noisy
    machine_busy: float = 0.0  # share of all cores busy during the run (this run, PostgreSQL and anyone else)

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 2**20

    def to_dict(self) -> dict:
        return {**asdict(self), "peak_rss_mb": round(self.peak_rss_mb, 1), "wall_s": round(self.wall_s, 3)}


def _tree_rss(proc: psutil.Process) -> int:
    """RSS summed over the descendants of ``proc`` (the wrapper itself not counted)."""
    total = 0
    try:
        procs = proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):  # ended between listing and reading
            total += p.memory_info().rss
    return total


def run(cmd: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> Measurement:
    """Run ``cmd`` to completion with stdout and stderr into ``log_path``; never raises on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    done = threading.Event()
    load_before = os.getloadavg()[0]
    cpu_before = psutil.cpu_times()
    result = log_path.with_suffix(".rusage.json")
    result.unlink(missing_ok=True)
    with log_path.open("wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        started = time.perf_counter()
        wrapped = [sys.executable, "-m", "bench.wrap", str(result), "--", *cmd]
        child = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)

        def poll() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(proc))
                done.wait(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        child.wait()
        wall = time.perf_counter() - started
        done.set()
        poller.join()
    cpu_after = psutil.cpu_times()
    idle = (cpu_after.idle + cpu_after.iowait) - (cpu_before.idle + cpu_before.iowait)
    total = sum(cpu_after) - sum(cpu_before)
    cpu_s = 0.0
    try:
        inner = json.loads(result.read_text())
        wall, maxrss = inner["wall_s"], inner["maxrss_bytes"]  # the command alone, without the wrapper
        cpu_s = inner.get("cpu_s", 0.0)
    except (OSError, ValueError, KeyError):
        maxrss = 0  # the wrapper died: keep the outer wall time and the polled peak
    return Measurement(
        wall_s=wall,
        peak_rss_bytes=max(peak, maxrss),
        polled_rss_bytes=peak,
        maxrss_bytes=maxrss,
        returncode=child.returncode,
        log=str(log_path),
        cpu_s=round(cpu_s, 2),
        load_before=round(load_before, 2),
        machine_busy=round(1 - idle / total, 3) if total > 0 else 0.0,
    )
