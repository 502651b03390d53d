"""Stage: one CSV of a drop → one typed Parquet file, every unparseable row explained.

DuckDB reads the file once, every column as text with the names from the header bound explicitly
(any column order works, nothing is sniffed). Each value is then validated and cast with the rules
of its declared type (:mod:`pipeline.types`), in SQL. Structural problems (wrong field count, bad quoting, bytes
that are not UTF-8) come from DuckDB's own reject tables. When anything is rejected, the slow
path runs: a Python pass over the file finds the line number and raw text of each bad row, and
the rejects are written to ``<lake>/rejects/<table>/as_of=YYYY-MM-DD/rejects.parquet``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from pipeline import drops, lakefs
from pipeline.config import Settings
from pipeline.drops import Drop, sha256_of
from pipeline.duck import PARQUET_OPTIONS, literal, quote
from pipeline.errors import DropChangedError, DropError, RejectedRowsError
from pipeline.schema import Column, Table
from pipeline.types import key_bad, key_why_bad

log = logging.getLogger(__name__)

HOW_TO_FIX_FILE = "fix the export (or the file) and run the month again"
MAX_LISTED_REJECTS = 5
MAX_LISTED_LINES = 5  # the lines a repeated key's reason names; the count says how many more
MAX_LINE_BYTES = 4 << 20  # DuckDB's max_line_size
# The slow path splits records with the csv module, whose field limit (128 KiB by default) is below
# DuckDB's line limit, and a quoted field that swallowed lines is longer still. The limit is one
# process-wide setting: it is raised once, here, and never lowered, because setting and restoring it
# around each read let one table's finished read restore the default under another table's read in a
# second thread ("field larger than field limit").
CSV_FIELD_LIMIT = 100 * MAX_LINE_BYTES
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
MAX_RAW_CHARS = 1 << 16  # the raw text a reject keeps; a record swallowed by a stray quote can be huge
# DuckDB's reject error types, said the way a person fixing the export needs to hear them.
STRUCTURAL_REASONS = {
    "MISSING COLUMNS": "too few fields: the row has fewer values than the header has columns",
    "TOO MANY COLUMNS": "too many fields: the row has more values than the header has columns "
    "(an unquoted comma or a different delimiter?)",
    "UNQUOTED VALUE": "a stray quote: a quote inside an unquoted value, or a quoted field that is never "
    "closed (it swallows the lines after it); quote the field and double inner quotes",
    "INVALID ENCODING": "bytes that are not UTF-8 (Latin-1?); re-export the file as UTF-8",
    "LINE SIZE OVER MAXIMUM": f"the row is longer than {MAX_LINE_BYTES >> 20} MB",
    "INVALID STATE": "the row cannot be split into fields (an unterminated quote?)",
}


@dataclass(frozen=True)
class SourceFile:
    """What was read: enough to tell later whether a drop file changed."""

    name: str
    size: int
    sha256: str
    rows: int  # data rows in the file, rejected ones included
    mtime_ns: int = 0  # when size and mtime both match, a rerun trusts the file without hashing it again


@dataclass(frozen=True)
class Reject:
    line: int
    column: str | None
    reason: str
    raw: str


@dataclass
class StageResult:
    table: str
    source: SourceFile
    rows: int  # rows accepted into the typed Parquet file
    rejected: int
    missing_columns: list[str] = field(default_factory=list)  # hidden-at-start columns absent from the file
    seconds: float = 0.0
    sorted_by_key: bool = False  # the typed rows were written in key order

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StageResult:
        data = json.loads(text)
        data["source"] = SourceFile(**data["source"])
        return cls(**data)


# --- the drop folder -------------------------------------------------------------------------


def check_drop_folder(drop: Drop | Path) -> None:
    """Refuse a drop folder (or S3 prefix) that is not there (one message for the month, not one per table)."""
    drops.at(drop).check()


def drop_file(drop: Drop | Path, table: Table) -> str:
    """The file of ``table`` in a drop, checked: present, a regular file (inside the folder), not empty.
    Returns the file as messages name it: its path, or its s3:// URI."""
    drop = drops.at(drop)
    drop.check()
    name = f"{table.name}.csv"
    shown = drop.file(name)
    if not drop.present(name):
        raise DropError(
            f"{shown}: missing file; a drop needs {name} (found: {', '.join(drop.names()) or 'no CSV files'})"
        )
    drop.check_file(name)
    identity = drop.identity(name)
    if identity is None:
        raise DropError(f"{shown}: not a regular file")
    if identity.size == 0:
        raise DropError(f"{shown}: file is empty (0 bytes), not even a header line; {HOW_TO_FIX_FILE}")
    return shown


