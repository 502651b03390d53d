"""Named points where a test can kill the pipeline process, to prove a crash anywhere is recoverable.

``STREAMFLOW_FAILPOINT=<name>`` makes the process SIGKILL itself when it reaches that point: no
cleanup, no finally blocks, no atexit: what a power cut or an OOM kill would leave. Unset (always, in
production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "STREAMFLOW_FAILPOINT"
PAUSE_ENV = "STREAMFLOW_PAUSE"  # "<name>:<seconds>": sleep there instead (e.g. to restart PostgreSQL meanwhile)

# Every point, in the order a month reaches them.
POINTS = (
    "staged",  # a table's typed drop written to the work folder
    "merged",  # a table's snapshot written to the work folder
    "in_sync",  # inside the publish transaction, the advisory lock taken, nothing written yet
    "staging_loaded",  # the month COPYed into PostgreSQL's staging schema; the live upsert runs meanwhile
    "checked",  # the Soda scan passed; the live upsert runs (or ran) in the open transaction
    "lake_half_written",  # some of the month's objects written into the lake under the run's names
    "in_transaction",  # inside the publish transaction, every statement run, not yet committed
    "committed",  # PostgreSQL committed, the lake's run record not yet written
    "manifest_written",  # the month is published; the work folder not yet removed
)


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_ENV, "")
    if pause.partition(":")[0] == name:
        import time

        time.sleep(float(pause.partition(":")[2] or 5))
