"""The ``streamflow`` console script (also ``python -m pipeline``): a thin layer over the package.

    streamflow status [--json]           which months are in, and whether the lake and PostgreSQL agree
    streamflow sql "SELECT …" [--csv|--json]   one query over the lake's views
    streamflow shell                     an interactive DuckDB session over the same views
    streamflow stop-embedded             stop the embedded PostgreSQL of the lake
    streamflow unpublish --as-of D [--yes]   take back the latest published month (lake and PostgreSQL)
    streamflow feast-repo DIR            write a Feast feature repository over the snapshot tables
    streamflow report [--as-of D]        the month report: <lake>/reports/as_of=D/index.html and the overview

Months are run with Luigi (``luigi --module pipeline Month --as-of …``), not from here.
A :class:`~pipeline.errors.PipelineError` is printed as one line ``error: …`` and exits with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import duckdb

from pipeline import lakestore
from pipeline.config import Settings, load_settings
from pipeline.errors import PipelineError
from pipeline.types import is_number_type

EXIT_ERROR = 2  # a PipelineError: bad configuration, lake state, arguments
EXIT_DISAGREE = 3  # status: the lake and PostgreSQL disagree on some month
EXIT_POSTGRES_DOWN = 4  # status: PostgreSQL could not be asked (the lake side is still shown)
EXIT_SQL_FAILED = 1  # sql / shell: a statement failed


# --- formatting ---------------------------------------------------------------------------------


def cell(value: object) -> str:
    """A value as people read it: NULL, true/false, decimals without the lake's padding zeros."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def plain_decimal(value: Decimal) -> str:
    """1.5000000000 -> 1.5, 100.0000 -> 100, exactly (never through a float)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def aligned(header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] | None = None) -> str:
    """Rows as an aligned text table with a header rule; ``right`` marks right-aligned (numeric) columns."""
    texts = [[cell(v) if not isinstance(v, str) else v for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(header)]
    right = right or [False] * len(header)

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in texts)])


def _json_value(value: object) -> str:
    """JSON text of one value; decimals stay exact numbers (json.dumps would need a float)."""
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, datetime | date):
        return json.dumps(value.isoformat())
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_json_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_json_value(v) for v in value) + "]"
    return json.dumps(value, default=str)


def write_result(out: TextIO, header: list[str], types: Sequence[object], rows: list[tuple], fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(["" if v is None else cell(v) for v in row] for row in rows)
    elif fmt == "json":
        objects = [
            "{" + ", ".join(f"{json.dumps(h)}: {_json_value(v)}" for h, v in zip(header, row, strict=True)) + "}"
            for row in rows
        ]
        out.write("[" + ",\n ".join(objects) + "]\n")
    else:
        out.write(aligned(header, rows, [is_number_type(t) for t in types]) + "\n")
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def run_sql(con: duckdb.DuckDBPyConnection, query: str, out: TextIO, fmt: str = "table") -> None:
    """Run one or more statements; print the last one's result (or OK when it returns none)."""
    result = con.execute(query)
    if result.description is None:
        out.write("OK\n")
        return
    header = [d[0] for d in result.description]
    types = [d[1] for d in result.description]
    write_result(out, header, types, result.fetchall(), fmt)


# --- commands -----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    if getattr(args, "lake", None):
        settings = settings.with_(lake_root=lakestore.parse_root(args.lake))
    return settings


def _writing(args: argparse.Namespace) -> Settings:
    """The settings of a command that writes the lake: an s3:// lake is refused before anything is read."""
    settings = _settings(args)
    settings.lake_path  # noqa: B018 - refuses an s3:// lake (pipeline.lakestore.refusal)
    return settings


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline import status

    report = status.status(_settings(args))
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render_status(report) + "\n")
    if report.postgres_error:
        sys.stderr.write(f"error: {report.postgres_error}\n")
        return EXIT_POSTGRES_DOWN
    return 0 if report.agree else EXIT_DISAGREE