def fingerprint(path: Path) -> str:
    """Cheap identity of a file (name, size, mtime) for Luigi targets; the sha256 goes to the manifest."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def read_header(path: Path, table: Table, shown: str | None = None) -> list[str]:
    """The header's column names, checked against the schema: every required column present, no
    unknown and no duplicated name. Returns the names in file order. ``shown``: the file as messages
    name it (default: ``path``)."""
    shown = shown or str(path)
    with path.open("rb") as f:
        first = f.readline(MAX_LINE_BYTES)
    # A header never holds a quoted line break, so it ends at the first CR or LF (files with old
    # Mac line endings, CR only, are one "line" to readline()).
    first = first.split(b"\n", 1)[0].split(b"\r", 1)[0]
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DropError(
            f"{shown}: line 1: header is not UTF-8 (byte {e.start + 1}); re-export the file as UTF-8"
        ) from None
    names = [n.strip() for n in next(csv.reader([text]), [])]
    expected = table.column_names
    if len(names) == 1 and len(expected) > 1:
        for delimiter in (";", "\t", "|"):
            if delimiter in names[0]:
                raise DropError(
                    f"{shown}: line 1: the header is one column split by {delimiter!r}; files must be "
                    f"comma-delimited; re-export with ',' as the delimiter"
                )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DropError(f"{shown}: line 1: column(s) named more than once: {', '.join(duplicated)}; {HOW_TO_FIX_FILE}")
    unknown = [n if n else "'' (an empty name: a trailing comma?)" for n in names if n not in expected]
    missing = [n for n in table.required_columns if n not in names]
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if problems:
        raise DropError(
            f"{shown}: line 1: {'; '.join(problems)}. {table.name} has columns {', '.join(expected)} "
            f"(declared in sql/schema.sql); {HOW_TO_FIX_FILE}"
        )
    return names


# --- a column's rules: its key rule or its declared type's (pipeline.types) ---------------------------


def typed_expr(col: Column) -> str:
    """The SQL that turns the text of a valid value into the lake's type."""
    return col.rule.typed(quote(col.name))


def bad_expr(col: Column) -> str:
    """True when the column's text is not a valid value (NULL and blank are valid: missing; not in the key)."""
    if col.primary_key:
        return key_bad(quote(col.name))
    return col.rule.bad(quote(col.name))


def reason_expr(col: Column) -> str:
    """Why a bad value is bad, in words (only evaluated for bad rows)."""
    if col.primary_key:
        return key_why_bad(quote(col.name), col.name)
    return col.rule.why_bad(quote(col.name), col.name)


# --- staging ----------------------------------------------------------------------------------


def _read_csv_sql(path: Path, header: list[str], rejects_table: str, rejects_scan: str) -> str:
    columns = "{" + ", ".join(f"{literal(name)}: 'VARCHAR'" for name in header) + "}"
    return (
        f"read_csv({literal(str(path))}, columns = {columns}, header = true, auto_detect = false, "
        f"delim = ',', quote = '\"', escape = '\"', strict_mode = true, null_padding = false, "
        f"store_rejects = true, rejects_table = {literal(rejects_table)}, "
        f"rejects_scan = {literal(rejects_scan)}, "
        f"max_line_size = 4194304)"
    )


