"""The bench's input: drops from the project's generator, reused when already there for the same parameters."""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

log = logging.getLogger("bench")

PARAMS_FILE = "bench-params.json"
NOCHANGE_FOLDER = "month_nochange"


def _generator_identity() -> dict:
    """What the bytes of a drop depend on besides the arguments: the generator, the schema, DuckDB."""
    import duckdb

    from pipeline import generate
    from pipeline.schema import SCHEMA_FILE

    digest = hashlib.sha256()
    for path in (Path(generate.__file__), SCHEMA_FILE):
        digest.update(path.read_bytes())
    return {"code_sha256": digest.hexdigest()[:16], "duckdb": duckdb.__version__}


def data_dir(out: Path, users: int, months: int, seed: int) -> Path:
    return out / "data" / f"users{users}-months{months}-seed{seed}"


def table_rows(folder: Path) -> dict[str, int]:
    """Data rows per CSV (lines less the header; the generator writes no embedded newlines)."""
    rows = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open("rb") as f:
            rows[path.stem] = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b"")) - 1
    return rows


def ensure_drops(out: Path, users: int, months: int, seed: int) -> tuple[list[tuple[date, Path]], dict]:
    """[(as_of, folder)] of the months, generated unless the same parameters were generated before."""
    from pipeline.generate import DEFAULT_START_AS_OF, generate_drops, month_end_dates, month_folder_name

    folder = data_dir(out, users, months, seed)
    wanted = {"users": users, "months": months, "seed": seed, **_generator_identity()}
    params_file = folder / PARAMS_FILE
    info: dict = {"folder": str(folder), "reused": False}
    if params_file.exists() and json.loads(params_file.read_text()) == wanted:
        info["reused"] = True
        drops = [(d, folder / month_folder_name(i)) for i, d in enumerate(month_end_dates(DEFAULT_START_AS_OF, months))]
        log.info("reusing drops in %s", folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("generating %s users x %d months (seed %d) into %s", f"{users:,}", months, seed, folder)
        t0 = time.perf_counter()
        drops = generate_drops(folder, users, months, seed)
        info["generate_s"] = round(time.perf_counter() - t0, 2)
        params_file.write_text(json.dumps(wanted, indent=2) + "\n")
    info["bytes"] = sum(p.stat().st_size for _, f in drops for p in f.glob("*.csv"))
    return drops, info


def next_month_end(d: date) -> date:
    first_next = d + timedelta(days=1)
    return first_next.replace(day=calendar.monthrange(first_next.year, first_next.month)[1])


def nochange_drop(last: tuple[date, Path]) -> tuple[date, Path]:
    """The last month's files again as the following month: a month in which nothing changed.
    Hard links (same bytes, no copy) when the file system allows, copies otherwise."""
    as_of, folder = last
    target = folder.parent / NOCHANGE_FOLDER
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for path in sorted(folder.glob("*.csv")):
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
    return next_month_end(as_of), target
