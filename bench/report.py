"""Medians, ratios, the issue-6 targets, and the printed tables."""

from __future__ import annotations

import re
import statistics

TOOLS = ("pipeline", "rerun", "baseline", "peer", "floor")
GB = 2**30

# pipeline log lines: "stage   users      1000000 rows    1.23s ..." / "load staging  users  1000000 rows  0.50s"
_STEP_LINE = re.compile(r"pipeline\.(?:month|pg\.staging): (stage|merge|load staging)\s+(\S+)\s+(\d+) rows\s+([\d.]+)s")


def median_run(samples: list[dict]) -> dict | None:
    ok = [s for s in samples if s.get("returncode") == 0]
    if not ok:
        return None
    return {
        "wall_s": round(statistics.median(s["wall_s"] for s in ok), 3),
        "peak_rss_mb": round(statistics.median(s["peak_rss_mb"] for s in ok), 1),
        "max_peak_rss_mb": round(max(s["peak_rss_mb"] for s in ok), 1),
        "n": len(ok),
    }


def step_timings(log_text: str) -> dict[str, dict[str, float]]:
    """Per table seconds of stage, merge and load staging, from the pipeline's own log lines."""
    steps: dict[str, dict[str, float]] = {}
    for step, table, _rows, seconds in _STEP_LINE.findall(log_text):
        steps.setdefault(step.replace(" ", "_"), {})[table] = float(seconds)
    return steps


def ratios(runs: dict[str, dict | None]) -> dict[str, float | None]:
    p = runs.get("pipeline")
    out: dict[str, float | None] = {}
    for other in ("baseline", "peer", "floor"):
        o = runs.get(other)
        out[f"pipeline/{other}"] = round(p["wall_s"] / o["wall_s"], 3) if p and o and o["wall_s"] else None
    return out


def evaluate_targets(months: list[dict], users: int) -> list[dict]:
    """The targets of issue 6 against the measured medians. They are set for 1,000,000 users on 2 cores."""
    targets = []

    def add(name: str, measured: str, met: bool | None, note: str = "") -> None:
        targets.append({"target": name, "measured": measured, "met": met, "note": note})

    by_label = {m["label"]: m for m in months}
    first = by_label.get("first")
    following = [m for m in months if m["label"] == "following"]
    nochange = by_label.get("nochange")

    def speedup(month: dict | None) -> float | None:
        r = (month or {}).get("ratios", {}).get("pipeline/baseline")
        return 1 / r if r else None

    s = speedup(first)
    add("first month >= 10x faster than the baseline", f"{s:.1f}x" if s else "n/a", s >= 10 if s else None)
    for m in following:
        s = speedup(m)
        add(
            f"following month ({m['as_of']}) >= 10x faster than the baseline",
            f"{s:.1f}x" if s else "n/a",
            s >= 10 if s else None,
        )
    if nochange and first:
        live0 = first.get("pipeline_timings", {}).get("sync_live")
        live_n = nochange.get("pipeline_timings", {}).get("sync_live")
        if live0 is not None and live_n is not None:
            add(
                "no-change month: live sync < 1/10 of the first month's live load",
                f"{live_n:.2f}s vs {live0:.2f}s ({live_n / live0:.3f}x)" if live0 else f"{live_n:.2f}s",
                live_n < 0.1 * live0 if live0 else None,
            )
    reruns = [m["runs"]["rerun"]["wall_s"] for m in months if m["runs"].get("rerun")]
    if reruns:
        add("rerun of a published month < 2 s", f"max {max(reruns):.2f}s (median per month)", max(reruns) < 2)
    for m in months:
        r = m.get("ratios", {}).get("pipeline/peer")
        if r is not None:
            add(
                f"month {m['as_of']} ({m['label']}): whole month faster than dlt merge alone",
                f"pipeline/peer = {r:.2f}",
                r < 1,
            )
    for m in months:
        r = m.get("ratios", {}).get("pipeline/floor")
        if r is not None:
            add(f"month {m['as_of']} ({m['label']}): within 4x of the floor", f"pipeline/floor = {r:.2f}", r <= 4)
    rss = [m["runs"]["pipeline"]["max_peak_rss_mb"] for m in months if m["runs"].get("pipeline")]
    if rss:
        limit_gb = 3.0 if users >= 5_000_000 else 1.5
        add(
            f"pipeline peak RSS < {limit_gb} GB ({users:,} users)",
            f"max {max(rss):.0f} MB",
            max(rss) * 2**20 < limit_gb * GB,
        )
    if users != 1_000_000:
        note = f"targets are set for 1,000,000 users; this run has {users:,}"
        for t in targets:
            t["note"] = f"{t['note']} ({note})" if t["note"] else note
    return targets


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_month(month: dict) -> str:
    rows = month["total_rows"]
    lines = [
        f"month {month['index']}  as_of {month['as_of']}  ({month['label']}, {rows:,} rows in 6 files)",
        f"  {'run':<10} {'wall s':>9} {'peak RSS MB':>12} {'rows/s':>12} {'n':>3}",
    ]
    for tool in TOOLS:
        r = month["runs"].get(tool)
        if tool not in month["runs"]:
            continue
        if r is None:
            lines.append(f"  {tool:<10} {'FAILED':>9}")
            continue
        rate = rows / r["wall_s"] if r["wall_s"] and tool != "rerun" else None
        lines.append(f"  {tool:<10} {r['wall_s']:>9.2f} {r['peak_rss_mb']:>12.0f} {_fmt(rate, ',.0f'):>12} {r['n']:>3}")
    rat = month.get("ratios", {})
    parts = []
    for k, v in rat.items():
        if v is not None:
            parts.append(f"{k} = {v:.3f}" + (f" ({1 / v:.1f}x faster)" if v < 1 else ""))
    if parts:
        lines.append("  ratios: " + "; ".join(parts))
    t = month.get("pipeline_timings")
    if t:
        lines.append("  pipeline stages (manifest): " + "  ".join(f"{k}={v:.2f}s" for k, v in t.items()))
    changes = month.get("pipeline_changes")
    if changes:
        changed = {tbl: c.get("inserted", 0) + c.get("updated", 0) + c.get("deleted", 0) for tbl, c in changes.items()}
        listed = ", ".join(f"{t} {n:,}" for t, n in changed.items())
        lines.append(f"  changed rows (inserted+updated+deleted): {listed}")
    return "\n".join(lines)


def format_targets(targets: list[dict]) -> str:
    lines = ["targets (issue 6):"]
    for t in targets:
        mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[t["met"]]
        lines.append(f"  [{mark}] {t['target']}: {t['measured']}")
    return "\n".join(lines)
