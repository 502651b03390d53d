"""``python -m bench``: the month command against the baseline, the peer and the floor, at each size of a sweep.

    python -m bench                              # --sizes 7000,100000,1000000, 3 months each + a no-change month
    python -m bench --sizes 1000,3000 --months 2
    python -m bench --users 20000                # one size: short for --sizes 20000

Each size runs on fresh state: its own generated drops, its own PostgreSQL database (:mod:`bench.pg`),
fresh lakes. Every timed run is a separate process (see :mod:`bench.measure`). Order per month:

- pipeline: the whole command a user runs, ``luigi --module pipeline Month --as-of D --source DIR``
  (interpreter, imports and Luigi's scheduling included); the stage timings come from the run record
  it publishes (``<lake>/runs/as_of=D/manifest.json``);
- rerun: the same command again on the published month (a no-op);
- baseline, peer, floor (:mod:`bench.run_baseline`, :mod:`bench.run_peer`, :mod:`bench.run_floor`).

A VACUUM (ANALYZE) and a CHECKPOINT run before each timed run, so no run pays for the previous ones'
autovacuum or dirty buffers. After the generated months, the last month's files are ingested again as
the following month (``--nochange``, on by default): nothing changed, so the live-table sync should cost
next to nothing.

Luigi runs in a folder of the bench's whose luigi.cfg is the repository's without its ``[months]``
section (see :func:`luigi_folder`). ``--trace-sql`` adds, after the timed runs, one sequence of
``bench.run_pipeline`` (``run_month`` in-process, every SQL statement timed): a profile, not a timed run.
"""

from __future__ import annotations

import argparse
import configparser
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

from bench import contract, measure, pg, report
from bench import drops as drops_mod

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
SKIPPABLE = ("baseline", "peer", "floor", "rerun")
DEFAULT_SIZES = (7_000, 100_000, 1_000_000)
# the manifest's timings that follow one another; the rest of a run's wall time is interpreter, imports,
# Luigi's scheduling and the lake's bookkeeping (the other keys overlap these: checks_after_staging, …)
SERIAL_TIMINGS = ("stage", "merge", "load_staging", "checks", "sync")


class BenchMonth(NamedTuple):
    as_of: str
    label: str  # first, following, nochange
    source: Path


def _sizes(text: str) -> list[int]:
    """``7000,100000,1_000_000`` -> [7000, 100000, 1000000]."""
    try:
        sizes = [int(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers of users, e.g. 7000,100000") from None
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more different numbers of users, each >= 1")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help=f"users in month 0 of each size, run one after the other (default {','.join(map(str, DEFAULT_SIZES))})",
    )
    p.add_argument("--users", type=int, default=None, help="one size: short for --sizes N")
    p.add_argument("--months", type=int, default=3, help="generated months (default 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="work folder (default bench/out/)")
    p.add_argument("--json", type=Path, default=None, help="results file (default <out>/results-<size>-<size>….json)")
    p.add_argument(
        "--dsn",
        default=os.environ.get("POSTGRES_DSN") or pg.DEFAULT_SERVER_DSN,
        help="server to create each size's database on (default $POSTGRES_DSN or %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole month sequence N times on fresh state and report medians (default 1)",
    )
    p.add_argument(
        "--short-repeat",
        type=int,
        default=3,
        help="repeat the idempotent short runs (rerun, floor) N times per month (default 3)",
    )
    p.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(SKIPPABLE)}")
    p.add_argument(
        "--nochange",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also ingest the last month's files again as a following month (default on)",
    )
    p.add_argument(
        "--trace-sql",
        action="store_true",
        help="after the timed runs, profile one extra in-process pipeline sequence with every SQL statement "
        "timed (not a timed run)",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="PCT",
        help="on a shared machine: before each timed run wait (up to --wait-idle-max s) until the "
        "machine's CPU use over one second is below PCT%% (default 0: do not wait)",
    )
    p.add_argument("--wait-idle-max", type=float, default=180)
    p.add_argument("--keep", action="store_true", help="keep the databases, lakes and dlt folders")
    args = p.parse_args(argv)
    if args.users is not None and args.sizes is not None:
        p.error("--users N is short for --sizes N: give one of them")
    if args.users is not None and args.users < 1:
        p.error("--users must be >= 1")
    args.sizes = [args.users] if args.users is not None else args.sizes or list(DEFAULT_SIZES)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - set(SKIPPABLE)
    if unknown:
        p.error(f"--skip: unknown part(s) {sorted(unknown)}; choose from {', '.join(SKIPPABLE)}")
    if args.months < 1 or args.repeat < 1 or args.short_repeat < 1:
        p.error("--months, --repeat and --short-repeat must be >= 1")
    return args


def machine_info(server: dict) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    versions = {}
    for package in (
        "duckdb",
        "pyarrow",
        "psycopg",
        "soda-core",
        "luigi",
        "pandas",
        "sqlalchemy",
        "psycopg2-binary",
        "dlt",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": server,
        "packages": versions,
    }


def luigi_folder(folder: Path) -> Path:
    """A folder to run Luigi in: its luigi.cfg is the repository's ([core], [retcode], [pipeline]) without
    ``[months]``. Luigi reads luigi.cfg from the current directory and adds LUIGI_CONFIG_PATH on top, so
    the repository root would bring the seed months along, and Month(D) builds on the latest earlier
    as_of configured there or published in the lake: a configured month the bench did not publish would
    be ingested first, inside the timed run."""
    config = configparser.RawConfigParser()
    config.optionxform = str  # keys as written
    config.read(REPO / "luigi.cfg")
    config.remove_section("months")
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "luigi.cfg").open("w") as f:
        f.write(f"# written by the bench: {REPO / 'luigi.cfg'} without its [months] section\n")
        config.write(f)
    return folder