def render_status(report) -> str:  # noqa: ANN001 - pipeline.status.StatusReport
    lines = [f"lake      {report.lake_root}", f"postgres  {report.postgres} schema {report.pg_schema}", ""]
    if not report.months:
        lines.append("no month has run yet (luigi --module pipeline Month --as-of YYYY-MM-DD)")
    else:
        rows = []
        for m in report.months:
            c = m.users_changes
            changes = f"+{c.get('inserted', 0)} ~{c.get('updated', 0)} -{c.get('deleted', 0)}" if c else "-"
            checks = "-" if m.checks_failed is None else f"{m.checks_failed}/{m.checks_warned}"
            if m.agrees is None:
                pg = "unknown"
            elif m.agrees:
                pg = "agrees" if m.postgres_run_id else "agrees (not in pipeline_runs)"
            else:
                pg = "DISAGREES"
            rows.append(
                [
                    m.as_of.isoformat(),
                    m.status,
                    "-" if m.users is None else str(m.users),
                    changes,
                    checks,
                    str(m.failed_attempts),
                    (m.published_at or "-")[:19].replace("T", " "),
                    pg,
                ]
            )
        header = [
            "as_of",
            "status",
            "users",
            "users +ins ~upd -del",
            "checks failed/warned",
            "failed attempts",
            "published at (UTC)",
            "postgres",
        ]
        lines.append(aligned(header, rows, [False, False, True, False, True, True, False, False]))
        notes = [
            f"  {m.as_of}  {c['outcome']:<4}  {c['name']} ({c['table']}: {c['value']})"
            for m in report.months
            for c in m.not_passed
        ]
        if notes:
            lines += ["", "checks that failed or warned:", *notes]
        changed = [f"  {m.as_of}  contract changed: {m.contract_change}" for m in report.months if m.contract_change]
        if changed:
            lines += ["", "sql/schema.sql changed since the previous published month:", *changed]
    lines.append("")
    if report.postgres_error:
        lines.append("PostgreSQL could not be asked: the lake side only (see the error below).")
    elif report.agree:
        published = sum(m.status == "published" for m in report.months)
        lines.append(f"lake and PostgreSQL agree ({published} published month{'s' if published != 1 else ''}).")
    else:
        lines.append("lake and PostgreSQL DISAGREE:")
        lines += [f"  {m.as_of}: {m.disagreement}" for m in report.disagreements]
    return "\n".join(lines)


def cmd_sql(args: argparse.Namespace) -> int:
    from pipeline import lake

    con = lake.connect(settings=_settings(args))
    try:
        run_sql(con, args.query, sys.stdout, args.format)
    except duckdb.Error as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_SQL_FAILED
    finally:
        con.close()
    return 0


SHELL_HELP = """Enter SQL statements ending with ';'.
Views: <table>, <table>_snapshots, <table>_history, runs.
  .tables          list the views
  .mode table|csv|json   how results are printed
  .help            this text
  .quit            leave (or Ctrl-D)"""


def shell(con: duckdb.DuckDBPyConnection, stdin: TextIO, out: TextIO, interactive: bool, fmt: str = "table") -> int:
    """A minimal SQL loop: read lines until one ends with ';', run them, print the result. Returns the
    number of statements that failed (each failure is printed as ``error: …`` and the loop goes on)."""
    failures = 0
    buffer: list[str] = []

    def prompt(text: str) -> str | None:
        if interactive:
            try:
                return input(text)
            except EOFError:
                out.write("\n")
                return None
        line = stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def execute(statement: str) -> None:
        nonlocal failures
        try:
            run_sql(con, statement, out, fmt)
        except duckdb.Error as e:
            failures += 1
            out.flush()
            sys.stderr.write(f"error: {e}\n")

    while True:
        try:
            line = prompt("streamflow> " if not buffer else "       ...> ")
        except KeyboardInterrupt:  # Ctrl-C drops the statement being typed, as psql does
            if not interactive:
                raise
            out.write("\n")
            buffer = []
            continue
        if line is None:
            break
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            command, *rest = stripped.split()
            if command in (".quit", ".exit", ".q"):
                break
            if command == ".help":
                out.write(SHELL_HELP + "\n")
            elif command == ".tables":
                execute("SELECT table_name AS name, table_type AS kind FROM information_schema.tables ORDER BY 1")
            elif command == ".mode" and rest and rest[0] in ("table", "csv", "json"):
                fmt = rest[0]
            else:
                sys.stderr.write(f"error: unknown command {stripped!r}; .help lists the commands\n")
                failures += 1
            continue
        if not stripped and not buffer:
            continue
        buffer.append(line)
        if stripped.endswith(";"):
            execute("\n".join(buffer))
            buffer = []
        out.flush()
    if "".join(buffer).strip():  # a last statement without its ';'
        execute("\n".join(buffer))
    return failures


