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


# --- byte- and line-level edits for the hostile-input suite (tests/test_bad_input.py, issue #5) ----------


def lines_of(path: Path) -> list[str]:
    """The file's lines without their terminators (header first)."""
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> None:
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))


def replace_line(path: Path, index: int, text: str) -> None:
    """Replace physical line ``index`` (0 = header, 1 = first data row) with raw ``text``."""
    lines = lines_of(path)
    lines[index] = text
    write_lines(path, lines)


def replace_bytes(path: Path, old: bytes, new: bytes, count: int = 1) -> None:
    data = path.read_bytes()
    assert old in data, (path, old)
    path.write_bytes(data.replace(old, new, count))


def drop_column(path: Path, column: str) -> None:
    header, rows = read_rows(path)
    kept = [h for h in header if h != column]
    write_rows(path, kept, [{k: r[k] for k in kept} for r in rows])


def add_column(path: Path, column: str, value: str) -> None:
    header, rows = read_rows(path)
    write_rows(path, [*header, column], [{**r, column: value} for r in rows])


def reorder_columns(path: Path, order: list[str]) -> None:
    header, rows = read_rows(path)
    assert sorted(order) == sorted(header), (order, header)
    write_rows(path, order, rows)


def user_id_at(drop: Path, row: int, table: str = "users") -> str:
    return read_rows(drop / f"{table}.csv")[1][row]["user_id"]


def rename_user(drop: Path, old: str, new: str) -> None:
    """Give user ``old`` the id ``new`` in every file of the drop (the csv module quotes it as needed)."""
    for path in sorted(drop.glob("*.csv")):

        def change(rows: list[dict[str, str]]) -> None:
            for r in rows:
                if r["user_id"] == old:
                    r["user_id"] = new

        edit_rows(path, change)