class Bench:
    """The timed runs of one size, on its database; lakes and dlt folders under ``work``."""

    def __init__(self, args: argparse.Namespace, dsn: str, work: Path, logs: Path) -> None:
        self.args = args
        self.dsn = dsn
        self.work = work
        self.logs = logs
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]
            ),
        }
        self.python = sys.executable
        luigi_bin = Path(sys.executable).parent / "luigi"
        self.luigi = str(luigi_bin) if luigi_bin.exists() else (shutil.which("luigi") or "luigi")
        self.luigi_cwd = luigi_folder(work / "luigi")
        self.failures: list[str] = []
        self.tables = contract.dump(work / "tables.json")

    def wait_idle(self) -> float:
        """Seconds waited until the machine's CPU use dropped below --wait-idle percent."""
        if not self.args.wait_idle:
            return 0.0
        import psutil

        started = time.perf_counter()
        while time.perf_counter() - started < self.args.wait_idle_max:
            if psutil.cpu_percent(interval=1.0) < self.args.wait_idle:
                break
        return round(time.perf_counter() - started, 1)

    def timed(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> dict:
        settled = pg.settle(self.dsn)
        waited = self.wait_idle()
        m = measure.run(cmd, env=env or self.env, cwd=cwd, log_path=self.logs / f"{name}.log")
        d = m.to_dict()
        d["waited_idle_s"] = waited
        d["settle_s"] = settled
        status = "ok" if m.returncode == 0 else f"FAILED rc={m.returncode} (see {m.log})"
        log.info(
            "%-34s %8.2fs  %7.0f MB  cpu %6.1fs  load %4.1f  busy %3.0f%%  %s",
            name,
            m.wall_s,
            m.peak_rss_mb,
            m.cpu_s,
            m.load_before,
            100 * m.machine_busy,
            status,
        )
        if m.returncode != 0:
            self.failures.append(f"{name}: exit {m.returncode}, log {m.log}")
        return d

    # --- the month command, as a user runs it -------------------------------------------------------

    def month_command(self, as_of: str, source: Path) -> list[str]:
        return [self.luigi, "--module", "pipeline", "Month", "--as-of", as_of, "--source", str(source)]

    def luigi_env(self, rep: int) -> dict:
        """The environment of the month command: the sequence's lake and schema on this size's database;
        an inherited LUIGI_CONFIG_PATH left out (see :func:`luigi_folder`)."""
        env = {k: v for k, v in self.env.items() if k != "LUIGI_CONFIG_PATH"}
        return {
            **env,
            "LAKE_ROOT": str(self.lake(rep)),
            "POSTGRES_DSN": self.dsn,
            "POSTGRES_SCHEMA": f"pipeline_r{rep}",
        }

    def run_month_command(self, name: str, rep: int, as_of: str, source: Path) -> dict:
        return self.timed(name, self.month_command(as_of, source), self.luigi_env(rep), cwd=self.luigi_cwd)

    # --- the five runs ---------------------------------------------------------------------------

    def pipeline(self, rep: int, as_of: str, source: Path) -> tuple[dict, dict | None]:
        """The month command on a month not yet published, and the run record it published (None when
        it did not publish one: then the run counts as failed even if Luigi exited 0)."""
        before = self.published_record(rep, as_of)
        name = f"r{rep}-{as_of}-pipeline"
        d = self.run_month_command(name, rep, as_of, source)
        record = self.published_record(rep, as_of)
        published = record is not None and (before is None or record["run_id"] != before["run_id"])
        if d["returncode"] == 0 and not published:
            self.failures.append(f"{name}: exit 0 but no new published run record, log {d['log']}")
            d["returncode"] = 98
        return d, record if d["returncode"] == 0 else None

    def rerun(self, rep: int, as_of: str, source: Path, k: int) -> dict:
        before = self.published_record(rep, as_of)
        d = self.run_month_command(f"r{rep}-{as_of}-rerun{k}", rep, as_of, source)
        text = Path(d["log"]).read_text(errors="replace")
        after = self.published_record(rep, as_of)
        d["noop"] = (
            d["returncode"] == 0
            and before is not None
            and after is not None
            and before["run_id"] == after["run_id"]
            and "complete ones were encountered" in text
            and "ran successfully" not in text
        )
        if not d["noop"]:
            self.failures.append(f"rerun of {as_of} was not a no-op (log {d['log']})")
            d["returncode"] = d["returncode"] or 99
        return d

    def baseline(self, rep: int, as_of: str, source: Path) -> dict:
        return self.timed(
            f"r{rep}-{as_of}-baseline",
            [
                self.python,
                "-m",
                "bench.run_baseline",
                "--as-of",
                as_of,
                "--source",
                str(source),
                "--dsn",
                self.dsn,
                "--schema",
                f"baseline_r{rep}",
                "--tables",
                str(self.tables),
            ],
        )

    def peer(self, rep: int, as_of: str, source: Path) -> dict:
        return self.timed(
            f"r{rep}-{as_of}-peer",
            [
                self.python,
                "-m",
                "bench.run_peer",
                "--as-of",
                as_of,
                "--source",
                str(source),
                "--dsn",
                self.dsn,
                "--dataset",
                f"peer_r{rep}",
                "--pipelines-dir",
                str(self.work / f"dlt-r{rep}"),
                "--tables",
                str(self.tables),
            ],
        )

    def floor(self, rep: int, as_of: str, source: Path, k: int) -> dict:
        return self.timed(
            f"r{rep}-{as_of}-floor{k}",
            [
                self.python,
                "-m",
                "bench.run_floor",
                "--source",
                str(source),
                "--dsn",
                self.dsn,
                "--schema",
                "floor",
                "--parquet-dir",
                str(self.work / "floor-parquet"),
                "--tables",
                str(self.tables),
            ],
        )

    # --- paths -----------------------------------------------------------------------------------

    def lake(self, rep: int) -> Path:
        return self.work / f"lake-r{rep}"

    def published_record(self, rep: int, as_of: str) -> dict | None:
        """The month's published run record in the sequence's lake, None while there is none."""
        from datetime import date

        from pipeline.runs import RunStore

        record = RunStore(self.lake(rep)).get(date.fromisoformat(as_of))
        return record.to_json() if record else None

    # --- a whole sequence of months ----------------------------------------------------------------

    def sequence(self, rep: int, months: list[BenchMonth], samples: dict) -> None:
        skip = self.args.skip
        if "baseline" not in skip:
            setup = self.timed(
                f"r{rep}-baseline-setup",
                [
                    self.python,
                    "-m",
                    "bench.run_baseline",
                    "--setup",
                    "--dsn",
                    self.dsn,
                    "--schema",
                    f"baseline_r{rep}",
                    "--tables",
                    str(self.tables),
                ],
            )
            if setup["returncode"] != 0:
                skip = skip | {"baseline"}
        broken: set[str] = set()
        for index, (as_of, label, source) in enumerate(months):
            s = samples.setdefault(index, {t: [] for t in report.TOOLS})
            s.setdefault("extra", [])
            p, record = self.pipeline(rep, as_of, source)
            s["pipeline"].append(p)
            if record is None:
                log.error("pipeline failed on %s: the rest of sequence %d cannot run", as_of, rep)
                return
            s["extra"].append(pipeline_extra(rep, p, record))
            if "rerun" not in skip:
                for k in range(self.args.short_repeat):
                    s["rerun"].append(self.rerun(rep, as_of, source, k))
            for tool in ("baseline", "peer"):
                if tool in skip or tool in broken or label == "nochange":
                    continue
                r = getattr(self, tool)(rep, as_of, source)
                s[tool].append(r)
                if r["returncode"] != 0:
                    broken.add(tool)  # later months build on this one: stop this tool for the sequence
                else:
                    r["inner"] = _last_json_line(Path(r["log"]))
            if "floor" not in skip:
                for k in range(self.args.short_repeat):
                    r = self.floor(rep, as_of, source, k)
                    r["inner"] = _last_json_line(Path(r["log"])) if r["returncode"] == 0 else None
                    s["floor"].append(r)

    def profile_sql(self, months: list[BenchMonth]) -> dict:
        """Not a timed run: one more sequence, on a fresh lake and schema, of ``bench.run_pipeline``
        (``run_month`` in-process, which it needs to time every SQL statement psycopg sends); per month
        the seconds by category (:func:`summarize_sql_trace`)."""
        rep = self.args.repeat  # after the timed sequences' lakes and schemas
        summary: dict = {}
        for as_of, _, source in months:
            trace = self.logs / f"sql-trace-{as_of}.jsonl"
            cmd = [
                self.python,
                "-m",
                "bench.run_pipeline",
                "--as-of",
                as_of,
                "--source",
                str(source),
                "--lake",
                str(self.lake(rep)),
                "--dsn",
                self.dsn,
                "--schema",
                f"pipeline_r{rep}",
                "--trace-sql",
                str(trace),
            ]
            if self.timed(f"r{rep}-{as_of}-sql-profile-not-timed", cmd)["returncode"] != 0:
                break
            summary[as_of] = summarize_sql_trace(trace) if trace.exists() else None
        return summary


def pipeline_extra(rep: int, run: dict, record: dict) -> dict:
    """What the report shows of a pipeline run besides wall time and memory: the run record's stage
    timings and changed rows, the per-table steps of its log, and the rest of the wall time."""
    timings = record.get("timings", {})
    return {
        "rep": rep,
        "run_id": record["run_id"],
        "timings": timings,
        "changes": record.get("tables", {}),
        "steps": report.step_timings(Path(run["log"]).read_text(errors="replace")),
        "other_s": round(run["wall_s"] - sum(v for k, v in timings.items() if k in SERIAL_TIMINGS), 3),
    }


def _last_json_line(path: Path) -> dict | None:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _median_or_none(values: list) -> float | None:
    values = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(values), 3) if values else None