def stage_table(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    drop: Drop | Path,
    as_of: date,
    out_file: Path,
    rejects_dir: Path,
    max_reject_ratio: float = 0.0,
    sort_by_key: bool = False,
    settings: Settings | None = None,
) -> StageResult:
    """Read ``<table>.csv`` of the drop (a local folder, or an S3 prefix whose file is first copied into a
    scratch folder under ``settings``' scratch_dir), write its valid rows, typed, to ``out_file`` (Parquet,
    zstd), in key order if ``sort_by_key`` (a first month's snapshot is then this very file).

    Raises :class:`DropError` for a file that cannot be read at all and :class:`RejectedRowsError`
    when the share of rejected rows exceeds ``max_reject_ratio``; the rejects are written either way.
    Every message names the file as the drop does (its path, or its s3:// URI), never a scratch copy.
    """
    started = time.perf_counter()  # the copy of an object is part of its staging time
    drop = drops.at(drop)
    shown = drop_file(drop, table)
    with drop.local_copy(f"{table.name}.csv", settings) as path:
        return _stage_file(con, table, drop, path, shown, out_file, rejects_dir, max_reject_ratio, sort_by_key, started)


def _stage_file(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    drop: Drop,
    path: Path,
    shown: str,
    out_file: Path,
    rejects_dir: Path,
    max_reject_ratio: float,
    sort_by_key: bool,
    started: float,
) -> StageResult:
    """:func:`stage_table` of the local file ``path``, named ``shown`` in messages."""
    header = read_header(path, table, shown)
    missing = [c.name for c in table.columns if c.name not in header]
    name = table.name
    raw, rej_errors, rej_scans = f"typed_{name}", f"rejects_{name}", f"reject_scans_{name}"
    present = [c for c in table.columns if c.name in header]
    select = ", ".join(
        (f"{typed_expr(c)} AS {quote(c.name)}" if c.name in header else f"NULL::{c.duckdb_type} AS {quote(c.name)}")
        for c in table.columns
    )
    bad = " OR ".join(bad_expr(c) for c in present)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {raw} AS SELECT {select}, ({bad}) AS _bad "
            f"FROM {_read_csv_sql(path, header, rej_errors, rej_scans)}"
        )
    except duckdb.Error as e:
        said = _first_line(e).replace(str(path), shown)  # DuckDB names the file it read: a copy, for S3
        raise DropError(f"{shown}: DuckDB could not read the file: {said}; {HOW_TO_FIX_FILE}") from None
    key = quote(table.key)
    parsed, bad_rows, duplicate_rows = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE _bad), "
        f"(SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {raw} WHERE NOT _bad "
        f"GROUP BY {key} HAVING count(*) > 1)) FROM {raw}"
    ).fetchone() or (0, 0, 0)
    (structural,) = con.execute(f"SELECT count(DISTINCT line) FROM {rej_errors}").fetchone() or (0,)
    total = parsed + structural
    if total == 0:
        raise DropError(f"{shown}: the file has a header but no data rows; {HOW_TO_FIX_FILE}")
    rejected_rows = bad_rows + duplicate_rows + structural
    rejects: list[Reject] = []
    if rejected_rows:
        rejects = _explain_rejects(con, table, path, raw, rej_errors, header)
        _write_rejects(con, rejects, rejects_dir)
        rejected_rows = len({r.line for r in rejects})
        ratio = rejected_rows / total
        if ratio > max_reject_ratio:
            raise RejectedRowsError(
                _rejects_message(shown, path.name, rejects, rejected_rows, total, rejects_dir, max_reject_ratio)
            )
        log.warning(
            "%s: %d of %d rows rejected (allowed up to %.1f%%), see %s",
            shown,
            rejected_rows,
            total,
            100 * max_reject_ratio,
            rejects_dir,
        )
    identity = drop.identity(path.name)  # as read: what the run record keeps, with the bytes' sha256
    if identity is None:
        raise DropChangedError(
            f"{shown}: removed while it was being staged; nothing was published. Run the month again once the "
            f"drop is complete."
        )
    source = SourceFile(
        name=path.name, size=identity.size, sha256=sha256_of(path), rows=total, mtime_ns=identity.mtime_ns
    )
    columns = ", ".join(quote(c) for c in table.column_names)
    keep = "NOT _bad"
    if duplicate_rows:  # group by the key a second time only when the first pass found repeats
        keep += f" AND {key} NOT IN (SELECT {key} FROM {raw} WHERE NOT _bad GROUP BY {key} HAVING count(*) > 1)"
    order = f" ORDER BY {key}" if sort_by_key else ""
    con.execute(
        f"COPY (SELECT {columns} FROM {raw} WHERE {keep}{order}) "
        f"TO {literal(str(lakefs.fresh(out_file)))} ({PARQUET_OPTIONS})"
    )
    con.execute(f"DROP TABLE {raw}")
    result = StageResult(
        table=name,
        source=source,
        rows=total - rejected_rows,
        rejected=rejected_rows,
        missing_columns=missing,
        seconds=round(time.perf_counter() - started, 3),
        sorted_by_key=sort_by_key,
    )
    return result


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _explain_rejects(
    con: duckdb.DuckDBPyConnection, table: Table, path: Path, raw: str, rej_errors: str, header: list[str]
) -> list[Reject]:
    """The slow path, run only when something is wrong: line numbers, columns, reasons, raw text."""
    structural: dict[int, tuple[str | None, str]] = {}  # record number -> column, reason
    for record, column, error_type, message in con.execute(
        f"SELECT line - 2, column_name, error_type::VARCHAR, error_message FROM {rej_errors} ORDER BY line"
    ).fetchall():
        reason = STRUCTURAL_REASONS.get(error_type, f"{error_type.lower()}: {message}")
        structural.setdefault(record, (column if error_type == "INVALID ENCODING" else None, reason))
    present = [c for c in table.columns if c.name in header]
    reasons = ", ".join(f"CASE WHEN {bad_expr(c)} THEN {reason_expr(c)} END" for c in present)
    raw_table = f"raw_{table.name}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {raw_table} AS SELECT * FROM "
        f"{_read_csv_sql(path, header, rej_errors + '_again', rej_errors + '_again_scans')}"
    )
    bad_cells = con.execute(
        f"SELECT rowid, [{reasons}] FROM {raw_table} WHERE {' OR '.join(bad_expr(c) for c in present)} ORDER BY rowid"
    ).fetchall()
    key = quote(table.key)
    duplicates = con.execute(
        f"SELECT rowid, {key}, count(*) OVER (PARTITION BY {key}) FROM {raw_table} WHERE {key} IN "
        f"(SELECT {key} FROM {raw} WHERE NOT _bad GROUP BY {key} HAVING count(*) > 1) ORDER BY rowid"
    ).fetchall()
    con.execute(f"DROP TABLE {raw_table}")
    at_record, at_row = _locate(path, set(structural), {r[0] for r in bad_cells} | {r[0] for r in duplicates})
    rejects = []
    for record, (column, reason) in structural.items():
        line, text = at_record.get(record, (0, ""))
        rejects.append(Reject(line, column, reason, text))
    names = [c.name for c in present]
    for rowid, reasons_row in bad_cells:
        line, text = at_row.get(rowid, (0, ""))
        rejects += [
            Reject(line, column, reason, text)
            for column, reason in zip(names, reasons_row, strict=True)
            if reason is not None
        ]
    # Every row of a repeated key is rejected with the same reason, built once per key. It names the
    # first MAX_LISTED_LINES lines and the count: listing every line in every row's reason made the
    # explanation quadratic in the repeats (8,000 rows of one key: 1.5 GB; issue #20).
    first_lines: dict[str, list[int]] = {}
    for rowid, user_id, _ in duplicates:  # in rowid order, so in line order
        listed = first_lines.setdefault(user_id, [])
        if len(listed) < MAX_LISTED_LINES:
            listed.append(at_row.get(rowid, (0, ""))[0])
    dup_reasons: dict[str, str] = {}
    for rowid, user_id, count in duplicates:
        line, text = at_row.get(rowid, (0, ""))
        if user_id not in dup_reasons:
            dup_reasons[user_id] = _duplicate_reason(table.key, user_id, count, first_lines[user_id])
        rejects.append(Reject(line, table.key, dup_reasons[user_id], text))
    return sorted(rejects, key=lambda r: r.line)


