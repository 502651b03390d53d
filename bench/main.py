"""``python -m bench``: the pipeline against the baseline, the peer and the floor, month by month.

Every timed run is a separate process (see :mod:`bench.measure`). Order per month: pipeline, rerun of
the published month through Luigi (a no-op), baseline, peer, floor; a VACUUM (ANALYZE) and a
CHECKPOINT before each timed run, so no run pays for the previous ones' autovacuum or dirty buffers.
After the generated months, the last month's files are ingested again as the following month
(``--nochange``, on by default): nothing changed, so the live-table sync should cost next to nothing.
"""

from __future__ import annotations

import argparse
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

from bench import contract, measure, pg, report
from bench import drops as drops_mod

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
SKIPPABLE = ("baseline", "peer", "floor", "rerun")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1_000_000, help="users in month 0 (default 1,000,000)")
    p.add_argument("--months", type=int, default=3, help="generated months (default 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="work folder (default bench/out/)")
    p.add_argument("--json", type=Path, default=None, help="results file (default <out>/results-<users>.json)")
    p.add_argument(
        "--dsn",
        default=os.environ.get("POSTGRES_DSN") or pg.DEFAULT_SERVER_DSN,
        help="server to create the run's database on (default $POSTGRES_DSN or %(default)s)",
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
        help="after the timed runs, profile one extra pipeline sequence with every SQL statement timed",
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
    p.add_argument("--keep", action="store_true", help="keep the database, lakes and dlt folders")
    args = p.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - set(SKIPPABLE)
    if unknown:
        p.error(f"--skip: unknown part(s) {sorted(unknown)}; choose from {', '.join(SKIPPABLE)}")
    if args.users < 1 or args.months < 1 or args.repeat < 1 or args.short_repeat < 1:
        p.error("--users, --months, --repeat and --short-repeat must be >= 1")
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


class Bench:
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

    def timed(self, name: str, cmd: list[str], env: dict | None = None) -> dict:
        settled = pg.settle(self.dsn)
        waited = self.wait_idle()
        m = measure.run(cmd, env=env or self.env, cwd=REPO, log_path=self.logs / f"{name}.log")
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

    # --- the five runs ---------------------------------------------------------------------------

    def pipeline(self, rep: int, as_of: str, source: Path, trace: Path | None = None) -> dict:
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
        ]
        if trace:
            cmd += ["--trace-sql", str(trace)]
        return self.timed(f"r{rep}-{as_of}-pipeline" + ("-traced" if trace else ""), cmd)

    def rerun(self, rep: int, as_of: str, source: Path, k: int) -> dict:
        env = {
            **self.env,
            "LAKE_ROOT": str(self.lake(rep)),
            "POSTGRES_DSN": self.dsn,
            "POSTGRES_SCHEMA": f"pipeline_r{rep}",
        }
        manifest = self.manifest_path(rep, as_of)
        before = json.loads(manifest.read_text())["run_id"] if manifest.exists() else None
        cmd = [self.luigi, "--module", "pipeline", "Month", "--as-of", as_of, "--source", str(source)]
        d = self.timed(f"r{rep}-{as_of}-rerun{k}", cmd, env)
        text = Path(d["log"]).read_text(errors="replace")
        after = json.loads(manifest.read_text())["run_id"] if manifest.exists() else None
        d["noop"] = (
            d["returncode"] == 0
            and before is not None
            and before == after
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

    def manifest_path(self, rep: int, as_of: str) -> Path:
        return self.lake(rep) / "runs" / f"as_of={as_of}" / "manifest.json"

    # --- a whole sequence of months ----------------------------------------------------------------

    def sequence(self, rep: int, months: list[tuple[str, str, Path]], samples: dict) -> None:
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
            p = self.pipeline(rep, as_of, source)
            s["pipeline"].append(p)
            extra: dict = {"rep": rep}
            if p["returncode"] != 0:
                log.error("pipeline failed on %s: the rest of sequence %d cannot run", as_of, rep)
                s["extra"].append(extra)
                return
            record = json.loads(self.manifest_path(rep, as_of).read_text())
            extra["timings"] = record.get("timings", {})
            extra["changes"] = record.get("tables", {})
            extra["steps"] = report.step_timings(Path(p["log"]).read_text(errors="replace"))
            inner = _last_json_line(Path(p["log"])) or {}
            extra["import_s"] = inner.get("import_s")
            extra["run_month_s"] = inner.get("run_month_s")
            extra["other_s"] = round(
                p["wall_s"]
                - sum(
                    v for k, v in extra["timings"].items() if k in ("stage", "merge", "load_staging", "checks", "sync")
                ),
                3,
            )
            s["extra"].append(extra)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    started = datetime.now(UTC)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    json_path = (args.json or out / f"results-{args.users}.json").resolve()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    drops, gen_info = drops_mod.ensure_drops(out, args.users, args.months, args.seed)
    months: list[tuple[str, str, Path]] = [
        (d.isoformat(), "first" if i == 0 else "following", f) for i, (d, f) in enumerate(drops)
    ]
    if args.nochange:
        d, f = drops_mod.nochange_drop(drops[-1])
        months.append((d.isoformat(), "nochange", f))
    rows = {as_of: drops_mod.table_rows(folder) for as_of, _, folder in months}

    stamp = started.strftime("%Y%m%dT%H%M%S")
    work = out / f"work-{args.users}-{stamp}"
    logs = out / f"logs-{args.users}-{stamp}"
    work.mkdir(parents=True)
    db_name, dsn = pg.create_database(args.dsn, str(args.users))
    log.info("database %s on %s; work folder %s; logs %s", db_name, args.dsn, work, logs)
    bench = Bench(args, dsn, work, logs)
    samples: dict = {}
    trace_summary = None
    try:
        info = machine_info(pg.server_info(dsn))
        for rep in range(args.repeat):
            log.info("--- sequence %d of %d ---", rep + 1, args.repeat)
            bench.sequence(rep, months, samples)
        if args.trace_sql:
            trace_summary = {}
            rep = args.repeat  # a fresh lake and schema, untimed for the results
            for as_of, _, source in months:
                trace = logs / f"sql-trace-{as_of}.jsonl"
                if bench.pipeline(rep, as_of, source, trace=trace)["returncode"] != 0:
                    break
                trace_summary[as_of] = summarize_sql_trace(trace) if trace.exists() else None
    finally:
        if not args.keep:
            pg.drop_database(args.dsn, db_name)
            shutil.rmtree(work, ignore_errors=True)

    results_months = []
    for index, (as_of, label, folder) in enumerate(months):
        s = samples.get(index)
        if s is None:
            continue
        runs = {t: report.median_run(s[t]) for t in report.TOOLS if s[t]}
        extras = [e for e in s["extra"] if "timings" in e]
        month = {
            "index": index,
            "as_of": as_of,
            "label": label,
            "source": str(folder),
            "rows": rows[as_of],
            "total_rows": sum(rows[as_of].values()),
            "runs": runs,
            "ratios": report.ratios(runs),
            "pipeline_timings": _median_dict([e["timings"] for e in extras]),
            "pipeline_other_s": round(statistics.median(e["other_s"] for e in extras), 3) if extras else None,
            "pipeline_import_s": _median_or_none([e.get("import_s") for e in extras]),
            "pipeline_run_month_s": _median_or_none([e.get("run_month_s") for e in extras]),
            "pipeline_steps": _median_nested([e["steps"] for e in extras]),
            "pipeline_changes": extras[0]["changes"] if extras else {},
            "baseline_inner": _median_nested([r["inner"]["timings"] for r in s["baseline"] if r.get("inner")]),
            "peer_inner": _median_nested([r["inner"]["timings"] for r in s["peer"] if r.get("inner")]),
            "floor_inner": _median_dict([r["inner"]["timings"] for r in s["floor"] if r.get("inner")]),
            "samples": {t: s[t] for t in report.TOOLS if s[t]},
        }
        results_months.append(month)
    targets = report.evaluate_targets(results_months, args.users)
    results = {
        "command": command,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "params": {
            "users": args.users,
            "months": args.months,
            "seed": args.seed,
            "repeat": args.repeat,
            "short_repeat": args.short_repeat,
            "skip": sorted(args.skip),
            "nochange": args.nochange,
        },
        "machine": info,
        "drops": gen_info,
        "months": results_months,
        "targets": targets,
        "sql_trace": trace_summary,
        "failures": bench.failures,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    print()
    print(
        f"{command}   ({info['nproc']} cores, {info['memory_gib']} GiB, "
        f"{info['postgresql']['version'].split(' on ')[0]})"
    )
    for month in results_months:
        print()
        print(report.format_month(month))
    print()
    print(report.format_targets(targets))
    for as_of, summary in (trace_summary or {}).items():
        if summary:
            print(f"\nSQL trace of {as_of} (profiling run, seconds by category):")
            for category, seconds in summary["seconds_by_category"].items():
                print(f"  {seconds:8.2f}  {category}")
    print(f"\nresults: {json_path}")
    if bench.failures:
        print("\nFAILURES:\n  " + "\n  ".join(bench.failures), file=sys.stderr)
        return 1
    return 0