def _median_dict(dicts: list[dict]) -> dict:
    keys = [k for k in dicts[0] if all(isinstance(d.get(k), int | float) for d in dicts)] if dicts else []
    return {k: round(statistics.median(d[k] for d in dicts), 3) for k in keys}


def _median_nested(dicts: list[dict]) -> dict:
    if not dicts:
        return {}
    return {k: _median_dict([d[k] for d in dicts if k in d]) for k in dicts[0]}


def _sql_category(who: str, text: str) -> str:
    """What a traced statement is for, in the words of the profile."""
    upper = text.upper()
    if who == "soda":
        if "INFORMATION_SCHEMA" in upper:
            return "soda: schema check (catalog)"
        if " LEFT JOIN " in upper:
            return "soda: reference check (anti-join)"
        if "GROUP BY" in upper:
            return "soda: duplicate check (GROUP BY key)"
        return "soda: one aggregate scan per table (row count, missing, invalid, failed rows)"
    if who == "pipeline-copy":
        if "__STAGING_" in upper:
            return "staging: COPY into PostgreSQL"
        if "__ROWS" in upper or "__DELETED" in upper:
            return "publish: live COPY into the temp tables an upsert reads (tables with some rows changed)"
        return "publish: live COPY into an empty live table (the first month)"
    verb = " ".join(upper.split()[:2])
    if verb.startswith("INSERT INTO"):
        if "_SNAPSHOTS" in upper:
            return "publish: snapshot INSERT"
        if "STAGING" in upper.split(" FROM ")[0] or "DROP_VOLUME" in upper:
            return "staging: other"
        return "publish: live INSERT/UPSERT"
    if verb.startswith("ALTER TABLE"):
        if "ATTACH PARTITION" in upper:
            return "publish: ATTACH PARTITION"
        if "ADD PRIMARY KEY" in upper and "_SNAPSHOTS" in upper:
            return "staging: snapshot partition primary key build"
        if "ADD" in upper and ("PRIMARY KEY" in upper or "FOREIGN KEY" in upper):
            return "publish: live key / reference rebuild (validated)"
        return "publish: other DDL"
    if verb.startswith("DELETE"):
        return "publish: live DELETE"
    if verb.startswith("ANALYZE"):
        return "staging: ANALYZE" if "__STAGING_" in upper else "publish: ANALYZE temp tables"
    if verb.startswith("TRUNCATE"):
        return "publish: other DDL"
    if verb.startswith("DROP SCHEMA") or verb.startswith("DROP TABLE"):
        return "drop staging"
    if verb.startswith("CREATE"):
        return "DDL: CREATE tables"
    return "other statements"