def _duplicate_reason(key: str, value: str, count: int, first_lines: list[int]) -> str:
    """Why every row of a repeated key is rejected: the count and the first lines it is on."""
    lines = ", ".join(map(str, first_lines))
    if count > len(first_lines):
        lines += f" and {count - len(first_lines)} more"
    return f"{key} {value!r} appears {count} times (lines {lines}); a drop holds one row per {key}"


def _locate(
    path: Path, records: set[int], rows: set[int]
) -> tuple[dict[int, tuple[int, str]], dict[int, tuple[int, str]]]:
    """(line, raw text) of the wanted records (DuckDB's reject numbering) and parsed rows (rowid).

    DuckDB numbers records in its reject table (header = 1, a blank line counts, a quoted field
    spanning lines does not) and gives no position for the rows it parsed. The csv module splits
    records the same way and knows the physical line each one starts on; DuckDB keeps file order,
    so parsed row n is the n-th record that is neither blank nor a structural reject. One pass,
    keeping only what is wanted: the file may be far larger than memory."""
    at_record: dict[int, tuple[int, str]] = {}
    at_row: dict[int, tuple[int, str]] = {}
    rowid, last_record, last_row = 0, max(records, default=-1), max(rows, default=-1)
    for record, (line, text, blank) in enumerate(_record_spans(path)):
        if record > last_record and rowid > last_row:
            break  # everything wanted is found
        if record in records:
            at_record[record] = (line, text)
        elif not blank:
            if rowid in rows:
                at_row[rowid] = (line, text)
            rowid += 1
    return at_record, at_row


