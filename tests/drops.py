"""Small helpers to craft drops for tests: copy a seed drop, then change what the test is about."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb

from tests.conftest import SEEDS


def seed_copy(dest: Path, month: str = "month_000") -> Path:
    shutil.copytree(SEEDS / month, dest)
    return dest


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def edit_rows(path: Path, change: Callable[[list[dict[str, str]]], list[dict[str, str]] | None]) -> None:
    """Apply ``change`` to the rows of a CSV (in place, or return new rows)."""
    header, rows = read_rows(path)
    result = change(rows)
    write_rows(path, header, rows if result is None else result)


def set_value(drop: Path, table: str, row: int, column: str, value: str) -> str:
    """Set one cell (data row index ``row``); returns the user_id of that row."""
    user_id = ""

    def change(rows: list[dict[str, str]]) -> None:
        nonlocal user_id
        rows[row][column] = value
        user_id = rows[row]["user_id"]

    edit_rows(drop / f"{table}.csv", change)
    return user_id


def csv_count(path: Path) -> int:
    return duckdb.execute(f"SELECT count(*) FROM read_csv('{path}', all_varchar = true)").fetchone()[0]
