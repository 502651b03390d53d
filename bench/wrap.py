"""A fresh, small parent for one timed command: ``python -m bench.wrap RESULT.json -- CMD ...``.

On Linux a forked child's ``ru_maxrss`` starts at its parent's RSS at fork time, so a command forked
from the (large) bench process would report at least the bench's own memory. This wrapper imports
nothing heavy, forks the command, waits, and writes the command's wall time and
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest process of the command's tree) to RESULT.json.
"""

import json
import resource
import subprocess
import sys
import time


def main() -> int:
    result, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        print("usage: python -m bench.wrap RESULT.json -- CMD ...", file=sys.stderr)
        return 2
    started = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(result, "w") as f:
        json.dump(
            {
                "wall_s": wall,
                "maxrss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "returncode": rc,
            },
            f,
        )
    return rc


if __name__ == "__main__":
    sys.exit(main())