def _record_spans(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(first line number, raw text, is blank) of each data record, the way a CSV reader splits them."""
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as f:
        lines = _LineRecorder(f)
        reader = csv.reader(lines)  # fields up to CSV_FIELD_LIMIT, set at import
        next(reader, None)  # header
        lines.take()
        start = 2
        for fields in reader:
            yield start, _cut(lines.take().rstrip("\r\n")), not fields
            start = reader.line_num + 1


def _cut(text: str) -> str:
    if len(text) <= MAX_RAW_CHARS:
        return text
    return f"{text[:MAX_RAW_CHARS]}… (cut: the record is {len(text)} characters)"


class _LineRecorder:
    """An iterator over a file's lines that remembers the lines handed out since the last take()."""

    def __init__(self, f: io.TextIOBase) -> None:
        self._f = f
        self._taken: list[str] = []

    def __iter__(self) -> _LineRecorder:
        return self

    def __next__(self) -> str:
        line = self._f.readline()
        if not line:
            raise StopIteration
        self._taken.append(line)
        return line

    def take(self) -> str:
        text, self._taken = "".join(self._taken), []
        return text


def _write_rejects(con: duckdb.DuckDBPyConnection, rejects: list[Reject], rejects_dir: Path) -> None:
    import pyarrow as pa

    rows = pa.table(
        {
            "line": pa.array([r.line for r in rejects], pa.int64()),
            "column": pa.array([r.column for r in rejects], pa.string()),
            "reason": pa.array([r.reason for r in rejects], pa.string()),
            "raw": pa.array([r.raw for r in rejects], pa.string()),
        }
    )
    con.register("rejects_arrow", rows)
    try:  # a diagnostic of the drop, rewritten by each run that stages it
        out = lakefs.fresh(rejects_dir / "rejects.parquet")
        con.execute(f"COPY rejects_arrow TO {literal(str(out))} (FORMAT parquet)")
    finally:
        con.unregister("rejects_arrow")


def _rejects_message(
    shown: str, file_name: str, rejects: list[Reject], rows: int, total: int, rejects_dir: Path, max_ratio: float
) -> str:
    listed = "\n".join(
        f"  {file_name}, line {r.line}{f', column {r.column}' if r.column else ''}: {r.reason}\n"
        f"      raw: {r.raw[:200]!r}"
        for r in rejects[:MAX_LISTED_REJECTS]
    )
    more = f"\n  … and {len(rejects) - MAX_LISTED_REJECTS} more" if len(rejects) > MAX_LISTED_REJECTS else ""
    allowed = "any reject fails the month" if max_ratio == 0 else f"at most {100 * max_ratio:g}% may be rejected"
    return (
        f"{shown}: {rows} of {total} rows rejected ({allowed}):\n{listed}{more}\n"
        f"All rejects: {rejects_dir / 'rejects.parquet'}. Fix the export and run the month again "
        f"(or raise [pipeline] max_reject_ratio in luigi.cfg to accept a share of bad rows)."
    )
