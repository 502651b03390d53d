"""The month report (issue #18): one self-contained HTML page per month and an overview of all months.

    streamflow report [--as-of D]                   every month (or D) and the overview
    luigi --module pipeline Report --as-of D        the same for D, as a Luigi task

writes ``<lake>/reports/as_of=D/index.html`` and ``<lake>/reports/index.html``. A page reads in a
minute: a one-line verdict (published, published with warnings, refused), then the checks of the month
(failed and warned first), the PSI of every feature against the previous published month with the
thresholds drawn, the distributions of the top movers overlaid, the tables' counts over the months,
the churn rate and users over the months and the run's timings per stage.

Everything comes from the lake: the run records (manifest, or the latest failed attempt of a month
that was refused), and the drift computed in DuckDB (:mod:`pipeline.drift`) over the published
snapshots; for a refused month, over the merged files its attempt left in the work folder, when they
are still there (otherwise only the PSI the attempt recorded). The pages need no network: the style is
inline and the charts are inline SVG drawn here (:mod:`pipeline.svg`), no script at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from pathlib import Path

import duckdb

from pipeline import drift, duck, lakefs, svg
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.runs import MonthRecord, RunRecord, RunStore
from pipeline.schema import Schema, load_schema

log = logging.getLogger(__name__)

REPORTS = "reports"
TOP_MOVERS = 3
COUNTS = ("rows", "inserted", "updated", "unchanged", "carried", "deleted")
VERDICT_CLASS = {"published": "pass", "warnings": "warn", "refused": "fail"}
OUTCOME_ORDER = {"fail": 0, "error": 0, "warn": 1, "pass": 2}

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}
h1{font-size:20px;margin:0 0 6px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dde}
.verdict{font-size:17px;padding:10px 14px;border-radius:6px;margin:8px 0 16px}
.published{background:#e5f4ea;border-left:6px solid #3a9a5b}.warnings{background:#fbf1dc;border-left:6px solid #d99a1e}
.refused{background:#fae3e1;border-left:6px solid #c9372c}
table{border-collapse:collapse;font-size:12px;margin:4px 0 12px}
td,th{border:1px solid #dde;padding:3px 7px;text-align:right}
th{background:#f3f4f8}td:first-child{white-space:nowrap}td.l,th.l{text-align:left}.pass{color:#2d7a47}.warn{color:#9a6a00;font-weight:600}
.fail,.error{color:#b42318;font-weight:700}.muted{color:#667;font-size:12px}.grid{display:flex;flex-wrap:wrap;gap:18px}
a{color:#2f6fd6}
"""


def report_dir(lake_root: Path) -> Path:
    return Path(lake_root) / REPORTS


def month_page(lake_root: Path, as_of: date) -> Path:
    return report_dir(lake_root) / lakefs.partition(as_of) / "index.html"


# --- what a page shows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthView:
    month: MonthRecord
    drift: drift.MonthDrift | None  # None: a first month, or a refused month whose files are gone
    drift_from: str  # where the drift was computed from, for the page

    @property
    def record(self) -> RunRecord:
        return self.month.record

    @property
    def checks(self) -> list[dict]:
        checks = self.record.checks.checks if self.record.checks else []
        return sorted(checks, key=lambda c: OUTCOME_ORDER.get(str(c.get("outcome")), 0))


def _snapshot_files(lake: lakefs.Lake, as_of: date, schema: Schema) -> dict[str, Path | None]:
    record = RunStore(lake).get(as_of)
    return {t: record.snapshot_file(lake.root, t) if record else None for t in schema.table_names}


def _attempt_files(lake: lakefs.Lake, as_of: date, previous: date, schema: Schema) -> dict[str, Path | None] | None:
    """The merged files the latest attempt of a refused month left in its work folder, if all are there."""
    files: dict[str, Path | None] = {}
    for t in schema.table_names:
        found = sorted(
            (lake.work(as_of) / "merge" / t).glob(f"*-{previous.isoformat()}-*/data.parquet"),
            key=lambda p: p.stat().st_mtime,
        )
        if not found:
            return None
        files[t] = found[-1]
    return files