def cmd_shell(args: argparse.Namespace) -> int:
    from pipeline import lake

    settings = _settings(args)
    con = lake.connect(settings=settings)
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        months = con.execute("SELECT as_of FROM runs WHERE status = 'published' ORDER BY as_of").fetchall()
        shown = ", ".join(str(m[0]) for m in months) or "none yet"
        where = settings.lake_root if isinstance(settings.lake_root, str) else settings.lake_root.resolve()
        print(f"streamflow shell over {where} (published months: {shown})")
        print(SHELL_HELP)
    try:
        failures = shell(con, sys.stdin, sys.stdout, interactive)
    finally:
        con.close()
    return EXIT_SQL_FAILED if failures and not interactive else 0


def cmd_stop_embedded(args: argparse.Namespace) -> int:
    from pipeline.embedded import stop_embedded

    settings = _settings(args)
    stopped = stop_embedded(settings.lake_path)
    print("stopped the embedded PostgreSQL" if stopped else f"no embedded PostgreSQL runs for {settings.lake_root}")
    return 0


def _as_of(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD, a day that exists)") from None


def cmd_unpublish(args: argparse.Namespace) -> int:
    from pipeline import unpublish

    settings = _writing(args)
    plan = unpublish.plan_unpublish(settings, args.as_of)
    if not args.yes:
        if not sys.stdin.isatty():
            raise PipelineError(
                f"{plan.describe()}; pass --yes to confirm (stdin is not a terminal); nothing was changed"
            )
        answer = input(f"{plan.describe()}.\nType the month ({plan.as_of}) to confirm: ").strip()
        if answer != plan.as_of.isoformat():
            print("not confirmed: nothing was changed")
            return EXIT_ERROR
    unpublish.unpublish(settings, plan)
    back = f"live tables back at {plan.previous}" if plan.previous else "live tables empty"
    print(f"unpublished {plan.as_of} (run {plan.run_id}); {back}")
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from pipeline import vacuum

    settings = _writing(args)
    removals, busy = vacuum.vacuum(settings, timedelta(days=args.retain_days), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for r in removals:
        print(f"{r.as_of}: {verb} {len(r.paths)} file(s), {r.freed / 1e6:.1f} MB: {r.why}")
    for as_of in busy:
        print(f"{as_of}: skipped, a run of the month holds its lock (vacuum again later)")
    files, freed = sum(len(r.paths) for r in removals), sum(r.freed for r in removals)
    print(f"{verb} {files} file(s), {freed / 1e6:.1f} MB" if removals else "nothing to remove")
    return 0


def cmd_feast_repo(args: argparse.Namespace) -> int:
    from pipeline import feast_repo

    written = feast_repo.write_repo(Path(args.directory))
    for path in written:
        print(f"wrote {path}")
    print(f"next: cd {args.directory} && feast apply   (README, section Feast)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import write_reports

    settings = _writing(args)
    for page in write_reports(settings, args.as_of):
        print(page)
    return 0


# --- the parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamflow",
        description="Operate the streamflow lake: month status, ad-hoc SQL over the published months. "
        "Settings come from luigi.cfg and the environment (LAKE_ROOT, POSTGRES_DSN or POSTGRES_*, "
        "POSTGRES_SCHEMA). Months are run with: luigi --module pipeline Month --as-of YYYY-MM-DD",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description)
        sub.add_argument(
            "--lake", metavar="DIR", help="the lake root, or s3://bucket/prefix (default: LAKE_ROOT or luigi.cfg)"
        )
        return sub

    status = add(
        "status",
        "one row per month, and whether the lake and PostgreSQL agree",
        "One row per month (as_of, status, users, changes, failed/warned checks, published at) and whether "
        "the lake's run record and PostgreSQL's pipeline_runs agree. Exit codes: 0 agree, "
        f"{EXIT_DISAGREE} disagree, {EXIT_POSTGRES_DOWN} PostgreSQL unavailable, {EXIT_ERROR} other errors.",
    )
    status.add_argument("--json", action="store_true", help="print the report as JSON (for machines)")
    status.set_defaults(func=cmd_status)

    query = add(
        "sql",
        "run SQL over the lake's views and print the result",
        "Run SQL over the published months with DuckDB. Views: <table> (latest published month), "
        "<table>_snapshots (every published month, with as_of), <table>_history (one row per key and "
        "version: valid_from, valid_to), runs (the run records).",
    )
    query.add_argument("query", help='the SQL, e.g. "SELECT count(*) FROM users"')
    fmt = query.add_mutually_exclusive_group()
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv", help="print CSV with a header")
    fmt.add_argument("--json", dest="format", action="store_const", const="json", help="print a JSON array of rows")
    query.set_defaults(func=cmd_sql, format="table")

    shell_cmd = add(
        "shell",
        "an interactive DuckDB session over the lake's views",
        "Read SQL statements ending with ';' and print each result; the views of 'streamflow sql'. "
        "Reads stdin when it is piped: echo 'SELECT count(*) FROM users;' | streamflow shell",
    )
    shell_cmd.set_defaults(func=cmd_shell)

    stop = add(
        "stop-embedded",
        "stop the lake's embedded PostgreSQL",
        "Stop the embedded PostgreSQL server the pipeline started when no server was configured.",
    )
    stop.set_defaults(func=cmd_stop_embedded)

    take_back = add(
        "unpublish",
        "take back the latest published month",
        "Remove the latest published month from the lake (its run records and objects) and from PostgreSQL "
        "(its snapshot partitions and pipeline_runs row; the live tables go back to the previous month) in one "
        "PostgreSQL transaction. Any other month is refused: later months are built on it (correct it with "
        "--replace instead). Asks for confirmation unless --yes.",
    )
    take_back.add_argument("--as-of", required=True, type=_as_of, metavar="YYYY-MM-DD", help="the month")
    take_back.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    take_back.set_defaults(func=cmd_unpublish)
    vacuum = add(
        "vacuum",
        "remove the lake's objects no reader needs any more",
        "Remove the data objects of runs that never published (killed before their run record), and those of "
        "runs a correction replaced more than --retain-days ago (a DuckDB connection opened before the "
        "correction reads them until then), with their run records. Each month under its lock: a month being "
        "run is skipped. Published months are never touched.",
    )
    vacuum.add_argument(
        "--retain-days", type=float, default=7.0, metavar="N", help="keep replaced runs' objects N days (default 7)"
    )
    vacuum.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    vacuum.set_defaults(func=cmd_vacuum)

    feast = commands.add_parser(
        "feast-repo",
        help="write a Feast feature repository over the snapshot tables",
        description="Write feature_store.yaml (Feast's PostgreSQL offline store, connected with POSTGRES_DSN or "
        "POSTGRES_*; the password is read from $POSTGRES_PASSWORD when feast runs, never written) and "
        "streamflow_features.py (entity user, one feature view per table over <table>_snapshots at as_of_ts, "
        "feature service training_set), generated from sql/schema.sql. Then: cd DIR && feast apply",
    )
    feast.add_argument(
        "directory", metavar="DIR", help="the repository folder (made if missing; its two files rewritten)"
    )
    feast.set_defaults(func=cmd_feast_repo)

    report = add(
        "report",
        "write the month report (HTML) of every month, or of one",
        "Write <lake>/reports/as_of=D/index.html for month D (default: every month the lake has a record of, "
        "published or refused) and the overview <lake>/reports/index.html: the verdict, the checks, the drift of "
        "every feature vs the previous published month, the tables' counts, churn rate and users over the months, "
        "the run's timings. Self-contained pages: they open offline. Prints the paths written.",
    )
    report.add_argument("--as-of", type=_as_of, metavar="YYYY-MM-DD", help="only this month's page (and the overview)")
    report.set_defaults(func=cmd_report, as_of=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PipelineError as e:
        sys.stderr.write(f"error: {' '.join(str(e).split())}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