def summarize_sql_trace(path: Path, top: int = 12) -> dict:
    """Seconds by category (see _sql_category) and the slowest statements of one traced pipeline run."""
    by_category: dict[str, float] = {}
    by_statement: list[tuple[float, str, str]] = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        category = _sql_category(r["who"], r["sql"])
        by_category[category] = by_category.get(category, 0.0) + r["s"]
        by_statement.append((r["s"], category, r["sql"][:200]))
    by_statement.sort(reverse=True)
    return {
        "seconds_by_category": {k: round(v, 2) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
        "statements": len(by_statement),
        "slowest": [{"seconds": round(t, 3), "category": c, "sql": q} for t, c, q in by_statement[:top]],
    }


# --- one size of the sweep --------------------------------------------------------------------------


def bench_months(args: argparse.Namespace, users: int, out: Path) -> tuple[list[BenchMonth], dict]:
    """The size's months (its drops, generated unless already there) and what the generator reported."""
    drops, gen_info = drops_mod.ensure_drops(out, users, args.months, args.seed)
    months = [BenchMonth(d.isoformat(), "first" if i == 0 else "following", f) for i, (d, f) in enumerate(drops)]
    if args.nochange:
        d, f = drops_mod.nochange_drop(drops[-1])
        months.append(BenchMonth(d.isoformat(), "nochange", f))
    return months, gen_info


def month_results(index: int, month: BenchMonth, s: dict) -> dict:
    """One month of a size: medians of each tool's runs, the ratios, the pipeline's stages, every sample."""
    rows = drops_mod.table_rows(month.source)
    runs = {t: report.median_run(s[t]) for t in report.TOOLS if s[t]}
    extras = s["extra"]
    return {
        "index": index,
        "as_of": month.as_of,
        "label": month.label,
        "source": str(month.source),
        "rows": rows,
        "total_rows": sum(rows.values()),
        "runs": runs,
        "ratios": report.ratios(runs),
        "pipeline_timings": _median_dict([e["timings"] for e in extras]),
        "pipeline_other_s": _median_or_none([e["other_s"] for e in extras]),
        "pipeline_steps": _median_nested([e["steps"] for e in extras]),
        "pipeline_changes": extras[0]["changes"] if extras else {},
        "baseline_inner": _median_nested([r["inner"]["timings"] for r in s["baseline"] if r.get("inner")]),
        "peer_inner": _median_nested([r["inner"]["timings"] for r in s["peer"] if r.get("inner")]),
        "floor_inner": _median_dict([r["inner"]["timings"] for r in s["floor"] if r.get("inner")]),
        "samples": {t: s[t] for t in report.TOOLS if s[t]},
    }


def run_size(args: argparse.Namespace, users: int, out: Path, stamp: str) -> dict:
    """Every sequence of one size on fresh state (its drops, its database, fresh lakes); its results."""
    months, gen_info = bench_months(args, users, out)
    work = out / f"work-{users}-{stamp}"
    logs = out / f"logs-{users}-{stamp}"
    work.mkdir(parents=True)
    db_name, dsn = pg.create_database(args.dsn, str(users))
    log.info("=== %s users: database %s on %s; work folder %s; logs %s", f"{users:,}", db_name, args.dsn, work, logs)
    bench = Bench(args, dsn, work, logs)
    samples: dict = {}
    sql_trace = None
    try:
        for rep in range(args.repeat):
            log.info("--- %s users: sequence %d of %d ---", f"{users:,}", rep + 1, args.repeat)
            bench.sequence(rep, months, samples)
        if args.trace_sql:
            sql_trace = bench.profile_sql(months)
    finally:
        if not args.keep:
            pg.drop_database(args.dsn, db_name)
            shutil.rmtree(work, ignore_errors=True)
    return {
        "users": users,
        "months_planned": len(months),
        "generated_months": args.months,
        "drops": gen_info,
        "logs": str(logs),
        "months": [month_results(i, m, samples[i]) for i, m in enumerate(months) if i in samples],
        "sql_trace": sql_trace,
        "failures": bench.failures,
    }


# --- the sweep --------------------------------------------------------------------------------------


def print_summary(command: str, info: dict, sizes: list[dict], targets: list[dict], json_path: Path) -> None:
    print()
    print(
        f"{command}   ({info['nproc']} cores, {info['memory_gib']} GiB, "
        f"{info['postgresql']['version'].split(' on ')[0]})"
    )
    for size in sizes:
        print()
        print(report.format_size(size))
    print()
    print(report.format_targets(targets))
    for size in sizes:
        for as_of, summary in (size["sql_trace"] or {}).items():
            if summary:
                print(
                    f"\nSQL trace of {as_of}, {size['users']:,} users (profiling run, not timed; seconds by category):"
                )
                for category, seconds in summary["seconds_by_category"].items():
                    print(f"  {seconds:8.2f}  {category}")
    print(f"\nresults: {json_path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    started = datetime.now(UTC)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    json_path = (args.json or out / f"results-{'-'.join(map(str, args.sizes))}.json").resolve()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    stamp = started.strftime("%Y%m%dT%H%M%S")

    info = machine_info(pg.server_info(args.dsn))
    sizes = [run_size(args, users, out, stamp) for users in args.sizes]
    targets = report.evaluate_targets(sizes)
    failures = [f for size in sizes for f in size["failures"]]
    results = {
        "command": command,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "params": {
            "sizes": args.sizes,
            "months": args.months,
            "seed": args.seed,
            "repeat": args.repeat,
            "short_repeat": args.short_repeat,
            "skip": sorted(args.skip),
            "nochange": args.nochange,
        },
        "machine": info,
        "sizes": sizes,
        "targets": targets,
        "failures": failures,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    print_summary(command, info, sizes, targets, json_path)
    if failures:
        print("\nFAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0