def month_view(con: duckdb.DuckDBPyConnection, lake: lakefs.Lake, month: MonthRecord, schema: Schema) -> MonthView:
    previous = month.record.previous_as_of
    if previous is None:
        return MonthView(month, None, "the first month: nothing to compare with")
    before = _snapshot_files(lake, previous, schema)
    if month.published:
        after: dict[str, Path | None] | None = _snapshot_files(lake, month.as_of, schema)
        source = f"the published snapshots of {month.as_of} and {previous}"
    else:
        after = _attempt_files(lake, month.as_of, previous, schema)
        source = f"the merged files of the refused attempt (work folder) against the snapshots of {previous}"
    if after is None:
        return MonthView(month, None, "the refused attempt's files are gone: only the PSI it recorded")
    return MonthView(month, drift.month_drift(con, month.as_of, previous, before, after, schema), source)


def verdict(view: MonthView) -> tuple[str, str]:
    """(css class, one line): published / published with warnings / refused."""
    checks = view.checks
    failed = [c for c in checks if c.get("outcome") in ("fail", "error")]
    warned = [c for c in checks if c.get("outcome") == "warn"]

    def names(cs: list[dict]) -> str:
        shown = ", ".join(f"{c.get('column') or c.get('name')} ({c.get('table')})" for c in cs[:4])
        return shown + (f" and {len(cs) - 4} more" if len(cs) > 4 else "")

    as_of = view.month.as_of
    if not view.month.published:
        return "refused", f"{as_of} refused: {len(failed)} check(s) failed ({names(failed)}); nothing was published"
    if warned:
        return "warnings", f"{as_of} published with {len(warned)} warning(s): {names(warned)}"
    return "published", f"{as_of} published: all {len(checks)} checks passed"


# --- HTML -----------------------------------------------------------------------------------------


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    def cell(i: int, v: object, tag: str = "td") -> str:
        klass = ' class="l"' if i < left else ""
        if isinstance(v, tuple):  # (text, css class)
            return f'<{tag} class="{v[1]}{" l" if i < left else ""}">{escape(str(v[0]))}</{tag}>'
        return f"<{tag}{klass}>{escape('' if v is None else str(v))}</{tag}>"

    head = "".join(cell(i, h, "th") for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:.1%}" if pct else f"{v:,.4g}"


def _psi_color(value: float, warn: float, fail: float | None) -> str:
    if fail is not None and value > fail:
        return svg.OUTCOME_COLORS["fail"]
    return svg.OUTCOME_COLORS["warn"] if value > warn else svg.OUTCOME_COLORS["pass"]


def _drift_section(view: MonthView, settings: Settings) -> list[str]:
    warn, fail = settings.drift_warn_psi, settings.drift_fail_psi
    thresholds = [(warn, "warn")] + ([(fail, "fail")] if fail is not None else [])
    out = [f"<h2>Drift of every feature vs the previous published month ({view.record.previous_as_of or '–'})</h2>"]
    out.append(
        f'<p class="muted">Computed from {escape(view.drift_from)}. PSI over the deciles of the previous '
        f"month (numbers) or the values (booleans, text: top {drift.TOP_VALUES} and other), NULL a bin of "
        f"its own, empty bins counted as {drift.EMPTY_BIN_SHARE}.</p>"
    )
    if view.drift is None:
        recorded = [c for c in view.checks if str(c.get("name", "")).startswith(drift.CHECK_PREFIX)]
        if recorded:
            items = sorted(((f"{c['table']}.{c['column']}", float(c["value"])) for c in recorded), key=lambda i: -i[1])
            out.append(
                svg.hbars(
                    [(n, v, _psi_color(v, warn, fail)) for n, v in items],
                    "PSI per feature",
                    thresholds,
                    label_width=310,
                )
            )
        return out
    features = view.drift.sorted()
    bars = [(f.feature, f.psi, _psi_color(f.psi, warn, fail)) for f in features]
    out.append(svg.hbars(bars, "PSI per feature, largest first", thresholds, label_width=310))
    movers = [f for f in features if f.psi > 0][:TOP_MOVERS]
    if movers:
        out.append("<h2>Top movers: the two distributions overlaid</h2><div class='grid'>")
        names = (str(view.drift.previous), str(view.drift.as_of))
        for f in movers:
            out.append(
                f"<div><b>{escape(f.feature)}</b> PSI {f.psi:.4f}<br>"
                + svg.overlaid(
                    [b.label for b in f.bins],
                    [b.before for b in f.bins],
                    [b.after for b in f.bins],
                    f"{f.feature}: share of rows per bin",
                    names,
                )
                + "</div>"
            )
        out.append("</div>")
    rows: list[list[object]] = []
    for f in features:
        rows.append([
            f.feature, f.kind, (f"{f.psi:.4f}", "warn" if f.psi > warn else "pass"),
            _num(f.null_before, True), _num(f.null_after, True),
            _num(f.before.get("mean")), _num(f.after.get("mean")),
            _num(f.before.get("median")), _num(f.after.get("median")),
            _num(f.before.get("p95")), _num(f.after.get("p95")), (f.note, "l muted"),
        ])  # fmt: skip
    header = ["feature", "kind", "PSI", "null before", "null after", "mean before", "mean after",
              "median before", "median after", "p95 before", "p95 after", "note"]  # fmt: skip
    out.append(_table(header, rows, left=2))
    return out


def _checks_section(view: MonthView, history: dict[date, MonthRecord]) -> list[str]:
    out = ["<h2>Checks of the month (failed and warned first)</h2>"]
    rows = [[c.get("name"), c.get("table"), c.get("column"), c.get("value"), (c.get("outcome"), c.get("outcome"))]
            for c in view.checks]  # fmt: skip
    out.append(_table(["check", "table", "column", "value", "outcome"], rows, left=3))
    months = sorted(history)
    outcomes: dict[str, dict[date, str]] = {}
    for d in months:
        record = history[d].record
        for c in record.checks.checks if record.checks else []:
            outcomes.setdefault(str(c.get("name")), {})[d] = str(c.get("outcome"))
    shown = sorted(outcomes, key=lambda n: min(OUTCOME_ORDER.get(o, 0) for o in outcomes[n].values()))
    rows = [[name, *((outcomes[name].get(d, "–"), outcomes[name].get(d, "")) for d in months)] for name in shown]
    out.append("<h3>Each check's outcome over the months</h3>")
    out.append(_table(["check", *(str(d) for d in months)], rows))
    return out


def _tables_section(history: dict[date, MonthRecord], schema: Schema) -> list[str]:
    out = ["<h2>Tables over the months</h2><div class='grid'>"]
    for t in schema.table_names:
        rows = []
        for d in sorted(history):
            m = history[d]
            counts = m.record.tables.get(t, {})
            status = "published" if m.published else "refused"
            rows.append([str(d), status, *(counts.get(k) for k in COUNTS), m.record.rejects.get(t)])
        out.append(
            f"<div><b>{escape(t)}</b>" + _table(["as_of", "status", *COUNTS, "rejects"], rows, left=2) + "</div>"
        )
    out.append("</div>")
    return out


def _population_section(series: dict[date, drift.Population]) -> list[str]:
    if not series:
        return []
    xs = [str(d) for d in sorted(series)]
    users = [float(series[d].users_after) for d in sorted(series)]
    churn = [series[d].churn_after for d in sorted(series)]
    return [
        "<h2>Users and churn rate over the published months</h2><div class='grid'>",
        svg.lines(xs, {"users": users}, "users per month"),
        svg.lines(xs, {"churn rate": churn}, "churn rate per month", percent=True),
        "</div>",
    ]


def _timings_section(record: RunRecord) -> list[str]:
    if not record.timings:
        return []
    items = [(k, float(v), svg.AFTER) for k, v in record.timings.items()]
    return [
        "<h2>The run's timings per stage (seconds)</h2>",
        '<p class="muted">checks: Soda seconds summed over the scans (they overlap load_staging); '
        "sync_*: parts of sync.</p>",
        svg.hbars(items, "seconds per stage", unit=" s", label_width=160),
    ]


def render_month(
    view: MonthView,
    history: dict[date, MonthRecord],
    population: dict[date, drift.Population],
    settings: Settings,
    schema: Schema,
) -> str:
    klass, line = verdict(view)
    r = view.record
    body = [
        f"<h1>Month {view.month.as_of}</h1>",
        f'<div class="verdict {klass}" id="verdict">{escape(line)}</div>',
        f'<p class="muted">run {escape(r.run_id or "–")} · drop {escape(r.source or "–")} · '
        f"mode {escape(r.mode or '–')}"
        f' · previous {r.previous_as_of or "–"} · <a href="../index.html">all months</a></p>',
    ]
    body += _checks_section(view, history) if not view.month.published else []
    body += _drift_section(view, settings)
    body += _checks_section(view, history) if view.month.published else []
    body += _tables_section(history, schema)
    body += _population_section(population)
    body += _timings_section(r)
    return _page(f"streamflow month {view.month.as_of}: {line}", body)


def render_overview(views: dict[date, MonthView], population: dict[date, drift.Population], schema: Schema) -> str:
    rows = []
    for d in sorted(views, reverse=True):
        klass, line = verdict(views[d])
        link = f'<a href="{lakefs.partition(d)}/index.html">{d}</a>'
        users = population.get(d)
        rows.append(
            f'<tr><td class="l">{link}</td><td class="l {VERDICT_CLASS[klass]}">'
            f"{escape(line)}</td><td>{users.users_after if users else '–'}</td>"
            f"<td>{_num(users.churn_after, True) if users else '–'}</td></tr>"
        )
    latest = views[max(views)] if views else None
    klass, head = verdict(latest) if latest else ("published", "no month in the lake yet")
    body = [
        "<h1>streamflow lake: every month</h1>",
        f'<div class="verdict {klass}" id="verdict">latest: {escape(head)}</div>',
        '<table><tr><th class="l">as_of</th><th class="l">verdict</th><th>users</th><th>churn rate</th></tr>',
        *rows,
        "</table>",
    ]
    body += _population_section(population)
    if views:
        body += _tables_section({d: v.month for d, v in views.items()}, schema)
    return _page("streamflow lake: every month", body)


# --- writing --------------------------------------------------------------------------------------


def write_reports(settings: Settings, as_of: date | None = None) -> list[Path]:
    """Write the page of month ``as_of`` (every month with a record when None) and the overview.
    Returns the pages written, the overview last."""
    schema = load_schema()
    lake = lakefs.Lake(settings.lake_root)
    history = RunStore(lake).months()
    if as_of is not None and as_of not in history:
        known = ", ".join(str(d) for d in sorted(history)) or "none"
        raise PipelineError(f"month {as_of} has no run record in the lake at {lake.root} (months: {known}); no report")
    written = []
    with duck.connect(settings) as con:
        views = {d: month_view(con, lake, m, schema) for d, m in history.items()}
        population = {
            d: drift.population(con, schema, _snapshot_files(lake, d, schema), _snapshot_files(lake, d, schema))
            for d, m in history.items()
            if m.published
        }
    for d in [as_of] if as_of is not None else sorted(views):
        page = month_page(lake.root, d)
        lakefs.write_text_atomic(page, render_month(views[d], history, population, settings, schema))
        written.append(page)
    overview = report_dir(lake.root) / "index.html"
    lakefs.write_text_atomic(overview, render_overview(views, population, schema))
    written.append(overview)
    log.info("wrote the month report(s): %s", ", ".join(str(p) for p in written))
    return written


def is_current(lake_root: Path, as_of: date) -> bool:
    """Whether the month's page and the overview exist and are newer than every run record of the lake
    (a month published, refused or corrected since makes them stale)."""
    pages = [month_page(lake_root, as_of), report_dir(lake_root) / "index.html"]
    if not all(p.is_file() for p in pages):
        return False
    records = [p.stat().st_mtime_ns for p in (Path(lake_root) / "runs").glob("as_of=*/**/*.json")]
    return min(p.stat().st_mtime_ns for p in pages) >= max(records, default=0)
